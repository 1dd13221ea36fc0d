"""Peer transport: signed consensus messages to the other validators, and block fetches.

Wire (docs/protocol.md): `POST {peer url}/peer/v1/messages` with a msgpack array of message
envelopes (each `consensus.messages.encode_message` bytes), answered 204; and
`GET {peer url}/peer/v1/blocks?from=A&to=B`, answered with a msgpack array of
`[block bytes, certificate bytes]` pairs in height order (possibly fewer than asked).

The contract is weak on purpose (STYLE.md item 8): sending is fire-and-forget. Each peer has
its own bounded queue and its own sender task that batches whatever has queued up (with up to
`POSTS_IN_FLIGHT_MAX` POSTs to that peer under way, which may arrive out of order), so a slow or
dead peer fills only its own queue (the oldest message is dropped and counted) and never
delays the others. Nothing here retries: consensus retransmits by its own timers. Nothing here
trusts a peer either: fetched blocks are decoded and handed to the replica, which verifies them.
Messages go out through `node.poster` (a minimal HTTP/1.1 client: the POSTs are frequent and
small), block fetches through aiohttp. To an https:// peer both go over mutual TLS 1.3: the
peer must present a certificate issued by its own validator key, and this node presents its
own (`node.tls.peer_client_context`).
"""

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from typing import Final

import aiohttp
import msgpack

from consensus.events import FETCH_BLOCKS_MAX
from ledger.block import Block, Certificate, decode_block, decode_certificate
from ledger.errors import InvalidBlock
from ledger.genesis import Genesis
from node import tls
from node.codec import MSGPACK
from node.poster import Poster, PostFailed

MESSAGES_PATH: Final = "/peer/v1/messages"
BLOCKS_PATH: Final = "/peer/v1/blocks"
BATCH_MESSAGES_MAX: Final = 256  # messages in one POST
POSTS_IN_FLIGHT_MAX: Final = 2  # POSTs to one peer under way at once (the transport may reorder)
BATCH_BYTES_MAX: Final = 16 * 1024 * 1024  # soft bound: a POST stops growing past it
# Soft bound on one fetch answer (at least one block is sent, whatever its size). A node that
# catches up holds one answer decoded at a time (several times its bytes in Python objects),
# and the node serving it the answer's bytes twice: 4 MiB keeps both well inside the memory
# budget (RSS per node) while a round trip still carries ~16,000 txs of 250 bytes.
FETCH_BYTES_MAX: Final = 4 * 1024 * 1024

log = logging.getLogger("cityledger.node.peers")

SendFailed = Callable[[int, str], None]
"""``send_failed(peer index, why)``: a message to that peer was dropped or not delivered."""


def decode_batch(raw: bytes) -> list[bytes]:
    """The message envelopes of a peer POST; raise ValueError for anything else."""
    try:
        items = msgpack.unpackb(raw, raw=False, use_list=True)
    except (ValueError, TypeError, msgpack.UnpackException, OverflowError) as exc:
        raise ValueError(f"not msgpack: {type(exc).__name__}") from None
    if not isinstance(items, list) or len(items) > BATCH_MESSAGES_MAX:
        raise ValueError(f"expected an array of at most {BATCH_MESSAGES_MAX} messages")
    if not all(isinstance(item, bytes) for item in items):
        raise ValueError("every message is a byte string")
    return items


def encode_blocks(pairs: list[tuple[bytes, bytes]]) -> bytes:
    packed: bytes = msgpack.packb([list(p) for p in pairs], use_bin_type=True)
    return packed


def decode_blocks(raw: bytes) -> tuple[tuple[Block, Certificate], ...]:
    """The decodable prefix of a fetch answer (verification is the replica's job)."""
    try:
        items = msgpack.unpackb(raw, raw=False, use_list=True)
    except (ValueError, TypeError, msgpack.UnpackException, OverflowError):
        return ()
    out: list[tuple[Block, Certificate]] = []
    if not isinstance(items, list):
        return ()
    for item in items[:FETCH_BLOCKS_MAX]:
        if not (
            isinstance(item, list) and len(item) == 2 and all(isinstance(b, bytes) for b in item)
        ):
            break
        try:
            out.append((decode_block(item[0]), decode_certificate(item[1])))
        except InvalidBlock:
            break
    return tuple(out)


class PeerTransport:
    """Queues and sender tasks for every other validator; `start` and `close` bracket it."""

    def __init__(
        self, genesis: Genesis, index: int, *, queue_max: int, timeout_ms: int,
        body_bytes_max: int, send_failed: SendFailed,
        tls_identity: tls.ServerIdentity | None = None,
    ) -> None:  # fmt: skip
        """`tls_identity`: this node's certificate, presented to https:// peers."""
        others = [v for v in genesis.validators if v.index != index]
        self._urls: dict[int, str] = {int(v.index): v.url.rstrip("/") for v in others}
        self._contexts: dict[int, ssl.SSLContext] = {}
        if tls_identity is not None:
            self._contexts = {
                int(v.index): tls.peer_client_context(genesis, v.id, tls_identity)
                for v in others if v.url.startswith("https://")
            }  # fmt: skip
        self._queue_max = queue_max
        self._timeout_s = timeout_ms / 1000
        self._timeout = aiohttp.ClientTimeout(total=self._timeout_s)
        self._body_bytes_max = body_bytes_max
        self._send_failed = send_failed
        self._queues: dict[int, asyncio.Queue[bytes]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None  # block fetches
        self._posters: dict[int, Poster] = {}  # message POSTs

    @property
    def peers(self) -> dict[int, str]:
        return dict(self._urls)

    def queued(self, peer: int) -> int:
        queue = self._queues.get(peer)
        return 0 if queue is None else queue.qsize()

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit_per_host=4)
        self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        for peer, url in self._urls.items():
            self._posters[peer] = Poster(
                url, timeout_s=self._timeout_s, connections_max=POSTS_IN_FLIGHT_MAX,
                ssl_context=self._contexts.get(peer),
            )  # fmt: skip
            self._queues[peer] = asyncio.Queue(self._queue_max)
            self._tasks.append(asyncio.create_task(self._sender(peer), name=f"peer-{peer}"))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for poster in self._posters.values():
            await poster.close()
        self._posters.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def send(self, peer: int, raw: bytes) -> None:
        """Queue one encoded message for `peer`; never blocks, never raises."""
        queue = self._queues.get(peer)
        if queue is None:
            return
        if queue.full():  # the newest votes supersede the oldest: drop from the front
            queue.get_nowait()
            self._send_failed(peer, "queue_full")
        queue.put_nowait(raw)

    def broadcast(self, raw: bytes) -> None:
        for peer in self._urls:
            self.send(peer, raw)

    async def _sender(self, peer: int) -> None:
        """Post what has queued for `peer`, with up to `POSTS_IN_FLIGHT_MAX` POSTs under way:
        a message need not wait for the answer to the one before (a peer answers once it has
        handled a POST), and while every slot is busy new messages gather into one batch."""
        queue = self._queues[peer]
        slots = asyncio.Semaphore(POSTS_IN_FLIGHT_MAX)
        posts: set[asyncio.Task[None]] = set()
        try:
            while True:
                await slots.acquire()
                batch = [await queue.get()]
                size = len(batch[0])
                while (
                    not queue.empty() and len(batch) < BATCH_MESSAGES_MAX and size < BATCH_BYTES_MAX
                ):
                    batch.append(queue.get_nowait())
                    size += len(batch[-1])
                body = msgpack.packb(batch, use_bin_type=True)
                post = asyncio.create_task(self._post(peer, body, len(batch)))
                posts.add(post)
                post.add_done_callback(posts.discard)
                post.add_done_callback(lambda _t: slots.release())
        finally:
            for post in posts:
                post.cancel()

    async def _post(self, peer: int, body: bytes, count: int) -> None:
        try:
            status = await self._posters[peer].post(MESSAGES_PATH, body, MSGPACK)
        except PostFailed as exc:
            log.debug("sending %d messages to peer %d failed: %s", count, peer, exc)
            self._send_failed(peer, "unreachable")
            return
        if status >= 300:
            log.debug("peer %d answered %d", peer, status)
            self._send_failed(peer, f"http_{status}")

    async def fetch_blocks(
        self, peer: int, from_height: int, to_height: int
    ) -> tuple[tuple[Block, Certificate], ...]:
        """Certified blocks from `peer` (unverified); empty if the fetch failed in any way."""
        url = self._urls.get(peer)
        if url is None or self._session is None:
            return ()
        params = {"from": str(from_height), "to": str(to_height)}
        headers = {"Accept": MSGPACK}
        try:
            async with self._session.get(
                url + BLOCKS_PATH, params=params, headers=headers,
                ssl=self._contexts.get(peer, True),
            ) as response:  # fmt: skip
                if response.status != 200:
                    return ()
                raw = await _read_limited(response, self._body_bytes_max)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            log.debug("fetching blocks %d..%d from peer %d failed: %r", from_height, to_height,
                      peer, exc)  # fmt: skip
            return ()
        return decode_blocks(raw)


async def _read_limited(response: aiohttp.ClientResponse, limit: int) -> bytes:
    body = bytearray()
    async for chunk in response.content.iter_chunked(64 * 1024):
        body.extend(chunk)
        if len(body) > limit:
            raise ValueError(f"answer larger than {limit} bytes")
    return bytes(body)

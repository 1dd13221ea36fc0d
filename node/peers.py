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

SendFailed = Callable[[str, str], None]
"""``send_failed(peer id, why)``: a message to that peer was dropped or not delivered."""


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
    """Queues and sender tasks for every other validator of the epoch in force; `start` and
    `close` bracket it, `reconfigure` follows the set from one epoch to the next.

    Peers are named by validator id; `send`, `broadcast` and `fetch_blocks` take the index of
    the epoch in force, as the replica names its peers (an index is a place in one epoch's
    set, not a node: docs/protocol.md section 13.5)."""

    def __init__(
        self, members: Genesis, own_id: str, *, queue_max: int, timeout_ms: int,
        body_bytes_max: int, send_failed: SendFailed,
        tls_identity: tls.ServerIdentity | None = None,
    ) -> None:  # fmt: skip
        """`members`: the configuration in force (its validators are the peers, but for
        `own_id`); `tls_identity`: this node's certificate, presented to https:// peers."""
        self._own_id = own_id
        self._tls_identity = tls_identity
        self._members = members
        self._ids: tuple[str, ...] = ()  # the epoch's validators by index
        self._urls: dict[str, str] = {}  # peer id -> url
        self._keys: dict[str, bytes] = {}  # peer id -> the key its TLS identity is bound to
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._queue_max = queue_max
        self._timeout_s = timeout_ms / 1000
        self._timeout = aiohttp.ClientTimeout(total=self._timeout_s)
        self._body_bytes_max = body_bytes_max
        self._send_failed = send_failed
        self._queues: dict[str, asyncio.Queue[bytes]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._session: aiohttp.ClientSession | None = None  # block fetches
        self._posters: dict[str, Poster] = {}  # message POSTs
        self._closing: set[asyncio.Task[None]] = set()  # posters of peers that left, closing
        self._take_set(members)

    @property
    def peers(self) -> dict[str, str]:
        """The peers of the epoch in force: validator id -> url."""
        return dict(self._urls)

    def peer_indices(self) -> list[int]:
        """The indices of the other validators in the epoch's set."""
        return [i for i, peer in enumerate(self._ids) if peer != self._own_id]

    def queued(self, peer_id: str) -> int:
        queue = self._queues.get(peer_id)
        return 0 if queue is None else queue.qsize()

    def _take_set(self, members: Genesis) -> set[str]:
        """Adopt `members`' validators; return the ids whose transport must be (re)built."""
        self._members = members
        self._ids = tuple(v.id for v in members.validators)
        others = {v.id: v for v in members.validators if v.id != self._own_id}
        changed = {
            peer for peer, v in others.items()
            if self._urls.get(peer) != v.url.rstrip("/") or self._keys.get(peer) != v.public_key
        }  # fmt: skip
        self._urls = {peer: v.url.rstrip("/") for peer, v in others.items()}
        self._keys = {peer: v.public_key for peer, v in others.items()}
        if self._tls_identity is not None:
            for peer in changed:
                if self._urls[peer].startswith("https://"):
                    self._contexts[peer] = tls.peer_client_context(
                        members, peer, self._tls_identity
                    )
        for peer in [p for p in self._contexts if p not in others]:
            del self._contexts[peer]
        return changed

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit_per_host=4)
        self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        for peer in self._urls:
            self._open(peer)

    def _open(self, peer: str) -> None:
        self._posters[peer] = Poster(
            self._urls[peer], timeout_s=self._timeout_s, connections_max=POSTS_IN_FLIGHT_MAX,
            ssl_context=self._contexts.get(peer),
        )  # fmt: skip
        self._queues[peer] = asyncio.Queue(self._queue_max)
        self._tasks[peer] = asyncio.create_task(self._sender(peer), name=f"peer-{peer}")

    def _shut(self, peer: str) -> None:
        task = self._tasks.pop(peer, None)
        if task is not None:
            task.cancel()  # its POSTs under way with it
        self._queues.pop(peer, None)
        poster = self._posters.pop(peer, None)
        if poster is not None:
            closing = asyncio.get_running_loop().create_task(poster.close())
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)

    def reconfigure(self, members: Genesis) -> None:
        """Follow the set of a new epoch: a removed validator is no longer sent to or asked,
        an added one gets its queue, one whose URL or key changed a new connection (its TLS
        identity bound to the new key). Messages queued for a peer that stays are kept."""
        changed = self._take_set(members)
        if self._session is None:
            return  # not started: `start` opens what the set holds
        for peer in [p for p in self._tasks if p not in self._urls or p in changed]:
            self._shut(peer)
        for peer in self._urls:
            if peer not in self._tasks:
                self._open(peer)

    async def close(self) -> None:
        for peer in list(self._tasks):
            self._shut(peer)
        for closing in list(self._closing):
            with contextlib.suppress(asyncio.CancelledError):
                await closing
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _peer_id(self, index: int) -> str | None:
        peer = self._ids[index] if 0 <= index < len(self._ids) else None
        return None if peer == self._own_id else peer

    def send(self, peer: int, raw: bytes) -> None:
        """Queue one encoded message for the validator at index `peer` of the epoch in force;
        never blocks, never raises."""
        peer_id = self._peer_id(peer)
        queue = None if peer_id is None else self._queues.get(peer_id)
        if queue is None or peer_id is None:
            return
        if queue.full():  # the newest votes supersede the oldest: drop from the front
            queue.get_nowait()
            self._send_failed(peer_id, "queue_full")
        queue.put_nowait(raw)

    def broadcast(self, raw: bytes) -> None:
        for peer_id, queue in self._queues.items():
            if queue.full():
                queue.get_nowait()
                self._send_failed(peer_id, "queue_full")
            queue.put_nowait(raw)

    async def _sender(self, peer: str) -> None:
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

    async def _post(self, peer: str, body: bytes, count: int) -> None:
        try:
            status = await self._posters[peer].post(MESSAGES_PATH, body, MSGPACK)
        except PostFailed as exc:
            log.debug("sending %d messages to peer %s failed: %s", count, peer, exc)
            self._send_failed(peer, "unreachable")
            return
        if status >= 300:
            log.debug("peer %s answered %d", peer, status)
            self._send_failed(peer, f"http_{status}")

    async def fetch_blocks(
        self, peer: int, from_height: int, to_height: int
    ) -> tuple[tuple[Block, Certificate], ...]:
        """Certified blocks from the validator at index `peer` of the epoch in force
        (unverified); empty if the fetch failed in any way."""
        peer_id = self._peer_id(peer)
        return await self.fetch_from(peer_id, from_height, to_height) if peer_id else ()

    async def fetch_from(
        self, peer_id: str, from_height: int, to_height: int
    ) -> tuple[tuple[Block, Certificate], ...]:
        """Certified blocks from validator `peer_id` (unverified); empty if the fetch failed."""
        url = self._urls.get(peer_id)
        if url is None or self._session is None:
            return ()
        params = {"from": str(from_height), "to": str(to_height)}
        headers = {"Accept": MSGPACK}
        try:
            async with self._session.get(
                url + BLOCKS_PATH, params=params, headers=headers,
                ssl=self._contexts.get(peer_id, True),
            ) as response:  # fmt: skip
                if response.status != 200:
                    return ()
                raw = await _read_limited(response, self._body_bytes_max)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            log.debug("fetching blocks %d..%d from peer %s failed: %r", from_height, to_height,
                      peer_id, exc)  # fmt: skip
            return ()
        return decode_blocks(raw)


async def _read_limited(response: aiohttp.ClientResponse, limit: int) -> bytes:
    body = bytearray()
    async for chunk in response.content.iter_chunked(64 * 1024):
        body.extend(chunk)
        if len(body) > limit:
            raise ValueError(f"answer larger than {limit} bytes")
    return bytes(body)

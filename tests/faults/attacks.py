"""Attacks on one node's listener, from loopback addresses of their own, bounded in count and time.

Each attack is a coroutine `attack(target, until_s) -> Counter` that runs until the monotonic
time `until_s` and counts what it saw (answers by status, connections the node closed, ...):
the test asserts from those counts that the attack actually reached the node. Attackers bind
their sockets to 127.0.0.2 and up (`SOURCES`), so the node tells them from the normal client
and the peers (127.0.0.1), as it would tell hosts apart; every loop has a ceiling on the
connections it opens and stops at `until_s`. Nothing here leaves a socket open when it returns.
"""

import asyncio
import contextlib
import json
import os
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

import msgpack

from ledger import tx as txs
from ledger.encoding import encode
from node import auth_request as wire
from tests.faults.harness import Network, now_ms

SOURCES: Final = tuple(f"127.0.0.{i}" for i in range(2, 42))  # 40 attacking addresses
IDLE_CONNECTIONS: Final = 2000
IDLE_BATCH: Final = 100  # connections opened at a time: up to 1,000 a second
IDLE_PACE_S: Final = 0.1
SLOWLORIS_CONNECTIONS: Final = 400
# A trickling connection goes on past the attack's end until the node closed it or this long
# after it opened: the node's header deadline (node/limits.py, 10 s by default) and a margin.
# On a busy machine 400 connections at one 8 KB line a second may not reach the header block's
# size bound inside a short attack, and it is the node's closing them that is checked.
SLOWLORIS_HOLD_S: Final = 12.0
HEADER_LINE_BYTES: Final = 8000  # a header field just under aiohttp's own field limit
STUFFED_LINES: Final = 120
STUFFERS: Final = 1000
STUFFERS_AT_ONCE: Final = 50
HALF_BODIES: Final = 8
HALF_BODY_BYTES: Final = 64 * 1024 * 1024  # declared; half of it is sent
GARBAGE_BATCH_TXS: Final = 1000
GARBAGE_BATCHES: Final = 8  # sent in turn (well inside the tx time-to-live)
FORGED_ENVELOPE_BYTES: Final = 60 * 1024 * 1024  # a peer body of at most 64 MiB holds it
HISTORY_READERS: Final = 6
PAGE_GRACE_S: Final = 10.0
OPENS_MAX: Final = 20_000  # connections one attack may open in all
CHUNK_BYTES: Final = 1024 * 1024
IO_TIMEOUT_S: Final = 5.0


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    net: Network
    hot_key: str  # the record with many versions
    payloads: dict[str, bytes] = field(default_factory=dict)  # made by `prepare`


def prepare(target: Target) -> None:
    """Build the attacks' large payloads once, before any attack is timed (they are built in
    the test's process, which also runs the normal client)."""
    rng = random.Random(14)
    for k in range(GARBAGE_BATCHES):
        target.payloads[f"garbage{k}"] = _garbage_batch(target.net, rng)
    envelope = forged_envelope(target.net, FORGED_ENVELOPE_BYTES)
    target.payloads["forged"] = msgpack.packb([envelope], use_bin_type=True)


Attack = Callable[[Target, float], Awaitable[Counter[str]]]


async def _open(
    target: Target, n: int, seen: Counter[str] | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    """Connection `n` from its source address; None (counted in `seen`) if the node refused
    it or did not accept it in time."""
    source = SOURCES[n % len(SOURCES)]
    try:
        return await asyncio.wait_for(
            asyncio.open_connection(target.host, target.port, local_addr=(source, 0)),
            IO_TIMEOUT_S,
        )
    except (OSError, TimeoutError):
        if seen is not None:
            seen["refused_at_connect"] += 1
        return None


def _close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, RuntimeError):
        writer.transport.abort()


async def _status(reader: asyncio.StreamReader, seen: Counter[str]) -> None:
    """Count the status of an answer if one came before the close, else the bare close."""
    with contextlib.suppress(OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
        line = await asyncio.wait_for(reader.readline(), IO_TIMEOUT_S)
        seen[f"http_{line.split()[1].decode()}" if line else "closed"] += 1


async def _hold(target: Target, n: int, until_s: float, seen: Counter[str]) -> None:
    """One connection that never sends a byte, held until the node closes it or time is up."""
    if (opened := await _open(target, n, seen)) is None:
        return
    reader, writer = opened
    try:
        answer = await asyncio.wait_for(reader.read(1024), max(0.0, until_s - time.monotonic()))
        seen["closed_by_node"] += 1
        seen[f"http_{answer.split()[1].decode()}" if answer else "closed_silently"] += 1
    except (TimeoutError, OSError, IndexError):
        seen["held_to_the_end"] += 1
    finally:
        _close(writer)


async def idle(target: Target, until_s: float) -> Counter[str]:
    """Keep up to IDLE_CONNECTIONS connections open that never send a byte (opened
    IDLE_BATCH at a time); each that the node closes is opened again, within OPENS_MAX."""
    seen: Counter[str] = Counter()
    holding: set[asyncio.Task[None]] = set()
    opens = 0
    try:
        while time.monotonic() < until_s and opens < OPENS_MAX:
            room = min(IDLE_CONNECTIONS - len(holding), IDLE_BATCH, OPENS_MAX - opens)
            for k in range(room):
                task = asyncio.create_task(_hold(target, opens + k, until_s, seen))
                holding.add(task)
                task.add_done_callback(holding.discard)
            opens += room
            await asyncio.sleep(IDLE_PACE_S)  # the attack's pace
    finally:
        if holding:
            await asyncio.wait(holding)
    seen["opened"] = opens
    return seen


async def _trickle(target: Target, n: int, until_s: float, seen: Counter[str]) -> None:
    if (opened := await _open(target, n, seen)) is None:
        return
    reader, writer = opened
    hold_until = max(until_s, time.monotonic() + SLOWLORIS_HOLD_S)
    try:
        writer.write(b"GET /v1/status HTTP/1.1\r\nHost: node\r\n")
        line = 0
        while time.monotonic() < hold_until and not reader.at_eof():
            writer.write(b"X-Pad-%d: %s\r\n" % (line, b"a" * HEADER_LINE_BYTES))
            line += 1
            await writer.drain()
            # One 8 KB line a second: slow enough to hold the connection, were there no limits.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reader.read(1), 1.0)
        if reader.at_eof():
            seen["closed_by_node"] += 1
    except OSError:
        seen["closed_by_node"] += 1
    finally:
        _close(writer)


async def slowloris(target: Target, until_s: float) -> Counter[str]:
    seen: Counter[str] = Counter()
    opens = 0
    while time.monotonic() < until_s and opens < OPENS_MAX:
        batch = min(SLOWLORIS_CONNECTIONS, OPENS_MAX - opens)
        await asyncio.gather(*(_trickle(target, opens + k, until_s, seen) for k in range(batch)))
        opens += batch
    seen["opened"] = opens
    return seen


async def _stuff(target: Target, n: int, seen: Counter[str]) -> None:
    if (opened := await _open(target, n, seen)) is None:
        return
    reader, writer = opened
    try:
        writer.write(b"GET /v1/status HTTP/1.1\r\nHost: node\r\n")
        pad = b"a" * HEADER_LINE_BYTES
        for line in range(STUFFED_LINES):
            writer.write(b"X-Stuff-%d: %s\r\n" % (line, pad))
            await asyncio.wait_for(writer.drain(), IO_TIMEOUT_S)
        seen["stuffed_whole"] += 1
    except (OSError, TimeoutError):
        seen["cut_by_node"] += 1
    finally:
        await _status(reader, seen)
        _close(writer)


async def header_stuffing(target: Target, until_s: float) -> Counter[str]:
    """STUFFERS connections (STUFFERS_AT_ONCE at a time) each sending 120 lines of 8 KB of
    headers, then closing; again from the start until the time is up (bounded)."""
    seen: Counter[str] = Counter()
    opens = 0
    while time.monotonic() < until_s and opens < OPENS_MAX:
        for start in range(0, STUFFERS, STUFFERS_AT_ONCE):
            if time.monotonic() >= until_s:
                break
            await asyncio.gather(*(_stuff(target, opens + start + k, seen)
                                   for k in range(STUFFERS_AT_ONCE)))  # fmt: skip
        opens += STUFFERS
    seen["opened"] = opens
    return seen


async def _half_body(target: Target, n: int, until_s: float, seen: Counter[str]) -> None:
    if (opened := await _open(target, n, seen)) is None:
        return
    reader, writer = opened
    chunk = bytes(CHUNK_BYTES)
    try:
        writer.write(
            b"POST /peer/v1/messages HTTP/1.1\r\nHost: node\r\nContent-Type: application/msgpack"
            b"\r\nContent-Length: %d\r\n\r\n" % HALF_BODY_BYTES
        )
        for _ in range(HALF_BODY_BYTES // 2 // CHUNK_BYTES):
            if reader.at_eof():
                break
            writer.write(chunk)
            await asyncio.wait_for(writer.drain(), IO_TIMEOUT_S)
        remaining = max(0.0, until_s - time.monotonic())
        with contextlib.suppress(TimeoutError):  # then stall: the node's body timeout acts
            line = await asyncio.wait_for(reader.readline(), remaining)
            seen[f"http_{line.split()[1].decode()}" if line else "closed_by_node"] += 1
    except (OSError, TimeoutError, IndexError):
        seen["cut_by_node"] += 1
    finally:
        _close(writer)


async def half_bodies(target: Target, until_s: float) -> Counter[str]:
    seen: Counter[str] = Counter()
    opens = 0
    while time.monotonic() < until_s and opens < OPENS_MAX:
        await asyncio.gather(*(_half_body(target, opens + k, until_s, seen)
                               for k in range(HALF_BODIES)))  # fmt: skip
        opens += HALF_BODIES
    seen["opened"] = opens
    return seen


def _garbage_batch(net: Network, rng: random.Random) -> bytes:
    """GARBAGE_BATCH_TXS well-formed txs of a real client, each with a random signature."""
    client = net.client_for("permits/")
    stamp = now_ms()
    raws = [
        encode([txs.TX_VERSION, net.genesis.chain_id, client, rng.getrandbits(62), stamp,
                f"permits/garbage/{i}", "fault.record", {"i": i}, rng.randbytes(64)])
        for i in range(GARBAGE_BATCH_TXS)
    ]  # fmt: skip
    return json.dumps({"transactions": [{"raw": r.hex()} for r in raws]}).encode()


def signed_headers(target: Target, method: str, path: bytes, body: bytes) -> bytes:
    """The authentication headers of a request signed by the permits clerk (an insider: a
    client of the chain, who may read and write `permits/`)."""
    client = target.net.client_for("permits/")
    headers = wire.sign_headers(
        target.net.client_keys[client], chain_id=target.net.genesis.chain_id, identity=client,
        method=method, target=path.decode(), body=body, now_ms=now_ms(),
    )  # fmt: skip
    return b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items())


async def _post(
    target: Target, n: int, path: bytes, body: bytes, kind: bytes, *, signed: bool = False
) -> str:
    if (opened := await _open(target, n)) is None:
        return "refused_at_connect"
    reader, writer = opened
    try:
        head = b"POST %s HTTP/1.1\r\nHost: node\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
        auth = signed_headers(target, "POST", path, body) if signed else b""
        writer.write(head % (path, kind, len(body)) + auth + b"Connection: close\r\n\r\n")
        for at in range(0, len(body), CHUNK_BYTES):
            writer.write(body[at : at + CHUNK_BYTES])
            await asyncio.wait_for(writer.drain(), IO_TIMEOUT_S * 4)
        line = await asyncio.wait_for(reader.readline(), IO_TIMEOUT_S * 4)
        return f"http_{line.split()[1].decode()}" if line else "closed_by_node"
    except (OSError, TimeoutError, IndexError):
        return "cut_by_node"
    finally:
        _close(writer)


async def _repeat(
    target: Target, until_s: float, loops: int, make: Callable[[int], tuple[bytes, bytes, bytes]],
    *, signed: bool = False,
) -> Counter[str]:  # fmt: skip
    seen: Counter[str] = Counter()

    async def loop(w: int) -> None:
        k = 0
        while time.monotonic() < until_s and k < OPENS_MAX // loops:
            seen[await _post(target, w + loops * k, *make(k), signed=signed)] += 1
            k += 1

    await asyncio.gather(*(loop(w) for w in range(loops)))
    return seen


async def garbage_txs(target: Target, until_s: float) -> Counter[str]:
    """Signed requests of a real client (anonymous ones stop at authentication, 401, before
    any tx is read), each carrying txs with random signatures."""
    return await _repeat(target, until_s, 2, lambda k: (
        b"/v1/transactions", target.payloads[f"garbage{k % GARBAGE_BATCHES}"],
        b"application/json"), signed=True)  # fmt: skip


def forged_envelope(net: Network, size: int) -> bytes:
    """A PrePrepare "from" validator 1 whose body is `size` random bytes and whose signature
    is random: what a non-validator can send."""
    head = msgpack.packb([1, net.genesis.chain_id, 1], use_bin_type=True)[1:]
    return b"\x95" + head + os.urandom(size) + b"\xc4\x40" + os.urandom(64)


async def forged_peer_bodies(target: Target, until_s: float) -> Counter[str]:
    return await _repeat(target, until_s, 2, lambda _k: (
        b"/peer/v1/messages", target.payloads["forged"], b"application/msgpack"))  # fmt: skip


async def history_readers(target: Target, until_s: float) -> Counter[str]:
    path = f"/v1/history/{target.hot_key}?limit=10000".encode()

    async def read(n: int) -> str:
        if (opened := await _open(target, n)) is None:
            return "refused_at_connect"
        reader, writer = opened
        try:
            auth = signed_headers(target, "GET", path, b"")  # a client reading its own records
            writer.write(b"GET %s HTTP/1.1\r\nHost: node\r\n%sConnection: close\r\n\r\n"
                         % (path, auth))  # fmt: skip
            # A page asked for before the time is up may finish a little after it, not long.
            left_s = max(0.0, until_s - time.monotonic())
            answer = await asyncio.wait_for(reader.read(), left_s + PAGE_GRACE_S)
            status = answer.split(b" ", 2)[1].decode() if answer else "closed"
            body = answer.partition(b"\r\n\r\n")[2]
            full = status == "200" and len(json.loads(body)["versions"]) == 10_000
            return f"http_{status}" + ("_10000_versions" if full else "")
        except (OSError, TimeoutError, ValueError, IndexError):
            return "cut_by_node"
        finally:
            _close(writer)

    seen: Counter[str] = Counter()

    async def loop(w: int) -> None:
        k = 0
        while time.monotonic() < until_s and k < OPENS_MAX // HISTORY_READERS:
            seen[await read(w + HISTORY_READERS * k)] += 1
            k += 1

    await asyncio.gather(*(loop(w) for w in range(HISTORY_READERS)))
    return seen


ATTACKS: Final[dict[str, Attack]] = {
    "idle_connections": idle,
    "slowloris": slowloris,
    "header_stuffing": header_stuffing,
    "half_sent_bodies": half_bodies,
    "garbage_signed_txs": garbage_txs,
    "forged_peer_bodies": forged_peer_bodies,
    "history_readers": history_readers,
}

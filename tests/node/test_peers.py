"""Peer transport: a slow or dead peer never blocks the others; queues stay bounded."""

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable

import msgpack
import pytest
from aiohttp import web

from consensus.events import FETCH_BLOCKS_MAX
from consensus.replica import ReplicaConfig
from ledger import genesis as genesis_mod
from node.peers import MESSAGES_PATH, PeerTransport, decode_batch, decode_blocks
from tests import factory
from tests.node.conftest import bind_socket, within

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def serve(handler: Handler) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.router.add_post(MESSAGES_PATH, handler)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    sock = bind_socket()
    await web.SockSite(runner, sock).start()
    return runner, sock.getsockname()[1]


@pytest.fixture
async def peers() -> AsyncIterator[dict[str, object]]:
    received: list[bytes] = []
    arrived = asyncio.Condition()
    release = asyncio.Event()

    async def fast(request: web.Request) -> web.StreamResponse:
        batch = decode_batch(await request.read())
        async with arrived:
            received.extend(batch)
            arrived.notify_all()
        return web.Response(status=204)

    async def slow(_request: web.Request) -> web.StreamResponse:
        await release.wait()  # never answers while the test runs
        return web.Response(status=204)

    fast_runner, fast_port = await serve(fast)
    slow_runner, slow_port = await serve(slow)
    dead = bind_socket()
    dead_port = dead.getsockname()[1]
    dead.close()  # nothing listens there any more: connections are refused
    try:
        yield {"received": received, "arrived": arrived, "ports": (slow_port, fast_port, dead_port)}
    finally:
        release.set()
        await fast_runner.cleanup()
        await slow_runner.cleanup()


async def test_a_slow_and_a_dead_peer_do_not_delay_the_others(peers: dict) -> None:
    net = factory.network(4)
    doc = net.genesis.to_dict()
    for i, port in enumerate(peers["ports"], start=1):
        doc["validators"][i]["url"] = f"http://127.0.0.1:{port}"
    failures: Counter[tuple[str, str]] = Counter()
    genesis = genesis_mod.from_dict(doc)
    ids = [v.id for v in genesis.validators]
    transport = PeerTransport(
        genesis, ids[0], queue_max=8, timeout_ms=30_000, body_bytes_max=1 << 20,
        send_failed=lambda peer, why: failures.update([(peer, why)]),
    )  # fmt: skip
    await transport.start()
    try:
        arrived: asyncio.Condition = peers["arrived"]
        for i in range(50):  # each message reaches the fast peer while the others are stuck
            transport.broadcast(b"message %d" % i)
            async with arrived:
                await within(arrived.wait_for(lambda i=i: len(peers["received"]) > i), 10)
        assert peers["received"] == [b"message %d" % i for i in range(50)]
        assert transport.queued(ids[1]) <= 8  # the slow peer's queue stays bounded...
        assert failures[(ids[1], "queue_full")] > 0  # ...by dropping its oldest messages
        assert failures[(ids[3], "unreachable")] > 0
    finally:
        await within(transport.close())


def test_batches_and_block_answers_from_peers_are_decoded_or_refused() -> None:
    assert decode_batch(msgpack.packb([b"a", b"b"])) == [b"a", b"b"]
    for bad in (b"\xc1", msgpack.packb([1]), msgpack.packb({"a": 1}), msgpack.packb([b""] * 300)):
        with pytest.raises(ValueError, match=r"msgpack|array|byte string"):
            decode_batch(bad)
    net = factory.network(4)
    pairs = [(b.encode(), c.encode()) for b, c in factory.chain(net, 3, 2)]
    assert [b.height for b, _ in decode_blocks(msgpack.packb(pairs))] == [1, 2, 3]
    broken = [*pairs[:2], (b"junk", pairs[2][1])]
    assert len(decode_blocks(msgpack.packb(broken))) == 2  # the decodable prefix
    assert decode_blocks(b"\xc1") == ()
    assert decode_blocks(msgpack.packb({"x": 1})) == ()


def test_one_block_fetch_limit_bounds_the_request_and_the_answer_read() -> None:
    """FETCH_BLOCKS_MAX is the one limit: a replica asks for no more, a node serves no more
    (node/app.py clips the range to it) and reads no more of an answer."""
    net = factory.network(4)
    pairs = [(b.encode(), c.encode()) for b, c in factory.chain(net, FETCH_BLOCKS_MAX + 3, 1)]
    assert len(decode_blocks(msgpack.packb(pairs))) == FETCH_BLOCKS_MAX
    assert ReplicaConfig().fetch_blocks_max == FETCH_BLOCKS_MAX
    with pytest.raises(AssertionError):
        ReplicaConfig(fetch_blocks_max=FETCH_BLOCKS_MAX + 1)

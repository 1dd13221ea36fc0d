"""The event stream through a node failure: a subscriber follows node 3's `/v1/events` while
1,000 txs commit; node 3 is killed (kill -9) halfway; the subscriber reconnects to another node
with the last event id it received. It must see every committed tx exactly once, and every
block exactly once, in chain order: nothing missed, nothing twice.
"""

import asyncio
import contextlib
from collections import Counter
from pathlib import Path
from typing import Final

import aiohttp

from cli.client.events import Event, EventParser
from tests.faults.conftest import ClusterFactory
from tests.faults.figures import report
from tests.faults.harness import Cluster, loopback_network, make_tx

TXS: Final = 1000
BATCH: Final = 50
SUBSCRIBED: Final = 3  # not the primary of view 0: the chain goes on without a view change
STREAM_TIMEOUT: Final = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=30)


class Subscriber:
    """Follows one node's event stream; on any failure, another live node's, from its last id."""

    def __init__(self, c: Cluster) -> None:
        self.c = c
        self.events: list[Event] = []
        self.last_id: str | None = None
        self.reconnects = 0
        self.node = SUBSCRIBED
        self.connected = asyncio.Event()

    async def run(self) -> None:
        while True:
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                await self._stream()
            self.reconnects += 1
            live = [i for i in self.c.live() if i != SUBSCRIBED]
            self.node = live[self.reconnects % len(live)]

    async def _stream(self) -> None:
        headers = {"Last-Event-ID": self.last_id} if self.last_id else {}
        params = {} if self.last_id else {"from": "1"}
        url = self.c.api(self.node) + "/v1/events"
        async with self.c.http.get(
            url, headers=headers, params=params, timeout=STREAM_TIMEOUT,
            middlewares=self.c.signing,
        ) as r:  # fmt: skip
            assert r.status == 200, await r.text()
            self.connected.set()
            parser = EventParser()
            async for raw in r.content:
                event = parser.line(raw.decode().rstrip("\r\n"))
                if event is not None and event.event in ("tx", "block"):
                    self.events.append(event)
                    self.last_id = event.id

    def heights_seen(self) -> int:
        blocks = [e.data["height"] for e in self.events if e.event == "block"]
        return blocks[-1] if blocks else 0


async def submit_batch(c: Cluster, node: int, first: int) -> list[str]:
    batch = [make_tx(c.net, "fiscal/", f"stream/{n}", {"n": n}, nonce=n)
             for n in range(first, first + BATCH)]  # fmt: skip
    body = {"transactions": [{"raw": t.raw.hex()} for t in batch]}
    async with c.http.post(
        c.api(node) + "/v1/transactions?wait=true", json=body, middlewares=c.signing,
        timeout=aiohttp.ClientTimeout(total=60),
    ) as r:  # fmt: skip
        assert r.status == 200, await r.text()
    return [t.tx_id.hex() for t in batch]


async def test_a_resuming_subscriber_misses_nothing_and_sees_nothing_twice(
    clusters: ClusterFactory, tmp_path: Path
) -> None:
    c = clusters(loopback_network(tmp_path / "net", 4))
    await c.start_all()
    subscriber = Subscriber(c)
    follow = asyncio.get_running_loop().create_task(subscriber.run())
    try:
        await asyncio.wait_for(subscriber.connected.wait(), 30)
        submitted: list[str] = []
        for k, first in enumerate(range(0, TXS, BATCH)):
            if first == TXS // 2:
                await c.kill(SUBSCRIBED)
            submitted += await submit_batch(c, k % 3, first)
        # Every tx is acknowledged, so no block comes after the head the live nodes agree on
        # (one node's own height may still lag behind the node that acknowledged the last tx).
        head = (await c.wait_converged())["height"]
        await c.wait_for(f"the subscriber at block {head}",
                         lambda: subscriber.heights_seen() >= head, 60)  # fmt: skip
    finally:
        follow.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follow

    txs = Counter(e.data["tx_id"] for e in subscriber.events if e.event == "tx")
    assert set(txs) == set(submitted), "missed or foreign txs"
    assert max(txs.values()) == 1, [t for t, n in txs.items() if n > 1]
    blocks = [e.data["height"] for e in subscriber.events if e.event == "block"]
    assert blocks == list(range(1, head + 1))  # every block once, in order
    assert subscriber.reconnects >= 1, "the kill never broke the stream"
    report(
        "event stream through a kill -9",
        f"{TXS} txs in {head} blocks, each seen once by a subscriber that reconnected "
        f"{subscriber.reconnects} time(s) with its last event id",
    )

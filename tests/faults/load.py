"""A steady load of client-signed txs against a real cluster, and what it was told.

`Load` runs `workers` loops; each signs a fresh tx, posts it to a live node of its choice with
`?wait=true` and records the answer. A tx is *acknowledged* only when a node answered 200 with
`status: committed` (its height and index): those are the txs that must never be lost. Every
other outcome (202 pending, a refusal, a connection cut by a kill -9) is counted by kind and
promises nothing. The loops are bounded by their own stop event and each request by a timeout.
"""

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import aiohttp

from ledger.tx import Transaction
from tests.faults.harness import Cluster, make_tx

REQUEST_TIMEOUT_S: Final = 20.0
NAMESPACES: Final = ("fiscal/", "permits/", "claims/harbor-mutual/", "policies/civic-shield/")


@dataclass
class Ack:
    at_s: float  # time.monotonic() when the commit was acknowledged
    height: int
    index: int
    node: int
    client: str = ""  # the client that signed the tx


@dataclass
class Load:
    cluster: Cluster
    rng: random.Random
    workers: int = 4
    targets: Callable[[], list[int]] | None = None  # which nodes to submit to (default: live)
    acked: dict[bytes, Ack] = field(default_factory=dict)
    outcomes: Counter[str] = field(default_factory=Counter)
    _nonce: int = 0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> "Load":
        self._tasks = [asyncio.create_task(self._worker(w)) for w in range(self.workers)]
        return self

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.wait_for(asyncio.gather(*self._tasks), REQUEST_TIMEOUT_S + 5)

    def acks_between(self, start_s: float, end_s: float) -> int:
        return sum(1 for a in self.acked.values() if start_s <= a.at_s < end_s)

    async def _worker(self, w: int) -> None:
        k = 0
        while not self._stop.is_set():
            live = (self.targets or self.cluster.live)()
            if not live:
                await asyncio.wait_for(self._stop.wait(), timeout=None)
                return
            node = self.rng.choice(live)
            namespace = NAMESPACES[w % len(NAMESPACES)]
            self._nonce += 1
            tx = make_tx(
                self.cluster.net, namespace, f"load/w{w}/{k}", {"worker": w, "seq": k},
                nonce=self._nonce,
            )  # fmt: skip
            k += 1
            await self._submit(node, tx)

    async def _submit(self, node: int, tx: Transaction) -> None:
        try:
            status, body = await self.cluster.submit(node, tx, timeout_s=REQUEST_TIMEOUT_S)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            self.outcomes[f"no answer ({type(exc).__name__})"] += 1
            return
        if status == 200 and body.get("status") == "committed":
            self.acked[tx.tx_id] = Ack(
                time.monotonic(), body["height"], body["index"], node, tx.client_id
            )
            self.outcomes["committed"] += 1
        else:
            self.outcomes[f"{status} {body.get('status') or body.get('error')}"] += 1

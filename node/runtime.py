"""Everything one running node holds, opened and closed in order: store, replica, transport.

`open_runtime` is an async context manager (it backs the app's `cleanup_ctx`): it opens the
store and recovers from it in O(log n) reads whatever the chain length, rebuilds the replica
from the store's head and its persisted consensus state, starts the peer transport and sends
the replica `Start()`. On exit it stops the replica first (no timer fires and nothing is
committed after that), then the transport and the verify pool, and closes the store last.
`Runtime.receive` is the way in for peer messages: `TxBatch`es go through admission like client
txs (a peer is never trusted), everything else to the replica after decoding.
"""

import contextlib
import functools
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from consensus import messages
from consensus.events import Received
from consensus.replica import Replica, ReplicaConfig
from ledger.block import ChainHead
from ledger.store import BlockStore
from node.admission import Admission
from node.config import Config, Identity
from node.metrics import Metrics, Snapshot
from node.peers import PeerTransport
from node.shell import Clock, Shell

log = logging.getLogger("cityledger.node")


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def snapshot(r: Replica) -> Snapshot:
    return Snapshot(r.committed_height, r.view, r.pending, r.in_view_change, r.counters)


@dataclass
class Runtime:
    config: Config
    identity: Identity
    store: BlockStore
    shell: Shell
    admission: Admission
    transport: PeerTransport
    metrics: Metrics
    clock: Clock

    @property
    def replica(self) -> Replica:
        return self.shell.replica

    async def receive(self, envelopes: Sequence[bytes]) -> None:
        """Peer message envelopes in arrival order; bad ones are counted and dropped."""
        chain_id = self.identity.genesis.chain_id
        for raw in envelopes:
            try:
                msg = messages.decode_message(raw, chain_id)
            except messages.InvalidMessage:
                self.metrics.invalid_peer_messages.labels("malformed").inc()
                continue
            if isinstance(msg, messages.TxBatch):
                await self._receive_txs(msg)
            else:
                self.shell.handle(Received(msg))

    async def _receive_txs(self, batch: messages.TxBatch) -> None:
        genesis = self.identity.genesis
        if batch.sender == self.identity.index or not messages.verify_signature(batch, genesis):
            self.metrics.invalid_peer_messages.labels("bad_signature").inc()
            return
        # Pending or committed copies are common (every tx is relayed to everyone): skip them
        # before paying for signatures.
        fresh = [t for t in batch.txs if self.admission.is_new(t.tx_id)]
        verdict = await self.admission.admit(fresh, self.clock())
        self.shell.submit(verdict.accepted, relayed=True)  # no await since admit: still new


@contextlib.asynccontextmanager
async def open_runtime(
    config: Config, identity: Identity, *, clock: Clock = wall_clock_ms,
    replica_config: ReplicaConfig | None = None,
    on_failure: Callable[[BaseException], None] = lambda _: None,
) -> AsyncIterator[Runtime]:  # fmt: skip
    genesis = identity.genesis
    config.data_dir.mkdir(parents=True, exist_ok=True)
    store = BlockStore.open(config.data_dir, genesis)
    executor = ThreadPoolExecutor(
        max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="verify"
    )
    runtime: Runtime | None = None
    try:
        runtime = _build(config, identity, store, executor, clock, replica_config, on_failure)
        await runtime.transport.start()
        runtime.shell.start()
        log.info("node started", extra={
            "node_id": config.node_id, "chain_id": genesis.chain_id, "height": store.height,
            "view": runtime.replica.view, "listen": f"{config.host}:{config.port}",
        })  # fmt: skip
        yield runtime
    finally:
        if runtime is not None:
            runtime.shell.close()
            await runtime.transport.close()
        executor.shutdown(wait=True, cancel_futures=True)
        store.close()
        log.info("node stopped, store closed", extra={"node_id": config.node_id})


def _build(
    config: Config, identity: Identity, store: BlockStore, executor: ThreadPoolExecutor,
    clock: Clock, replica_config: ReplicaConfig | None,
    on_failure: Callable[[BaseException], None],
) -> Runtime:  # fmt: skip
    genesis = identity.genesis
    head: ChainHead = store.head
    replica = Replica(
        genesis, identity.index, identity.key, head,
        is_committed=lambda tx_id: store.tx_location(tx_id) is not None,
        persisted=store.consensus_state(),
        config=replica_config or ReplicaConfig(pool_capacity=config.pool_capacity),
        head_certificate=store.certificate(head.height) if head.height else None,
    )  # fmt: skip
    metrics = Metrics(functools.partial(snapshot, replica))

    def send_failed(peer: int, why: str) -> None:
        metrics.peer_send_failures.labels(str(peer), why).inc()

    transport = PeerTransport(
        genesis, identity.index, queue_max=config.peer_queue_max,
        timeout_ms=config.peer_timeout_ms, body_bytes_max=config.peer_body_bytes_max,
        send_failed=send_failed,
    )  # fmt: skip
    shell = Shell(
        replica, store, transport, metrics, clock,
        fetch_timeout_ms=min(config.peer_timeout_ms, replica.config.fetch_timeout_ms),
        on_failure=on_failure,
    )  # fmt: skip
    admission = Admission(
        genesis, is_committed=lambda tx_id: store.tx_location(tx_id) is not None,
        is_pending=replica.has_pending, executor=executor,
    )  # fmt: skip
    return Runtime(config, identity, store, shell, admission, transport, metrics, clock)

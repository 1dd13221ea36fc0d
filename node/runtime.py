"""Everything one running node holds, opened and closed in order: store, replica, transport.

`open_runtime` is an async context manager (it backs the app's `cleanup_ctx`): it opens the
store and recovers from it in O(log n) reads whatever the chain length, rebuilds the replica
from the store's head and its persisted consensus state, starts the peer transport and sends
the replica `Start()`. On exit it stops the replica first (no timer fires and nothing is
committed after that), then the transport and the verify pool, and closes the store last.
A node the set in force does not hold (a validator joining, removed, or on a rotated key)
gets a retired replica and a `Follower` (node/epochs.py) that appends certified blocks
fetched from the validators in force; once a set seats it, a new replica and shell take over.
`Runtime.receive` is the way in for peer messages: each envelope's sender and signature are
checked first (`node.envelopes`, before its body is decoded); then `TxBatch`es go through
admission like client txs (a peer is never trusted), everything else to the replica.
"""

import asyncio
import contextlib
import ctypes
import functools
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Final

from consensus import messages
from consensus.events import Received
from consensus.replica import Replica, ReplicaConfig
from ledger.block import Block, ChainHead
from ledger.genesis import Genesis
from ledger.gov import history
from ledger.gov.config import Config as GovConfig
from ledger.gov.history import config_of
from ledger.kinds.risks import Alert
from ledger.store import BlockStore
from ledger.tx import Transaction
from node import envelopes, epochs, govevents, tls
from node.admission import Admission
from node.blockview import certifiers
from node.config import DATA_DIR_MODE, Config, Identity, machine_cores
from node.eventhub import EventHub
from node.health import Watch
from node.metrics import Metrics, Snapshot
from node.ordering import Gate, peer_txs, relayer_ok
from node.peers import PeerTransport
from node.shell import Clock, Shell
from node.votes import VoteLog

log = logging.getLogger("cityledger.node")

RECEIVE_TASKS_MAX: Final = 64  # peer messages being admitted at once before senders wait
VERIFY_THREADS_MAX: Final = 4  # signature-checking threads of a node with many cores
_PR_SET_NAME: Final = 15  # prctl(2): set the calling thread's name


def name_os_thread() -> None:
    """Give the calling thread its Python name in the OS as well (Linux: the first 15 bytes),
    so that `top -H`, `ps -L` and /proc tell the verify pool from the store writer."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_NAME, threading.current_thread().name.encode()[:15], 0, 0, 0)


def _executors(cores: int) -> tuple[ThreadPoolExecutor | None, ThreadPoolExecutor | None]:
    """The verify pool and the store writer for a node with `cores` cores to itself. Threads
    pay off only when they can run beside the event loop: on one core their hand-offs (the
    GIL, wake-ups) cost more CPU than they save (docs/benchmarks.md), so there the event loop
    checks signatures and syncs writes itself."""
    if cores < 2:
        return None, None
    pool = ThreadPoolExecutor(
        min(cores, VERIFY_THREADS_MAX), thread_name_prefix="verify", initializer=name_os_thread
    )
    writer = ThreadPoolExecutor(1, thread_name_prefix="store-writer", initializer=name_os_thread)
    return pool, writer


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def snapshot(r: Replica, store: BlockStore) -> Snapshot:
    """A follower's store is ahead of its retired replica; a validator's replica may be ahead
    of its store by the write under way."""
    height = max(r.committed_height, store.height)
    return Snapshot(height, r.view, r.pending, r.in_view_change, r.counters)


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
    watch: Watch
    events: EventHub
    votes: VoteLog  # the votes and view changes this node saw (`GET /v1/votes`)

    @property
    def replica(self) -> Replica:
        return self.shell.replica

    def configuration(self) -> GovConfig:
        """The configuration in force after the stored head (ledger/gov)."""
        return config_of(self.store.rule_state, self.identity.genesis)

    def members(self) -> Genesis:
        """The configuration in force in the genesis's shape: who may sign, write and read."""
        return self.configuration().members

    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    ticker: asyncio.Task[None] | None = None  # `watch_peers`
    # Called with the members of each epoch the store enters (and of the one at the start).
    on_epoch: list[Callable[[Genesis], None]] = field(default_factory=list)
    # A replica and its shell for this node's index in the set in force (`_build`).
    new_shell: Callable[[int], Shell] | None = None
    # Called with each block once it is in the store (and the alerts it raised).
    on_block: Callable[[Block, tuple[Alert, ...]], None] = lambda _block, _alerts: None
    follower: epochs.Follower | None = None  # while the set in force does not seat this node
    _version: int = -1  # of the configuration the node last followed (ledger/gov/history.py)

    @property
    def following(self) -> bool:
        """Not a validator of the set in force: the node follows the chain and votes nothing."""
        return self.replica.retired

    def follow_configuration(self) -> None:
        """After each block written: if it changed the configuration, follow the set in
        force; the transport sends what the replica emits from then on to the new set. A
        replica the set no longer holds (removed, or its key rotated out) has retired: the
        node then follows the chain as a reader until a set seats it again."""
        version, _ = history.head(self.store.rule_state, self.identity.genesis)
        if version != self._version:
            self._version = version
            members = self.members()
            self.transport.reconfigure(members)
            for listener in self.on_epoch:
                listener(members)
        if self.following and self.follower is None and not self.shell.closed:
            self.follower = epochs.Follower(
                self.store, self.transport, self.configuration, self.identity,
                idle=self._idle, appended=self.on_block, seated=self._seat,
            )  # fmt: skip
            self.follower.start()

    def _idle(self) -> bool:
        """No write of the replica's under way or queued: the follower may append."""
        outbox = self.shell.outbox
        return outbox.writing is None and len(outbox) == 0

    def _seat(self, index: int) -> None:
        """The set in force holds this node again (or at last): a new replica, at the
        stored head, takes part from here (the retired one handled nothing since it left)."""
        assert self.new_shell is not None
        retired, self.shell = self.shell, self.new_shell(index)
        retired.close()
        self.follower = None
        self.watch.use(self.replica)
        self.shell.start()

    async def receive(self, batch: Sequence[bytes]) -> None:
        """Peer message envelopes in arrival order; bad ones are counted and dropped.

        Messages that need signature checks of client txs (a `TxBatch`, or a `PrePrepare` with
        txs this node has not admitted yet) are handled by tasks of their own, so that the
        votes behind them are not held up while the verify pool works (the transport may
        reorder anyway); at most `RECEIVE_TASKS_MAX` such tasks run, then the sender waits."""
        if self.following:
            return  # nobody's peer: a follower takes part in nothing (its blocks it fetches)
        epoch, own_index = self.replica.epoch, self.replica.index  # the set it judges with
        chain_id = self.identity.genesis.chain_id
        for raw in batch:
            # The envelope first: sender and signature before anything of the body is decoded.
            refused = await self._check_envelope(raw)
            if refused is not None:
                self.metrics.invalid_peer_messages.labels(refused).inc()
                continue
            try:
                msg = messages.decode_message(raw, chain_id, self._known_tx, epoch.size)
            except messages.InvalidMessage as exc:
                self.metrics.invalid_peer_messages.labels(exc.reason).inc()
                continue
            self.watch.heard(msg.sender)
            self.votes.saw(msg)
            if isinstance(msg, messages.TxBatch) and not relayer_ok(msg, epoch.members, own_index):
                self.metrics.invalid_peer_messages.labels(messages.Reason.BAD_SIGNATURE).inc()
                continue
            fresh, forward = peer_txs(msg, self.replica.has_pending)  # node/ordering.py
            if fresh and isinstance(msg, messages.PrePrepare) and not self.replica.screen(msg):
                continue  # its own signature (one check) before its txs' (hundreds); counted
            if fresh:
                await self._spawn(self._admit_then_forward(fresh, msg if forward else None))
            elif forward:
                self.shell.handle(Received(msg))

    async def _check_envelope(self, raw: bytes) -> str | None:
        """The sender's place and key in the set the replica is in (a retired replica's set
        is the one it left: it drops whatever comes)."""
        members, me = self.replica.epoch.members, self.replica.index
        if len(raw) < envelopes.OFF_LOOP_BYTES_MIN:
            return envelopes.check(raw, members, me)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, envelopes.check, raw, members, me)

    def _known_tx(self, tx_id: bytes) -> Transaction | None:
        """A tx this node has decoded already (pooled, or being admitted): a proposed block's
        txs mostly are, and are then not parsed again."""
        return self.replica.pending_tx(tx_id) or self.admission.in_flight_tx(tx_id)

    async def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        while len(self.tasks) >= RECEIVE_TASKS_MAX:
            await asyncio.wait(self.tasks, return_when=asyncio.FIRST_COMPLETED)
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("handling a peer message failed", exc_info=task.exception())

    async def _admit_then_forward(
        self, fresh: Sequence[Transaction], msg: messages.Message | None
    ) -> None:
        """Admit a peer message's new txs (as if relayed), then hand the message itself (a
        PrePrepare) to the replica: their signatures are then checked once, on the verify
        pool, and not by the replica on the event loop (it checks only txs it has not pooled)."""
        await self._admit_relayed(fresh)
        if msg is not None:
            self.shell.handle(Received(msg))

    async def _admit_relayed(self, batch: Sequence[Transaction]) -> None:
        await self.admission.settled(t.tx_id for t in batch)  # concurrent admissions first
        fresh = [t for t in batch if not self.admission.is_known(t.tx_id)]
        if fresh:
            verdict = await self.admission.admit(fresh, self.clock())
            self.shell.submit(verdict.admitted, relayed=True)

    async def watch_peers(self) -> None:
        """Tell the watch that time passes (a silent peer is noticed only so), until cancelled."""
        interval_s = self.replica.config.retransmit_ms / 1000
        while True:
            await asyncio.sleep(interval_s)  # a timer, not a wait for something
            self.watch.tick()
            self.metrics.ready.set(int(self.watch.readiness(closed=self.shell.closed).ready))

    async def close(self) -> None:
        """Stop the message tasks (the shell is closed first: they would change nothing)."""
        if self.follower is not None:
            await self.follower.stop()
        if self.ticker is not None:
            self.ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.ticker
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.wait(self.tasks)


@contextlib.asynccontextmanager
async def open_runtime(
    config: Config, identity: Identity, *, clock: Clock = wall_clock_ms,
    replica_config: ReplicaConfig | None = None,
    on_failure: Callable[[BaseException], None] = lambda _: None,
) -> AsyncIterator[Runtime]:  # fmt: skip
    genesis = identity.genesis
    config.data_dir.mkdir(mode=DATA_DIR_MODE, parents=True, exist_ok=True)  # owner only
    store = BlockStore.open(config.data_dir, genesis)
    executor, writer = _executors(config.cores or machine_cores())
    runtime: Runtime | None = None
    transport: PeerTransport | None = None
    failures = PeerFailures()
    try:
        configuration = functools.partial(config_of, store.rule_state, genesis)
        transport = PeerTransport(
            configuration().members, identity.validator_id, queue_max=config.peer_queue_max,
            timeout_ms=config.peer_timeout_ms, body_bytes_max=config.peer_body_bytes_max,
            send_failed=failures.send_failed,
            tls_identity=None if config.insecure else tls.identity_files(config.data_dir),
        )  # fmt: skip
        await transport.start()
        # A validator that governance adds, or whose key it rotates, or one it removed,
        # follows the chain until the set in force holds it (`Runtime.follow_configuration`).
        index = epochs.seat(configuration().members, identity.validator_id, identity.public_key)
        runtime = _build(
            config, identity, index, store, transport, failures, (executor, writer), clock,
            replica_config, on_failure,
        )  # fmt: skip
        runtime.follow_configuration()
        runtime.shell.start()
        runtime.watch.started = True
        runtime.ticker = asyncio.get_running_loop().create_task(runtime.watch_peers())
        log.info("node started", extra={
            "node_id": config.node_id, "chain_id": genesis.chain_id, "height": store.height,
            "view": runtime.replica.view, "listen": f"{config.host}:{config.port}",
            "epoch": runtime.replica.epoch.number, "index": index,
            "following": runtime.following,
        })  # fmt: skip
        yield runtime
    finally:
        if runtime is not None:
            runtime.shell.close()
            await runtime.close()
        if transport is not None:
            await transport.close()
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        if writer is not None:
            writer.shutdown(wait=True)  # a write under way ends before the store closes
        store.close()
        log.info("node stopped, store closed", extra={"node_id": config.node_id})


class PeerFailures:
    """Where the transport reports a message it could not deliver: a counter per peer id, and
    the watch (once the runtime has one)."""

    def __init__(self) -> None:
        self.metrics: Metrics | None = None
        self.watch: Watch | None = None

    def send_failed(self, peer_id: str, why: str) -> None:
        if self.metrics is not None:
            self.metrics.peer_send_failures.labels(peer_id, why).inc()
        if why == "unreachable" and self.watch is not None:
            self.watch.unreachable(peer_id)


class StoreRules:
    """The store's committed rule state as the replica reads it (consensus/rulestate.py)."""

    def __init__(self, store: BlockStore) -> None:
        self._store = store

    @property
    def height(self) -> int:
        return self._store.height

    def get(self, key: bytes) -> Any:
        return self._store.rule_state(key)


def _build(
    config: Config, identity: Identity, index: int | None, store: BlockStore,
    transport: PeerTransport, failures: PeerFailures,
    executors: tuple[ThreadPoolExecutor | None, ThreadPoolExecutor | None], clock: Clock,
    replica_config: ReplicaConfig | None, on_failure: Callable[[BaseException], None],
) -> Runtime:  # fmt: skip
    """`index`: this node's place in the set in force at the store's head (None: it has none
    and follows the chain); `executors`: the verify pool (admission) and the store writer (the
    shell); None: that work runs on the event loop."""
    genesis = identity.genesis
    executor, writer = executors
    gate = Gate()  # admission admits into it, the shell submits out of it
    runtime: Runtime | None = None

    def is_committed(tx_id: bytes) -> bool:
        # The shell's answer: the store may lag the replica's commits by the write under way.
        assert runtime is not None
        return runtime.shell.is_committed(tx_id)

    def is_pending(tx_id: bytes) -> bool:
        assert runtime is not None
        return runtime.replica.has_pending(tx_id)

    def new_replica(index: int) -> Replica:
        head: ChainHead = store.head
        return Replica(
            genesis, index, identity.key, head,
            is_committed=is_committed,
            persisted=store.consensus_state(),
            config=replica_config or ReplicaConfig(pool_capacity=config.pool_capacity),
            head_certificate=store.certificate(head.height) if head.height else None,
            state=StoreRules(store),
        )  # fmt: skip

    # A node the set does not seat gets a replica that is retired from the start: one of
    # the set's places, with a key that is not that validator's (keys are unique), votes on
    # nothing and handles no event; the node follows the chain until a set seats it.
    replica = new_replica(0 if index is None else index)
    assert replica.retired == (index is None)
    metrics = Metrics(lambda: snapshot(runtime.replica if runtime else replica, store))
    watch = Watch(replica, metrics, clock)
    failures.metrics, failures.watch = metrics, watch
    _known_series(metrics, transport)
    events = EventHub()
    votes = VoteLog(genesis, replica.index, lambda: store.height,
                    lambda height: certifiers(store, height).members)  # fmt: skip
    governance_events = govevents.on_commit(events.committed, store.rule_state)

    def on_commit(block: Block, alerts: tuple[Alert, ...]) -> None:
        governance_events(block, alerts)
        assert runtime is not None
        runtime.follow_configuration()

    def new_shell(index: int) -> Shell:
        r = replica if runtime is None else new_replica(index)
        return Shell(
            r, store, transport, metrics, clock,
            fetch_timeout_ms=min(config.peer_timeout_ms, r.config.fetch_timeout_ms),
            on_failure=on_failure, gate=gate, writer=writer, observe=watch.after_event,
            on_commit=on_commit, sent=votes.saw,
        )  # fmt: skip

    admission = Admission(
        genesis, gate=gate, is_committed=is_committed, is_pending=is_pending,
        executor=executor, configuration=functools.partial(config_of, store.rule_state, genesis),
    )  # fmt: skip
    runtime = Runtime(
        config, identity, store, new_shell(replica.index), admission, transport, metrics,
        clock, watch, events, votes, new_shell=new_shell, on_block=on_commit,
    )  # fmt: skip
    return runtime


def _known_series(metrics: Metrics, transport: PeerTransport) -> None:
    """The known series exist from the start, at 0."""
    for peer_id in transport.peers:
        for why in ("unreachable", "queue_full"):
            metrics.peer_send_failures.labels(peer_id, why)
    for reason in messages.Reason:
        metrics.invalid_peer_messages.labels(reason)

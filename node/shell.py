"""The glue between the sans-I/O replica and the world: events in, actions carried out.

This module carries out the order of things that node/ordering.py decides (the simulator runs
the same rules). Every event goes through `Shell.handle`, which hands it to the replica with
the current time. Timer actions take effect at once; every other action joins the `Outbox`,
carried out strictly in order: a `Persist` or `CommitBlock` is durable before any action queued
after it (a `Send` leaves, a fetch starts, a later write) takes effect. Each `Write` the outbox
plans (consecutive durable actions, of one event or of several) goes to the store as one synced
LevelDB batch on the `writer` thread, so the event loop goes on (decoding, admitting, counting
votes) during the fsync, and events arriving meanwhile share the next one; a node with one core
has no writer thread and writes on the loop (node/runtime.py says why). The replica may thus be
ahead of the store by the write under way: `is_committed` answers for both. Txs reach the
replica only through `submit`, which takes nothing but what the admission gate admitted.
`handle` never awaits, so events are serial without a lock. Fetches are tasks whose answer
comes back as a `BlocksFetched` event. An exception from the replica or the store is our bug
or a broken disk: the shell stops feeding the replica and reports it (`failure`), loudly.

It never decodes HTTP and never decides admission; it does resolve the `?wait=true` futures of
txs once their blocks are in the store.
"""

import asyncio
import functools
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from typing import Final

from consensus import messages
from consensus.events import (
    Action,
    BlocksFetched,
    Broadcast,
    CancelTimer,
    ClientTxs,
    CommitBlock,
    Event,
    FetchBlocks,
    Persist,
    Send,
    SetTimer,
    Start,
    Timeout,
    Timer,
    TxsExpired,
)
from consensus.replica import Replica
from consensus.rulestate import RuleStates
from ledger.block import Block
from ledger.kinds.risks import Alert
from ledger.store import BlockStore, PendingWrite
from ledger.storelayout import BlockWrite, StateWrite, Step
from node.metrics import Metrics
from node.ordering import Admitted, Durable, Gate, Outbox, Write
from node.peers import PeerTransport

ADMITTED_TRACKED_MAX: Final = 200_000  # admission times kept for the commit-latency histogram
EXPIRED_KEPT: Final = 10_000  # ids of txs that expired here, remembered for their status

log = logging.getLogger("cityledger.node.shell")

Clock = Callable[[], int]
"""Wall-clock milliseconds: block and tx timestamps are wall-clock, so the replica's too."""


class Shell:
    def __init__(
        self, replica: Replica, store: BlockStore, transport: PeerTransport, metrics: Metrics,
        clock: Clock, *, fetch_timeout_ms: int, on_failure: Callable[[BaseException], None],
        gate: Gate, writer: Executor | None = None, observe: Callable[[], None] = lambda: None,
        on_commit: Callable[[Block, tuple[Alert, ...]], None] = lambda _block, _alerts: None,
        sent: Callable[[messages.Message], None] = lambda _msg: None,
    ) -> None:  # fmt: skip
        """`writer`: the one thread that carries out the store's synced writes while the event
        loop goes on; None writes on the loop, blocking it (one-core nodes, tests, tools).
        `observe` is called after every event the replica handled (node/health.py), and
        `on_commit` with every block once it is in the store, and the risk alerts it raised
        (node/events.py); `sent` with every consensus message the replica sends (node/votes.py)."""
        self.replica = replica
        self._store = store
        self._transport = transport
        self._metrics = metrics
        self._clock = clock
        self._fetch_timeout_s = fetch_timeout_ms / 1000
        self._on_failure = on_failure
        self._chain_id = replica.genesis.chain_id
        self._timers: dict[Timer, asyncio.TimerHandle] = {}
        self._fetches: set[asyncio.Task[None]] = set()
        # Each waiter learns where its tx committed, or None if it expired from the pool.
        self._waiters: dict[bytes, list[asyncio.Future[tuple[int, int] | None]]] = {}
        self.expired: OrderedDict[bytes, None] = OrderedDict()  # recent, for the tx status
        self._admitted_ms: dict[bytes, int] = {}
        self._height_events: list[tuple[int, asyncio.Event]] = []
        self._writer = writer
        self._gate = gate  # shared with admission: what it admitted, and nothing else, goes in
        self._observe = observe
        self._on_commit = on_commit
        self._sent = sent
        self.outbox = Outbox()
        self.failure: BaseException | None = None
        self.closed = False

    # --- events ----------------------------------------------------------------------------

    def start(self) -> None:
        self.handle(Start())

    def handle(self, event: Event) -> None:
        """Feed one event to the replica; carry out its timer actions now and queue the rest
        behind whatever earlier events left queued (see the module docstring)."""
        if self.closed:
            return
        try:
            for action in self.outbox.push(self.replica.handle(event, self._clock())):
                self._execute(action)  # timers: local, no order with writes or sends to keep
            self._pump()
            self._observe()
        except Exception as exc:
            self._fail(exc)
            raise

    def _fail(self, exc: BaseException) -> None:
        log.critical("the replica or the store failed; the node stops: %r", exc, exc_info=exc)
        self.failure = exc
        self.close()
        self._on_failure(exc)

    def is_committed(self, tx_id: bytes) -> bool:
        """Committed by the replica: in the store, or in a block on its way there."""
        return self.outbox.is_unwritten(tx_id) or self._store.has_tx(tx_id)

    def _pump(self) -> None:
        """Carry out what the outbox lets out, in order, until a write is under way (or nothing
        is left); node/ordering.py says why one write for a run of durable actions is safe."""
        while not self.closed and (step := self.outbox.next()) is not None:
            if not isinstance(step, Write):
                self._execute(step)
                continue
            # Checked on the loop; a block the replica executed comes with what it wrote.
            pending = self._store.prepare([_step(a, self.replica.log.rules) for a in step.actions])
            if self._writer is None:
                pending.write()
                self._written(step, pending)
                continue
            loop = asyncio.get_running_loop()
            future = loop.run_in_executor(self._writer, pending.write)  # the fsync, off the loop
            future.add_done_callback(functools.partial(self._write_done, step, pending))

    def _write_done(
        self, write: Write, pending: PendingWrite, future: asyncio.Future[None]
    ) -> None:
        if self.closed:
            return
        try:
            future.result()
            self._written(write, pending)
            self._pump()
        except Exception as exc:  # noqa: BLE001 - the store or our bug: the node stops, loudly
            self._fail(exc)

    def _written(self, write: Write, pending: PendingWrite) -> None:
        self._store.advance(pending)
        self.outbox.written(write)
        raised: dict[int, list[Alert]] = {}
        for alert in pending.alerts:
            self._metrics.risk_alerts.labels(alert.kind).inc()
            raised.setdefault(alert.height, []).append(alert)
        for action in write.blocks:
            self._committed(action.block, tuple(raised.get(action.block.height, ())))

    def submit(self, admitted: Admitted, *, relayed: bool) -> int:
        """Hand admitted txs to the replica as far as its pool has room; return how many (the
        rest are turned away). The gate refuses anything it did not admit, or admitted and saw
        submitted already."""
        taken = self._gate.submit(admitted, self.replica.pool_free)
        if taken and not self.closed:
            if not relayed:
                now = self._clock()
                if len(self._admitted_ms) + len(taken) > ADMITTED_TRACKED_MAX:
                    self._admitted_ms.clear()  # txs that never committed: forget, stay bounded
                self._admitted_ms.update((t.tx_id, now) for t in taken)
            self.handle(ClientTxs(taken, relayed=relayed))
        return len(taken)

    # --- actions ---------------------------------------------------------------------------

    def _execute(self, action: Action) -> None:
        match action:
            case Send(to=to, message=msg):
                self._sent(msg)
                self._transport.send(to, messages.encode_message(msg, self._chain_id))
            case Broadcast(message=msg):
                self._sent(msg)
                self._transport.broadcast(messages.encode_message(msg, self._chain_id))
            case Persist() | CommitBlock():
                raise AssertionError("durable actions go through _pump")
            case SetTimer(timer=timer, at_ms=at_ms):
                self._set_timer(timer, at_ms)
            case CancelTimer(timer=timer):
                handle = self._timers.pop(timer, None)
                if handle is not None:
                    handle.cancel()
            case TxsExpired(tx_ids=tx_ids):
                self._expired(tx_ids)
            case FetchBlocks(peer=peer, from_height=low, to_height=high):
                task = asyncio.get_running_loop().create_task(self._fetch(peer, low, high))
                self._fetches.add(task)
                task.add_done_callback(self._fetches.discard)

    def _expired(self, tx_ids: Iterable[bytes]) -> None:
        """These txs left the pool at their time-to-live: answer their waiters now."""
        for tx_id in tx_ids:
            self._admitted_ms.pop(tx_id, None)
            self.expired[tx_id] = None
            self.expired.move_to_end(tx_id)
            for future in self._waiters.pop(tx_id, ()):
                if not future.done():
                    future.set_result(None)
        while len(self.expired) > EXPIRED_KEPT:
            self.expired.popitem(last=False)

    def _committed(self, block: Block, alerts: tuple[Alert, ...]) -> None:
        """`block` is in the store (with the risk `alerts` it raised): answer its waiters,
        count it."""
        now = self._clock()
        for index, tx in enumerate(block.txs):
            admitted = self._admitted_ms.pop(tx.tx_id, None)
            if admitted is not None:
                self._metrics.commit_latency.observe(max(now - admitted, 0) / 1000)
            for future in self._waiters.pop(tx.tx_id, ()):
                if not future.done():
                    future.set_result((block.height, index))
        for code in block.outcomes:
            if code:
                self._metrics.tx_refusals.labels(code).inc()
        self._metrics.txs_committed.inc(len(block.txs))
        self._metrics.blocks_committed.inc()
        self._metrics.last_commit.set(now / 1000)
        self._on_commit(block, alerts)
        remaining = []
        for height, event in self._height_events:
            if block.height >= height:
                event.set()
            else:
                remaining.append((height, event))
        self._height_events = remaining
        log.debug("block committed", extra={"height": block.height, "txs": len(block.txs)})

    def _set_timer(self, timer: Timer, at_ms: int) -> None:
        old = self._timers.pop(timer, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        delay_s = max(at_ms - self._clock(), 0) / 1000
        self._timers[timer] = loop.call_at(loop.time() + delay_s, self._fire, timer)

    def _fire(self, timer: Timer) -> None:
        self._timers.pop(timer, None)
        self.handle(Timeout(timer))

    async def _fetch(self, peer: int, low: int, high: int) -> None:
        try:
            got = await asyncio.wait_for(
                self._transport.fetch_blocks(peer, low, high), self._fetch_timeout_s
            )
        except TimeoutError:
            got = ()
        self.handle(BlocksFetched(peer, got))

    # --- waiting for commits ---------------------------------------------------------------

    async def wait_committed(
        self, tx_ids: Iterable[bytes], timeout_s: float
    ) -> dict[bytes, tuple[int, int] | None]:
        """Where each tx got committed, for those committed within `timeout_s`; None for those
        that expired from the pool meanwhile (they will not be proposed)."""
        loop = asyncio.get_running_loop()
        done: dict[bytes, tuple[int, int] | None] = {}
        mine: dict[bytes, asyncio.Future[tuple[int, int] | None]] = {}
        for tx_id in tx_ids:
            location = self._store.tx_location(tx_id)
            if location is not None:
                done[tx_id] = location
            elif not self.closed:
                mine[tx_id] = loop.create_future()
                self._waiters.setdefault(tx_id, []).append(mine[tx_id])
        try:
            if mine:
                await asyncio.wait(mine.values(), timeout=timeout_s)
        finally:
            for tx_id, future in mine.items():
                if future.done() and not future.cancelled():
                    done[tx_id] = future.result()
                self._forget_waiter(tx_id, future)
        return done

    def _forget_waiter(self, tx_id: bytes, future: asyncio.Future[tuple[int, int] | None]) -> None:
        futures = self._waiters.get(tx_id)
        if futures is not None and future in futures:
            futures.remove(future)
            if not futures:
                del self._waiters[tx_id]

    async def wait_height(self, height: int) -> None:
        """Return once the store's head reaches `height` (tests and operations)."""
        if self._store.height >= height:
            return
        event = asyncio.Event()
        self._height_events.append((height, event))
        await event.wait()

    # --- stopping --------------------------------------------------------------------------

    def wake_waiters(self) -> None:
        """Let every `?wait=true` request answer now (the node is shutting down)."""
        for futures in self._waiters.values():
            for future in futures:
                if not future.done():
                    future.cancel()
        self._waiters.clear()

    def close(self) -> None:
        """Stop feeding the replica: no timer fires and no fetch answers after this."""
        self.closed = True
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        for task in self._fetches:
            task.cancel()
        self.wake_waiters()


def _step(action: Durable, rules: RuleStates) -> Step:
    if isinstance(action, Persist):
        return StateWrite(action.puts, action.deletes)
    writes = rules.writes_of(action.block) if action.txs_checked else None
    return BlockWrite(action.block, action.certificate, action.txs_checked, writes)

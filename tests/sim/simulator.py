"""The deterministic simulator: N replicas in one process on a simulated millisecond clock.

It owns the event queue (ordered by time, then by a sequence number), the one seeded
`random.Random` every choice is drawn from, and the carrying-out of replica actions in the
order the node's own outbox rules (node/ordering.py) let them out: messages leave as bytes
through the simulated network (and the node's Byzantine behaviour, if any), each `Write` of
`Persist` and `CommitBlock` actions takes 0 to `WRITE_MS_MAX` ms (meanwhile later events are
handled and their actions queue behind it, as on the node; a crash during a write keeps all of
it or none), timers are queue entries, fetches are served from the target peer's store. It
never reads a wall clock and never sleeps. Safety is checked at every commit; `run_until`
raises `Violation` when the target is not reached in time.

Stories read like this::

    sim = Simulator(seed=7)
    sim.run_until(height=3)
    sim.crash(sim.primary)
    sim.run_until(height=6)
"""

import heapq
import random
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from consensus import messages as m
from consensus.events import (
    FETCH_BLOCKS_MAX,
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
    TxsExpired,
)
from consensus.replica import Replica, ReplicaConfig
from ledger.tx import Transaction
from node.ordering import Write
from tests import factory
from tests.sim.byzantine import BEHAVIOURS, Served, Wire
from tests.sim.checker import SafetyChecker, Violation
from tests.sim.client import SimClient
from tests.sim.items import (
    Call,
    ClientTick,
    Deliver,
    DropRule,
    Fetched,
    Fire,
    Item,
    Serve,
    Written,
)
from tests.sim.members import Members
from tests.sim.network import CALM, NetParams, SimNetwork
from tests.sim.node import DecodeCache, SimNode
from tests.sim.store import StoreRejected
from tests.sim.trace import Trace, describe_action, describe_event, describe_message

FETCH_TIMEOUT_MS: Final = 300  # an unanswered fetch is answered "none" after this long
CRASH_MID_HANDLE_WAIT_MS: Final = 1000  # a pending mid-handle crash becomes a plain one after
CLOCK_OFFSET_MS_MAX: Final = 20  # how far each node's clock may be from the true time
RUN_UNTIL_MS_DEFAULT: Final = 60_000
WRITE_MS_MAX: Final = 3  # a synced write takes 0..3 ms; 0 is drawn as often as each other value


def proposing(action: Action) -> bool:
    """The action that sends a proposal: with `crash(when=proposing)`, a crash mid-block."""
    return isinstance(action, Broadcast) and isinstance(action.message, m.PrePrepare)


class Simulator:
    def __init__(
        self,
        seed: int,
        nodes: int = 4,
        *,
        byzantine: Mapping[int, str] | None = None,
        net: NetParams = CALM,
        client_txs_max: int = 2,
        client_interval_ms: tuple[int, int] = (40, 120),
        client_resubmit: float = 0.05,
        replica_config: ReplicaConfig | None = None,
        admins: bool = False,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.replica_config = replica_config
        # One admin per organisation when the story governs (a genesis without is the one
        # every other run has always had: its hash, so its blocks, stay the same).
        self.testnet = factory.network(nodes, admins_per_org=1 if admins else 0)
        self.genesis = self.testnet.genesis
        self.f = self.genesis.quorums.f
        self.now_ms = 0  # true time since the start; node i's clock reads BASE + now + offset_i
        self.healed_ms: int | None = None  # when `heal_all` ended every fault
        self.trace = Trace()
        self.checker = SafetyChecker()
        self.stats: Counter[str] = Counter()
        self.faults: list[str] = []  # what was done to the system, for the failure report
        self.network = SimNetwork(self.rng, nodes, net)
        self.client = SimClient(self.testnet, self.rng, client_txs_max, client_resubmit)
        self.client_interval_ms = client_interval_ms
        self.client_on = True
        self._drop_rule: DropRule | None = None
        self.members = Members(self)  # node numbers and validator ids; joining, leaving
        self.decoded = DecodeCache(self.genesis.chain_id, len(self.genesis.validators))
        self._queue: list[tuple[int, int, Item]] = []
        self._link_sent: Counter[tuple[int, int]] = Counter()  # sends per (sender, receiver)
        self._link_delivered: dict[tuple[int, int], int] = {}  # the highest send delivered
        self._seq = 0
        self.nodes = [
            SimNode(
                self.genesis,
                i,
                self.testnet.validator_keys[i],
                self.rng.randint(-CLOCK_OFFSET_MS_MAX, CLOCK_OFFSET_MS_MAX),
                replica_config,
            )
            for i in range(nodes)
        ]
        kinds = dict(byzantine or {})
        assert len(kinds) <= self.f, "more Byzantine nodes than the protocol tolerates"
        for node in self.nodes:
            self.wire_up(node, kinds.get(node.index, "honest"))
            if not node.honest:
                self.faults.append(f"n{node.index} is byzantine: {node.behaviour.name}")
        for node in self.nodes:
            self.boot(node)
        self._push(self._client_delay(), ClientTick())

    def wire_up(self, node: SimNode, kind: str) -> None:
        """Give `node` its behaviour (`kind`) and its socket on the simulated network."""
        wire = Wire(
            node.index,
            node.key,
            self.genesis,
            self.rng,
            self._sender(node.index),
            node.store.committed_head,
        )
        node.behaviour = BEHAVIOURS[kind](wire)

    # --- the story API -----------------------------------------------------------------------

    @property
    def n(self) -> int:
        """Nodes in the simulation, joined and removed ones included."""
        return len(self.nodes)

    def node(self, index: int) -> SimNode:
        return self.nodes[index]

    def replica(self, index: int) -> Replica:
        replica = self.nodes[index].replica
        assert replica is not None, f"n{index} is down"
        return replica

    def height(self, index: int) -> int:
        return self.nodes[index].store.height

    def heights(self) -> dict[int, int]:
        """Committed height of every honest node (up or down)."""
        return {n.index: n.store.height for n in self.nodes if n.honest}

    @property
    def honest(self) -> list[int]:
        return [n.index for n in self.nodes if n.honest]

    @property
    def primary(self) -> int:
        """The primary of the highest view an honest up replica is in."""
        views = [n.replica.view for n in self.nodes if n.honest and n.replica is not None]
        assert views, "no honest replica is up"
        top = max(
            (n.replica for n in self.nodes if n.honest and n.replica is not None),
            key=lambda r: r.view,
        )
        validator = top.epoch.members.validators[top.view % top.epoch.size]
        return self.members.number(validator.id)  # (a node number, not an index of the set)

    def crash(
        self,
        index: int,
        *,
        mid_handle: bool = False,
        when: Callable[[Action], bool] | None = None,
    ) -> None:
        """Crash node `index` now; or, with `mid_handle`, part-way through its next list of
        actions (the next one holding an action for which `when` is true, if given): the
        actions before a random cut happen, the rest never do."""
        node = self.nodes[index]
        assert node.up, f"n{index} is already down"
        if not mid_handle:
            self._crash(node, "crash")
            return
        node.crash_mid_handle = True
        node.crash_when = when
        self.note_fault(f"crash n{index} mid-handle (next {'matching ' if when else ''}actions)")
        incarnation = node.incarnation
        self._push(
            CRASH_MID_HANDLE_WAIT_MS,
            Call(f"fallback crash n{index}", lambda: self._crash_if_pending(node, incarnation)),
        )

    def restart(self, index: int) -> None:
        node = self.nodes[index]
        assert node.down, f"n{index} is up, syncing or removed"
        self.note_fault(f"restart n{index} at height {node.store.height}")
        self.boot(node)

    def partition(self, *groups: Iterable[int]) -> None:
        sets = [sorted(g) for g in groups]
        self.network.partition(sets)
        self.note_fault("partition " + " | ".join(",".join(map(str, g)) for g in sets))

    def heal(self) -> None:
        self.network.heal()
        self.note_fault("heal partition")

    def set_network(self, **changes: Any) -> None:
        self.network.configure(**changes)
        self.note_fault(f"network {self.network.params.describe()}")

    def drop_messages(self, rule: DropRule | None, label: str = "") -> None:
        """Drop every delivered message for which `rule(sender, receiver, message)` holds (a
        precise fault for a story); None delivers everything again."""
        self._drop_rule = rule
        self.note_fault(f"drop rule {'cleared' if rule is None else 'set'} {label}".rstrip())

    def heal_all(self) -> None:
        """End every fault: heal the partition, calm the network, restart crashed nodes."""
        self.network.heal()
        self.network.params = CALM
        self._drop_rule = None
        self.healed_ms = self.now_ms
        self.note_fault("heal all")
        for node in self.nodes:
            node.cancel_crash()
            if node.down:
                self.restart(node.index)

    def at(self, delay_ms: int, label: str, fn: Callable[[], None]) -> None:
        """Run `fn` `delay_ms` from now (a scheduled fault)."""
        self._push(delay_ms, Call(label, fn))

    def run_for(self, ms: int) -> None:
        end = self.now_ms + ms
        while self._queue and self._queue[0][0] <= end:
            self._step()
        self.now_ms = end

    def run_until(
        self,
        height: int | None = None,
        *,
        until: Callable[[], bool] | None = None,
        nodes: Iterable[int] | None = None,
        within_ms: int = RUN_UNTIL_MS_DEFAULT,
    ) -> int:
        """Run until every one of `nodes` (default: honest and up) has committed `height`, or
        `until()` holds; return the simulated ms it took. Raise a liveness `Violation` if it
        does not happen within `within_ms`."""
        assert (height is None) != (until is None)
        chosen = None if nodes is None else sorted(nodes)

        def reached() -> bool:
            if until is not None:
                return until()
            assert height is not None
            watched = chosen if chosen is not None else self._honest_up()
            return all(self.nodes[i].store.height >= height for i in watched)

        start = self.now_ms
        deadline = start + within_ms
        while not reached():
            if not self._queue or self._queue[0][0] > deadline:
                self.now_ms = deadline
                goal = f"height {height}" if height is not None else "the condition"
                raise Violation("liveness", f"{goal} not reached within {within_ms} ms: {self}")
            self._step()
        return self.now_ms - start

    def check_safety(self) -> None:
        self.checker.check_chains(self.nodes)

    def __str__(self) -> str:
        parts = []
        for node in self.nodes:
            replica = node.replica
            state = (
                ("removed" if node.removed else "syncing" if node.syncing else "down")
                if replica is None
                else f"v{replica.view}{'*' if replica.in_view_change else ''}"
            )
            tag = "" if node.honest else f" {node.behaviour.name if node.behaviour else ''}"
            parts.append(f"n{node.index}[h{node.store.height} {state}{tag}]")
        net = "partitioned " + str(self.network.groups()) if self.network.partitioned else "whole"
        return f"t={self.now_ms}ms {' '.join(parts)} net={net} {self.network.params.describe()}"

    # --- the event loop ----------------------------------------------------------------------

    def _push(self, delay_ms: int, item: Item) -> None:
        assert delay_ms >= 0
        self._seq += 1
        heapq.heappush(self._queue, (self.now_ms + delay_ms, self._seq, item))

    def _step(self) -> None:
        at_ms, _, item = heapq.heappop(self._queue)
        assert at_ms >= self.now_ms
        self.now_ms = at_ms
        match item:
            case Deliver():
                self._deliver(item)
            case Fire():
                node = self.nodes[item.node]
                if node.up and node.timers.get(item.timer) == item.token:
                    del node.timers[item.timer]
                    self._handle(node, Timeout(item.timer))
            case Serve():
                self._serve(item)
            case Fetched():
                node = self.nodes[item.node]
                if node.up and node.incarnation == item.incarnation:
                    self._handle(node, BlocksFetched(item.peer, item.blocks))
            case Written():
                node = self.nodes[item.node]
                if node.up and node.incarnation == item.incarnation:
                    self._written(node, item.write)
                    self._pump(node)
            case ClientTick():
                self._client_tick()
            case Call():
                self.trace.note(self.now_ms, "sim", item.label)
                item.fn()

    def _honest_up(self) -> list[int]:
        return [n.index for n in self.nodes if n.honest and n.up]

    def boot(self, node: SimNode) -> None:
        """Start `node`'s replica, or (not in the set at its head with its key) sync first."""
        if node.place() is None:
            self.members.sync(node)
            return
        node.boot()
        self._handle(node, Start())

    def _crash(self, node: SimNode, why: str) -> None:
        write = node.outbox.writing
        landed = write is not None and self.rng.random() < 0.5
        if landed:
            assert write is not None
            self._apply(node, write)  # the write under way reached the disk before the crash
        node.crash()
        lost = " (the write under way lost)" if write is not None and not landed else ""
        self.note_fault(f"{why} n{node.index} at height {node.store.height}{lost}")

    def stop(self, node: SimNode, why: str) -> None:
        """Take `node` down now (removed from the set, or to restart on a new key)."""
        self._crash(node, why)

    def _crash_if_pending(self, node: SimNode, incarnation: int) -> None:
        if node.up and node.incarnation == incarnation and node.crash_mid_handle:
            self._crash(node, "crash (no action list came)")

    def note_fault(self, what: str) -> None:
        self.faults.append(f"{self.now_ms}ms {what}")
        self.trace.note(self.now_ms, "sim", what)

    # --- one node handles one event ----------------------------------------------------------

    def _handle(self, node: SimNode, event: Event) -> None:
        replica = node.replica
        assert replica is not None
        self.trace.note(self.now_ms, f"n{node.index}", event)
        self.stats["events"] += 1
        local = factory.BASE_TIME_MS + node.local_time(self.now_ms)
        try:
            actions = replica.handle(event, local)
        except Exception as exc:
            detail = "".join(traceback.format_exception(exc)[-6:])
            raise Violation(
                "replica raised", f"n{node.index} on {describe_event(event)}:\n{detail}"
            ) from exc
        self._carry_out(node, actions)
        unwritten = node.outbox.blocks_unwritten
        if node.replica is replica and replica.committed_height != node.store.height + unwritten:
            raise Violation(
                "contract",
                f"n{node.index} reports height {replica.committed_height}, "
                f"its store holds {node.store.height} and {unwritten} blocks on their way",
            )

    def _carry_out(self, node: SimNode, actions: list[Action]) -> None:
        torn = node.crash_mid_handle and bool(actions)
        if torn and node.crash_when is not None:
            torn = any(node.crash_when(a) for a in actions)
        for action in node.outbox.push(actions):  # timers: at once, as the node does
            self.trace.note(self.now_ms, f"n{node.index}", action)
            self._do(node, action)
        if torn:  # crash once a random share of what is queued is out: at least one never is
            queued = len(node.outbox)
            node.crash_budget = self.rng.randrange(queued) if queued else 0
        self._pump(node)

    def _pump(self, node: SimNode) -> None:
        """Carry out what the node's outbox lets out, until a write is under way (its end is
        queued) or nothing is left; a pending torn crash happens once its budget is spent."""
        while node.up and (step := node.outbox.next()) is not None:
            size = len(step.actions) if isinstance(step, Write) else 1
            budget = node.crash_budget
            if budget is not None and budget < size:
                self._torn(node, step if budget and isinstance(step, Write) else None)
                return
            if budget is not None:
                node.crash_budget = budget - size
            if not isinstance(step, Write):
                self.trace.note(self.now_ms, f"n{node.index}", step)
                self._do(node, step)
                continue
            delay = self.rng.randint(0, WRITE_MS_MAX)
            self.stats["writes"] += 1
            if delay:
                self._push(delay, Written(node.index, node.incarnation, step))
                return
            self._written(node, step)
        if node.up and node.crash_budget is not None and not len(node.outbox):
            self._torn(node, None)  # all that was queued is out: the crash comes now

    def _torn(self, node: SimNode, write: Write | None) -> None:
        """The pending mid-handle crash, during `write` (which lands or not) or before the
        step that would spend more than its budget."""
        self.stats["torn_crashes"] += 1
        if write is not None and self.rng.random() < 0.5:
            self._apply(node, write)
            node.outbox.written(write)
        self._crash(node, "crash part-way through its actions:")

    def _written(self, node: SimNode, write: Write) -> None:
        self._apply(node, write)
        node.outbox.written(write)
        if len(node.outbox):
            self.stats["released_by_a_write"] += 1  # actions waited for this write
        if len(write.actions) > 1:
            self.stats["grouped_writes"] += 1

    def _apply(self, node: SimNode, write: Write) -> None:
        """Make `write` durable: the persisted entries and the blocks, in the replica's order."""
        for action in write.actions:
            self.trace.note(self.now_ms, f"n{node.index}", action)
            if isinstance(action, Persist):
                node.persisted.update(action.puts)
                for key in action.deletes:
                    node.persisted.pop(key, None)
            else:
                self._commit(node, action)

    def _do(self, node: SimNode, action: Action) -> None:
        behaviour = node.behaviour
        assert behaviour is not None
        if node.replica is not None:  # what it signs names its place in its epoch's set
            behaviour.wire.index = node.replica.index
        match action:
            case Send():
                behaviour.outgoing([self._peer(node, action.to, action)], action.message)
            case Broadcast():
                behaviour.outgoing(self.members.peers(node), action.message)
            case SetTimer():
                self._seq += 1
                node.timers[action.timer] = self._seq
                at_true = node.true_time(action.at_ms - factory.BASE_TIME_MS)
                delay = max(at_true - self.now_ms, 0)
                heapq.heappush(
                    self._queue,
                    (self.now_ms + delay, self._seq, Fire(node.index, action.timer, self._seq)),
                )
            case CancelTimer():
                node.timers.pop(action.timer, None)
            case FetchBlocks():
                self._fetch(node, action, self._peer(node, action.peer, action))
            case TxsExpired():
                node.counters["txs_expired"] += len(action.tx_ids)
            case _:
                raise Violation("contract", f"n{node.index} returned {action!r}")

    def _peer(self, node: SimNode, index: int, action: Action) -> int:
        """The node number of validator `index` of `node`'s epoch (another node's)."""
        peer = self.members.of_index(node, index)
        if peer is None or peer == node.index:
            raise Violation("contract", f"n{node.index}: {describe_action(action)}")
        return peer

    def _commit(self, node: SimNode, action: CommitBlock) -> None:
        try:
            node.store.append(action.block, action.certificate)
        except StoreRejected as exc:
            raise Violation(
                "invalid commit", f"n{node.index} committed a block its store refuses: {exc}"
            ) from None
        self.stats["commits"] += 1
        self.checker.on_commit(node, action.block, action.certificate)

    # --- the wire ----------------------------------------------------------------------------

    def _sender(self, index: int) -> Callable[[int, bytes], None]:
        def send(to: int, raw: bytes) -> None:
            delays = self.network.delays(index, to)
            self.stats["sent"] += 1
            if not delays:
                self.stats["lost"] += 1
            self._link_sent[index, to] += 1
            for delay in delays:
                self._push(delay, Deliver(to, index, raw, self._link_sent[index, to]))

        return send

    def _deliver(self, item: Deliver) -> None:
        node = self.nodes[item.to]
        if not node.up or not self.network.connected(item.sender, item.to):
            self.stats["lost"] += 1
            return
        link = (item.sender, item.to)
        if item.sent < self._link_delivered.get(link, 0):
            self.stats["overtaken"] += 1  # a later send on this link arrived first
        else:
            self._link_delivered[link] = item.sent
        assert node.behaviour is not None
        node.behaviour.on_receive(item.raw)
        msg = self.decoded.decode(item.raw)
        rule = self._drop_rule
        if rule is not None and msg is not None and rule(item.sender, item.to, msg):
            what = describe_message(msg)
            self.trace.note(self.now_ms, f"n{node.index}", f"dropped by rule: {what}")
            self.stats["dropped_by_rule"] += 1
            return
        local = factory.BASE_TIME_MS + node.local_time(self.now_ms)
        events = node.events_from_peer(item.raw, local, self.decoded)
        if isinstance(events, str):
            self.trace.note(self.now_ms, f"n{node.index}", f"{events} (from {item.sender})")
            return
        for event in events:
            if node.up:  # a torn crash may come part-way
                self._handle(node, event)

    def _fetch(self, node: SimNode, request: FetchBlocks, peer: int) -> None:
        delays = self.network.delays(node.index, peer)
        if delays:
            self._push(delays[0], Serve(node.index, node.incarnation, request, peer))
        else:
            self._push(FETCH_TIMEOUT_MS, Fetched(node.index, node.incarnation, request.peer, ()))

    def _serve(self, item: Serve) -> None:
        request = item.request
        peer = self.nodes[item.peer]
        answered: Served | None = None
        if peer.up and self.network.connected(item.node, item.peer):
            assert peer.behaviour is not None
            high = min(request.to_height, request.from_height + FETCH_BLOCKS_MAX - 1)
            answered = peer.behaviour.serve(peer.store.range(request.from_height, high))
        back = self.network.delays(item.peer, item.node) if answered is not None else []
        if answered is None or not back:
            answered, delay = (), FETCH_TIMEOUT_MS
        else:
            delay = back[0]
        self._push(delay, Fetched(item.node, item.incarnation, request.peer, answered))

    # --- clients -----------------------------------------------------------------------------

    def _client_delay(self) -> int:
        return self.rng.randint(*self.client_interval_ms)

    def _client_tick(self) -> None:
        self._push(self._client_delay(), ClientTick())
        up = self._honest_up()
        if not self.client_on or not up:
            return
        batch = self.client.batch(self.now_ms)
        self.offer(self.rng.choice(up), batch)

    def offer(self, index: int, batch: tuple[Transaction, ...]) -> None:
        """A client hands `batch` to node `index` (up), which admits what it takes."""
        node = self.nodes[index]
        taken = node.submit(node.admit(batch, factory.BASE_TIME_MS + node.local_time(self.now_ms)))
        if taken:
            self._handle(node, ClientTxs(taken))

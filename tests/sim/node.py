"""One simulated validator: a replica, its durable state, and the node shell's input side.

It owns what survives a crash (the block store and the entries of `Persist` actions) and what
does not (the `Replica` object, its timers, its outbox and admission gate, its undelivered
work), and turns raw peer bytes into replica events by the node's own rules (node/ordering.py,
the same code the node runs): decode (an `InvalidMessage` is dropped and counted), which peer
messages wait for admission, the admission rule order, admit then submit through the gate. It
carries out no actions: the simulator does, through this node's `Outbox`, so that it can crash
a node between two, or during a write.
"""

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consensus import messages as m
from consensus.events import Action, ClientTxs, Event, Received, Timer
from consensus.replica import Replica, ReplicaConfig
from ledger import crypto
from ledger import tx as txs
from ledger.errors import InvalidTransaction
from ledger.genesis import Client, Genesis
from ledger.gov.history import config_of
from node.ordering import (
    Admitted,
    Gate,
    Outbox,
    check_cheap,
    peer_txs,
    relayer_ok,
    verify_signatures,
)
from tests.sim.byzantine import Behaviour
from tests.sim.store import MemoryStore


class DecodeCache:
    """`decode_message` answers by raw bytes, shared by the nodes of one simulation.

    Decoding is a pure function of the bytes, and a broadcast reaches every node as the same
    bytes, so each distinct message is decoded once per simulation instead of once per receiver
    (decoding dominates the sweep's time after signatures). The messages are frozen dataclasses;
    no replica may change one, so sharing them changes no result.
    """

    ENTRIES_MAX: Final = 4096

    def __init__(self, chain_id: str, validators: int) -> None:
        self.chain_id = chain_id
        self.validators = validators
        self._answers: dict[bytes, m.Message | None] = {}

    def decode(self, raw: bytes) -> m.Message | None:
        """The message `raw` encodes, or None if it is not a valid envelope for this chain."""
        if raw in self._answers:
            return self._answers[raw]
        try:
            msg: m.Message | None = m.decode_message(raw, self.chain_id, validators=self.validators)
        except m.InvalidMessage:
            msg = None
        if len(self._answers) >= self.ENTRIES_MAX:
            self._answers.clear()
        self._answers[raw] = msg
        return msg


class SimNode:
    def __init__(
        self,
        genesis: Genesis,
        index: int,
        key: Ed25519PrivateKey,
        clock_offset_ms: int,
        config: ReplicaConfig | None,
        validator_id: str | None = None,
    ) -> None:
        self.genesis = genesis
        self.index = index  # this node's number in the simulation (not its place in a set)
        self.validator_id = validator_id or genesis.validators[index].id
        self.key = key
        self.clock_offset_ms = clock_offset_ms  # this node's clock minus the true time
        self.config = config
        self.behaviour: Behaviour | None = None  # set by the simulator, which owns the wire
        # Durable: survives crashes.
        self.store = MemoryStore(genesis)
        self.persisted: dict[bytes, bytes] = {}
        # Volatile: gone on crash.
        self.replica: Replica | None = None
        self.outbox = Outbox()  # actions waiting behind a write (node/ordering.py)
        self.gate = Gate()  # txs admitted and not submitted yet
        self.incarnation = 0
        self.timers: dict[Timer, int] = {}  # timer -> token of the queued firing that counts
        self.crash_mid_handle = False  # crash part-way through the next action list
        self.crash_when: Callable[[Action], bool] | None = None  # ... that holds such an action
        self.crash_budget: int | None = None  # torn: steps it carries out before the crash
        self.counters: Counter[str] = Counter()
        # Not in the set of its store's head with its key (joining, or restarted on a rotated
        # key): it syncs blocks before its replica starts (tests/sim/members.py).
        self.syncing = False
        self.removed = False  # out of the set, stopped for good

    @property
    def up(self) -> bool:
        return self.replica is not None

    @property
    def down(self) -> bool:
        """Crashed: a restart brings it back (a syncing or removed node is neither)."""
        return self.replica is None and not self.syncing and not self.removed

    def place(self) -> int | None:
        """Its index in the set in force after its store's head, if it is there with its key."""
        found = config_of(self.store.rules.get, self.genesis).members.validator(self.validator_id)
        if found is None or found.public_key != crypto.public_key_bytes(self.key):
            return None
        return int(found.index)

    @property
    def honest(self) -> bool:
        return self.behaviour is None or self.behaviour.honest

    def boot(self) -> Replica:
        """A new replica from what is durable: the store's head and the persisted entries."""
        assert self.replica is None
        index = self.place()
        assert index is not None, f"n{self.index} is not in the set at its head"
        self.incarnation += 1
        self.timers.clear()
        self.outbox = Outbox()
        self.gate = Gate()
        self.replica = Replica(
            self.genesis,
            index,
            self.key,
            self.store.head,
            self.is_committed,
            persisted=dict(self.persisted),
            config=self.config,
            head_certificate=self.store.chain[-1][1] if self.store.chain else None,
            state=self.store.rules,
        )
        return self.replica

    def cancel_crash(self) -> None:
        """A pending mid-handle crash that has not happened yet never will: neither one still
        waiting for its action list nor a torn one whose actions are part-way out (its
        budget); the run heals, or the plan restarts this node, before it came."""
        self.crash_mid_handle = False
        self.crash_when = None
        self.crash_budget = None

    def crash(self) -> None:
        """Lose everything that is not durable."""
        self.replica = None
        self.timers.clear()
        self.crash_mid_handle = False
        self.crash_when = None
        self.crash_budget = None
        self.counters["crashes"] += 1

    def is_committed(self, tx_id: bytes) -> bool:
        """In the store, or in a block the replica committed that is on its way there."""
        return self.store.is_committed(tx_id) or self.outbox.is_unwritten(tx_id)

    def local_time(self, true_ms: int) -> int:
        return true_ms + self.clock_offset_ms

    def true_time(self, local_ms: int) -> int:
        return local_ms - self.clock_offset_ms

    # --- input side of the shell -------------------------------------------------------------

    def events_from_peer(
        self, raw: bytes, now_local_ms: int, decoded: DecodeCache | None = None
    ) -> list[Event] | str:
        """The replica events for `raw` bytes from a peer, or why the shell drops them."""
        replica = self.replica
        assert replica is not None
        decoded = decoded or DecodeCache(self.genesis.chain_id, len(self.genesis.validators))
        msg = decoded.decode(raw)
        if msg is None:
            self.counters["undecodable"] += 1
            return f"dropped {len(raw)} undecodable bytes"
        if isinstance(msg, m.TxBatch) and not relayer_ok(msg, replica.epoch.members, replica.index):
            self.counters["bad_relayer"] += 1
            return f"dropped TxBatch from {msg.sender}: not a valid relayer"
        fresh, forward = peer_txs(msg, replica.has_pending)
        events: list[Event] = []
        if fresh:
            taken = self.submit(self.admit(fresh, now_local_ms))
            if taken:
                events.append(ClientTxs(taken, relayed=True))
        if forward:
            events.append(Received(msg))
        if not events:
            return f"admitted none of {type(msg).__name__}({len(fresh)} new txs from {msg.sender})"
        return events

    def admit(self, candidates: Iterable[txs.Transaction], now_local_ms: int) -> Admitted:
        """The node's admission rules in the node's order; what passes stays in the gate."""
        replica = self.replica
        assert replica is not None
        passed: list[tuple[txs.Transaction, Client]] = []
        seen: set[bytes] = set()
        for tx in candidates:
            try:
                client = check_cheap(
                    tx, self.genesis, now_local_ms, seen=seen,
                    is_committed=self.is_committed,
                    is_known=lambda i: self.gate.is_held(i) or replica.has_pending(i),
                )  # fmt: skip
            except InvalidTransaction as exc:
                self.counters[f"tx_rejected:{exc.reason}"] += 1
                continue
            if self.behaviour is not None and not self.behaviour.admits(tx):
                continue
            seen.add(tx.tx_id)
            passed.append((tx, client))
        claim = self.gate.claim([tx for tx, _ in passed])
        valid = verify_signatures(passed)
        self.counters["tx_rejected:bad_signature"] += valid.count(False)
        return self.gate.admit(claim, valid)

    def submit(self, admitted: Admitted) -> tuple[txs.Transaction, ...]:
        """What of `admitted` the replica's pool has room for (the gate checks it admitted it)."""
        replica = self.replica
        assert replica is not None
        taken = self.gate.submit(admitted, replica.pool_free)
        if len(taken) < len(admitted.txs):
            self.counters["tx_pool_full"] += len(admitted.txs) - len(taken)
        return taken

"""One simulated validator: a replica, its durable state, and the node shell's input side.

It owns what survives a crash (the block store and the entries of `Persist` actions) and what
does not (the `Replica` object, its timers, its undelivered work), and turns raw peer bytes into
replica events exactly as the node will: decode (an `InvalidMessage` is dropped and counted),
and admission of relayed client txs (signature, client, namespace, time, duplicates; never trust
a peer). It carries out no actions: the simulator does, so that it can crash a node between two.
"""

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consensus import messages as m
from consensus.events import Action, ClientTxs, Event, Received, Timer
from consensus.replica import Replica, ReplicaConfig
from ledger import tx as txs
from ledger.errors import InvalidTransaction
from ledger.genesis import Genesis
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

    def __init__(self, chain_id: str) -> None:
        self.chain_id = chain_id
        self._answers: dict[bytes, m.Message | None] = {}

    def decode(self, raw: bytes) -> m.Message | None:
        """The message `raw` encodes, or None if it is not a valid envelope for this chain."""
        if raw in self._answers:
            return self._answers[raw]
        try:
            msg: m.Message | None = m.decode_message(raw, self.chain_id)
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
    ) -> None:
        self.genesis = genesis
        self.index = index
        self.key = key
        self.clock_offset_ms = clock_offset_ms  # this node's clock minus the true time
        self.config = config
        self.behaviour: Behaviour | None = None  # set by the simulator, which owns the wire
        # Durable: survives crashes.
        self.store = MemoryStore(genesis)
        self.persisted: dict[bytes, bytes] = {}
        # Volatile: gone on crash.
        self.replica: Replica | None = None
        self.incarnation = 0
        self.timers: dict[Timer, int] = {}  # timer -> token of the queued firing that counts
        self.crash_mid_handle = False  # crash part-way through the next action list
        self.crash_when: Callable[[Action], bool] | None = None  # ... that holds such an action
        self.counters: Counter[str] = Counter()

    @property
    def up(self) -> bool:
        return self.replica is not None

    @property
    def honest(self) -> bool:
        return self.behaviour is None or self.behaviour.honest

    def boot(self) -> Replica:
        """A new replica from what is durable: the store's head and the persisted entries."""
        assert self.replica is None
        self.incarnation += 1
        self.timers.clear()
        self.replica = Replica(
            self.genesis,
            self.index,
            self.key,
            self.store.head,
            self.store.is_committed,
            persisted=dict(self.persisted),
            config=self.config,
            head_certificate=self.store.chain[-1][1] if self.store.chain else None,
        )
        return self.replica

    def crash(self) -> None:
        """Lose everything that is not durable."""
        self.replica = None
        self.timers.clear()
        self.crash_mid_handle = False
        self.crash_when = None
        self.counters["crashes"] += 1

    def local_time(self, true_ms: int) -> int:
        return true_ms + self.clock_offset_ms

    def true_time(self, local_ms: int) -> int:
        return local_ms - self.clock_offset_ms

    # --- input side of the shell -------------------------------------------------------------

    def event_from_peer(
        self, raw: bytes, now_local_ms: int, decoded: DecodeCache | None = None
    ) -> Event | str:
        """The replica event for `raw` bytes from a peer, or why the shell drops them."""
        msg = (decoded or DecodeCache(self.genesis.chain_id)).decode(raw)
        if msg is None:
            self.counters["undecodable"] += 1
            return f"dropped {len(raw)} undecodable bytes"
        if isinstance(msg, m.TxBatch):
            admitted = self.admit(msg.txs, now_local_ms)
            if not admitted:
                return f"admitted none of TxBatch({len(msg.txs)} txs from {msg.sender})"
            return ClientTxs(admitted, relayed=True)
        return Received(msg)

    def admit(
        self, candidates: Iterable[txs.Transaction], now_local_ms: int
    ) -> tuple[txs.Transaction, ...]:
        """The txs the shell may hand the replica: valid, new, and only as many as fit."""
        replica = self.replica
        assert replica is not None
        good: list[txs.Transaction] = []
        ids: set[bytes] = set()
        for tx in candidates:
            if (
                tx.tx_id in ids
                or self.store.is_committed(tx.tx_id)
                or replica.has_pending(tx.tx_id)
            ):
                self.counters["tx_duplicate"] += 1
                continue
            try:
                txs.validate(tx, self.genesis, now_local_ms)
            except InvalidTransaction as exc:
                self.counters[f"tx_rejected:{exc.reason}"] += 1
                continue
            ids.add(tx.tx_id)
            good.append(tx)
        room = max(replica.pool_free, 0)
        if len(good) > room:
            self.counters["tx_pool_full"] += len(good) - room
        return tuple(good[:room])

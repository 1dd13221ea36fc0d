"""The rules of the node's shell that decide order, as pure code: the node and the simulator
both run them, so the seed sweeps cover them.

It owns three rules and does no I/O: no asyncio, no clock, no store, no thread.

* **The outbox** (`Outbox`): a replica's actions are carried out strictly in its order, except
  timer actions, which are local and take effect at once. A `Persist` or `CommitBlock` is
  durable before any action queued after it takes effect (consensus/events.py requires it).
  Consecutive durable actions at the front of the queue, of one event or of several, form one
  `Write`; nothing behind a write under way comes out until it is `written`. One write is as
  safe as several: nothing in between left the node, a crash keeps all of them or none (either
  is a state a crash between separate writes could leave: each is a prefix of the same
  sequence of writes), and the store sees them in the replica's order. The replica may thus be
  ahead of the store by the writes queued or under way: `is_unwritten` answers for them.
* **The admission rule order** (`check_cheap`, then `verify_signatures`): stateless checks
  (decodable fields, known client, its namespace), then time, then duplicates (in the request,
  committed, pending or being admitted), and only then the client signature, the expensive
  check, so that no signature is verified for a tx that a cheap rule refuses.
* **Which peer messages wait for admission** (`relayer_ok`, `peer_txs`): a `TxBatch` is only
  its txs, after its relayer's signature is checked; a `PrePrepare` goes to the replica after
  the txs of its block that this node has not pooled are admitted (as if relayed, so that each
  signature is checked once, by admission); every other message goes straight to the replica.
* **Admit, then submit** (`Gate`): a tx reaches the replica only inside an `Admitted` that the
  gate issued, and each `Admitted` is submitted at most once. From the moment a tx passes the
  cheap checks (`claim`) until it is submitted or refused, the gate holds it, and a held tx is
  "known" to every other admission: an await between admission and submission cannot let a
  second admission of the same tx through. Submitting anything else fails an assertion (our
  bug, never the world's).
"""

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import count

from consensus import messages
from consensus.events import Action, CancelTimer, CommitBlock, Persist, SetTimer
from ledger import tx as txs
from ledger.errors import InvalidTransaction
from ledger.genesis import Admin, Client, Genesis
from ledger.gov.config import Config as GovConfig
from ledger.gov.signers import admitted_signer

Durable = Persist | CommitBlock

# --- the outbox ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Write:
    """Durable actions that go to the store as one synced write, in this order."""

    actions: tuple[Durable, ...]

    @property
    def blocks(self) -> tuple[CommitBlock, ...]:
        return tuple(a for a in self.actions if isinstance(a, CommitBlock))


class Outbox:
    """The replica's actions waiting to be carried out, in its order (see the module's rules)."""

    def __init__(self) -> None:
        self._queue: deque[Action] = deque()
        self._writing: Write | None = None
        self._unwritten: set[bytes] = set()  # tx ids of committed blocks not in the store yet
        self.blocks_unwritten = 0

    def push(self, actions: Iterable[Action]) -> list[SetTimer | CancelTimer]:
        """Queue `actions` behind what is queued; return the timer actions, to carry out now."""
        now: list[SetTimer | CancelTimer] = []
        for action in actions:
            if isinstance(action, SetTimer | CancelTimer):
                now.append(action)
                continue
            if isinstance(action, CommitBlock):
                self._unwritten.update(t.tx_id for t in action.block.txs)
                self.blocks_unwritten += 1
            self._queue.append(action)
        return now

    def next(self) -> Action | Write | None:
        """The next thing to carry out: an action, or a write that must finish (`written`)
        before anything else comes out; None while a write is under way or nothing is queued."""
        if self._writing is not None or not self._queue:
            return None
        if not isinstance(self._queue[0], Persist | CommitBlock):
            return self._queue.popleft()
        group: list[Durable] = []
        while self._queue and isinstance(self._queue[0], Persist | CommitBlock):
            head = self._queue.popleft()
            assert isinstance(head, Persist | CommitBlock)
            group.append(head)
        self._writing = Write(tuple(group))
        return self._writing

    def written(self, write: Write) -> None:
        """`write` is durable: what is queued behind it may come out."""
        assert write is self._writing, "only the write under way can finish"
        self._writing = None
        for action in write.blocks:
            self._unwritten.difference_update(t.tx_id for t in action.block.txs)
            self.blocks_unwritten -= 1

    @property
    def writing(self) -> Write | None:
        return self._writing

    def is_unwritten(self, tx_id: bytes) -> bool:
        """Committed by the replica in a block that is queued or being written."""
        return tx_id in self._unwritten

    def __len__(self) -> int:
        return len(self._queue)


# --- admission: the rule order ---------------------------------------------------------------


def check_cheap(
    tx: txs.Transaction,
    genesis: Genesis,
    now_ms: int,
    *,
    seen: set[bytes],
    is_committed: Callable[[bytes], bool],
    is_known: Callable[[bytes], bool],
    config: GovConfig | None = None,
) -> Client | Admin:
    """Every admission rule but the signature, cheapest first; raise InvalidTransaction.
    `seen`: the tx ids earlier in the same request; `is_known`: pending or being admitted;
    `config`: the configuration in force (ledger/gov; None: the genesis's)."""
    client = admitted_signer(tx, config or GovConfig(genesis))
    txs.check_time(tx, genesis, now_ms)
    if tx.tx_id in seen:
        raise InvalidTransaction(txs.DUPLICATE, "the same tx twice in one request")
    if is_committed(tx.tx_id):
        raise InvalidTransaction(txs.DUPLICATE, "already committed")
    if is_known(tx.tx_id):
        raise InvalidTransaction(txs.DUPLICATE, "already pending")
    return client


def verify_signatures(pairs: Sequence[tuple[txs.Transaction, Client | Admin]]) -> list[bool]:
    """The last rule: does each tx carry its client's signature."""
    out = []
    for tx, client in pairs:
        try:
            txs.check_signature(tx, client)
            out.append(True)
        except InvalidTransaction:
            out.append(False)
    return out


def relayer_ok(batch: messages.TxBatch, genesis: Genesis, own_index: int) -> bool:
    """A TxBatch is admitted only from another validator, under its valid signature."""
    return batch.sender != own_index and messages.verify_signature(batch, genesis)


def peer_txs(
    msg: messages.Message, is_pooled: Callable[[bytes], bool]
) -> tuple[tuple[txs.Transaction, ...], bool]:
    """The txs of a peer message to admit before anything else (those not pooled yet), and
    whether the replica then gets the message itself (a TxBatch is only its txs)."""
    if isinstance(msg, messages.TxBatch):
        return tuple(t for t in msg.txs if not is_pooled(t.tx_id)), False
    if isinstance(msg, messages.PrePrepare):
        return tuple(t for t in msg.block.txs if not is_pooled(t.tx_id)), True
    return (), True


# --- admit, then submit ----------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Claim:
    """Txs that passed the cheap checks, held by the gate while their signatures are checked."""

    number: int
    txs: tuple[txs.Transaction, ...]


@dataclass(frozen=True, eq=False)
class Admitted:
    """Txs the gate admitted; only `Gate.submit` takes them out, once."""

    claim: int
    txs: tuple[txs.Transaction, ...]
    at: tuple[int, ...] = field(default=())  # the request index of each tx (callers' bookkeeping)


class Gate:
    """The txs between their claim and their submission (see the module's rules). Bounded by
    the admissions under way: every claim ends in `admit` and every `Admitted` in `submit`."""

    def __init__(self) -> None:
        self._held: dict[bytes, tuple[int, txs.Transaction]] = {}
        self._numbers = count(1)

    def held(self, tx_id: bytes) -> txs.Transaction | None:
        entry = self._held.get(tx_id)
        return None if entry is None else entry[1]

    def is_held(self, tx_id: bytes) -> bool:
        return tx_id in self._held

    def claim_of(self, tx_id: bytes) -> int | None:
        entry = self._held.get(tx_id)
        return None if entry is None else entry[0]

    def claim(self, candidates: Sequence[txs.Transaction]) -> Claim:
        """Hold `candidates` (distinct txs that passed `check_cheap`, so none is held)."""
        claim = Claim(next(self._numbers), tuple(candidates))
        for tx in claim.txs:
            assert tx.tx_id not in self._held, "a held tx passed the cheap checks"
            self._held[tx.tx_id] = (claim.number, tx)
        return claim

    def admit(self, claim: Claim, keep: Sequence[bool], at: Sequence[int] = ()) -> Admitted:
        """End `claim`: release the txs not kept, keep holding the rest until `submit`."""
        assert len(keep) == len(claim.txs)
        assert not at or len(at) == len(claim.txs)
        kept, kept_at = [], []
        for i, (tx, ok) in enumerate(zip(claim.txs, keep, strict=True)):
            assert self._held.get(tx.tx_id, (None,))[0] == claim.number, "claim already ended"
            if ok:
                kept.append(tx)
                kept_at.append(at[i] if at else i)
            else:
                del self._held[tx.tx_id]
        return Admitted(claim.number, tuple(kept), tuple(kept_at))

    def submit(self, admitted: Admitted, room: int) -> tuple[txs.Transaction, ...]:
        """Release `admitted`; return the txs to hand the replica now: as many as its pool has
        `room` for, in order (the rest are turned away: the pool is full)."""
        for tx in admitted.txs:
            entry = self._held.get(tx.tx_id)
            assert entry is not None, "submit of a tx the gate does not hold"
            assert entry[0] == admitted.claim, "submit of a tx admitted by another claim"
        for tx in admitted.txs:
            del self._held[tx.tx_id]
        return admitted.txs[: max(room, 0)]

    def __len__(self) -> int:
        return len(self._held)

"""Deterministic execution of txs against the rule state, in block order.

Every validator runs the same txs through the same pure rules against the same state, so it
reaches the same outcome for each: accepted (code "") or refused with a reason code. A
refused tx writes nothing. Rules common to every kind run here, before the kind's own:
its schema, then ownership (`not_owner`: a record's later versions only from the
organisation that created it; `invalid_transition`: a typed record keeps its type, and a
final kind has no later version). A record of an untyped type is accepted as before, unless
its key holds a typed record.

The rule state is a map of byte keys to plain values; what a block changes is a map of
absolute values (never deltas), so writing the same block's changes twice leaves the same
state: a state a little ahead of where a reader believes it is reads right too.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from ledger import merkle
from ledger.encoding import encode
from ledger.errors import InvalidBlock
from ledger.genesis import Genesis
from ledger.gov import history, machine
from ledger.gov.config import Config
from ledger.gov.signers import execution_refusal
from ledger.kinds.base import (
    ACCEPTED,
    INVALID_TRANSITION,
    NOT_OWNER,
    Context,
    Kind,
    Refused,
    Writes,
    check_schema,
    require,
    state_key,
)
from ledger.kinds.table import kind_of
from ledger.tx import Transaction

OWNERS: Final = b"o"  # record key -> [type, organisation] of every typed record

Getter = Callable[[bytes], Any]
"""`get(key)`: a committed rule-state entry's value, or None (the store provides it)."""


class Overlay:
    """A state seen through the writes made on top of it (not yet committed). Over the `get`
    of an overlay that is not itself over one, it reads that one's writes and base itself (the
    same values, one call fewer per read: a block executes over the overlay of the blocks
    below it)."""

    def __init__(self, base: Getter) -> None:
        below = getattr(base, "__self__", None)
        self._below: Writes = {}  # stays empty unless it reads through `below`'s writes
        self._base: Getter = base
        self._through: bool = False
        is_get = getattr(base, "__func__", None) is Overlay.get
        if is_get and isinstance(below, Overlay) and type(below) is Overlay and not below._through:
            self._below, self._base, self._through = below.writes, below._base, True
        self.writes: Writes = {}

    def get(self, key: bytes) -> Any:
        writes = self.writes
        if key in writes:
            return writes[key]
        below = self._below
        return below[key] if key in below else self._base(key)

    def update(self, writes: Writes) -> None:
        self.writes.update(writes)


@dataclass(frozen=True)
class Executed:
    """A block's outcome codes, one per tx in order, and what its accepted txs wrote."""

    outcomes: tuple[str, ...]
    writes: Writes


def _common(kind: Kind | None, tx: Transaction, owner: Any, organisation: str) -> None:
    """The rules every tx meets before its kind's own: schema, ownership, type, finality."""
    if kind is None:
        require(owner is None, INVALID_TRANSITION, f"{tx.key!r} holds a {owner and owner[0]}")
        return
    check_schema(kind, tx.key, tx.body)
    if owner is not None:
        require(owner[1] == organisation, NOT_OWNER, f"{tx.key!r} belongs to {owner[1]}")
        require(owner[0] == kind.type, INVALID_TRANSITION, f"{tx.key!r} holds a {owner[0]}")
        require(kind.mutable, INVALID_TRANSITION, f"a {kind.type} is final")


def execute_tx(
    state: Overlay, tx: Transaction, organisation: str, time_ms: int
) -> tuple[str, Writes]:
    """The outcome of `tx` against `state`, and what it writes if accepted."""
    owner_key = state_key(OWNERS, tx.key)
    owner = state.get(owner_key)
    kind = kind_of(tx.type)
    try:
        _common(kind, tx, owner, organisation)
        if kind is None:
            return ACCEPTED, {}
        context = Context(tx.key, tx.body, organisation, time_ms, tx.tx_id, owner is None)
        writes = kind.apply(state, context)
    except Refused as refused:
        return refused.code, {}
    if owner is None:
        writes[owner_key] = [kind.type, organisation]
    return ACCEPTED, writes


def settled_refusal(
    get: Getter, tx: Transaction, organisation: str, time_ms: int
) -> Refused | None:
    """The refusal `tx` is certain to meet in any block after the committed state `get`
    reads, whatever commits before it, or None: its schema, an owner or type that never
    changes once set, a final record, or its kind's settled rules (e.g. an invoice paid)."""
    kind = kind_of(tx.type)
    owner = get(state_key(OWNERS, tx.key))
    try:
        _common(kind, tx, owner, organisation)
        if kind is not None and kind.settled is not None:
            context = Context(tx.key, tx.body, organisation, time_ms, tx.tx_id, owner is None)
            kind.settled(Overlay(get), context)
    except Refused as refused:
        return refused
    return None


def execute(
    base: Getter, transactions: Iterable[Transaction], genesis: Genesis, time_ms: int,
    height: int, *, config: Config | None = None,
) -> Executed:  # fmt: skip
    """Run `transactions` in order on the state `base` as block `height` stamped `time_ms`
    would, under `config`: the configuration in force before it (ledger/gov; None: derived
    from `base`)."""
    configs = history.configs_for(genesis)
    before = configs.of_state(base) if config is None else config
    state = Overlay(base)
    outcomes = []
    for tx in transactions:
        code, writes = _execute_one(state, tx, before, configs, time_ms, height)
        state.update(writes)
        outcomes.append(code)
    return Executed(tuple(outcomes), state.writes)


def _execute_one(
    state: Overlay, tx: Transaction, before: Config, configs: history.Configs, time_ms: int,
    height: int,
) -> tuple[str, Writes]:  # fmt: skip
    if machine.is_governance(tx.key):  # its signer is an admin (the block's signer rules)
        gov = machine.GovTx(tx.client_id, tx.key, tx.type, tx.body)
        try:
            return ACCEPTED, machine.execute(state.get, gov, height, before, configs)
        except Refused as refused:
            return refused.code, {}
    refusal = execution_refusal(tx, before)
    if refusal is not None:
        return refusal, {}
    client = before.members.clients.get(tx.client_id)
    assert client is not None, "execute only txs that passed the block's signer rules"
    return execute_tx(state, tx, client.organisation, time_ms)


def outcome_leaf(tx_id: bytes, code: str) -> bytes:
    """The leaf data of a tx's outcome in the outcome tree: encode([tx_id, code])."""
    return encode([tx_id, code])


def outcome_root(tx_ids: Iterable[bytes], outcomes: Iterable[str]) -> bytes:
    return merkle.root([outcome_leaf(t, c) for t, c in zip(tx_ids, outcomes, strict=True)])


def accepted_root(body: Iterable[Transaction]) -> bytes:
    """The outcome root of `body` with every tx accepted."""
    ids = [t.tx_id for t in body]
    return outcome_root(ids, [ACCEPTED] * len(ids))


def check_outcomes(block_outcomes: tuple[str, ...], executed: Executed, height: int) -> None:
    """Raise `InvalidBlock` unless the block's outcomes are the ones execution gives."""
    if len(block_outcomes) != len(executed.outcomes):
        raise InvalidBlock(f"block {height} holds another number of outcomes than txs")
    if block_outcomes != executed.outcomes:
        index = next(
            i
            for i, (a, b) in enumerate(zip(block_outcomes, executed.outcomes, strict=True))
            if a != b
        )
        raise InvalidBlock(
            f"block {height} tx {index}: outcome {block_outcomes[index] or 'accepted'!r}, "
            f"the rules give {executed.outcomes[index] or 'accepted'!r}"
        )

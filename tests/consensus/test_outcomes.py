"""Outcomes in consensus: the primary computes them, every backup recomputes them against the
committed state plus the accepted blocks below, and refuses a block whose outcomes differ."""

from typing import Any, Final

import pytest

from consensus import events as ev
from consensus import messages as m
from consensus import rulestate
from consensus.replica import Replica
from ledger import block
from ledger import tx as txs
from ledger.block import Block, ChainHead, make_block
from ledger.kinds import base
from ledger.kinds.execute import Executed, execute
from tests import factory

NET: Final = factory.network(4)
T0: Final = factory.BASE_TIME_MS
CLERK: Final = "fiscal-clerk0"


def _replica(index: int) -> Replica:
    replica = Replica(
        NET.genesis, index, NET.validator_keys[index], ChainHead.genesis(NET.genesis),
        lambda _tx_id: False,
    )  # fmt: skip
    replica.handle(ev.Start(), T0)
    return replica


def _tx(key: str, type_: str, body: dict[str, Any]) -> txs.Transaction:
    return NET.tx(CLERK, key, body, T0, type_)


def _appropriation(cents: int) -> txs.Transaction:
    return _tx("fiscal/2027/parks", "budget.appropriation", {
        "fiscal_year": 2027, "fund": "general", "department": "parks", "amount_cents": cents,
        "closes_at_ms": T0 + 10**9,
    })  # fmt: skip


def _line(cents: int, key: str = "fiscal/lines/trees") -> txs.Transaction:
    return _tx(
        key, "budget.allocation", {"appropriation": "fiscal/2027/parks", "amount_cents": cents}
    )


def _payee() -> txs.Transaction:
    return _tx("fiscal/payees/acme", "payee.registration",
               {"name": "Acme", "tax_id": "T-1", "status": "active"})  # fmt: skip


def _pay(invoice: str, cents: int, key: str = "") -> txs.Transaction:
    return _tx(key or f"fiscal/pay/{invoice}", "budget.disbursement", {
        "line": "fiscal/lines/trees", "payee": "fiscal/payees/acme", "invoice": invoice,
        "amount_cents": cents,
    })  # fmt: skip


def _pre_prepare(block: Block) -> m.PrePrepare:
    return m.sign(
        m.PrePrepare(0, block.height, block, 0), NET.validator_keys[0], NET.genesis.chain_id
    )


def _prepared(actions: list[ev.Action]) -> list[int]:
    return [
        a.message.height
        for a in actions
        if isinstance(a, ev.Broadcast) and isinstance(a.message, m.Prepare)
    ]


def test_a_backup_prepares_right_outcomes_and_refuses_a_wrong_one() -> None:
    head = ChainHead.genesis(NET.genesis)
    body = (_appropriation(100), _line(200))  # the line asks more than is appropriated
    right = make_block(head, body, T0, 0, 0, ("", base.OVER_APPROPRIATION))
    wrong = make_block(head, body, T0, 0, 0, ("", ""))
    refusing = _replica(1)
    assert _prepared(refusing.handle(ev.Received(_pre_prepare(wrong)), T0 + 1)) == []
    assert refusing.counters["invalid_message:invalid_block"] == 1
    assert refusing.log.accepted(1) is None
    preparing = _replica(1)
    assert _prepared(preparing.handle(ev.Received(_pre_prepare(right)), T0 + 1)) == [1]


def test_a_pipelined_block_executes_against_the_accepted_block_below() -> None:
    head = ChainHead.genesis(NET.genesis)
    first = make_block(head, (_appropriation(1000), _line(600), _payee()), T0, 0, 0)
    second_body = (_pay("I-1", 500), _pay("I-2", 200), _pay("I-1", 10, "fiscal/pay/again"))
    codes = ("", base.OVER_ALLOCATION, base.DUPLICATE_PAYMENT)
    second = make_block(head.advance(first), second_body, T0, 0, 0, codes)
    backup = _replica(2)
    assert _prepared(backup.handle(ev.Received(_pre_prepare(first)), T0 + 1)) == [1]
    # Block 1 is accepted, not committed: block 2's outcomes depend on its writes.
    assert backup.committed_height == 0
    assert _prepared(backup.handle(ev.Received(_pre_prepare(second)), T0 + 2)) == [2]
    as_if_alone = make_block(
        head.advance(first), second_body, T0, 0, 0, (base.UNKNOWN_REFERENCE,) * 3
    )
    other = _replica(2)
    other.handle(ev.Received(_pre_prepare(first)), T0 + 1)
    assert _prepared(other.handle(ev.Received(_pre_prepare(as_if_alone)), T0 + 2)) == []
    assert other.counters["invalid_message:invalid_block"] == 1


def test_the_primary_stamps_the_outcomes_its_rules_give() -> None:
    primary = _replica(0)
    batch = (_appropriation(100), _line(60), _line(50, "fiscal/lines/paths"))
    actions = primary.handle(ev.ClientTxs(batch), T0 + 1)
    proposals = [
        a.message.block
        for a in actions
        if isinstance(a, ev.Broadcast) and isinstance(a.message, m.PrePrepare)
    ]
    assert [b.outcomes for b in proposals] == [("", "", base.OVER_APPROPRIATION)]


def test_the_primary_executes_its_proposal_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its own check of the block takes the execution it proposed with (same parent, height,
    time and txs); a backup executes the block once, to check it."""
    runs: list[int] = []

    def counted(*args: Any, **kwargs: Any) -> Executed:
        runs.append(len(args[1]))
        return execute(*args, **kwargs)

    monkeypatch.setattr(rulestate, "execute", counted)
    monkeypatch.setattr(block, "execute", counted)
    primary = _replica(0)
    batch = (_appropriation(100), _line(60), _line(50, "fiscal/lines/paths"))
    actions = primary.handle(ev.ClientTxs(batch), T0 + 1)
    proposals = [
        a.message
        for a in actions
        if isinstance(a, ev.Broadcast) and isinstance(a.message, m.PrePrepare)
    ]
    assert [pp.block.outcomes for pp in proposals] == [("", "", base.OVER_APPROPRIATION)]
    assert primary.log.accepted(1) == proposals[0].block  # checked, accepted, voted
    assert runs == [3]
    backup = _replica(1)
    assert _prepared(backup.handle(ev.Received(proposals[0]), T0 + 2)) == [1]
    assert runs == [3, 3]


def test_a_kept_proposal_is_not_taken_for_another_block() -> None:
    primary = _replica(0)
    primary.handle(ev.ClientTxs((_appropriation(100),)), T0 + 1)
    rules = primary.log.rules
    state = primary.log._state_below(2, primary.chain.head)
    parent = primary.log.parent(2, primary.chain.head)
    assert parent is not None
    body = (_line(60),)
    rules.outcomes(state, body, T0 + 5, 2, parent.hash)
    other_time = make_block(parent, body, T0 + 6, 0, 0, ("",))
    assert rules.proposed(other_time) is None
    rules.outcomes(state, body, T0 + 5, 2, parent.hash)
    same = make_block(parent, body, T0 + 5, 0, 0, ("",))
    assert rules.proposed(same) is not None
    assert rules.proposed(same) is None  # taken once

"""The shell's order rules (node/ordering.py), one rule at a time, without asyncio or a clock."""

import asyncio
import dataclasses

import pytest

from consensus import messages as m
from consensus.events import (
    Broadcast,
    CancelTimer,
    CommitBlock,
    Persist,
    Send,
    SetTimer,
    Timer,
)
from ledger import block as blocks
from ledger import tx as txs
from ledger.errors import InvalidTransaction
from node.admission import Admission
from node.ordering import (
    Admitted,
    Gate,
    Outbox,
    Write,
    check_cheap,
    peer_txs,
    relayer_ok,
    verify_signatures,
)
from tests import factory

NOW = factory.BASE_TIME_MS
NET = factory.network()
CLERK = "fiscal-clerk0"


def tx(n: int, *, timestamp_ms: int = NOW) -> txs.Transaction:
    return NET.tx(CLERK, f"fiscal/r{n}", {"n": n}, timestamp_ms)


def persist(n: int) -> Persist:
    return Persist(((b"k%d" % n, b"v"),))


def send(n: int) -> Send:
    return Send(1, m.Status(n, 0, 0))


def commit_block(*body: txs.Transaction) -> CommitBlock:
    block = blocks.make_block(blocks.ChainHead.genesis(NET.genesis), body, NOW, 0, 0)
    return CommitBlock(block, NET.certify(block))


def drain(outbox: Outbox) -> list[object]:
    """Everything the outbox lets out, writes finishing at once (a node without a writer)."""
    out: list[object] = []
    while (step := outbox.next()) is not None:
        out.append(step)
        if isinstance(step, Write):
            outbox.written(step)
    return out


# --- the outbox ------------------------------------------------------------------------------


def test_timers_come_back_at_once_and_the_rest_keeps_the_replicas_order() -> None:
    outbox = Outbox()
    timer, cancel = SetTimer(Timer.PROGRESS, NOW), CancelTimer(Timer.FETCH)
    now = outbox.push([send(1), timer, persist(1), persist(2), send(2), cancel, persist(3)])
    assert now == [timer, cancel]
    assert drain(outbox) == [
        send(1), Write((persist(1), persist(2))), send(2), Write((persist(3),))
    ]  # fmt: skip


def test_nothing_behind_a_write_under_way_comes_out_and_later_events_share_the_next_write() -> None:
    outbox = Outbox()
    outbox.push([persist(1), send(1)])
    first = outbox.next()
    assert first == Write((persist(1),))
    assert outbox.next() is None  # the send waits for the write
    outbox.push([persist(2)])  # two more events while the write is under way
    outbox.push([persist(3), Broadcast(m.Status(3, 0, 0))])
    assert outbox.next() is None
    assert isinstance(first, Write)
    outbox.written(first)
    assert outbox.next() == send(1)
    assert outbox.next() == Write((persist(2), persist(3)))  # one write for both events
    assert outbox.next() is None


def test_only_the_write_under_way_can_finish() -> None:
    outbox = Outbox()
    outbox.push([persist(1)])
    with pytest.raises(AssertionError):
        outbox.written(Write((persist(1),)))  # equal, but not the one handed out


def test_a_committed_block_counts_as_unwritten_until_its_write_finishes() -> None:
    a, b = tx(1), tx(2)
    outbox = Outbox()
    outbox.push([commit_block(a, b)])
    assert outbox.is_unwritten(a.tx_id)
    assert outbox.blocks_unwritten == 1
    write = outbox.next()
    assert isinstance(write, Write)
    assert len(write.blocks) == 1
    assert outbox.is_unwritten(b.tx_id)  # under way is not durable
    outbox.written(write)
    assert not outbox.is_unwritten(a.tx_id)
    assert outbox.blocks_unwritten == 0


# --- the admission rule order ----------------------------------------------------------------


def cheap(t: txs.Transaction, *, committed: bool = False, known: bool = False) -> str:
    """The reason `check_cheap` gives, or "" if `t` passes."""
    try:
        check_cheap(
            t, NET.genesis, NOW, seen=set(),
            is_committed=lambda _: committed, is_known=lambda _: known,
        )  # fmt: skip
    except InvalidTransaction as exc:
        return exc.reason
    return ""


def test_the_rules_run_cheapest_first() -> None:
    stale = tx(1, timestamp_ms=NOW - 10 * 3_600_000)
    assert cheap(tx(2)) == ""
    assert cheap(stale, committed=True, known=True) == txs.STALE_TIMESTAMP  # time before dups
    assert cheap(tx(3), committed=True, known=True) == txs.DUPLICATE
    foreign = dataclasses.replace(tx(4), client_id="nobody")
    assert cheap(foreign, committed=True) == txs.UNKNOWN_CLIENT  # who, before anything else


def test_the_same_tx_twice_in_one_request_is_refused_before_the_store_is_asked() -> None:
    t = tx(5)
    asked: list[bytes] = []
    with pytest.raises(InvalidTransaction, match="twice in one request"):
        check_cheap(
            t, NET.genesis, NOW, seen={t.tx_id},
            is_committed=lambda i: asked.append(i) is not None, is_known=lambda _: False,
        )  # fmt: skip
    assert asked == []


def test_signatures_are_the_last_rule() -> None:
    good = tx(6)
    client = NET.genesis.clients[CLERK]
    forged = dataclasses.replace(good, signature=bytes(64))
    assert verify_signatures([(good, client), (forged, client)]) == [True, False]


# --- peer messages ---------------------------------------------------------------------------


def test_a_txbatch_is_only_its_txs_and_a_preprepare_follows_its_txs() -> None:
    a, b = tx(7), tx(8)
    batch = m.sign(m.TxBatch((a, b), 1), NET.validator_keys[1], NET.genesis.chain_id)
    assert relayer_ok(batch, NET.genesis, 0)
    assert not relayer_ok(batch, NET.genesis, 1)  # from ourselves
    assert not relayer_ok(dataclasses.replace(batch, sender=2), NET.genesis, 0)
    assert peer_txs(batch, lambda i: i == a.tx_id) == ((b,), False)
    block = commit_block(a, b).block
    pp = m.PrePrepare(0, 1, block, 0)
    assert peer_txs(pp, lambda _: False) == ((a, b), True)
    assert peer_txs(m.Status(1, 0, 0), lambda _: False) == ((), True)


# --- admit, then submit ----------------------------------------------------------------------


def test_admitted_txs_stay_held_until_submitted_and_only_the_pools_room_is_taken() -> None:
    gate = Gate()
    a, b, c = tx(9), tx(10), tx(11)
    claim = gate.claim([a, b, c])
    assert gate.is_held(a.tx_id)
    assert gate.held(b.tx_id) is b
    admitted = gate.admit(claim, [True, False, True], [4, 5, 6])
    assert admitted.txs == (a, c)
    assert admitted.at == (4, 6)
    assert not gate.is_held(b.tx_id)  # refused: released at once
    assert gate.is_held(c.tx_id)  # admitted: known to every other admission until submitted
    assert gate.submit(admitted, room=1) == (a,)
    assert len(gate) == 0  # the one turned away is released too


def test_nothing_reaches_the_replica_that_the_gate_did_not_admit() -> None:
    gate = Gate()
    a = tx(12)
    with pytest.raises(AssertionError, match="does not hold"):
        gate.submit(Admitted(1, (a,)), room=10)  # made up, never admitted
    admitted = gate.admit(gate.claim([a]), [True])
    assert gate.submit(admitted, room=10) == (a,)
    with pytest.raises(AssertionError, match="does not hold"):
        gate.submit(admitted, room=10)  # twice
    claim = gate.claim([a])
    with pytest.raises(AssertionError, match="another claim"):
        gate.submit(Admitted(claim.number + 1, (a,)), room=10)
    with pytest.raises(AssertionError, match="held tx"):
        gate.claim([a])  # held: the cheap checks would have refused it


def test_a_claim_ends_once() -> None:
    gate = Gate()
    claim = gate.claim([tx(13)])
    gate.admit(claim, [False])
    with pytest.raises(AssertionError, match="claim already ended"):
        gate.admit(claim, [True])


# --- the node's admission holds what it admitted until the shell submits it -------------------


async def test_an_await_between_admission_and_submission_lets_no_second_admission_through() -> None:
    gate = Gate()
    pooled: set[bytes] = set()
    admission = Admission(
        NET.genesis, gate=gate, is_committed=lambda _: False, is_pending=pooled.__contains__,
        executor=None,
    )  # fmt: skip
    t = tx(14)
    first = await admission.admit([t], NOW)
    assert first.accepted == (t,)
    await asyncio.sleep(0)  # what the old comment-held rule forbade: harmless now
    second = await admission.admit([t], NOW)
    assert second.accepted == ()
    assert [r.reason for r in second.rejected] == [txs.DUPLICATE]
    assert admission.is_known(t.tx_id)
    assert gate.submit(first.admitted, room=10) == (t,)
    pooled.add(t.tx_id)  # the replica pooled it
    assert not gate.is_held(t.tx_id)
    assert admission.is_known(t.tx_id)

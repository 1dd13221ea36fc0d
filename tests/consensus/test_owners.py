"""The owners the replica's last kinds of state went to, one rule at a time: the committed head
and its window (Chain), the door for peer messages (Inbox), the state the liveness deadlines
derive from (Liveness), the outbox, and the log's answers for the normal case."""

import dataclasses
from collections import Counter
from pathlib import Path

import pytest

from consensus import events as ev
from consensus import messages as m
from consensus.chain import Chain
from consensus.epoch import Epoch
from consensus.inbox import Inbox
from consensus.journal import Restored
from consensus.liveness import Liveness
from consensus.log import Log
from consensus.outbox import Outbox
from consensus.pool import TxPool
from consensus.viewstate import ViewState
from ledger import block as blocks
from ledger import crypto
from tests import factory
from tests.ledger.epoch_chain import NET as EPOCH_NET
from tests.ledger.epoch_chain import epoch_chain
from tests.ledger.test_gov_chain import _record

NET = factory.network(4)
G = NET.genesis
WINDOW = 4
CHAIN = list(factory.chain(NET, 4, 1))
B = [block for block, _ in CHAIN]  # B[0] is height 1
GENESIS_HEAD = blocks.ChainHead.genesis(G)
FORGED = bytes(64)
T = G.params.view_change_timeout_ms


def head_at(height: int) -> blocks.ChainHead:
    head = GENESIS_HEAD
    for block in B[:height]:
        head = head.advance(block)
    return head


# --- the committed head ------------------------------------------------------------------------


def test_the_head_moves_one_certified_block_at_a_time_and_carries_the_window() -> None:
    chain = Chain(GENESIS_HEAD, None, WINDOW)
    assert [h for h in range(7) if chain.takes(h)] == [1, 2, 3, 4]
    with pytest.raises(AssertionError):
        chain.advance(B[1], CHAIN[1][1])  # height 2 on the genesis: not the next block
    chain.advance(B[0], CHAIN[0][1])
    assert (chain.height, chain.top, chain.certificate) == (1, 1 + WINDOW, CHAIN[0][1])
    assert not chain.takes(1)
    assert chain.takes(5)
    with pytest.raises(AssertionError):
        Chain(head_at(1), None, WINDOW)  # a head above the genesis comes with its certificate


# --- the door for peer messages ----------------------------------------------------------------


def test_the_inbox_drops_votes_outside_the_view_and_window_uncounted_and_counts_refusals() -> None:
    counts: Counter[str] = Counter()
    inbox = Inbox(Epoch.of_genesis(G), 0, counts)
    views = ViewState(Epoch.of_genesis(G), 0, timeout_max_ms=30_000)
    chain = Chain(GENESIS_HEAD, None, WINDOW)
    digest = B[0].hash
    assert not inbox.admits(m.Prepare(0, WINDOW + 1, digest, 1, FORGED), views, chain)
    assert not inbox.admits(m.Commit(1, 1, digest, 1, FORGED), views, chain)  # a later view
    assert counts == Counter()  # neither counted, and no signature checked
    assert not inbox.admits(m.Prepare(0, 1, digest, 0, FORGED), views, chain)  # our own index
    assert not inbox.admits(m.PrePrepare(0, 1, B[0], 1, FORGED), views, chain)  # not primary
    assert not inbox.admits(m.Prepare(0, 1, digest, 1, FORGED), views, chain)
    signed = m.sign(m.Prepare(0, 1, digest, 1), NET.validator_keys[1], G.chain_id)
    assert inbox.admits(signed, views, chain)
    assert inbox.size() == 1  # its signature is cached
    views.start(1)
    assert not inbox.admits(m.sign(m.Prepare(1, 1, digest, 1), NET.validator_keys[1], G.chain_id),
                            views, chain)  # fmt: skip
    with inbox.refusals():
        raise m.InvalidMessage(m.Reason.CHECKPOINT_HEIGHT)
    assert counts == {
        "invalid_message:sender": 1,
        "invalid_message:not_primary": 1,
        "invalid_message:bad_signature": 1,
        "invalid_message:checkpoint_height": 1,
    }


def test_the_inbox_of_a_later_epoch_drops_checkpoints_of_the_blocks_before_it_uncounted() -> None:
    """Block 4 ended epoch 0: a Checkpoint of it (or below) names its sender by epoch 0's
    index, so epoch 1's replica neither counts it against its own set nor checks a signature."""
    counts: Counter[str] = Counter()
    epoch = Epoch(dataclasses.replace(Epoch.of_genesis(G).config, epoch=1, epoch_height=4))
    inbox = Inbox(epoch, 0, counts)
    views = ViewState(epoch, 0, timeout_max_ms=30_000)
    chain = Chain(head_at(4), CHAIN[3][1], WINDOW)
    for height in (2, 4):
        vote = m.Checkpoint(height, B[height - 1].hash, 1)
        vote = m.sign(vote, NET.validator_keys[1], G.chain_id)
        assert not inbox.admits(vote, views, chain)
    assert counts == Counter()
    assert inbox.size() == 0
    forged = m.Checkpoint(6, B[3].hash, 1, FORGED)  # one of its own blocks: checked, refused
    assert not inbox.admits(forged, views, chain)
    assert counts == {f"invalid_message:{m.Reason.BAD_SIGNATURE}": 1}


# --- the liveness deadlines ------------------------------------------------------------------


def test_liveness_deadlines_derive_from_progress_the_tick_and_the_oldest_pooled_tx() -> None:
    live = Liveness(G.params, retransmit_ms=500)
    pool = TxPool(10)
    wanted = live.deadlines(pool, busy=True, normal=True)
    assert wanted == {ev.Timer.PROGRESS: T, ev.Timer.CENSORSHIP: None, ev.Timer.RETRANSMIT: None}
    live.start(1000)
    assert live.deadlines(pool, busy=True, normal=True)[ev.Timer.PROGRESS] == 1000 + T
    assert live.deadlines(pool, busy=False, normal=True)[ev.Timer.PROGRESS] is None  # idle
    assert live.deadlines(pool, busy=True, normal=False)[ev.Timer.PROGRESS] is None  # in a VC
    assert live.deadlines(pool, busy=True, normal=True)[ev.Timer.RETRANSMIT] == 1500
    live.progressed(2000)
    assert live.deadlines(pool, busy=True, normal=True)[ev.Timer.PROGRESS] == 2000 + T
    pool.add(B[1].txs[0], 2100)
    live.committed(B[0], 2100 + T // 2 + 1)  # a block with room passed the tx over
    assert live.deadlines(pool, busy=True, normal=True)[ev.Timer.CENSORSHIP] == 2100 + T
    assert live.deadlines(pool, busy=True, normal=False)[ev.Timer.CENSORSHIP] is None
    live.new_view(9000)  # the new primary has not passed it over yet
    assert live.deadlines(pool, busy=True, normal=True)[ev.Timer.CENSORSHIP] is None
    assert live.deadlines(pool, busy=True, normal=True)[ev.Timer.PROGRESS] == 9000 + T
    assert not live.tick(1500, 3)
    assert live.tick(2000, 3)  # the head did not move between two ticks


# --- the outbox --------------------------------------------------------------------------------


def test_the_outbox_signs_keeps_the_order_and_puts_timer_changes_last() -> None:
    out = Outbox(NET.validator_keys[0], G.chain_id)
    status = out.broadcast(m.Status(0, 0, 0))
    assert m.verify_signature(status, G)
    out.send(2, m.Status(0, 0, 0))
    out.emit(ev.TxsExpired((b"t",)))
    deadlines: dict[ev.Timer, int | None] = {ev.Timer.RETRANSMIT: 500, ev.Timer.PROPOSE: 100}
    actions = out.take(deadlines)
    assert [type(a) for a in actions[:3]] == [ev.Broadcast, ev.Send, ev.TxsExpired]
    assert actions[3:] == [
        ev.SetTimer(ev.Timer.PROPOSE, 100),
        ev.SetTimer(ev.Timer.RETRANSMIT, 500),
    ]
    assert out.take(deadlines) == []  # empty, and the shell holds both deadlines
    out.fired(ev.Timer.PROPOSE)
    assert out.take(deadlines) == [ev.SetTimer(ev.Timer.PROPOSE, 100)]
    assert out.take({ev.Timer.PROPOSE: None}) == [ev.CancelTimer(ev.Timer.PROPOSE)]


# --- the log's answers for the normal case -----------------------------------------------------


def test_the_log_names_the_prepared_run_above_the_head_and_the_next_block_to_commit() -> None:
    log = Log(G)
    slots = [log.accept(0, B[h], head_at(h), checked=True) for h in range(3)]
    for slot in (slots[0], slots[2]):
        for sender in range(3):
            slot.add_vote(slot.prepare_vote(0, sender))
    assert [p.height for p in log.newly_prepared(3)] == [1, 3]
    assert [s.height for s in log.prepared_run(0)] == [1]  # Commit for 3 waits for 2
    assert log.committable(0, 3) is None
    for sender in range(3):
        slots[0].add_vote(slots[0].commit_vote(0, sender))
    assert log.committable(0, 3) is slots[0]
    slots[1].vote(slots[1].prepare_vote(0, 3))
    assert slots[1].own_prepare == m.Prepare(0, 2, B[1].hash, 3)


def test_a_held_pre_prepare_follows_the_block_below_only_in_its_view() -> None:
    log = Log(G)
    pp = m.PrePrepare(0, 2, B[1], 0, FORGED)
    log.hold(pp)
    assert log.follower(1, view=1) is None  # of another view: dropped
    assert log.follower(1, view=0) is None
    log.hold(pp)
    assert log.follower(1, view=0) == pp
    assert log.waiting == {}


def test_the_log_restores_only_the_prepared_proofs_the_set_in_force_signs() -> None:
    """A proof the journal kept from before the block that ended the last epoch was signed by
    that epoch's set: a restarted replica drops it rather than carry it into a ViewChange that
    every peer would refuse (seed 4967 at n = 4, docs/protocol.md 13.5 rule 2)."""

    def proof(height: int, keys: list[crypto.Ed25519PrivateKey]) -> m.PreparedProof:
        votes = tuple(
            (i, crypto.sign(keys[i], crypto.Domain.PEER,
                            m.prepare_payload(G.chain_id, i, 1, height, B[height - 1].hash)))
            for i in range(G.quorums.commit)
        )  # fmt: skip
        return m.PreparedProof(1, height, B[height - 1].hash, votes)

    rotated = list(NET.validator_keys)
    rotated[0] = factory.seeded_key("test/owners/rotated/node0")  # node0's key before its rotation
    signed, stale = proof(2, NET.validator_keys), proof(3, rotated)
    restored = Restored(
        1,
        in_view_change=True,
        prepared={2: signed, 3: stale},
        accepted=(),
        blocks=(B[1], B[2]),
        stable=None,
    )
    log = Log(G)
    log.restore(head_at(1), restored, G)
    assert log.prepared == {2: signed}
    assert set(log.blocks) == {B[1].hash, B[2].hash}  # the blocks stay: fetched by hash


def test_the_commit_that_ends_an_epoch_voids_the_prepared_proofs_above_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Proofs above the block that ends the epoch were made by its set, for blocks that do not
    extend it (none is voted on above a boundary in flight): the commit drops them, or the
    replica's ViewChanges in the new epoch would carry them and be refused by every peer."""
    with epoch_chain(tmp_path / "chain", monkeypatch) as chain:
        end = chain.validator_change(
            "p1", "rotate-validator-key", "node0", url="https://n0.example:1"
        )
        chain.block(_record("fiscal-clerk0", "fiscal/above"))
        committed = [chain.store.block(h) for h in range(1, end + 1)]
    above = m.PreparedProof(0, end + 1, bytes(32), ())  # what it holds is not the log's business
    log = Log(EPOCH_NET.genesis)
    log.prepared[end + 1] = above
    for block in committed[:-1]:
        assert block is not None
        assert not log.committed(block)
    assert log.prepared == {end + 1: above}  # proofs above the head stay across commits
    assert committed[-1] is not None
    assert log.committed(committed[-1])
    assert log.prepared == {}

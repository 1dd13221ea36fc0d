"""The view change's moved parts, one rule at a time: the re-proposal of a NewView (blocks named
by hash, fetched from their holders and checked against the hash), the blocks the log keeps for
it, the view state's answers to ViewChanges, and the retransmit tick."""

import pytest

from consensus import messages as m
from consensus.epoch import Epoch
from consensus.journal import Journal
from consensus.liveness import Ticker
from consensus.log import BLOCKS_PER_HEIGHT_MAX, Log
from consensus.reproposal import Reproposal
from consensus.viewchange import Selection
from consensus.viewstate import ViewState
from ledger import block as blocks
from ledger import crypto
from tests import factory

NET = factory.network(4)
G = NET.genesis
WINDOW = 8
CHAIN = list(factory.chain(NET, 5, 1))
B = [block for block, _ in CHAIN]  # B[0] is height 1


def head_at(height: int) -> blocks.ChainHead:
    head = blocks.ChainHead.genesis(G)
    for block in B[:height]:
        head = head.advance(block)
    return head


def fork_at(height: int, view: int) -> blocks.Block:
    tx = NET.tx("fiscal-clerk0", "fiscal/fork", {"v": view}, factory.BASE_TIME_MS)
    return blocks.make_block(head_at(height - 1), (tx,), factory.BASE_TIME_MS + 1, view, view % 4)


def selection(
    base: int, chosen: list[blocks.Block], holders: tuple[int, ...] = (1, 2)
) -> Selection:
    base_hash = B[base - 1].hash if base else G.hash
    hashes = tuple(b.hash for b in chosen)
    return Selection(base, base_hash, 1, hashes, tuple(holders for _ in chosen))


def held(*have: blocks.Block):  # type: ignore[no-untyped-def]
    return {b.hash: b for b in have}.get


# --- re-proposal -------------------------------------------------------------------------------


def test_a_reproposal_waits_for_the_base_and_for_every_block_it_names() -> None:
    pending = Reproposal(selection(1, [B[1], B[2]]), own_index=0)
    assert pending.ready(head_at(0), held(B[1], B[2])) is None  # the head is below the base
    assert pending.ready(head_at(1), held(B[1])) is None  # block 3 is missing
    assert pending.ready(head_at(1), held(B[1], B[2])) == (B[1], B[2])
    assert pending.ready(head_at(2), held(B[2])) == (B[2],)  # block 2 committed meanwhile


def test_a_reproposal_stops_at_a_block_that_does_not_extend_the_one_below() -> None:
    stale = fork_at(2, 0)
    pending = Reproposal(selection(1, [stale, B[2], B[3]]), own_index=0)
    assert pending.ready(head_at(1), held(stale)) is None  # block 3 might extend it
    # B[2] extends the chain's block 2, not `stale`: block 4 above the break is not needed.
    assert pending.ready(head_at(1), held(stale, B[2])) == (stale,)


def test_missing_blocks_are_asked_of_one_holder_per_round_never_of_ourselves() -> None:
    pending = Reproposal(selection(1, [B[1], B[2], B[3]], holders=(0, 2, 3)), own_index=0)
    head = head_at(1)
    assert pending.requests(head, held(B[2])) == [(2, (B[1].hash, B[3].hash))]
    assert pending.requests(head, held(B[2])) == []  # once per round
    pending.tick()
    assert pending.requests(head, held(B[2])) == [(3, (B[1].hash, B[3].hash))]
    pending.tick()
    assert pending.requests(head, held(B[1], B[2])) == [(2, (B[3].hash,))]
    assert Reproposal(selection(1, [B[1]]), 0).requests(head_at(0), held()) == []  # base first


def test_a_block_is_wanted_only_if_its_hash_is_the_one_named_at_its_height() -> None:
    pending = Reproposal(selection(1, [B[1], B[2]]), own_index=0)
    head = head_at(1)
    assert pending.wants(B[1], head, set())
    assert pending.wants(B[2], head, set())
    assert not pending.wants(B[2], head, {B[2].hash})  # already held: a second holder's reply
    assert not pending.wants(fork_at(2, 3), head, set())  # another block at a named height
    assert not pending.wants(B[3], head, set())  # a height the selection does not name
    assert not pending.wants(B[1], head_at(2), set())  # already committed here
    assert not pending.wants(B[1], head_at(0), set())  # below the base: nothing is asked yet
    swapped = blocks.Block(B[2].header, B[1].txs, B[2].hash)  # the header's hash, other txs
    with pytest.raises(m.InvalidMessage) as caught:
        pending.wants(swapped, head, set())
    assert caught.value.reason is m.Reason.INVALID_BLOCK


# --- the blocks the log keeps ----------------------------------------------------------------


def test_the_log_keeps_blocks_by_hash_a_bounded_number_per_height_and_forgets_committed() -> None:
    log = Log(NET.genesis)
    forks = [fork_at(2, v) for v in range(BLOCKS_PER_HEIGHT_MAX + 2)]
    votes = ((0, bytes(64)), (1, bytes(64)), (2, bytes(64)))
    log.prepared[2] = m.PreparedProof(0, 2, forks[0].hash, votes)  # the first is named
    for block in forks:
        log.keep(block)
    assert forks[0].hash in log.blocks  # never dropped while a prepared proof names it
    kept = [b for b in log.blocks.values() if b.height == 2]
    assert len(kept) == BLOCKS_PER_HEIGHT_MAX + 1
    assert forks[-1] in kept
    assert forks[1] not in kept  # the oldest others go first
    assert log.known([forks[-1].hash, bytes(32)]) == [forks[-1]]
    log.keep(B[2])
    log.committed(B[1])
    assert list(log.blocks.values()) == [B[2]]
    assert log.within(2, 2 + WINDOW)


def test_the_journal_restores_every_block_accepted_above_the_head_for_the_log() -> None:
    journal = Journal(0, WINDOW)
    stale = fork_at(2, 0)
    writes = [journal.accepted(0, b) for b in (B[0], stale, B[1], B[2])]
    disk: dict[bytes, bytes] = {}
    for w in writes:
        disk.update(w.puts)
    restored = Journal(1, WINDOW).restore(disk, head_at(1), WINDOW)
    assert sorted(b.hash for b in restored.blocks) == sorted(b.hash for b in (stale, B[1], B[2]))


# --- view state -----------------------------------------------------------------------------


def view_change(
    sender: int, new_view: int, prepared: tuple[m.PreparedProof, ...] = ()
) -> m.ViewChange:
    return m.ViewChange(new_view, 0, G.hash, None, prepared, sender)


def test_a_stale_view_change_is_answered_with_the_new_view_it_missed() -> None:
    views = ViewState(Epoch.of_genesis(G), 1, timeout_max_ms=30_000)
    views.start(1)
    nv = m.NewView(1, tuple(view_change(s, 1) for s in (0, 1, 2)), 1)
    views.install(nv, WINDOW)
    join, send = views.on_view_change(view_change(3, 1), WINDOW)
    assert join is None
    assert [(s.to, s.message) for s in send] == [(3, nv)]
    join, send = views.on_view_change(view_change(3, 2), WINDOW)
    assert (join, send) == (None, [])  # one replica alone does not move us
    join, _ = views.on_view_change(view_change(2, 2), WINDOW)
    assert join == 2


def test_our_view_change_names_our_head_and_prepared_blocks_by_hash() -> None:
    views = ViewState(Epoch.of_genesis(G), 2, timeout_max_ms=30_000)
    views.start(3)
    votes = tuple(
        (i, crypto.sign(NET.validator_keys[i], crypto.Domain.PEER,
                        m.prepare_payload(G.chain_id, i, 1, 2, B[1].hash)))
        for i in range(3)
    )  # fmt: skip
    proof = m.PreparedProof(1, 2, B[1].hash, votes)
    vc = views.view_change(head_at(1), CHAIN[0][1], {2: proof})
    assert (vc.new_view, vc.committed_height, vc.committed_hash) == (3, 1, B[0].hash)
    assert vc.prepared == (proof,)
    assert vc.sender == 2
    raw = m.encode_message(m.sign(vc, NET.validator_keys[2], G.chain_id), G.chain_id)
    assert B[1].encode() not in raw  # the hash travels, the block does not


def test_installing_a_new_view_leaves_its_reproposal_pending() -> None:
    views = ViewState(Epoch.of_genesis(G), 0, timeout_max_ms=30_000)
    views.start(1)
    nv = m.NewView(1, tuple(view_change(s, 1) for s in (0, 1, 2)), 1)
    views.install(nv, WINDOW)
    assert not views.in_view_change
    assert views.reproposal is not None
    assert views.reproposal.selection.hashes == ()
    views.start(2)
    assert views.reproposal is None  # a later view change drops it


# --- the retransmit tick ----------------------------------------------------------------------


def test_the_retransmit_tick_is_derived_from_its_last_run_and_sees_a_stalled_head() -> None:
    ticker = Ticker(500)
    assert ticker.deadline_ms() is None  # not started
    ticker.start(100)
    assert ticker.deadline_ms() == 600
    assert not ticker.tick(600, 3)  # the first tick has nothing to compare with
    assert ticker.deadline_ms() == 1100
    assert ticker.tick(1100, 3)  # no commit since the last tick: stalled
    assert not ticker.tick(1600, 4)

"""The replica's parts, one rule at a time: journal, proposer, checkpoints, view state,
catch-up, signature cache and timers (each owns one kind of state, and returns values)."""

from collections import Counter
from dataclasses import replace

import pytest

from consensus import events as ev
from consensus import messages as m
from consensus.catchup import CatchUp, check_certified
from consensus.censorship import CensorshipWatch, censorship_deadline, has_room
from consensus.checkpoints import Checkpoints, StableProof
from consensus.epoch import Epoch
from consensus.journal import (
    KEY_VIEW,
    PREFIX_ACCEPTED,
    PREFIX_PREPARED,
    Journal,
    height_key,
    parse_height_key,
)
from consensus.log import Log
from consensus.pool import ORDER_SLACK, TxPool
from consensus.proposer import Proposer
from consensus.signatures import SignatureCache
from consensus.timers import Timers
from consensus.viewstate import VIEW_AHEAD_MAX, ViewState
from ledger import block as blocks
from ledger import crypto
from ledger.genesis import ConsensusParams, Quorums
from ledger.primitives import TX_BYTES_MAX
from tests import factory

NET = factory.network(4)
G = NET.genesis
WINDOW = 8
CHAIN = list(factory.chain(NET, 6, 1))
GENESIS_HEAD = blocks.ChainHead.genesis(G)


def head_at(height: int) -> blocks.ChainHead:
    head = GENESIS_HEAD
    for block, _ in CHAIN[:height]:
        head = head.advance(block)
    return head


def proof(block: blocks.Block, view: int) -> m.PreparedProof:
    votes = tuple(
        (i, crypto.sign(NET.validator_keys[i], crypto.Domain.PEER,
                        m.prepare_payload(G.chain_id, i, view, block.height, block.hash)))
        for i in range(G.quorums.commit)
    )  # fmt: skip
    return m.PreparedProof(view, block.height, block.hash, votes)


def disk_after(writes: list[ev.Persist]) -> dict[bytes, bytes]:
    disk: dict[bytes, bytes] = {}
    for w in writes:
        disk.update(w.puts)
        for key in w.deletes:
            disk.pop(key, None)
    return disk


# --- journal ---------------------------------------------------------------------------------


def test_the_journal_restores_what_was_accepted_and_prepared_above_the_head() -> None:
    journal = Journal(0, WINDOW)
    b1, b2, b3 = (CHAIN[i][0] for i in range(3))
    writes = [journal.view(2, in_view_change=False)]
    writes += [journal.accepted(2, b) for b in (b1, b2, b3)]
    writes += [journal.prepared(proof(b1, 2)), journal.prepared(proof(b2, 1))]
    restored = Journal(1, WINDOW).restore(disk_after(writes), head_at(1), WINDOW)
    assert (restored.view, restored.in_view_change) == (2, False)
    assert restored.accepted == (b2, b3)  # height 1 is committed: void
    assert list(restored.prepared) == [2]
    assert restored.prepared[2] == proof(b2, 1)


def test_the_journal_restores_no_accepted_chain_during_a_view_change_or_across_views() -> None:
    journal = Journal(0, WINDOW)
    b1, b2 = CHAIN[0][0], CHAIN[1][0]
    writes = [journal.view(3, in_view_change=True), journal.accepted(3, b1)]
    assert Journal(0, WINDOW).restore(disk_after(writes), GENESIS_HEAD, WINDOW).accepted == ()
    writes = [journal.view(3, in_view_change=False), journal.accepted(2, b1)]
    assert Journal(0, WINDOW).restore(disk_after(writes), GENESIS_HEAD, WINDOW).accepted == ()
    writes = [journal.view(0, in_view_change=False), journal.accepted(0, b2)]  # no parent
    assert Journal(0, WINDOW).restore(disk_after(writes), GENESIS_HEAD, WINDOW).accepted == ()


def test_the_journal_collects_every_entry_at_or_below_a_stable_checkpoint() -> None:
    journal = Journal(0, WINDOW)
    writes = [journal.accepted(0, b) for b, _ in CHAIN[:5]]
    writes += [journal.prepared(proof(b, 0)) for b, _ in CHAIN[:5]]
    stable = StableProof(4, CHAIN[3][0].hash, ((0, b"a"), (1, b"b"), (2, b"c")))
    writes.append(journal.collect(stable))
    disk = disk_after(writes)
    heights = sorted(h for k in disk if (p := parse_height_key(k)) for h in [p[1]])
    assert heights == [5, 5]
    assert journal.size() == 1  # the one block still referenced
    assert disk == disk_after([*writes, journal.collect(stable)])  # nothing more to collect
    assert Journal(4, WINDOW).restore(disk, head_at(4), WINDOW).stable == stable  # after a restart
    # the block's write was lost in a crash: the proof above the head is forgotten
    assert Journal(3, WINDOW).restore(disk, head_at(3), WINDOW).stable is None
    assert Journal(0, WINDOW).restore({}, GENESIS_HEAD, WINDOW).stable is None


def test_the_journal_key_layout_is_parsed_by_prefix_and_width_not_by_length_alone() -> None:
    assert parse_height_key(height_key(PREFIX_ACCEPTED, 7)) == (PREFIX_ACCEPTED, 7)
    assert parse_height_key(height_key(PREFIX_PREPARED, 2**40)) == (PREFIX_PREPARED, 2**40)
    assert parse_height_key(KEY_VIEW) is None
    assert parse_height_key(b"x/" + bytes(8)) is None
    assert parse_height_key(PREFIX_ACCEPTED + bytes(9)) is None


# --- proposer --------------------------------------------------------------------------------


def proposer(params: ConsensusParams = G.params, depth: int = 2) -> Proposer:
    """A proposer for its pure rules (`timing`, `choose`): its own pool and log stay empty."""
    return Proposer(params, depth, TxPool(1), Log(G), lambda _: False)


def pool_of(*stamps: int) -> TxPool:
    pool = TxPool(100)
    for i, stamp in enumerate(stamps):
        pool.add(NET.tx("fiscal-clerk0", f"fiscal/p/{i}", {"i": i}, stamp), 0)
    return pool


def test_the_proposer_is_due_one_interval_after_the_last_and_one_more_per_block_in_flight() -> None:
    rules = proposer()
    rules.last_proposal_ms = 1000
    interval = G.params.block_interval_ms
    pool = pool_of(factory.BASE_TIME_MS)
    assert rules.timing(pool, frozenset(), 0, 1000).due_ms == 1000 + interval
    assert not rules.timing(pool, frozenset(), 0, 1000).now
    assert rules.timing(pool, frozenset(), 0, 1000 + interval).now
    assert rules.timing(pool, frozenset(), 1, 1000 + interval).due_ms == 1000 + 2 * interval
    assert rules.timing(pool, frozenset(), 2, 10**9).due_ms is None  # the pipeline is full
    assert rules.timing(TxPool(1), frozenset(), 0, 10**9).due_ms is None  # nothing pending
    everything = frozenset(t.tx_id for t in pool.candidates(frozenset()))
    assert rules.timing(pool, everything, 1, 10**9).due_ms is None  # all in flight


def test_the_proposer_goes_at_once_with_a_full_block_of_pending_txs() -> None:
    params = replace(G.params, block_txs_max=2)
    rules = proposer(params)
    rules.last_proposal_ms = 1000
    assert rules.timing(pool_of(0, 0), frozenset(), 0, 1001).now
    assert not rules.timing(pool_of(0), frozenset(), 0, 1001).now


def test_the_proposer_chooses_oldest_first_within_ttl_skew_and_the_block_limits() -> None:
    now = factory.BASE_TIME_MS
    params = G.params
    pool = pool_of(
        now - params.tx_ttl_ms - 1,  # expired
        now,
        now + params.clock_skew_ms + 1,  # too far ahead of the block's stamp
        now - 5,
        now - 6,
    )
    ids = [t.tx_id for t in pool.candidates(frozenset())]
    chosen = proposer(params).choose(pool, frozenset({ids[3]}), now, {ids[4]}.__contains__)
    assert [t.tx_id for t in chosen] == [ids[1]]  # in flight, committed, out of time: skipped
    few = proposer(replace(params, block_txs_max=1)).choose(pool, frozenset(), now, lambda _: False)
    assert [t.tx_id for t in few] == [ids[1]]


# --- checkpoints -----------------------------------------------------------------------------


def checkpoint(sender: int, height: int, digest: bytes) -> m.Checkpoint:
    return m.Checkpoint(height, digest, sender, b"s")


def test_a_checkpoint_is_stable_with_a_quorum_that_matches_our_own_block() -> None:
    cps = Checkpoints(interval=4, quorum=3)
    good, bad = b"\x01" * 32, b"\x02" * 32
    assert cps.record(checkpoint(1, 4, good), limit=10) is None
    assert cps.record(checkpoint(2, 4, good), limit=10) is None
    assert cps.record(checkpoint(3, 4, bad), limit=10) is None
    assert cps.stable == 0  # three votes, but we have not committed height 4 ourselves
    stable = cps.own(checkpoint(0, 4, good), limit=10)
    assert stable == StableProof(4, good, ((0, b"s"), (1, b"s"), (2, b"s")))
    assert (cps.stable, cps.proof) == (4, stable)
    assert cps.size() == 0  # everything at or below the stable checkpoint is forgotten


def test_a_checkpoint_quorum_for_another_block_or_outside_the_window_is_not_stable() -> None:
    cps = Checkpoints(interval=4, quorum=3)
    good, bad = b"\x01" * 32, b"\x02" * 32
    cps.own(checkpoint(0, 4, good), limit=10)
    for sender in (1, 2, 3):
        assert cps.record(checkpoint(sender, 4, bad), limit=10) is None
        assert cps.record(checkpoint(sender, 12, good), limit=10) is None  # above the window
    assert cps.stable == 0
    assert cps.is_due(8)
    assert not cps.is_due(6)
    with pytest.raises(m.InvalidMessage, match="checkpoint_height"):
        cps.record(checkpoint(1, 6, good), limit=10)  # no checkpoint is taken at 6


# --- view state ------------------------------------------------------------------------------


def view_change(sender: int, new_view: int) -> m.ViewChange:
    return m.ViewChange(new_view, 0, G.hash, None, (), sender)


def test_f_plus_one_view_changes_for_later_views_make_a_replica_join_the_lowest() -> None:
    views = ViewState(Epoch.of_genesis(G), 0, timeout_max_ms=30_000)
    assert views.add(view_change(1, 3), WINDOW) is None  # one replica alone may be faulty
    assert views.add(view_change(2, 2), WINDOW) == 2
    assert views.add(view_change(3, 1 + VIEW_AHEAD_MAX), WINDOW) is None
    assert views.size() == 2  # the one too far ahead is not kept


def test_at_an_epochs_first_block_a_replica_enters_the_view_the_last_was_certified_in() -> None:
    """Nothing above that block is in flight, so its view's NewView binds nothing more: a
    replica in an earlier view, or still changing to that one, enters it; a later view, or a
    block inside the epoch, changes nothing (protocol 13.5). (The genesis has no certificate.)"""
    epoch = Epoch(replace(Epoch.of_genesis(G).config, epoch=1, epoch_height=4))  # heights 5...

    def cert(height: int, view: int) -> blocks.Certificate:
        return blocks.Certificate(height, bytes(32), view, ())

    views = ViewState(epoch, 0, timeout_max_ms=30_000)
    views.add(view_change(1, 1), WINDOW)
    assert not views.at_boundary(None)
    assert not views.at_boundary(cert(5, 2))  # inside the epoch: its NewView may bind
    assert views.at_boundary(cert(4, 2))
    assert (views.view, views.in_view_change, views.size()) == (2, False, 0)
    assert not views.at_boundary(cert(4, 1))  # an earlier view than ours
    assert not views.at_boundary(cert(4, 2))  # ours already
    views.start(3)
    assert views.at_boundary(cert(4, 3))  # the view we were changing to: it was installed
    assert (views.view, views.in_view_change) == (3, False)
    views.start(5)
    assert not views.at_boundary(cert(4, 4))  # a later view change goes on, in the new set
    assert (views.view, views.in_view_change) == (5, True)


def test_the_view_change_patience_doubles_per_attempt_up_to_the_cap_and_resets_on_commit() -> None:
    base = G.params.view_change_timeout_ms
    views = ViewState(Epoch.of_genesis(G), 1, timeout_max_ms=3 * base)
    views.start(1)
    patience = []
    for _ in range(4):
        views.own(view_change(1, 1), now_ms=0)
        patience.append(views.deadline_ms())
    assert patience == [base, 2 * base, 3 * base, 3 * base]
    views.committed()
    views.own(view_change(1, 1), now_ms=100)
    assert views.deadline_ms() == 100 + base


def test_only_the_new_primary_with_a_quorum_of_view_changes_sends_a_new_view() -> None:
    views = ViewState(Epoch.of_genesis(G), 1, timeout_max_ms=30_000)
    views.start(1)
    views.own(view_change(1, 1), now_ms=0)
    assert views.quorum_for_new_view() is None
    views.add(view_change(2, 1), WINDOW)
    assert views.quorum_for_new_view() is None
    views.add(view_change(3, 1), WINDOW)
    chosen = views.quorum_for_new_view()
    assert chosen is not None
    assert [vc.sender for vc in chosen] == [1, 2, 3]
    other = ViewState(Epoch.of_genesis(G), 2, timeout_max_ms=30_000)
    other.start(1)
    for sender in (1, 2, 3):
        other.votes.setdefault(1, {})[sender] = view_change(sender, 1)
    assert other.quorum_for_new_view() is None  # validator 2 is not the primary of view 1


def signed(msg: m.M, sender: int) -> m.M:
    return m.sign(msg, NET.validator_keys[sender], G.chain_id)


@pytest.mark.parametrize(
    ("new_view", "reason"),
    [
        (m.NewView(1, tuple(signed(view_change(s, 1), s) for s in (0, 1, 2)), 2),
         m.Reason.NOT_PRIMARY),
        (m.NewView(1, tuple(signed(view_change(s, 1), s) for s in (0, 1)), 1), m.Reason.NEW_VIEW),
        (m.NewView(1, tuple(signed(view_change(s, 1), s) for s in (0, 0, 1)), 1),
         m.Reason.NEW_VIEW),
        (m.NewView(1, tuple(signed(view_change(s, 2), s) for s in (0, 1, 2)), 1),
         m.Reason.NEW_VIEW),
        (m.NewView(1, (*(signed(view_change(s, 1), s) for s in (0, 1)), view_change(2, 1)), 1),
         m.Reason.NEW_VIEW),
    ],
)  # fmt: skip
def test_a_new_view_needs_its_primary_and_a_quorum_of_signed_view_changes_for_it(
    new_view: m.NewView, reason: m.Reason
) -> None:
    views = ViewState(Epoch.of_genesis(G), 3, timeout_max_ms=30_000)
    with pytest.raises(m.InvalidMessage) as caught:
        views.check_new_view(new_view, SignatureCache(G), WINDOW)
    assert caught.value.reason is reason


# --- catch-up --------------------------------------------------------------------------------


def test_catch_up_fetches_only_when_f_plus_one_peers_are_ahead_and_one_fetch_at_a_time() -> None:
    catchup = CatchUp(0, Quorums(4), blocks_max=2, timeout_ms=500)
    catchup.note(1, 0, 9)
    assert catchup.catch_up(2, now_ms=0) == []  # one peer ahead may be lying
    catchup.note(2, None, 5)
    fetch = catchup.catch_up(2, now_ms=10)
    assert fetch == [ev.FetchBlocks(1, 3, 4)]  # towards what f+1 report, at most blocks_max
    assert catchup.deadline_ms() == 510
    assert catchup.catch_up(2, now_ms=20) == []  # one fetch at a time
    assert not catchup.answered(2)
    assert catchup.answered(1)
    assert catchup.deadline_ms() is None


def test_one_peer_whose_view_change_shows_a_certified_head_above_ours_is_fetched_from() -> None:
    """No f+1 reports are needed when the head proves itself; a forged certificate, a head
    not above ours, or a fetch under way asks nothing."""
    _, cert = CHAIN[3]  # height 4
    epoch = Epoch.of_genesis(G)

    def shown(certificate: blocks.Certificate) -> m.ViewChange:
        return m.ViewChange(3, certificate.height, certificate.block_hash, certificate, (), 1)

    catchup = CatchUp(0, Quorums(4), blocks_max=8, timeout_ms=500)
    forged = replace(cert, votes=tuple((i, bytes(64)) for i, _ in cert.votes))
    assert catchup.head_shown(shown(forged), epoch, 2, now_ms=0) == []
    assert catchup.head_shown(shown(cert), epoch, 4, now_ms=0) == []  # not above ours
    assert catchup.head_shown(shown(cert), epoch, 2, now_ms=0) == [ev.FetchBlocks(1, 3, 4)]
    assert catchup.head_shown(shown(cert), epoch, 2, now_ms=1) == []  # one fetch at a time


def test_a_probe_asks_every_other_peer_in_turn_whatever_peers_report() -> None:
    catchup = CatchUp(2, Quorums(4), blocks_max=8, timeout_ms=500)
    asked = []
    for now in range(6):
        (fetch,) = catchup.probe(5, now_ms=now)
        assert (fetch.from_height, fetch.to_height) == (6, 13)  # no report: up to blocks_max
        assert catchup.probe(5, now_ms=now) == []  # one fetch at a time
        assert catchup.answered(fetch.peer)
        asked.append(fetch.peer)
    assert sorted(asked) == [0, 0, 1, 1, 3, 3], "each other peer in turn, never itself"
    catchup.new_epoch(0, Quorums(1))
    assert catchup.probe(5, now_ms=9) == [], "a set of one has no one to ask"


def test_the_base_of_a_new_view_is_fetched_elsewhere_once_its_sender_gave_nothing() -> None:
    """Regression (seed 3 at n = 7 of the first reconfig sweep): the sender whose ViewChange
    named the base was removed from the set and stopped; asked again and again, it never
    answered, and the replica stayed at height 0."""
    catchup = CatchUp(1, Quorums(4), blocks_max=8, timeout_ms=500)
    counts: Counter[str] = Counter()
    assert catchup.fetch_base(0, 0, 2, now_ms=0) == [ev.FetchBlocks(0, 1, 2)]
    catchup.apply_answer(0, (), _Applier(), counts)  # its time-out: nothing
    (again,) = catchup.fetch_base(0, 0, 2, now_ms=600)
    assert again.peer not in {0, 1}
    assert (again.from_height, again.to_height) == (1, 2)


class _Applier:
    """What the replica does with each fetched block: check it against its head (the set of
    its epoch: the genesis's here), then apply it."""

    def __init__(self) -> None:
        self.head = GENESIS_HEAD
        self.applied: list[tuple[blocks.Block, blocks.Certificate]] = []

    def __call__(self, block: blocks.Block, cert: blocks.Certificate) -> bool | None:
        if block.height <= self.head.height:
            return None
        check_certified(block, cert, self.head, G)
        self.head = self.head.advance(block)
        self.applied.append((block, cert))
        return True


def test_a_fetch_answer_is_taken_once_and_counted_when_forged_or_empty() -> None:
    catchup = CatchUp(0, Quorums(4), blocks_max=8, timeout_ms=500)
    (b1, c1), (b2, c2) = CHAIN[:2]
    counts: Counter[str] = Counter()
    applier = _Applier()
    assert catchup.apply_answer(1, ((b1, c1),), applier, counts) == 0  # never asked
    assert catchup.fetch(1, 0, 2, now_ms=0) == [ev.FetchBlocks(1, 1, 2)]
    assert catchup.fetch(2, 0, 2, now_ms=0) == []  # one at a time
    forged = replace(c2, votes=c2.votes[:1])
    assert catchup.apply_answer(1, ((b1, c1), (b2, forged)), applier, counts) == 1
    assert applier.applied == [(b1, c1)]
    assert counts == Counter({"fetch_invalid": 1})
    catchup.fetch(2, 0, 2, now_ms=0)
    assert catchup.apply_answer(2, (), applier, counts) == 0  # its time-out
    assert counts == Counter({"fetch_invalid": 1, "fetch_failures": 1})


def test_catch_up_applies_the_certified_prefix_and_asks_a_forger_last() -> None:
    catchup = CatchUp(0, Quorums(4), blocks_max=8, timeout_ms=500)
    (b1, c1), (b2, c2), (b3, _) = CHAIN[:3]
    forged = replace(c2, votes=c2.votes[:1])
    counts: Counter[str] = Counter()
    applier = _Applier()
    catchup.fetch(1, 0, 3, now_ms=0)
    assert catchup.apply_answer(1, ((b1, c1), (b2, forged), (b3, c2)), applier, counts) == 1
    assert applier.applied == [(b1, c1)]
    assert counts["fetch_invalid"] == 1
    catchup.fetch(2, 0, 3, now_ms=0)
    assert catchup.apply_answer(2, ((b3, c2),), applier, counts) == 0  # does not extend
    assert counts["fetch_invalid"] == 2
    for peer in (1, 2):
        catchup.note(peer, 0, 9)
    catchup.fetch(1, 1, 3, now_ms=0)
    catchup.apply_answer(1, (), applier, counts)  # peer 1 gave nothing: asked last
    fetch = catchup.catch_up(1, now_ms=0)
    assert [f.peer for f in fetch] == [2]


# --- signature cache and timers ---------------------------------------------------------------


def test_the_signature_cache_checks_a_signature_once_and_refuses_forgeries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cache = SignatureCache(G)
    status = signed(m.Status(0, 0, 1), 1)
    assert not cache.verify(replace(status, signature=bytes(64)))
    assert not cache.verify(replace(status, sender=7))  # no such validator
    assert cache.verify(status)
    calls: list[int] = []
    monkeypatch.setattr(crypto, "verify", lambda *_: calls.append(1) or False)
    assert cache.verify(status)
    assert calls == []


def test_timers_tell_the_shell_only_what_changed() -> None:
    timers = Timers()
    wanted: dict[ev.Timer, int | None] = {ev.Timer.PROGRESS: 10, ev.Timer.FETCH: None}
    assert timers.update(wanted) == [ev.SetTimer(ev.Timer.PROGRESS, 10)]
    assert timers.update(wanted) == []
    assert timers.update({ev.Timer.PROGRESS: 20}) == [ev.SetTimer(ev.Timer.PROGRESS, 20)]
    assert timers.update({ev.Timer.PROGRESS: None}) == [ev.CancelTimer(ev.Timer.PROGRESS)]
    timers.update({ev.Timer.FETCH: 5})
    timers.fired(ev.Timer.FETCH)
    assert timers.update({ev.Timer.FETCH: 5}) == [ev.SetTimer(ev.Timer.FETCH, 5)]


# --- censorship ------------------------------------------------------------------------------

T = 1000  # the view-change timeout of these rules


def test_a_tx_passed_over_by_a_block_with_room_is_censored_one_timeout_after_it_arrived() -> None:
    assert censorship_deadline(100, 0, 100 + T // 2 + 1, T) == 100 + T
    assert censorship_deadline(100, 0, 100 + T // 2, T) is None  # the block may predate it
    assert censorship_deadline(100, 0, None, T) is None  # no block with room committed
    assert censorship_deadline(None, 0, 5000, T) is None  # nothing waits
    # The wait counts from the start of the view at the latest: a new primary gets its time.
    assert censorship_deadline(100, 2000, 2000 + T // 2 + 1, T) == 2000 + T
    assert censorship_deadline(100, 2000, 1900, T) is None


def test_only_blocks_with_room_for_one_more_tx_count() -> None:
    params = replace(G.params, block_txs_max=2)
    one, two = CHAIN[0][0], replace(CHAIN[0][0], txs=CHAIN[0][0].txs * 2)
    assert has_room(one, params)
    assert not has_room(two, params)  # full by count: a busy primary, not a censor
    tight = replace(G.params, block_bytes_max=TX_BYTES_MAX + len(one.txs[0].raw) - 1)
    assert not has_room(one, tight)  # full by size


def test_the_censorship_watch_counts_from_the_view_and_the_last_block_with_room() -> None:
    watch = CensorshipWatch(G.params)
    timeout = G.params.view_change_timeout_ms
    pool = TxPool(10)
    pool.add(CHAIN[1][0].txs[0], 100)
    assert watch.deadline_ms(pool) is None
    watch.committed(CHAIN[0][0], 100 + timeout)  # a block with room, long after it arrived
    assert watch.deadline_ms(pool) == 100 + timeout
    assert watch.passed_over(pool, 100 + timeout // 4)
    assert not watch.passed_over(pool, 100 + timeout // 4 - 1)  # not yet a quarter
    watch.new_view(5000)
    assert watch.deadline_ms(pool) is None  # the new primary has not passed it over yet


def test_the_pool_knows_its_oldest_arrival_through_removals_and_stays_compact() -> None:
    pool = TxPool(1000)
    stamp = factory.BASE_TIME_MS
    added = [NET.tx("fiscal-clerk0", f"fiscal/o/{i}", {"i": i}, stamp) for i in range(600)]
    for i, tx in enumerate(added):
        pool.add(tx, i)
    assert pool.oldest_arrival_ms() == 0
    pool.remove([t.tx_id for t in added[1:500]])  # all but the oldest of the first 500
    assert pool.oldest_arrival_ms() == 0
    pool.remove([added[0].tx_id])
    assert pool.oldest_arrival_ms() == 500
    assert len(pool._order) <= 2 * len(pool) + ORDER_SLACK
    pool.remove([t.tx_id for t in added])
    assert pool.oldest_arrival_ms() is None

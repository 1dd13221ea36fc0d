"""Replica unit tests that need no simulated network: one replica talking to itself."""

from dataclasses import replace

import pytest

from consensus import events as ev
from consensus import messages as m
from consensus.blocktime import BLOCK_STAMP_AHEAD_MS_MAX, BLOCK_STAMP_BEHIND_MS_MAX
from consensus.replica import Replica
from ledger import crypto
from ledger.block import Block, ChainHead, make_block, verify_certificate
from tests import factory


def _replica(net: factory.Network, index: int = 0) -> Replica:
    """Validator `index` of `net`, started, over an empty store."""
    committed: set[bytes] = set()
    replica = Replica(
        net.genesis,
        index,
        net.validator_keys[index],
        ChainHead.genesis(net.genesis),
        committed.__contains__,
    )
    replica.handle(ev.Start(), factory.BASE_TIME_MS)
    return replica


def _propose_timers(actions: list[ev.Action]) -> list[int]:
    return [a.at_ms for a in actions if isinstance(a, ev.SetTimer) and a.timer is ev.Timer.PROPOSE]


def _proposals(actions: list[ev.Action]) -> list[int]:
    return [
        a.message.height
        for a in actions
        if isinstance(a, ev.Broadcast) and isinstance(a.message, m.PrePrepare)
    ]


def test_a_single_validator_is_its_own_quorum() -> None:
    net = factory.network(1)
    replica = _replica(net)
    tx = net.tx("fiscal-clerk0", "fiscal/budget/1", {"amount": 5}, factory.BASE_TIME_MS)
    actions = replica.handle(ev.ClientTxs((tx,)), factory.BASE_TIME_MS + 100)
    commits = [a for a in actions if isinstance(a, ev.CommitBlock)]
    assert [c.block.txs for c in commits] == [(tx,)]
    verify_certificate(commits[0].certificate, commits[0].block, net.genesis)
    assert replica.committed_height == 1
    assert replica.pending == 0


def test_an_idle_primary_proposes_one_block_interval_after_the_last() -> None:
    net = factory.network(1)  # its own quorum: every block commits at once, none stays in flight
    replica = _replica(net)
    interval = net.genesis.params.block_interval_ms
    t0 = factory.BASE_TIME_MS + 100
    first = net.tx("fiscal-clerk0", "fiscal/budget/1", {"amount": 1}, t0)
    assert replica.committed_height == 0
    replica.handle(ev.ClientTxs((first,)), t0)
    assert replica.committed_height == 1
    second = net.tx("fiscal-clerk0", "fiscal/budget/2", {"amount": 2}, t0)
    assert _propose_timers(replica.handle(ev.ClientTxs((second,)), t0 + 1)) == [t0 + interval]


def test_a_busy_primary_waits_one_more_interval_per_block_in_flight() -> None:
    net = factory.network(4)  # no peers answer: the primary's block stays in flight
    replica = _replica(net)
    interval = net.genesis.params.block_interval_ms
    t0 = factory.BASE_TIME_MS + 100
    first = net.tx("fiscal-clerk0", "fiscal/budget/1", {"amount": 1}, t0)
    assert _proposals(replica.handle(ev.ClientTxs((first,)), t0)) == [1]
    second = net.tx("fiscal-clerk0", "fiscal/budget/2", {"amount": 2}, t0)
    actions = replica.handle(ev.ClientTxs((second,)), t0 + 1)
    assert _proposals(actions) == []
    assert _propose_timers(actions) == [t0 + 2 * interval]  # one block in flight: 2 intervals
    assert _proposals(replica.handle(ev.Timeout(ev.Timer.PROPOSE), t0 + 2 * interval)) == [2]


def test_a_vote_outside_the_window_is_dropped_without_a_signature_check() -> None:
    net = factory.network(4)
    replica = _replica(net)
    forged = b"\x00" * 64  # no validator signed this
    stale = m.Commit(0, 0, b"\x11" * 32, 1, forged)  # height 0: committed (genesis)
    future = m.Prepare(0, 1 + replica.config.window, b"\x11" * 32, 2, forged)
    current = m.Commit(0, 1, b"\x11" * 32, 3, forged)  # in the window: checked, refused
    for msg in (stale, future, current):
        replica.handle(ev.Received(msg), factory.BASE_TIME_MS + 1)
    assert replica.counters["invalid_message:bad_signature"] == 1


def _forged_pre_prepare(net: factory.Network, txs_count: int) -> m.PrePrepare:
    """A PrePrepare claiming the primary of view 0, with a valid block but a forged signature."""
    head = ChainHead.genesis(net.genesis)
    body = tuple(
        net.tx("fiscal-clerk0", f"fiscal/f/{i}", {"i": i}, factory.BASE_TIME_MS)
        for i in range(txs_count)
    )
    block = make_block(head, body, factory.BASE_TIME_MS, 0, 0)
    return m.PrePrepare(0, 1, block, 0, b"\x00" * 64)


def test_a_forged_pre_prepare_costs_one_signature_check_not_one_per_tx(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    net = factory.network(4)
    replica = _replica(net, index=1)
    forged = _forged_pre_prepare(net, 50)
    checks: list[bytes] = []
    real_verify = crypto.verify

    def counting(key: bytes, domain: crypto.Domain, payload: bytes, sig: bytes) -> bool:
        checks.append(sig)
        return real_verify(key, domain, payload, sig)

    monkeypatch.setattr(crypto, "verify", counting)
    assert not replica.screen(forged)  # what the node asks before admitting txs
    assert len(checks) == 1  # the node drops it here: its txs are never looked at
    checks.clear()
    replica.handle(ev.Received(forged), factory.BASE_TIME_MS + 1)
    assert len(checks) == 1  # handed in directly: the same single check
    assert replica.counters["invalid_message:bad_signature"] == 2
    genuine = m.sign(forged, net.validator_keys[0], net.genesis.chain_id)
    checks.clear()
    assert replica.screen(genuine)
    assert len(checks) == 1


def test_a_pre_prepare_from_another_than_the_primary_is_dropped_before_its_signature() -> None:
    net = factory.network(4)
    replica = _replica(net, index=1)
    forged = replace(_forged_pre_prepare(net, 1), sender=2)
    assert not replica.screen(forged)
    assert replica.counters["invalid_message:not_primary"] == 1
    assert replica.counters["invalid_message:bad_signature"] == 0


@pytest.mark.parametrize(
    ("offset_ms", "accepted"),
    [
        (0, True),
        (BLOCK_STAMP_AHEAD_MS_MAX, True),
        (BLOCK_STAMP_AHEAD_MS_MAX + 1, False),  # a primary's clock may not run the chain ahead
        (29_000, False),  # within the clients' skew, which no longer bounds a block's stamp
        (-BLOCK_STAMP_BEHIND_MS_MAX, True),
        (-BLOCK_STAMP_BEHIND_MS_MAX - 1, False),  # nor may it freeze the chain's time
    ],
)
def test_a_proposal_is_prepared_only_if_stamped_near_the_replicas_own_clock(
    offset_ms: int, accepted: bool
) -> None:
    net = factory.network(4)
    now = factory.BASE_TIME_MS + 100_000
    replica = _replica(net, index=1)
    tx = net.tx("fiscal-clerk0", "fiscal/t/1", {"i": 1}, now - 100_000)
    head = ChainHead.genesis(net.genesis)
    block = make_block(head, (tx,), now + offset_ms, 0, 0)
    pp = m.sign(m.PrePrepare(0, 1, block, 0), net.validator_keys[0], net.genesis.chain_id)
    actions = replica.handle(ev.Received(pp), now)
    prepared = [a for a in actions if isinstance(a, ev.Broadcast)
                and isinstance(a.message, m.Prepare)]  # fmt: skip
    assert bool(prepared) == accepted
    assert replica.counters["invalid_message:stamp"] == (0 if accepted else 1)


def _new_view_naming(net: factory.Network, block_view: int = 0) -> tuple[m.NewView, Block]:
    """A NewView for view 1 whose ViewChanges name, by hash only, a block prepared in view 0
    (validator 0 holds it), and that block."""
    g, keys = net.genesis, net.validator_keys
    tx = net.tx("fiscal-clerk0", "fiscal/budget/nv", {"amount": 3}, factory.BASE_TIME_MS)
    block = make_block(ChainHead.genesis(g), (tx,), factory.BASE_TIME_MS, block_view, 0)
    votes = tuple(
        (i, crypto.sign(keys[i], crypto.Domain.PEER,
                        m.prepare_payload(g.chain_id, i, block_view, 1, block.hash)))
        for i in (0, 1, 3)
    )  # fmt: skip
    proof = m.PreparedProof(block_view, 1, block.hash, votes)
    vcs = tuple(
        m.sign(m.ViewChange(1, 0, g.hash, None, (proof,) if s == 0 else (), s), keys[s], g.chain_id)
        for s in (0, 1, 3)
    )
    return m.sign(m.NewView(1, vcs, 1), keys[1], g.chain_id), block


def test_a_new_view_naming_a_missing_block_fetches_it_and_takes_only_that_hash() -> None:
    net = factory.network(4)
    replica = _replica(net, index=2)
    nv, block = _new_view_naming(net)
    now = factory.BASE_TIME_MS + 10
    actions = replica.handle(ev.Received(nv), now)
    asks = [(a.to, a.message.hashes) for a in actions if isinstance(a, ev.Send)
            and isinstance(a.message, m.BlockRequest)]  # fmt: skip
    assert asks == [(0, (block.hash,))]  # of the replica whose ViewChange names it
    assert replica.view == 1
    assert not replica.in_view_change

    def prepares(acts: list[ev.Action]) -> list[tuple[int, int, bytes]]:
        return [(a.message.view, a.message.height, a.message.block_hash) for a in acts
                if isinstance(a, ev.Broadcast) and isinstance(a.message, m.Prepare)]  # fmt: skip

    keys, chain_id = net.validator_keys, net.genesis.chain_id
    tx = net.tx("fiscal-clerk0", "fiscal/budget/other", {"amount": 4}, factory.BASE_TIME_MS)
    wrong = make_block(ChainHead.genesis(net.genesis), (tx,), factory.BASE_TIME_MS, 0, 0)
    reply = m.sign(m.BlockReply(wrong, 0), keys[0], chain_id)
    assert prepares(replica.handle(ev.Received(reply), now + 1)) == []
    assert replica.counters["blocks_unwanted"] == 1  # not the hash the NewView names
    later = replica.handle(ev.Timeout(ev.Timer.RETRANSMIT), now + replica.config.retransmit_ms)
    asks = [(a.to, a.message.hashes) for a in later if isinstance(a, ev.Send)
            and isinstance(a.message, m.BlockRequest)]  # fmt: skip
    assert asks == [(1, (block.hash,))]  # the next holder: a signer of its Prepares
    reply = m.sign(m.BlockReply(block, 1), keys[1], chain_id)
    assert prepares(replica.handle(ev.Received(reply), now + 600)) == [(1, 1, block.hash)]


def test_a_replica_answers_a_block_request_with_the_blocks_it_holds() -> None:
    net = factory.network(4)
    replica = _replica(net, index=1)
    tx = net.tx("fiscal-clerk0", "fiscal/budget/held", {"amount": 5}, factory.BASE_TIME_MS)
    block = make_block(ChainHead.genesis(net.genesis), (tx,), factory.BASE_TIME_MS, 0, 0)
    pp = m.sign(m.PrePrepare(0, 1, block, 0), net.validator_keys[0], net.genesis.chain_id)
    replica.handle(ev.Received(pp), factory.BASE_TIME_MS + 5)
    request = m.sign(m.BlockRequest((block.hash, bytes(32)), 3), net.validator_keys[3],
                     net.genesis.chain_id)  # fmt: skip
    actions = replica.handle(ev.Received(request), factory.BASE_TIME_MS + 6)
    replies = [(a.to, a.message.block) for a in actions if isinstance(a, ev.Send)
               and isinstance(a.message, m.BlockReply)]  # fmt: skip
    assert replies == [(3, block)]  # the unknown hash gets nothing

"""Replica unit tests that need no simulated network: one replica talking to itself."""

from consensus import events as ev
from consensus import messages as m
from consensus.replica import Replica
from ledger.block import ChainHead, verify_certificate
from tests import factory


def _replica(net: factory.Network) -> Replica:
    """Validator 0 of `net`, started, over an empty store."""
    committed: set[bytes] = set()
    replica = Replica(
        net.genesis,
        0,
        net.validator_keys[0],
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

"""Replica unit tests that need no simulated network: one replica talking to itself."""

from consensus import events as ev
from consensus.replica import Replica
from ledger.block import ChainHead, verify_certificate
from tests import factory


def test_a_single_validator_is_its_own_quorum() -> None:
    net = factory.network(1)
    committed: set[bytes] = set()
    replica = Replica(
        net.genesis,
        0,
        net.validator_keys[0],
        ChainHead.genesis(net.genesis),
        committed.__contains__,
    )
    replica.handle(ev.Start(), factory.BASE_TIME_MS)
    tx = net.tx("fiscal-clerk0", "fiscal/budget/1", {"amount": 5}, factory.BASE_TIME_MS)
    actions = replica.handle(ev.ClientTxs((tx,)), factory.BASE_TIME_MS + 100)
    commits = [a for a in actions if isinstance(a, ev.CommitBlock)]
    assert [c.block.txs for c in commits] == [(tx,)]
    verify_certificate(commits[0].certificate, commits[0].block, net.genesis)
    assert replica.committed_height == 1
    assert replica.pending == 0

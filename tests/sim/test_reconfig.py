"""Reconfiguration stories: a change that ends an epoch, made by governance txs on the chain,
while the client stream runs (docs/protocol.md sections 13.5 and 20.8).

Each story enacts one kind of change with real admin-signed txs and checks that the block
that makes it effective ends its epoch, that every block after it is certified by the new set
(every store checks each certificate against the set of its block's epoch, so a block
certified by another set fails the run), and that the chain goes on with every honest node on
it.
"""

from typing import Any, Final

from ledger import crypto
from ledger.block import Certificate
from ledger.gov import epochs
from ledger.gov.history import config_of
from ledger.gov.machine import APPROVAL_TYPE, APPROVALS, PROPOSAL_TYPE, PROPOSALS
from ledger.tx import Transaction
from tests import factory
from tests.sim.simulator import Simulator

PROPOSER: Final = "fiscal-admin0"  # City Finance Bureau (node0)
APPROVERS: Final = ("permits-admin0", "claims-admin0")  # with the proposer: 3 of 4 organisations
AFTER_BLOCKS: Final = 8  # blocks the chain must go on for after the boundary
DEADLINE_MS: Final = 30_000


def _gov_tx(sim: Simulator, signer: str, key: str, type_: str, body: dict[str, Any]) -> Transaction:
    stamp = factory.BASE_TIME_MS + sim.now_ms
    return sim.testnet.tx(signer, key, body, stamp, type_)


def enact(sim: Simulator, proposal_id: str, change: dict[str, Any]) -> int:
    """Propose `change`, then approve it, each offered to every honest node that is up; return
    the height of the block that made it effective (the last block of its epoch)."""
    epoch = sim.replica(0).epoch.number
    proposal = _gov_tx(sim, PROPOSER, PROPOSALS + proposal_id, PROPOSAL_TYPE, change)
    _offer_all(sim, proposal)
    sim.run_until(until=lambda: _committed(sim, [proposal]), within_ms=DEADLINE_MS)
    approvals = [
        _gov_tx(sim, admin, APPROVALS + proposal_id, APPROVAL_TYPE, {}) for admin in APPROVERS
    ]
    for approval in approvals:
        _offer_all(sim, approval)
    sim.run_until(until=lambda: _committed(sim, approvals), within_ms=DEADLINE_MS)
    store = sim.node(0).store
    config = config_of(store.rules.get, sim.genesis)
    assert config.epoch == epoch + 1, "the change ended the epoch"
    return config.epoch_height


def _committed(sim: Simulator, batch: list[Transaction]) -> bool:
    return all(sim.node(0).store.is_committed(tx.tx_id) for tx in batch)


def _offer_all(sim: Simulator, tx: Transaction) -> None:
    for index in sim.honest:
        if sim.node(index).up:
            sim.offer(index, (tx,))


def certificates_after(sim: Simulator, index: int, height: int) -> list[Certificate]:
    return [cert for block, cert in sim.node(index).store.chain if block.height > height]


def go_on(sim: Simulator, end: int, members: list[int]) -> None:
    """The members of the new set commit on, every honest chain one chain."""
    sim.run_until(height=end + AFTER_BLOCKS, nodes=members, within_ms=DEADLINE_MS)
    sim.check_safety()


def test_consensus_parameters_change_at_the_boundary_and_the_chain_goes_on() -> None:
    sim = Simulator(seed=11, admins=True)
    sim.run_until(height=3)
    params = {"consensus.block_txs_max": 3, "consensus.checkpoint_interval": 5}
    end = enact(sim, "smaller-blocks", {"change": "set-params", "params": params})
    go_on(sim, end, [0, 1, 2, 3])
    for index in sim.honest:
        replica = sim.replica(index)
        assert (replica.epoch.number, replica.epoch.params.block_txs_max) == (1, 3)
        chain = sim.node(index).store.chain
        assert all(len(block.txs) <= 3 for block, _ in chain if block.height > end)


def test_a_removed_validator_is_no_longer_asked_and_the_rest_go_on() -> None:
    sim = Simulator(seed=12, admins=True)
    sim.run_until(height=3)
    end = enact(sim, "retire-node3", {"change": "remove-validator", "id": "node3"})
    go_on(sim, end, [0, 1, 2])
    assert sim.replica(3).retired, "node3 casts no vote in an epoch without it"
    for cert in certificates_after(sim, 0, end):
        assert all(i < 3 for i, _ in cert.votes)
        assert len(cert.votes) >= 2  # n = 3: q = 2
    assert sim.replica(0).epoch.size == 3


def test_a_rotated_validator_key_signs_after_a_restart_with_it() -> None:
    sim = Simulator(seed=13, admins=True)
    sim.run_until(height=3)
    new_key = factory.seeded_key("sim/rotated/node2")
    change = {
        "change": "rotate-validator-key", "id": "node2",
        "public_key": crypto.public_key_bytes(new_key).hex(), "url": "https://node2.example:7003",
        "proof": epochs.sign_possession(new_key, sim.genesis.chain_id, "node2"),
    }  # fmt: skip
    end = enact(sim, "rekey-node2", change)
    sim.run_until(height=end + 2, nodes=[0, 1, 3], within_ms=DEADLINE_MS)
    assert sim.replica(2).retired, "its old key signs nothing valid from the boundary on"
    sim.crash(2)
    sim.node(2).key = new_key
    sim.restart(2)
    assert not sim.replica(2).retired
    sim.crash(3)  # the quorum of 3 now needs node2's vote
    since = sim.height(0)
    go_on(sim, since, [0, 1, 2])
    later = certificates_after(sim, 0, since)
    assert later
    assert all(2 in [i for i, _ in cert.votes] for cert in later), "node2 signs, new key"

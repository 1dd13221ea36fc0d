"""Reconfiguration under faults: one story per kind of change, each while a fault runs and
asserting that the fault fired; the `reconfig` fault family of the sweep; and the checker's
epoch-certificate check (docs/protocol.md 13.5 and 20.8).

Node numbers (the simulation's) and validator indices (an epoch's) differ once a validator
other than the last is removed or one is added: these stories are where that shows.
"""

import dataclasses
from typing import Any, Final

import pytest

from ledger import crypto
from ledger.gov import epochs
from tests import factory
from tests.sim.checker import Violation
from tests.sim.fastcrypto import memoized_verify
from tests.sim.faults import ALL, make_plan
from tests.sim.network import NetParams
from tests.sim.simulator import Simulator
from tests.sim.sweep import run_seed
from tests.sim.test_reconfig import certificates_after, enact, go_on

LOSSY: Final = NetParams(loss=0.1, delay_max_ms=20)
DEADLINE_MS: Final = 30_000


def signers(sim: Simulator, index: int, after: int) -> set[str]:
    """The validator ids that signed the certificates of `index`'s blocks above `after`."""
    store = sim.node(index).store
    out: set[str] = set()
    for block, cert in store.chain:
        if block.height > after:
            members = sim.replica(index).epoch.members
            out |= {members.validators[i].id for i, _ in cert.votes if i < len(members.validators)}
    return out


def add_node4(sim: Simulator, key: crypto.Ed25519PrivateKey) -> dict[str, Any]:
    """The add-validator change that seats node4 with `key` (its proof of possession in)."""
    return {
        "change": "add-validator", "id": "node4", "organisation": factory.ORGS[0][0],
        "kind": "municipal", "public_key": crypto.public_key_bytes(key).hex(),
        "url": "https://node4.example:7005",
        "proof": epochs.sign_possession(key, sim.genesis.chain_id, "node4"),
    }  # fmt: skip


def test_an_added_validator_syncs_then_signs_while_messages_are_lost() -> None:
    sim = Simulator(seed=21, admins=True, net=LOSSY)
    sim.run_until(height=3)
    key = factory.seeded_key("sim/story/node4")
    joiner = sim.members.add("node4", key)
    assert joiner.syncing, "it syncs before it counts"
    end = enact(sim, "add-node4", add_node4(sim, key))
    sim.run_until(until=lambda: joiner.up, within_ms=DEADLINE_MS)
    go_on(sim, end, [0, 1, 2, 3, 4])
    assert sim.network.counts["lost"] > 0, "the fault fired"
    assert sim.replica(4).epoch.size == 5
    assert sim.replica(4).index == 4
    assert "node4" in signers(sim, 0, end), "the new validator's votes certify blocks"


def test_a_validator_added_after_a_view_change_enters_that_view_and_signs() -> None:
    """The primary crashed (view 1) before node4 was added; view 1's NewView was dropped with
    epoch 0's set, so nobody could hand it to node4, which started in view 0 and only followed
    the chain (seed 4139 at n = 7). At the block that seats it, nothing above is in flight: it
    enters the view that block was certified in (docs/protocol.md 13.5 rule 5), and votes."""
    sim = Simulator(seed=28, admins=True)
    sim.run_until(height=3)
    sim.crash(0)
    sim.run_until(height=5, nodes=[1, 2, 3], within_ms=DEADLINE_MS)
    sim.restart(0)
    view = sim.replica(1).view
    assert view > 0, "the fault fired"
    key = factory.seeded_key("sim/story/late/node4")
    joiner = sim.members.add("node4", key)
    end = enact(sim, "add-node4-late", add_node4(sim, key))
    sim.run_until(until=lambda: joiner.up, within_ms=DEADLINE_MS)
    go_on(sim, end, [0, 1, 2, 3, 4])
    assert {sim.replica(i).view for i in range(5)} == {view}, "no view change since"
    assert "node4" in signers(sim, 0, end), "the new validator's votes certify blocks"


def test_a_middle_validator_removed_while_another_is_down() -> None:
    sim = Simulator(seed=22, admins=True)
    sim.run_until(height=3)
    end = enact(sim, "retire-node1", {"change": "remove-validator", "id": "node1"})
    sim.run_until(until=lambda: sim.replica(1).retired, within_ms=DEADLINE_MS)
    sim.members.remove(sim.node(1))
    assert sim.node(1).removed
    assert not sim.node(1).up
    sim.crash(3)  # n = 3 (q = 2): node0 and node2 go on alone
    go_on(sim, end, [0, 2])
    assert sim.node(3).counters["crashes"] == 1, "the fault fired"
    assert sim.replica(2).index == 1, "node2 is validator 1 of the new set"
    for cert in certificates_after(sim, 0, end):
        assert {i for i, _ in cert.votes} <= {0, 1, 2}
    assert signers(sim, 0, end) <= {"node0", "node2", "node3"}
    sim.restart(3)
    sim.run_until(height=sim.height(0), nodes=[3], within_ms=DEADLINE_MS)
    assert sim.replica(3).index == 2


def test_a_rotated_key_restarts_the_node_on_it_under_a_partition() -> None:
    sim = Simulator(seed=23, admins=True)
    sim.run_until(height=3)
    new_key = factory.seeded_key("sim/story/rotated/node1")
    change = {
        "change": "rotate-validator-key", "id": "node1",
        "public_key": crypto.public_key_bytes(new_key).hex(), "url": "https://node1.example:7002",
        "proof": epochs.sign_possession(new_key, sim.genesis.chain_id, "node1"),
    }  # fmt: skip
    end = enact(sim, "rekey-node1", change)
    sim.partition({3}, {0, 1, 2})
    sim.run_until(until=lambda: sim.replica(1).retired, within_ms=DEADLINE_MS)
    sim.members.rekey(sim.node(1), new_key)  # restarts on it: node3 is cut off, so
    go_on(sim, end, [0, 1, 2])  # no quorum forms without node1's new key
    assert sim.network.counts["cut_off"] > 0, "the fault fired"
    assert not sim.replica(1).retired
    later = certificates_after(sim, 0, sim.replica(1).epoch.first_height)
    assert all(1 in [i for i, _ in cert.votes] for cert in later), "node1 signs, new key"
    sim.heal()
    sim.run_until(height=sim.height(0), nodes=[3], within_ms=DEADLINE_MS)


def test_consensus_parameters_set_while_the_primary_crashes() -> None:
    sim = Simulator(seed=24, admins=True)
    sim.run_until(height=3)
    primary = sim.primary
    sim.at(200, "crash the primary", lambda: sim.crash(primary))
    change = {"change": "set-params", "params": {"consensus.block_txs_max": 2}}
    end = enact(sim, "tiny-blocks", change)
    others = [i for i in range(4) if i != primary]
    go_on(sim, end, others)
    assert sim.node(primary).counters["crashes"] == 1, "the fault fired"
    for index in others:
        assert sim.replica(index).epoch.params.block_txs_max == 2
    chain = sim.node(others[0]).store.chain
    assert all(len(block.txs) <= 2 for block, _ in chain if block.height > end)


def test_the_reconfig_family_moves_n_between_4_and_7_and_every_seed_holds() -> None:
    effective: set[str] = set()
    with memoized_verify():
        for nodes in (4, 7):
            for seed in range(5):
                plan = make_plan(seed, nodes, {"reconfig", "loss", "crash", "byzantine"})
                assert plan.reconfig is not None
                outcome = run_seed(seed, nodes, plan.faults)
                assert outcome.ok, outcome.report()
                effective |= {line.split("effective: ")[1].split(" ")[0]
                              for line in outcome.faults if "effective: " in line}  # fmt: skip
                assert len(outcome.heights) >= nodes
    assert effective == {"add", "remove", "rotate", "set"}, effective


def test_the_checker_refuses_a_block_certified_by_another_epochs_set() -> None:
    sim = Simulator(seed=25, admins=True)
    sim.run_until(height=3)
    end = enact(sim, "retire-node1", {"change": "remove-validator", "id": "node1"})
    go_on(sim, end, [0, 2, 3])
    block, cert = sim.node(0).store.get(end + 1)
    sim.checker.on_commit(sim.node(0), block, cert)  # its own certificate: the new set's
    old = sim.testnet.certify(block, view=cert.view)  # node0, node1, node2: the genesis set
    with pytest.raises(Violation, match="epoch certificate"):
        sim.checker.on_commit(sim.node(0), block, old)
    earlier, earlier_cert = sim.node(0).store.get(end)
    sim.checker.on_commit(sim.node(0), earlier, earlier_cert)  # the old set's own block
    swapped = dataclasses.replace(cert, votes=cert.votes[:1])
    with pytest.raises(Violation, match="epoch certificate"):
        sim.checker.on_commit(sim.node(0), block, swapped)


def test_a_replica_behind_the_removal_of_a_middle_validator_catches_up() -> None:
    """Regression (seed 1 of the first reconfig sweep at n = 4): node3, cut off while node1 is
    removed, cannot check the new set's messages (index 2 is node3 there, node2 before), so
    it never heard that the others were ahead; it asks a peer for blocks instead."""
    sim = Simulator(seed=27, admins=True)
    sim.run_until(height=3)
    sim.partition({3}, {0, 1, 2})
    sim.client_on = False  # nothing for the cut-off node to do but wait
    end = enact(sim, "retire-node1", {"change": "remove-validator", "id": "node1"})
    sim.run_until(until=lambda: sim.replica(1).retired, within_ms=DEADLINE_MS)
    sim.members.remove(sim.node(1))
    sim.client_on = True
    sim.run_for(3_000)  # node0 and node2 (q = 2 of 3) go on without node3
    assert sim.height(3) < end, "node3 is behind the boundary"
    sim.heal()
    go_on(sim, end, [0, 2, 3])
    assert sim.replica(3).epoch.number == 1
    assert sim.replica(3).index == 2
    assert sim.replica(3).counters["blocks_committed"] > 0


def test_a_primary_stops_proposing_at_the_block_that_ends_its_epoch() -> None:
    """Regression (seed 795 at n = 4 of the reconfig sweep): a primary with several blocks due
    proposed, in one round, the block that ends the epoch (an approval in it) and then one
    above it, which its own validation then dropped (nothing is pre-prepared above a boundary
    in flight): the replica failed its own assertion."""
    with memoized_verify():
        outcome = run_seed(795, 4, ALL)
    assert outcome.ok, outcome.report()
    assert any("effective: set" in line for line in outcome.faults)


def test_a_replica_whose_key_the_block_it_commits_rotates_out_votes_nothing_after_it() -> None:
    """Regression (seed 932 at n = 4 of the reconfig sweep): node0, behind, fetched the block
    that rotated its key out and, in the same event, installed a NewView's re-proposal above
    it and voted for it with the old key, then committed the block with that vote in its
    certificate: its store refused it."""
    with memoized_verify():
        outcome = run_seed(932, 4, ALL)
    assert outcome.ok, outcome.report()
    assert any("effective: rotate n0" in line for line in outcome.faults)


@pytest.mark.parametrize(("seed", "removed"), [(246, "remove n1"), (479, "remove n0")])
def test_sends_are_addressed_in_the_set_at_the_store_head_when_carried_out(
    seed: int, removed: str
) -> None:
    """A replica names peers by index in its epoch's set; the shell carries its actions out in
    order, a write before whatever follows it, and addresses each in the set at the store's
    head then, as the node does. Seed 246 at n = 7: node 2, restarted, asked validator 1 for a
    block in the event that committed the block removing node 1 (moving node 2 to index 1);
    seed 479: a relay of node 2 to the primary, held behind a write, went out after the block
    removing node 0 was committed. Read with the replica's new set, each went to node 2 itself."""
    with memoized_verify():
        outcome = run_seed(seed, 7, ALL)
    assert outcome.ok, outcome.report()
    assert any(removed in line for line in outcome.faults)


def test_replicas_behind_an_epoch_boundary_fetch_from_the_one_past_it() -> None:
    """Seed 4045 at n = 4: only node 0 committed block 4, the one that rotated node 3's key;
    it counts no ViewChange of the others (their heads are behind the boundary), yet it is the
    primary of the view they ask for, and only one honest replica reports the head above
    theirs (no f+1). The certified head in node 0's ViewChange now sends them to fetch it."""
    with memoized_verify():
        outcome = run_seed(4045, 4, ALL)
    assert outcome.ok, outcome.report()
    assert any("effective: rotate n3" in line for line in outcome.faults)


def test_proofs_an_epoch_boundary_voided_leave_no_view_change_refused() -> None:
    """Seed 4967 at n = 4: in view 1 a Byzantine primary had block 5 prepared on a block 4 that
    then lost to the one rotating node 0's key (view 2). Node 0 kept that proof, signed by its
    old key, across the boundary and its restart; every ViewChange it sent in epoch 1 carried
    it, and every peer refused it: two replicas in view 3, two in view 4, none with a quorum."""
    with memoized_verify():
        outcome = run_seed(4967, 4, ALL)
    assert outcome.ok, outcome.report()
    assert any("effective: rotate n0" in line for line in outcome.faults)


def test_a_validator_removed_while_cut_off_is_retired_by_its_operator() -> None:
    """Seed 4139 at n = 7: node 4 (Byzantine) was partitioned away when the block removing
    it committed; nobody in the new set speaks to it, so it stays at height 2 and never
    learns (docs/protocol.md 13.6). The governor, standing for its operator, stops it once
    it is plainly stranded; the node added next enters the current view and votes."""
    with memoized_verify():
        outcome = run_seed(4139, 7, ALL)
    assert outcome.ok, outcome.report()
    assert any("stranded short of its removal: n4" in line for line in outcome.faults)

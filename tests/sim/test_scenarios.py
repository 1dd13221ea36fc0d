"""Stories of faults the replicas must survive, told against the simulator (STYLE.md item 9).

Safety is checked by the simulator at every commit of every story; each story ends by asking
for liveness (`run_until` raises a liveness violation when its bound passes) and a full check
that all honest chains agree. Seeds are fixed: each story is one exact schedule. Each story
with a fault also asserts that its fault fired (messages dropped, a node crashed, a Byzantine
action taken, the view changed), so that a story can never pass because nothing happened.
"""

from typing import Final

import pytest

from consensus import messages as m
from consensus.replica import ReplicaConfig
from tests.sim.simulator import Simulator, proposing

VIEW_CHANGE_TIMEOUT_MS: Final = 1000  # tests/factory.py's genesis
# A crashed primary is noticed when PROGRESS fires (one view-change timeout after the last
# progress), the ViewChange/NewView exchange takes a few message delays, and the first block
# of the new view one block interval and a round of votes more. Twice the timeout is ample.
VIEW_CHANGE_RECOVERY_MS_MAX: Final = 2 * VIEW_CHANGE_TIMEOUT_MS


def committed_in_new_view(sim: Simulator, view_min: int) -> bool:
    """Every honest up replica has committed a block proposed in a view >= `view_min`."""
    for index in sim.honest:
        node = sim.node(index)
        if not node.up:
            continue
        if not node.store.chain or node.store.chain[-1][0].header.view < view_min:
            return False
    return True


def acts(sim: Simulator, index: int) -> dict[str, int]:
    """What the Byzantine node `index` did, by kind."""
    behaviour = sim.node(index).behaviour
    assert behaviour is not None
    assert not behaviour.honest
    return dict(behaviour.acts)


def invalid_messages(sim: Simulator) -> int:
    """Messages the honest up replicas refused as invalid (any reason)."""
    return sum(
        n for i in sim.honest if sim.node(i).up
        for k, n in sim.replica(i).counters.items() if k.startswith("invalid_message")
    )  # fmt: skip


def test_four_replicas_commit_blocks_without_faults() -> None:
    sim = Simulator(seed=1)
    sim.run_until(height=10, within_ms=5_000)
    sim.check_safety()
    assert {sim.replica(i).view for i in range(4)} == {0}


def test_primary_crashes_mid_block_and_a_new_view_commits_within_the_bound() -> None:
    sim = Simulator(seed=2)
    sim.run_until(height=4)
    old_primary = sim.primary
    sim.crash(old_primary, mid_handle=True, when=proposing)  # part-way through a proposal
    sim.run_until(until=lambda: not sim.node(old_primary).up, within_ms=1_000)
    assert sim.stats["torn_crashes"] == 1  # it died part-way through its proposal's actions
    took = sim.run_until(until=lambda: committed_in_new_view(sim, 1), within_ms=10_000)
    assert took <= VIEW_CHANGE_RECOVERY_MS_MAX, f"recovery took {took} ms"
    assert sim.primary != old_primary
    sim.restart(old_primary)
    sim.run_until(height=max(sim.heights().values()) + 3)
    sim.check_safety()


@pytest.mark.parametrize("seed", range(10))
def test_view_change_recovery_time_is_bounded(seed: int) -> None:
    """From the instant the primary crashes to a block committed in the new view everywhere."""
    sim = Simulator(seed=100 + seed)
    sim.run_until(height=3 + seed % 4)
    crashed = sim.primary
    sim.crash(crashed)
    took = sim.run_until(until=lambda: committed_in_new_view(sim, 1), within_ms=10_000)
    assert took <= VIEW_CHANGE_RECOVERY_MS_MAX, f"seed {100 + seed}: recovery took {took} ms"
    assert not sim.node(crashed).up
    assert sim.primary != crashed


def test_primary_equivocates_and_honest_replicas_still_agree() -> None:
    sim = Simulator(seed=3, byzantine={0: "equivocate"})
    sim.run_until(height=10, within_ms=30_000)
    sim.check_safety()
    assert acts(sim, 0)["equivocated"] > 0
    assert acts(sim, 0)["twin_vote"] > 0


def test_equivocating_primary_among_seven() -> None:
    sim = Simulator(seed=4, nodes=7, byzantine={0: "equivocate", 3: "equivocate"})
    sim.run_until(height=8, within_ms=30_000)
    sim.check_safety()
    assert acts(sim, 0)["equivocated"] > 0


def test_f_replicas_partitioned_away_then_healed_catch_up() -> None:
    sim = Simulator(seed=5, nodes=7)
    sim.run_until(height=3)
    sim.partition({5, 6}, {0, 1, 2, 3, 4})
    sim.run_until(height=12, nodes={0, 1, 2, 3, 4})
    assert sim.height(5) < 12
    assert sim.height(6) < 12
    assert sim.network.counts["cut_off"] > 0
    sim.heal()
    sim.run_until(height=15)
    sim.check_safety()


def test_the_primary_partitioned_away_is_replaced() -> None:
    sim = Simulator(seed=6)
    sim.run_until(height=3)
    sim.partition({0}, {1, 2, 3})
    sim.run_until(height=8, nodes={1, 2, 3})
    assert sim.network.counts["cut_off"] > 0
    assert min(sim.replica(i).view for i in (1, 2, 3)) >= 1
    sim.heal()
    sim.run_until(height=11)
    sim.check_safety()
    assert sim.primary != 0


def test_a_split_without_quorum_stalls_then_recovers() -> None:
    sim = Simulator(seed=7)
    sim.run_until(height=3)
    sim.partition({0, 1}, {2, 3})
    sim.run_for(500)  # votes already delivered may still complete a block or two
    stalled = sim.heights()
    sim.run_for(3_000)
    assert sim.heights() == stalled  # neither half holds 2f+1
    assert sim.network.counts["cut_off"] > 0
    sim.heal()
    sim.run_until(height=max(sim.heights().values()) + 3)
    sim.check_safety()


def test_replica_restarts_from_persisted_state_and_catches_up() -> None:
    sim = Simulator(seed=8)
    sim.run_until(height=5)
    sim.crash(3)
    sim.run_until(height=30, nodes={0, 1, 2})
    assert sim.height(3) <= 5
    sim.restart(3)
    sim.run_until(height=33)
    sim.check_safety()
    restarted = [block.hash for block, _ in sim.node(3).store.chain]
    assert restarted == [block.hash for block, _ in sim.node(0).store.chain][: len(restarted)]


def test_replicas_that_prepared_a_block_keep_it_through_a_restart() -> None:
    """Only n3 sees the Commits for block 5 and commits it; n3 is then cut off, and n0, n1, n2,
    which prepared block 5 but never saw it commit, all crash and restart. They must come back
    with their promise (persisted) and finish block 5 as it was, not propose another."""
    sim = Simulator(seed=19)
    sim.run_until(height=4)
    sim.drop_messages(lambda _sender, to, msg: isinstance(msg, m.Commit) and to != 3)
    sim.run_until(height=5, nodes={3})
    assert sim.stats["dropped_by_rule"] > 0
    committed = sim.node(3).store.get(5)[0].hash
    assert max(sim.height(i) for i in (0, 1, 2)) == 4
    sim.partition({3}, {0, 1, 2})
    for index in (0, 1, 2):
        sim.crash(index)
    for index in (0, 1, 2):
        sim.restart(index)
    sim.drop_messages(None)
    sim.run_until(height=6, nodes={0, 1, 2})
    assert sim.node(0).store.get(5)[0].hash == committed
    sim.heal()
    sim.run_until(height=8)
    sim.check_safety()


def test_a_block_committed_by_one_replica_survives_a_view_change_without_it() -> None:
    """Only n3 commits block 5 in view 0, then is cut off; the others, stuck without Commits,
    change view among themselves. The new primary must re-propose block 5 from the prepared
    proofs in the ViewChanges, not a block of its own."""
    sim = Simulator(seed=22)
    sim.run_until(height=4)
    sim.drop_messages(lambda _s, to, msg: isinstance(msg, m.Commit) and msg.view == 0 and to != 3)
    sim.run_until(height=5, nodes={3})
    committed = sim.node(3).store.get(5)[0].hash
    assert sim.stats["dropped_by_rule"] > 0
    sim.partition({3}, {0, 1, 2})
    sim.run_until(height=6, nodes={0, 1, 2})
    assert sim.replica(0).view >= 1
    assert sim.node(0).store.get(5)[0].hash == committed
    sim.heal()
    sim.run_until(height=8)
    sim.check_safety()


def test_a_replica_without_a_reproposed_block_fetches_it_by_hash() -> None:
    """n3 never gets a PrePrepare from block 5 on; n0, n1, n2 prepare block 5, but no Commit of
    view 0 gets through there. The primary n0 crashes. The NewView of view 1 names block 5 by
    hash only (a ViewChange carries no block): n3 asks a holder for it, takes it only because
    its hash is the one named, and every replica commits that very block."""
    sim = Simulator(seed=23)
    sim.run_until(height=4)

    def cut(_sender: int, to: int, msg: m.Message) -> bool:
        late = isinstance(msg, m.PrePrepare | m.Commit) and msg.height >= 5
        return late and (to == 3 or isinstance(msg, m.Commit))

    sim.drop_messages(cut)
    sim.run_until(until=lambda: all(5 in sim.replica(i).log.prepared for i in (1, 2)))
    named = sim.replica(1).log.prepared[5].block_hash
    assert named not in sim.replica(3).log.blocks
    assert sim.stats["dropped_by_rule"] > 0
    sim.crash(0)
    sim.drop_messages(None)
    sim.run_until(height=5, nodes={1, 2, 3}, within_ms=4 * VIEW_CHANGE_RECOVERY_MS_MAX)
    assert sim.replica(3).view >= 1
    assert sim.replica(3).counters["blocks_fetched_by_hash"] > 0
    assert all(sim.node(i).store.get(5)[0].hash == named for i in (1, 2, 3))
    sim.restart(0)
    sim.run_until(height=7)
    sim.check_safety()


def test_crash_between_persist_and_send_never_forks() -> None:
    """Replicas die part-way through their action lists, again and again, then come back."""
    sim = Simulator(seed=9)
    for round_ in range(12):
        victim = round_ % 4
        sim.run_for(150)
        if sim.node(victim).up:
            sim.crash(victim, mid_handle=True)
        sim.run_for(150)
        for index in range(4):
            if not sim.node(index).up:
                sim.restart(index)
    sim.run_until(height=max(sim.heights().values()) + 3)
    sim.check_safety()
    assert sim.stats["torn_crashes"] >= 6  # most rounds cut an action list short
    assert sum(sim.node(i).counters["crashes"] for i in range(4)) >= 6


def test_the_network_drops_30_percent_of_messages() -> None:
    sim = Simulator(seed=10)
    sim.set_network(loss=0.3)
    sim.run_until(height=10, within_ms=30_000)
    sim.check_safety()
    lost, sent = sim.network.counts["lost"], sim.stats["sent"]
    assert 0.25 < lost / sent < 0.35, f"{lost} of {sent} lost"


def test_duplicating_reordering_network() -> None:
    sim = Simulator(seed=11, nodes=7)
    sim.set_network(duplicate=0.3, delay_max_ms=80, spike=0.1)
    sim.run_until(height=10, within_ms=30_000)
    sim.check_safety()
    sent = sim.stats["sent"]
    assert sim.network.counts["duplicated"] > 0.3 * sent
    assert sim.network.counts["spiked"] > 0.05 * sent
    assert sim.stats["overtaken"] > 0.05 * sent  # later sends arrived before earlier ones


def test_replayed_old_messages_change_nothing() -> None:
    sim = Simulator(seed=12, byzantine={2: "replay"})
    sim.run_until(height=12, within_ms=30_000)
    sim.check_safety()
    assert acts(sim, 2)["replayed"] > 0


def test_garbage_and_forged_signatures_are_dropped() -> None:
    sim = Simulator(seed=13, byzantine={1: "forge"})
    sim.run_until(height=12, within_ms=30_000)
    sim.check_safety()
    dropped = sum(sim.node(i).counters["undecodable"] for i in sim.honest)
    assert acts(sim, 1)["forged"] > 0
    assert dropped > 0
    assert invalid_messages(sim) > 0


def test_forged_primary_cannot_commit_a_forged_tx() -> None:
    sim = Simulator(seed=14, byzantine={0: "forge"})
    sim.run_until(height=10, within_ms=30_000)
    sim.check_safety()  # the store's check_block would have refused any forged tx
    assert acts(sim, 0)["invalid_proposal"] > 0
    assert invalid_messages(sim) > 0


def test_a_silent_replica_is_tolerated() -> None:
    sim = Simulator(seed=15, byzantine={3: "silent"})
    sim.run_until(height=10, within_ms=30_000)
    sim.check_safety()
    assert acts(sim, 3)["withheld"] > 0


def test_a_silent_primary_is_replaced() -> None:
    sim = Simulator(seed=16, byzantine={0: "silent"})
    sim.run_until(height=5, within_ms=30_000)
    sim.check_safety()
    assert sim.primary != 0
    assert acts(sim, 0)["withheld"] > 0


def test_byzantine_peer_serving_forged_blocks_to_a_lagging_replica() -> None:
    """n2 restarts far behind and hears heads only from n1 (the forger) and n3, so that the
    forger is one of the two peers it may fetch from: it must refuse the forged answer and
    catch up from n3."""
    sim = Simulator(seed=19, byzantine={1: "forge"})
    sim.run_until(height=4)
    sim.crash(2)
    sim.run_until(height=25, nodes={0, 1, 3})
    sim.drop_messages(lambda sender, to, msg: (sender, to) == (0, 2) and isinstance(msg, m.Status))
    sim.restart(2)
    sim.run_until(height=25, nodes={2})
    sim.drop_messages(None)
    sim.run_until(height=28)
    sim.check_safety()
    assert acts(sim, 1)["served_forged"] > 0
    assert sim.replica(2).counters["fetch_invalid"] > 0  # what it was served, it refused


def test_everyone_crashes_and_restarts_from_disk() -> None:
    sim = Simulator(seed=18)
    sim.run_until(height=6)
    for index in range(4):
        sim.crash(index)
    assert not any(sim.node(i).up for i in range(4))
    sim.run_for(500)
    for index in range(4):
        sim.restart(index)
    sim.run_until(height=max(sim.heights().values()) + 3)
    sim.check_safety()


def test_full_pools_turn_clients_away_and_nothing_stalls() -> None:
    sim = Simulator(
        seed=23,
        client_txs_max=4,
        client_interval_ms=(5, 10),
        replica_config=ReplicaConfig(pool_capacity=8),
    )
    sim.run_until(height=20, within_ms=30_000)
    sim.check_safety()
    assert sum(sim.node(i).counters["tx_pool_full"] for i in range(4)) > 0

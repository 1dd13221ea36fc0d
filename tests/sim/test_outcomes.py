"""Stories of record rules in the simulator: typed txs whose outcomes depend on their order,
and a Byzantine primary that marks an outcome wrongly (STYLE.md item 9: fixed seeds, each
story asserts that its fault fired)."""

from collections import Counter

from tests.sim.simulator import Simulator


def outcomes(sim: Simulator, index: int) -> Counter[str]:
    """Outcome codes of every tx node `index` committed ("" accepted)."""
    return Counter(code for block, _ in sim.node(index).store.chain for code in block.outcomes)


def test_typed_txs_commit_with_the_same_outcomes_everywhere() -> None:
    sim = Simulator(seed=31, client_txs_max=4)
    sim.run_until(height=25, within_ms=60_000)
    sim.check_safety()  # equal block hashes: equal outcome roots, so equal outcomes
    seen = outcomes(sim, sim.honest[0])
    assert seen[""] > 0
    assert sum(n for code, n in seen.items() if code) > 0  # order decided some refusals
    typed = sum(1 for b, _ in sim.node(0).store.chain for t in b.txs if "." in t.type)
    assert typed > 0
    assert all(outcomes(sim, i) <= seen or seen <= outcomes(sim, i) for i in sim.honest)


def test_a_primary_that_marks_an_outcome_wrongly_is_replaced() -> None:
    sim = Simulator(seed=32, byzantine={0: "misoutcome"})
    sim.run_until(height=8, within_ms=60_000)
    sim.check_safety()
    behaviour = sim.node(0).behaviour
    assert behaviour is not None
    assert behaviour.acts["mismarked"] > 0
    refused = sum(sim.replica(i).counters["invalid_message:invalid_block"] for i in sim.honest)
    assert refused > 0  # the honest backups recomputed the outcomes and refused the block
    assert sim.primary != 0  # and changed view
    for index in sim.honest:
        chain = sim.node(index).store.chain
        assert all(block.header.proposer != 0 for block, _ in chain)

"""A primary that commits other clients' work while it leaves one client's txs out forever.

The censor (tests/sim/byzantine.py `Censor`) never pools its victim's txs, so while it is
primary every block it proposes has room but none of them. The honest replicas hold those txs,
see blocks with room commit without them, and change view (consensus/censorship.py); the next
primary commits them. Each story checks that the censoring happened, not only the outcome.
"""

from typing import Final

import pytest

from tests.sim.byzantine import Censor
from tests.sim.simulator import Simulator

VIEW_CHANGE_TIMEOUT_MS: Final = 1000  # tests/factory.py's genesis


def victim_txs_committed(sim: Simulator, index: int, victim: str) -> list[tuple[int, int]]:
    """(height, view) of every committed tx of `victim` in node `index`'s chain."""
    return [
        (block.height, block.header.view)
        for block, _ in sim.node(index).store.chain
        for tx in block.txs
        if tx.client_id == victim
    ]


@pytest.mark.parametrize(("seed", "nodes"), [(61, 4), (62, 4), (63, 7)])
def test_a_censoring_primary_is_replaced_and_its_victim_committed(seed: int, nodes: int) -> None:
    sim = Simulator(seed=seed, nodes=nodes, byzantine={0: "censor"})
    censor = sim.node(0).behaviour
    assert isinstance(censor, Censor)
    took = sim.run_until(
        until=lambda: all(sim.replica(i).view >= 1 for i in sim.honest),
        within_ms=10 * VIEW_CHANGE_TIMEOUT_MS,
    )
    view_zero = [b for i in sim.honest for b, _ in sim.node(i).store.chain if b.header.view == 0]
    assert view_zero, "the censor committed other clients' work while it was primary"
    assert censor.censored > 0, "the censor never kept a tx of its victim out"
    assert all(t.client_id != censor.victim for b in view_zero for t in b.txs)
    assert sum(sim.replica(i).counters["censorship_view_changes"] for i in sim.honest) > 0
    assert took <= 4 * VIEW_CHANGE_TIMEOUT_MS, f"the censor stayed primary {took} ms"
    sim.run_until(
        until=lambda: all(victim_txs_committed(sim, i, censor.victim) for i in sim.honest),
        within_ms=5 * VIEW_CHANGE_TIMEOUT_MS,
    )
    sim.client_on = False  # let everything pending drain, then nothing of the victim waits
    sim.run_until(
        until=lambda: all(sim.replica(i).pending == 0 for i in sim.honest),
        within_ms=10 * VIEW_CHANGE_TIMEOUT_MS,
    )
    sim.check_safety()


def test_honest_primaries_under_steady_load_are_never_taken_for_censors() -> None:
    sim = Simulator(seed=64)
    sim.run_until(height=200, within_ms=120_000)
    sim.check_safety()
    assert {sim.replica(i).view for i in range(4)} == {0}
    assert sum(sim.replica(i).counters["censorship_view_changes"] for i in range(4)) == 0

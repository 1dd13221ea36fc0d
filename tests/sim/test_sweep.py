"""The seed sweep inside the test suite: 1,000 seeds with every fault for n = 4 and n = 7, and a
few seeds for n = 10 and n = 13 (the long sweeps at those sizes are in docs/testing.md).

Each seed is one run of `tests.sim.sweep.run_seed`: random faults for the first part, then heal
and require liveness. Seeds are the fixed range 0..999; none is skipped; a failure prints the
report that names the seed and the command that replays it. Two spawned workers.
"""

from typing import Final

import pytest

from tests.sim.fastcrypto import memoized_verify
from tests.sim.faults import ALL
from tests.sim.sweep import run_seed, sweep

SEEDS: Final = range(1000)
# Larger clusters cost more per seed (~0.4 s at n = 10, ~0.6 s at n = 13 on one core).
LARGE_SEEDS: Final = {10: range(16), 13: range(8)}
JOBS: Final = 2
ALL_FAULTS: Final = frozenset(ALL)


def _sweep_passes(seeds: range, nodes: int) -> None:
    outcomes = sweep(seeds, nodes, ALL_FAULTS, JOBS)
    passed = 0
    try:
        for outcome in outcomes:
            if not outcome.ok:
                pytest.fail(outcome.report(), pytrace=False)
            assert outcome.nodes == nodes
            assert len(outcome.heights) >= nodes  # (and the validators that joined)
            passed += 1
    finally:
        outcomes.close()
    assert passed == len(seeds)


@pytest.mark.parametrize("nodes", [4, 7])
def test_sweep_passes_1000_seeds_with_all_faults(nodes: int) -> None:
    _sweep_passes(SEEDS, nodes)


@pytest.mark.parametrize("nodes", sorted(LARGE_SEEDS))
def test_sweep_passes_at_larger_n(nodes: int) -> None:
    _sweep_passes(LARGE_SEEDS[nodes], nodes)


def test_a_seed_replays_identically_in_a_worker_and_in_this_process() -> None:
    """What the command line replays is exactly what the sweep ran (same plan, same events)."""
    outcomes = sweep([3, 4], 4, ALL_FAULTS, 1)
    try:
        in_workers = [o.fingerprint for o in outcomes]
    finally:
        outcomes.close()
    with memoized_verify():
        here = [run_seed(seed, 4, ALL_FAULTS).fingerprint for seed in (3, 4)]
    assert in_workers == here
    assert here[0] != here[1]

"""The seed sweep inside the test suite: 1,000 seeds with every fault, for n = 4 and n = 7.

Each seed is one run of `tests.sim.sweep.run_seed`: random faults for the first part, then heal
and require liveness. Seeds are the fixed range 0..999; none is skipped; a failure prints the
report that names the seed and the command that replays it. Two spawned workers.
"""

from typing import Final

import pytest

from tests.sim.fastcrypto import memoized_verify
from tests.sim.faults import FAULT_CLASSES
from tests.sim.sweep import run_seed, sweep

SEEDS: Final = range(1000)
JOBS: Final = 2
ALL_FAULTS: Final = frozenset(FAULT_CLASSES)


@pytest.mark.parametrize("nodes", [4, 7])
def test_sweep_passes_1000_seeds_with_all_faults(nodes: int) -> None:
    outcomes = sweep(SEEDS, nodes, ALL_FAULTS, JOBS)
    passed = 0
    try:
        for outcome in outcomes:
            if not outcome.ok:
                pytest.fail(outcome.report(), pytrace=False)
            passed += 1
    finally:
        outcomes.close()
    assert passed == len(SEEDS)


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

"""Replica memory stays bounded: 10,000 fault-free blocks, logs sampled every 500.

Two measures of each replica: its own `log_size()` (the per-height and per-view structures it
declares), and an independent count of every entry of every container reachable from its
attributes (so a structure that `log_size()` forgets is still counted), plus the size of its
persisted state. Each must stay under a bound computed from the protocol's limits, and must not
grow between the first and the last sample once the caches are warm.
"""

from collections import deque
from typing import Final

from consensus import log, signatures, viewstate
from consensus.replica import Replica, ReplicaConfig
from ledger.genesis import Genesis
from tests.sim.fastcrypto import memoized_verify
from tests.sim.simulator import Simulator

BLOCKS: Final = 10_000
SAMPLE_EVERY: Final = 500
WARM_FROM: Final = 2_000  # by then the signature cache has filled to its cap
GROWTH_SLACK: Final = 256  # entries the logs may differ by between two samples of a steady run


def log_bound(config: ReplicaConfig, n: int) -> int:
    """Everything the replica may hold at once under its own limits."""
    per_height = 1 + 2 * n  # the instance, and one Prepare and one Commit from each replica
    window = config.window
    return (
        window * per_height  # instances in the watermark window
        + 2 * window  # prepared proofs and waiting pre-prepares
        + (log.BLOCKS_PER_HEIGHT_MAX + 1) * window  # blocks held by hash for a NewView
        + (window + 1) * n  # checkpoint votes and own checkpoints in the window
        + viewstate.VIEW_AHEAD_MAX * n  # ViewChanges for views ahead
        + signatures.VERIFIED_CACHE_MAX  # the signature cache
    )


def container_entries(obj: object, seen: set[int] | None = None) -> int:
    """Entries of every dict, list, tuple, set and deque reachable from `obj` through the
    consensus/ledger objects it holds (the genesis, fixed for the chain's life, excluded)."""
    seen = set() if seen is None else seen
    if id(obj) in seen or isinstance(obj, str | bytes | int | float | bool | Genesis):
        return 0
    seen.add(id(obj))
    if isinstance(obj, dict):
        return len(obj) + sum(
            container_entries(k, seen) + container_entries(v, seen) for k, v in obj.items()
        )
    if isinstance(obj, list | tuple | set | frozenset | deque):
        return len(obj) + sum(container_entries(x, seen) for x in obj)
    module = type(obj).__module__
    if not module.startswith(("consensus", "ledger")):
        return 0
    fields = getattr(obj, "__dict__", None)
    if fields is None:
        slots = getattr(type(obj), "__slots__", ())
        fields = {s: getattr(obj, s) for s in slots if hasattr(obj, s)}
    return sum(container_entries(v, seen) for v in fields.values())


def measure(sim: Simulator) -> tuple[int, int, int]:
    replicas: list[Replica] = [sim.replica(i) for i in range(sim.n)]
    return (
        max(r.log_size() for r in replicas),
        max(container_entries(r) for r in replicas),
        max(len(sim.node(i).persisted) for i in range(sim.n)),
    )


def test_replica_logs_stay_bounded_over_10000_blocks() -> None:
    with memoized_verify():
        sim = Simulator(seed=21, client_txs_max=1, client_interval_ms=(20, 20), client_resubmit=0.0)
        samples: list[tuple[int, tuple[int, int, int]]] = []
        for height in range(SAMPLE_EVERY, BLOCKS + 1, SAMPLE_EVERY):
            sim.run_until(height=height, within_ms=SAMPLE_EVERY * 200)
            samples.append((height, measure(sim)))
    sim.check_safety()
    config = sim.replica(0).config
    bound = log_bound(config, sim.n)
    persisted_bound = 3 * config.window + 1  # accepted, prepared and block entries, and the view
    for height, (log_size, entries, persisted) in samples:
        assert log_size <= bound, f"log_size {log_size} > {bound} at height {height}"
        assert persisted <= persisted_bound, f"{persisted} persisted entries at {height}"
        # Blocks and txs held in the window add their own fields; 50 entries each is ample.
        assert entries <= bound + 50 * config.window * 4, f"{entries} entries at {height}"
    warm = [s for h, s in samples if h >= WARM_FROM]
    for which in range(3):
        values = [s[which] for s in warm]
        assert max(values) - min(values) <= GROWTH_SLACK, f"measure {which} grows: {values}"

"""Crash and restart under load: kill -9 a random node every few seconds (never more than f
at once), restart it, for a bounded run; then every acknowledged tx is on every node exactly
once, all nodes hold one chain with one head, and `cityledger verify` passes on every data dir.

The fault schedule is a pure function of the seed (printed with any failure); its steps are
timed by the schedule's own clock, which is the length of each fault, not a wait for an event.
"""

import asyncio
import random
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.faults.conftest import ClusterFactory
from tests.faults.figures import report
from tests.faults.harness import (
    Cluster,
    loopback_network,
    same_chain,
    tx_ids_of,
    verify_data_dirs,
)
from tests.faults.load import Load


@dataclass(frozen=True)
class Step:
    at_s: float
    action: str  # "kill" or "restart"
    node: int


def plan(seed: int, n: int, f: int, duration_s: float) -> list[Step]:
    """Kill a random up node every 1-3 s while fewer than f are down; each stays down 0.3-2 s."""
    rng = random.Random(seed)
    steps: list[Step] = []
    down: dict[int, float] = {}  # node -> when it restarts
    t = rng.uniform(0.5, 1.5)
    while t < duration_s:
        for node, back in sorted(down.items(), key=lambda x: x[1]):
            if back <= t:
                steps.append(Step(back, "restart", node))
                del down[node]
        if len(down) < f:
            node = rng.choice([i for i in range(n) if i not in down])
            steps.append(Step(t, "kill", node))
            down[node] = min(t + rng.uniform(0.3, 2.0), duration_s)
        t += rng.uniform(1.0, 3.0)
    steps.extend(Step(back, "restart", node) for node, back in sorted(down.items()))
    return sorted(steps, key=lambda s: (s.at_s, s.action != "restart"))


async def run_schedule(c: Cluster, steps: list[Step]) -> None:
    start = time.monotonic()
    for step in steps:
        delay = step.at_s - (time.monotonic() - start)
        if delay > 0:
            await asyncio.sleep(delay)  # the schedule's clock: how long a fault lasts
        if step.action == "kill":
            await c.kill(step.node)
        else:
            await c.start(step.node)


async def crash_restart(
    clusters: ClusterFactory, root: Path, *, validators: int, duration_s: float, seed: int
) -> None:
    c = clusters(loopback_network(root, validators))
    await c.start_all()
    steps = plan(seed, c.n, c.f, duration_s)
    load = Load(c, random.Random(seed), workers=4).start()
    try:
        await run_schedule(c, steps)
        await c.wait_healthy(list(range(c.n)))
        # Ten more acknowledged commits with every node up: liveness after the last restart.
        settled = len(load.acked)
        await c.wait_for(
            "ten commits after the last restart", lambda: len(load.acked) >= settled + 10, 60
        )
    finally:
        await load.stop()
    schedule = ", ".join(f"{s.at_s:.1f}s {s.action} {s.node}" for s in steps)
    head = await c.wait_converged(timeout_s=60)
    chain = await same_chain(c, list(range(c.n)), head["height"])
    where = tx_ids_of(chain)  # asserts that no tx is committed twice
    lost = [tx_id.hex() for tx_id, ack in load.acked.items()
            if where.get(tx_id) != (ack.height, ack.index)]  # fmt: skip
    assert not lost, f"seed {seed}: acknowledged txs lost or moved: {lost[:5]} ({schedule})"
    for i in range(c.n):
        assert await c.stop(i) == 0
    await verify_data_dirs(c.net)
    kills = sum(1 for s in steps if s.action == "kill")
    report(
        f"crash-restart n={validators} {duration_s:g}s seed={seed}",
        f"{kills} kill -9 + restarts, {len(load.acked)} acknowledged txs all on every node, "
        f"{head['height']} blocks, {len(where)} txs committed once each, verify OK on "
        f"{c.n} data dirs; outcomes {dict(load.outcomes)}",
    )


async def test_crash_restart_under_load_loses_nothing(
    clusters: ClusterFactory, tmp_path: Path
) -> None:
    await crash_restart(clusters, tmp_path / "net", validators=4, duration_s=15, seed=1)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [2, 3])
async def test_crash_restart_soak(clusters: ClusterFactory, tmp_path: Path, seed: int) -> None:
    await crash_restart(clusters, tmp_path / "net", validators=7, duration_s=300, seed=seed)

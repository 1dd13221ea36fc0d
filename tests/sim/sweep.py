"""Seed sweeps: one seed is one run (random faults, heal, require liveness), many run in parallel.

It owns the shape of a seeded run and its report. A run: draw the plan from the seed, run the
fault phase (safety checked at every commit), heal everything, then (with `reconfig`) require
every change of the set to be made and its nodes started or stopped within `LIVENESS_MS`, then
every honest validator not removed to commit `LIVENESS_BLOCKS` more blocks than the best honest
height within `LIVENESS_MS` of simulated time. A failing run's report names the seed that
replays it, the fault schedule and the last trace lines. Workers are spawned with
PYTHONHASHSEED=0 so a seed replays identically from the test suite and the command line.
"""

import hashlib
import multiprocessing
import os
from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

from tests.sim.checker import Violation
from tests.sim.fastcrypto import memoized_verify
from tests.sim.faults import Plan, make_plan, schedule
from tests.sim.simulator import Simulator

LIVENESS_BLOCKS: Final = 3
LIVENESS_MS: Final = 30_000  # simulated ms after the heal (view-change back-off is capped)
TRACE_LINES: Final = 60


@dataclass(frozen=True)
class Outcome:
    seed: int
    nodes: int
    ok: bool
    kind: str = ""
    detail: str = ""
    plan: tuple[str, ...] = ()
    faults: tuple[str, ...] = ()
    trace: tuple[str, ...] = field(default=(), repr=False)
    state: str = ""
    sim_ms: int = 0
    events: int = 0
    heights: tuple[int, ...] = ()
    fingerprint: str = ""

    def report(self, trace_lines: int = TRACE_LINES) -> str:
        lines = [
            f"VIOLATION ({self.kind}) seed={self.seed} nodes={self.nodes}",
            f"replay: python -m tests.sim --seeds {self.seed} --nodes {self.nodes}",
            self.detail,
            f"state: {self.state}",
            "fault schedule (planned):",
            *(f"  {line}" for line in self.plan),
            "faults (as applied):",
            *(f"  {line}" for line in self.faults),
            f"last {min(trace_lines, len(self.trace))} trace lines:",
            *self.trace[-trace_lines:],
        ]
        return "\n".join(lines)


def run_seed(
    seed: int, nodes: int, faults: Iterable[str], trace_lines: int = TRACE_LINES
) -> Outcome:
    return _run(make_plan(seed, nodes, faults), trace_lines)


def _run(plan: Plan, trace_lines: int) -> Outcome:
    seed, nodes = plan.seed, plan.nodes
    sim: Simulator | None = None
    try:
        governs = plan.reconfig is not None
        sim = Simulator(seed, nodes, byzantine=plan.byzantine, net=plan.net, admins=governs)
        governor = schedule(sim, plan)
        sim.run_for(plan.heal_at_ms)
        sim.heal_all()
        if governor is not None:  # every change made, its nodes started or stopped
            sim.run_until(until=governor.settled, within_ms=LIVENESS_MS)
        target = max(sim.heights().values()) + LIVENESS_BLOCKS
        members = [n.index for n in sim.nodes if n.honest and not n.removed]
        sim.run_until(height=target, nodes=members, within_ms=LIVENESS_MS)
        sim.check_safety()
    except Violation as violation:
        return _outcome(seed, nodes, plan.describe(), sim, trace_lines, violation)
    return _outcome(seed, nodes, plan.describe(), sim, trace_lines, None)


def _outcome(
    seed: int,
    nodes: int,
    plan: list[str],
    sim: Simulator | None,
    trace_lines: int,
    violation: Violation | None,
) -> Outcome:
    if sim is None:  # the replicas failed while booting: there is no simulation to report
        assert violation is not None
        return Outcome(
            seed, nodes, ok=False, kind=violation.kind, detail=violation.detail, plan=tuple(plan)
        )
    digest = hashlib.sha256()
    for node in sim.nodes:
        digest.update(node.store.head.hash)
    digest.update(f"{sim.now_ms}/{sim.stats['events']}".encode())
    return Outcome(
        seed,
        nodes,
        ok=violation is None,
        kind=violation.kind if violation else "",
        detail=violation.detail if violation else "",
        faults=tuple(sim.faults),
        trace=tuple(sim.trace.tail(trace_lines)) if violation else (),
        state=str(sim),
        sim_ms=sim.now_ms,
        events=sim.stats["events"],
        heights=tuple(n.store.height for n in sim.nodes),
        fingerprint=digest.hexdigest()[:16],
        plan=tuple(plan),
    )


def parse_seeds(text: str) -> list[int]:
    """'0-999', '5', '1,4,9-12' -> the seeds, in order."""
    seeds: list[int] = []
    for part in text.split(","):
        low, _, high = part.strip().partition("-")
        first = int(low)
        last = int(high) if high else first
        if first < 0 or last < first:
            raise ValueError(f"bad seed range {part!r}")
        seeds.extend(range(first, last + 1))
    return seeds


def _work(args: tuple[int, int, frozenset[str], int]) -> Outcome:
    with memoized_verify():
        return run_seed(*args)


def sweep(
    seeds: Sequence[int],
    nodes: int,
    faults: frozenset[str],
    jobs: int,
    trace_lines: int = TRACE_LINES,
) -> Generator[Outcome, None, None]:
    """Run every seed on `jobs` spawned workers; yield outcomes in seed order. Stopping early
    (closing the generator) terminates the workers."""
    previous = os.environ.get("PYTHONHASHSEED")
    os.environ["PYTHONHASHSEED"] = "0"  # inherited by the spawned workers
    try:
        context = multiprocessing.get_context("spawn")
        pool = context.Pool(jobs)
    finally:
        if previous is None:
            del os.environ["PYTHONHASHSEED"]
        else:
            os.environ["PYTHONHASHSEED"] = previous
    try:
        work = [(seed, nodes, faults, trace_lines) for seed in seeds]
        chunk = max(1, min(16, len(work) // (jobs * 8)))
        yield from pool.imap(_work, work, chunksize=chunk)
    finally:
        pool.terminate()
        pool.join()

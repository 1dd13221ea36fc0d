"""Command line: `python -m tests.sim --seeds 0-999 [--nodes N] [--faults all] [--jobs 2]`.

`--fingerprints` prints one line per seed: a digest of every node's head, the simulated time
and the number of events. A change that must not alter behaviour (a refactor of the replica),
run before and after, prints the same lines.

Runs one seeded simulation per seed and exits 1 on the first violation, printing the seed, the
fault schedule and the last trace lines (`--keep-going` runs every seed and lists failures).
The wall clock here only measures the sweep for the summary; no run reads it.
"""

import argparse
import sys
import time

from tests.sim.faults import FAULT_CLASSES, NODES_MIN, parse_faults
from tests.sim.sweep import TRACE_LINES, parse_seeds, sweep


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.sim", description="Deterministic PBFT simulator: seed sweeps."
    )
    parser.add_argument("--seeds", default="0-99", help="e.g. 0-999, 7, 1,4,9-12")
    parser.add_argument(
        "--nodes", type=int, default=4, help=f"validators, any n >= {NODES_MIN} (e.g. 4, 7, 10, 13)"
    )
    parser.add_argument(
        "--faults", default="all", help=f"all, none, or a comma list of {','.join(FAULT_CLASSES)}"
    )
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--trace-lines", type=int, default=TRACE_LINES)
    parser.add_argument("--keep-going", action="store_true", help="run every seed")
    parser.add_argument(
        "--progress", type=int, default=0, metavar="N", help="print a line every N seeds"
    )
    parser.add_argument(
        "--fingerprints",
        action="store_true",
        help="print each seed's fingerprint (heads, time, events): diff two runs of a refactor",
    )
    args = parser.parse_args(argv)
    try:
        seeds = parse_seeds(args.seeds)
        faults = parse_faults(args.faults)
    except ValueError as exc:
        parser.error(str(exc))
    if args.nodes < NODES_MIN:
        parser.error(f"--nodes must be at least {NODES_MIN} (n = 3f + 1 with f >= 1)")
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")

    started = time.monotonic()
    passed, sim_ms, events = 0, 0, 0
    failed: list[int] = []
    outcomes = sweep(seeds, args.nodes, faults, args.jobs, args.trace_lines)
    try:
        for done, outcome in enumerate(outcomes, 1):
            sim_ms += outcome.sim_ms
            events += outcome.events
            if args.fingerprints:
                print(f"seed={outcome.seed} {outcome.fingerprint} events={outcome.events}")
            if args.progress and done % args.progress == 0:
                print(
                    f"{done} seeds run (up to seed {outcome.seed}), {len(failed)} failed",
                    flush=True,
                )
            if outcome.ok:
                passed += 1
                continue
            print(outcome.report(args.trace_lines), flush=True)
            failed.append(outcome.seed)
            if not args.keep_going:
                break
    finally:
        outcomes.close()
    wall = time.monotonic() - started
    faults_text = ",".join(sorted(faults)) or "none"
    print(
        f"nodes={args.nodes} faults={faults_text} seeds={args.seeds}: {passed} passed, "
        f"{len(failed)} failed{' ' + str(failed) if failed else ''}; "
        f"{sim_ms / 1000:.0f} s simulated, {events} events, {wall:.1f} s wall on {args.jobs} jobs"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

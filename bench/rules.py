"""Benchmark: what executing records with rules costs a node per tx, in one process.

Builds the blocks of `bench/cluster.py fiscal` (bench/fiscal.py: a budget set up, then
payments, reallocations and one payment in 20 refused), and as many blocks of plain records,
then runs each block through the steps a node runs for a block, each timed on CPU time:

- `propose`: the primary's execution of the chosen txs (their outcomes; one node in n);
- `validate`: `check_block` (every backup; the signatures are taken as checked at admission);
- `validate_own`: the primary's `check_block` of its own proposal, which takes the execution
  it proposed with (consensus/rulestate.py);
- `commit`: the store's batch (`BlockStore.prepare` of the checked block: its execution's
  writes, risk monitoring, the entries) and its synced write.

Every step runs on a fresh store per workload, blocks in order, so the state is the one a
node has. `--profile FILE` writes a cProfile of the fiscal workload's steps (pstats).

    .venv/bin/python bench/rules.py [--blocks 40] [--block-txs 1000] [--profile F] [--json]
"""

import argparse
import cProfile
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import fiscal as fiscal_records  # noqa: E402

from ledger import block as blocks  # noqa: E402
from ledger import tx as txs  # noqa: E402
from ledger.kinds.execute import execute  # noqa: E402
from ledger.store import BlockStore  # noqa: E402
from ledger.storelayout import BlockWrite  # noqa: E402
from tests import factory  # noqa: E402

STEPS = ("propose", "validate_own", "validate", "commit")
CLERK = "fiscal-clerk0"


def _bodies(net: factory.Network, workload: str, count: int, now_ms: int) -> list[txs.Transaction]:
    out = []
    for i in range(count):
        if workload == "plain":
            key, type_, body = f"fiscal/bench/plain/{i % 1000}", "inspection", {
                "seq": i, "amount": 1000 + i, "ref": f"plain-{i:09d}",
                "note": "inspection passed; documents filed with the city archive",
            }  # fmt: skip
        elif workload == "fiscal-setup":
            key, type_, body = fiscal_records.setup(i, now_ms)
        else:
            key, type_, body = fiscal_records.record(i, "bench")
        out.append(net.tx(CLERK, key, body, now_ms, type_))
    return out


def _chunks(items: list[txs.Transaction], size: int) -> Iterator[tuple[txs.Transaction, ...]]:
    for start in range(0, len(items), size):
        yield tuple(items[start : start + size])


class Timer:
    def __init__(self, profile: cProfile.Profile | None) -> None:
        self.cpu_s = dict.fromkeys(STEPS, 0.0)
        self.profile = profile

    def run(self, step: str, work: Any, *args: Any, **kwargs: Any) -> Any:
        if self.profile is not None:
            self.profile.enable()
        started = time.process_time()
        result = work(*args, **kwargs)
        self.cpu_s[step] += time.process_time() - started
        if self.profile is not None:
            self.profile.disable()
        return result


def _append(store: BlockStore, net: factory.Network, body: tuple[txs.Transaction, ...],
            timer: Timer | None) -> int:  # fmt: skip
    head, genesis = store.head, net.genesis
    time_ms, height = max(head.timestamp_ms, factory.BASE_TIME_MS) + 50, head.height + 1
    run = timer.run if timer else (lambda _step, work, *a, **k: work(*a, **k))
    proposed = run("propose", execute, store.rule_state, body, genesis, time_ms, height)
    block = blocks.make_block(head, body, time_ms, 0, 0, proposed.outcomes)
    ids = frozenset(t.tx_id for t in body)
    run("validate_own", blocks.check_block, block, head, genesis, is_committed=store.has_tx,
        signatures_checked=ids, state=store.rule_state, executed=proposed)  # fmt: skip
    executed = run("validate", blocks.check_block, block, head, genesis,
        is_committed=store.has_tx, signatures_checked=ids, state=store.rule_state)  # fmt: skip
    certificate = net.certify(block)
    # As a node's replica hands it over: the block, and what its execution wrote.
    write = BlockWrite(block, certificate, txs_checked=True, writes=executed.writes)
    pending = run("commit", store.prepare, [write])
    run("commit", pending.write)
    store.advance(pending)
    return sum(size for _, size in pending.state_writes.values())  # rule-state bytes written


def measure(
    workload: str, blocks_count: int, block_txs: int, profile: Path | None
) -> dict[str, Any]:
    net = factory.network()
    now_ms = factory.BASE_TIME_MS
    measured = _bodies(net, workload, blocks_count * block_txs, now_ms)
    with (
        tempfile.TemporaryDirectory(prefix="cityledger-bench-") as tmp,
        BlockStore.open(Path(tmp) / "data", net.genesis) as store,
    ):
        if workload == "fiscal":
            setup = _bodies(net, "fiscal-setup", fiscal_records.setup_count(), now_ms)
            _append(store, net, tuple(setup), None)
        profiler = cProfile.Profile(time.process_time) if profile else None  # CPU, not wall
        timer = Timer(profiler)
        written = sum(_append(store, net, body, timer) for body in _chunks(measured, block_txs))
        refused = sum(1 for t in measured if store.tx_outcome(t.tx_id))
    if profiler is not None and profile is not None:
        profiler.dump_stats(str(profile))
    per_tx = {k: round(v / len(measured) * 1e6, 1) for k, v in timer.cpu_s.items()}
    return {"txs": len(measured), "refused": refused, "cpu_us_per_tx": per_tx,
            "state_bytes_per_tx": round(written / len(measured))}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=40)
    parser.add_argument("--block-txs", type=int, default=1000)
    parser.add_argument("--profile", type=Path, help="cProfile of the fiscal run, to this file")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    report = {
        name: measure(name, args.blocks, args.block_txs, args.profile if name == "fiscal" else None)
        for name in ("plain", "fiscal")
    }
    # What one node of n = 4 spends per tx: the primary proposes and checks its own block,
    # the three backups check it, every node commits it.
    for run in report.values():
        us = run["cpu_us_per_tx"]
        primary = us["propose"] + us["validate_own"]
        run["node_us_per_tx"] = round((primary + 3 * us["validate"]) / 4 + us["commit"], 1)
    if args.json:
        print(json.dumps(report))
        return 0
    for name, run in report.items():
        steps = ", ".join(f"{k} {v}" for k, v in run["cpu_us_per_tx"].items())
        print(f"{name}: {run['txs']} txs ({run['refused']} refused): µs per tx: {steps}; "
              f"one node of 4: {run['node_us_per_tx']}; rule state written: "
              f"{run['state_bytes_per_tx']} bytes per tx")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

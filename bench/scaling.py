"""Benchmark: how a node's costs grow with the length of its chain, on a real 4-node cluster.

Grows one cluster's chain through the public API (batched, pre-signed records, in chunks of at
most `--chunk` txs so that every chunk is signed just before it is sent) and, each time the
chain reaches one of `--sizes` txs, measures on the last node:

- RSS of every node (sampled all along the run too: it must stay flat, the chain is on disk);
- startup: that node stopped and started again, seconds from spawning the process to its
  first healthy `/v1/status` (best of `--restarts`);
- verify: `cityledger verify --data-dir` over its whole store (the node stopped), wall and
  CPU seconds, txs/s, and the ratio to this machine's single-core Ed25519 verify rate;
- catch-up: its store wiped, the node started empty; seconds until it reports the cluster's
  height, and the rate in txs/s (state transfer: certified blocks fetched from the others).

    .venv/bin/python bench/scaling.py [--sizes 10000,100000,1000000] [--json] [--out F]
"""

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness

CHUNK_TXS = 100_000
BATCH_TXS = 250
CONCURRENCY = 16
CATCH_UP_TIMEOUT_S = 1800.0


def grow(cluster: harness.Cluster, have: int, want: int, chunk: int) -> list[dict[str, Any]]:
    """Submit txs until the chain holds `want`; return one record per chunk."""
    records = []
    while have < want:
        n = min(chunk, want - have)
        spec = harness.LoadSpec(
            n, "batched", BATCH_TXS, CONCURRENCY, deadline_s=n / 200 + 120,
            run_id=f"g{have}", nonce_base=have,
        )  # fmt: skip
        result, cpu = harness.run_load(cluster, spec)
        have += result["committed"]
        cluster.sample_rss()
        records.append({
            "chain_txs": have, "tx_per_s": result["tx_per_s"],
            "rss_mb": {k: round(v / 2**20, 1) for k, v in _rss(cluster).items()},
            "rss_mb_max": {k: round(v / 2**20, 1) for k, v in cluster.rss_max.items()},
            "cpu_s": cpu,
        })  # fmt: skip
        sys.stderr.write(f"scaling: chain at {have} txs ({result['tx_per_s']} tx/s)\n")
        if result["committed"] == 0:
            raise RuntimeError("no tx committed: the cluster is stuck")
    return records


def _rss(cluster: harness.Cluster) -> dict[str, int]:
    return {k: harness.rss_bytes(p.pid) for k, p in cluster.procs.items()}


def measure(cluster: harness.Cluster, node_id: str, chain_txs: int, restarts: int,
            verify_rate: float) -> dict[str, Any]:  # fmt: skip
    """Startup, verify and catch-up of `node_id` at the cluster's current chain."""
    height = cluster.height(node_id)
    rss = {k: round(v / 2**20, 1) for k, v in _rss(cluster).items()}
    startups = []
    for _ in range(restarts):
        cluster.stop([node_id])
        startups.append(round(cluster.start_timed(node_id), 3))
    cluster.stop([node_id])
    disk = harness.dir_bytes(cluster.data_dir(node_id))
    verify = _verify(cluster, node_id, verify_rate)
    cluster.wipe(node_id)
    started = time.perf_counter()
    cluster.start_timed(node_id)
    target = max(cluster.height(n.id) for n in cluster.net.nodes if n.id != node_id)
    cluster.wait_height(node_id, target, CATCH_UP_TIMEOUT_S)
    catch_up_s = time.perf_counter() - started
    return {
        "chain_txs": chain_txs, "height": height, "rss_mb": rss,
        "startup_s": min(startups), "startups_s": startups,
        "disk_bytes_per_tx": round(disk / max(chain_txs, 1), 1),
        "verify": verify,
        "catch_up_s": round(catch_up_s, 2),
        "catch_up_tx_per_s": round(chain_txs / catch_up_s),
        "catch_up_blocks": target,
    }  # fmt: skip


def _verify(cluster: harness.Cluster, node_id: str, verify_rate: float) -> dict[str, Any]:
    """`cityledger verify --data-dir` of a stopped node's store, timed (wall and CPU)."""
    command = [
        sys.executable, "-m", "cli.main", "verify", "--json",
        "--data-dir", str(cluster.data_dir(node_id)),
        "--genesis", str(cluster.root / "genesis.toml"),
    ]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, cwd=harness.ROOT, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        raise RuntimeError(f"verify failed: {done.stdout[-500:]!r} {done.stderr[-500:]!r}")
    report = json.loads(done.stdout)
    txs = int(report.get("txs_checked", 0))
    return {
        "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "txs": txs,
        "tx_per_cpu_s": round(txs / cpu) if cpu else None,
        "tx_per_wall_s": round(txs / wall),
        "ratio_cpu": round(txs / cpu / verify_rate, 3) if cpu else None,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="chain lengths (txs)")
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--chunk", type=int, default=CHUNK_TXS, help="txs per load process")
    parser.add_argument("--restarts", type=int, default=3, help="startups timed per size")
    parser.add_argument("--nice", type=int, default=0, help="see bench/cluster.py --nice")
    parser.add_argument("--out", type=Path, help="also write the JSON result to this file")
    parser.add_argument("--plots", type=Path, help="write PNG plots to this directory")
    parser.add_argument("--keep", type=Path, help="build the cluster in this (new) directory "
                        "and keep it afterwards (default: a temporary one)")  # fmt: skip
    parser.add_argument("--from-json", type=Path, help="only plot/print this earlier result")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.from_json:
        return harness.report(json.loads(args.from_json.read_text()), args, "write_scaling", _print)
    harness.set_nice(args.nice)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    verify_rate = harness.verify_rate()
    report: dict[str, Any] = {
        "machine": harness.machine(), "ed25519_verify_per_s": verify_rate, "nice": args.nice,
        "nodes": args.nodes, "growth": [], "points": [],
    }  # fmt: skip
    started = time.perf_counter()
    with harness.Cluster(args.nodes, keep=args.keep) as cluster:
        cluster.start()
        node_id = cluster.net.nodes[-1].id
        have = 0
        for size in sizes:
            report["growth"] += grow(cluster, have, size, args.chunk)
            have = report["growth"][-1]["chain_txs"]
            point = measure(cluster, node_id, have, args.restarts, verify_rate["cpu"])
            report["points"].append(point)
            sys.stderr.write(f"scaling: {json.dumps(point)}\n")
            if args.out:  # keep what was measured if a later, longer step fails
                harness.write_json(args.out, report)
        report["rss_mb_max"] = {k: round(v / 2**20, 1) for k, v in cluster.rss_max.items()}
    report["bench_wall_s"] = round(time.perf_counter() - started, 1)
    if args.out:
        harness.write_json(args.out, report)
    return harness.report(report, args, "write_scaling", _print)


def _print(r: dict[str, Any]) -> None:
    print(f"raw Ed25519 verify: {r['ed25519_verify_per_s']['cpu']:,}/s per core (CPU time)")
    print(f"{'chain txs':>10} {'startup s':>9} {'RSS MB (max node)':>17} {'verify s':>9} "
          f"{'verify tx/s':>11} {'ratio':>6} {'catch-up s':>10} {'catch-up tx/s':>13}")  # fmt: skip
    for p in r["points"]:
        v = p["verify"]
        print(f"{p['chain_txs']:>10,} {p['startup_s']:>9.2f} {max(p['rss_mb'].values()):>17.1f} "
              f"{v['wall_s']:>9.1f} {v['tx_per_cpu_s']:>11,} {v['ratio_cpu']:>6.3f} "
              f"{p['catch_up_s']:>10.1f} {p['catch_up_tx_per_s']:>13,}")  # fmt: skip
    print(f"RSS max through the run, MB: {r['rss_mb_max']}")


if __name__ == "__main__":
    sys.exit(main())

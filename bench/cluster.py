"""Benchmark: a real cluster's committed tx/s and commit latency against the signature limit.

Starts a fresh cluster (one process per node, loopback), then runs the load process
(bench/load.py: pre-signed ~250-byte records from several genesis clients, submitted through
`POST /v1/transactions?wait=true`, bounded concurrency, a deadline) and reports committed
tx/s, commit latency (submit to the node's commit answer) p50/p95/p99, CPU seconds per node,
bytes on disk per tx. In the same run it measures the raw Ed25519 verify rate of this
machine and compares: every node must verify every tx, so `nodes` nodes sharing `cores`
cores cannot commit more than cores x verify rate / nodes signed tx/s (the limit).

    .venv/bin/python bench/cluster.py [throughput] [--nodes 4] [--txs N] [--json]
    .venv/bin/python bench/cluster.py latency [--rate 200] [--seconds 30]
    .venv/bin/python bench/cluster.py sweep [--rates 500,1000,...] [--plots DIR]
    .venv/bin/python bench/cluster.py nodes [--nodes-list 4,7]
    .venv/bin/python bench/cluster.py tls [--txs N]   # the same batched run, insecure then TLS
    .venv/bin/python bench/cluster.py fiscal [--txs N]   # plain records, then typed ones
    .venv/bin/python bench/cluster.py all --plots docs/img     # every run above, with plots

`throughput` runs batched submission (the headline figure: `tx_per_s`, `ratio`) and then
single-tx submission on the same cluster; then, if etcd is installed (`--no-etcd` skips it),
the same two runs on a 4-member etcd cluster (bench/etcd.py) from the same load process:
`etcd` and `over_etcd` (CityLedger's tx/s over etcd's puts/s). `--json` prints one JSON object.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import etcd
import fiscal as fiscal_records
import harness

BATCH_TXS = 200  # txs per request in batched mode (--batch)
BATCH_CONCURRENCY = 8  # requests in flight in batched mode (--concurrency)
SINGLE_CONCURRENCY = 64
RATIO_TARGET = 0.60


def _summary(
    result: dict[str, Any], cpu: dict[str, float], limit: float, nodes: int
) -> dict[str, Any]:
    committed = max(result["committed"], 1)
    node_cpu_per_tx = sum(cpu.values()) / committed
    cores = harness.machine()["cpus"]
    return {
        "nodes": nodes,
        "txs": result["committed"],
        "submitted": result["submitted"],
        "tx_per_s": result["tx_per_s"],
        "limit_tx_per_s": round(limit),
        "ratio": round(result["tx_per_s"] / limit, 3),
        "latency_ms": result["latency_ms"],
        "cpu_s_per_node": cpu,
        "cpu_us_per_tx_per_node": round(node_cpu_per_tx / len(cpu) * 1e6, 1),
        "main_thread_us_per_tx_per_node": round(
            sum(result["main_thread_cpu_s"].values()) / len(cpu) / committed * 1e6, 1
        ),
        # By kind of thread (event-loop; verify: the signature pool and store-writer: the
        # synced writes, of a node with two cores or more; other: LevelDB's compaction).
        "thread_us_per_tx_per_node": {
            name: round(seconds / len(cpu) / committed * 1e6, 1)
            for name, seconds in result["thread_cpu_s"].items()
        },
        # What the nodes would commit with every core to themselves and CPU the only limit,
        # against the limit: the share of the nodes' CPU time that is required signature work.
        "cpu_bound_tx_per_s": round(cores / node_cpu_per_tx),
        "cpu_ratio": round(cores / node_cpu_per_tx / limit, 3),
        # How much of the machine the nodes got (other processes share it).
        "cluster_cpu_share": round(sum(cpu.values()) / (result["duration_s"] * cores), 3),
        # Seconds the nodes' threads were ready to run but waited for a core.
        "run_delay_s_per_node": result["run_delay_s"],
        "duration_s": result["duration_s"],
        "blocks": result["blocks"],
        "txs_per_block": round(result["committed"] / max(result["blocks"], 1), 1),
        "load_cpu_s": result["load_cpu_s"],
        "rejected": result["rejected"],
        "errors": result["errors"],
        "tx_bytes_mean": result["tx_bytes_mean"],
    }


def _limit(verify: dict[str, float], nodes: int) -> float:
    return harness.machine()["cpus"] * verify["cpu"] / nodes


def throughput(
    nodes: int,
    txs: int,
    single_txs: int,
    verify: dict[str, float],
    profile: Path | None = None,
    batch: tuple[int, int] = (BATCH_TXS, BATCH_CONCURRENCY),
    reference: bool = False,
) -> dict[str, Any]:
    """Batched, then single-tx submission, on one fresh cluster; with `reference`, the same
    two runs on a fresh etcd cluster right after (`etcd`, and CityLedger over etcd)."""
    limit = _limit(verify, nodes)
    out: dict[str, Any] = {}
    with harness.started_cluster(nodes) as cluster:
        spec = harness.LoadSpec(txs, "batched", batch[0], batch[1], run_id="batched")
        result, cpu = harness.run_load(cluster, spec, profile)
        out = _summary(result, cpu, limit, nodes)
        out["mode"] = "batched"
        out["batch_txs"], out["concurrency"] = batch
        out["latency_cdf_ms"] = result["latency_cdf_ms"]
        out["timeline"] = result["timeline"]
        if single_txs:
            spec = harness.LoadSpec(
                single_txs, "single", 1, SINGLE_CONCURRENCY, run_id="single", nonce_base=txs
            )
            result, cpu = harness.run_load(cluster, spec, profile and profile / "single")
            single = _summary(result, cpu, limit, nodes)
            single["concurrency"] = SINGLE_CONCURRENCY
            single["latency_cdf_ms"] = result["latency_cdf_ms"]
            out["single"] = single
        cluster.sample_rss()
        out["rss_mb_max"] = {k: round(v / 2**20, 1) for k, v in cluster.rss_max.items()}
        heights = {n.id: cluster.height(n.id) for n in cluster.net.nodes}
        cluster.stop()
        chain_txs = txs + single_txs
        disk = {n.id: harness.dir_bytes(cluster.data_dir(n.id)) for n in cluster.net.nodes}
        out["disk_bytes_per_tx"] = round(sum(disk.values()) / len(disk) / max(chain_txs, 1), 1)
        out["heights"] = heights
    if reference:
        out["etcd"] = _reference(txs, single_txs, batch)
        out["over_etcd"] = {
            "batched": round(out["tx_per_s"] / out["etcd"]["tx_per_s"], 3),
            "single": round(out["single"]["tx_per_s"] / out["etcd"]["single"]["tx_per_s"], 3)
            if single_txs else None,
        }  # fmt: skip
    return out


def _reference(txs: int, single_txs: int, batch: tuple[int, int]) -> dict[str, Any]:
    """etcd (bench/etcd.py) under the same load: batched as one Txn of puts per request, then
    one put per request, each on a fresh cluster."""
    batched = etcd.run(txs, "batched", batch[0], batch[1])
    out = {"tx_per_s": batched["tx_per_s"], "batched": batched}
    if single_txs:
        out["single"] = etcd.run(single_txs, "single", 1, SINGLE_CONCURRENCY)
    return out


FISCAL_RATIO_TARGET = 0.85  # the fiscal workload's tx/s against plain records', same run


def fiscal(
    nodes: int, txs: int, verify: dict[str, float], batch: tuple[int, int],
    profile: Path | None = None,
) -> dict[str, Any]:  # fmt: skip
    """On one fresh cluster: the batched run of plain records, then the set-up of a budget
    (committed first), then the same number of typed records with rules (bench/fiscal.py:
    payments, reallocations, one payment in 20 refused in block order), batched alike. With
    `profile`, py-spy samples every node in each measured run (profile/plain, profile/fiscal)."""
    limit = _limit(verify, nodes)
    with harness.started_cluster(nodes) as cluster:
        spec = harness.LoadSpec(txs, "batched", batch[0], batch[1], run_id="plain")
        result, cpu = harness.run_load(cluster, spec, profile and profile / "plain")
        plain = _summary(result, cpu, limit, nodes)
        count = fiscal_records.setup_count()
        spec = harness.LoadSpec(count, "batched", count, 1, run_id="setup", nonce_base=txs,
                                workload="fiscal-setup")  # fmt: skip
        harness.run_load(cluster, spec)
        spec = harness.LoadSpec(txs, "batched", batch[0], batch[1], run_id="fiscal",
                                nonce_base=txs + count, workload="fiscal")  # fmt: skip
        result, cpu = harness.run_load(cluster, spec, profile and profile / "fiscal")
        typed = _summary(result, cpu, limit, nodes)
    ratio = typed["tx_per_s"] / max(plain["tx_per_s"], 1e-9)
    return {
        "plain": plain, "fiscal": typed, "fiscal_over_plain": round(ratio, 3),
        "target": FISCAL_RATIO_TARGET,
        "refused_every": fiscal_records.REFUSED_EVERY,
    }  # fmt: skip


def tls_cost(
    nodes: int, txs: int, verify: dict[str, float], batch: tuple[int, int]
) -> dict[str, Any]:
    """The same batched run on two fresh clusters, one with `insecure = true` (plain HTTP),
    one with TLS (the default): what TLS costs in committed tx/s and latency."""
    limit = _limit(verify, nodes)
    out: dict[str, Any] = {}
    for transport in ("insecure", "tls"):
        with harness.started_cluster(nodes, insecure=transport == "insecure") as cluster:
            spec = harness.LoadSpec(txs, "batched", batch[0], batch[1], run_id=transport)
            result, cpu = harness.run_load(cluster, spec, None)
            out[transport] = _summary(result, cpu, limit, nodes)
    plain, secure = out["insecure"]["tx_per_s"], out["tls"]["tx_per_s"]
    out["tls_over_insecure"] = round(secure / plain, 3) if plain else None
    return out


def latency(nodes: int, rate: float, seconds: float) -> dict[str, Any]:
    """Single-tx submissions at a fixed offered rate (open loop)."""
    with harness.started_cluster(nodes) as cluster:
        txs = int(rate * seconds)
        spec = harness.LoadSpec(
            txs, "single", 1, concurrency=1000, rate=rate, deadline_s=seconds + 30,
            run_id="latency",
        )  # fmt: skip
        result, cpu = harness.run_load(cluster, spec)
    return {
        "nodes": nodes,
        "offered_tx_per_s": rate,
        "txs": result["committed"],
        "tx_per_s": result["tx_per_s"],
        "latency_ms": result["latency_ms"],
        "latency_cdf_ms": result["latency_cdf_ms"],
        "cpu_s_per_node": cpu,
        "late_requests": result["late_requests"],
        "rejected": result["rejected"],
    }


def sweep(
    nodes: int, rates: list[float], seconds: float, verify: dict[str, float]
) -> dict[str, Any]:
    """Batched submissions at increasing offered rates, on one cluster (throughput vs load)."""
    points = []
    limit = _limit(verify, nodes)
    nonce = 0
    with harness.started_cluster(nodes) as cluster:
        for rate in rates:
            txs = int(rate * seconds)
            spec = harness.LoadSpec(
                txs, "batched", BATCH_TXS, concurrency=64, rate=rate, deadline_s=seconds + 30,
                run_id=f"sweep{int(rate)}", nonce_base=nonce,
            )  # fmt: skip
            nonce += txs
            result, cpu = harness.run_load(cluster, spec)
            points.append({
                "offered_tx_per_s": rate, "tx_per_s": result["tx_per_s"],
                "committed": result["committed"], "submitted": result["submitted"],
                "latency_ms": result["latency_ms"], "cpu_s_per_node": cpu,
            })  # fmt: skip
            sys.stderr.write(f"sweep: offered {rate:g} -> {result['tx_per_s']} tx/s\n")
    return {"nodes": nodes, "limit_tx_per_s": round(limit), "points": points}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "what", nargs="?", default="throughput",
        choices=["throughput", "latency", "sweep", "nodes", "tls", "fiscal", "all"],
    )  # fmt: skip
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--txs", type=int, default=60_000, help="txs of the batched run")
    parser.add_argument("--single-txs", type=int, default=10_000, help="txs of the single run")
    parser.add_argument("--rate", type=float, default=200.0, help="latency run: offered tx/s")
    parser.add_argument("--seconds", type=float, default=30.0, help="latency/sweep run length")
    parser.add_argument("--rates", default="500,1000,1500,2000,2500,3000,3500,4000,5000")
    parser.add_argument("--nodes-list", default="4,7")
    parser.add_argument("--plots", type=Path, help="write PNG plots to this directory")
    parser.add_argument("--out", type=Path, help="also write the JSON result to this file")
    parser.add_argument("--from-json", type=Path, help="only plot/print this earlier result")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--batch", type=int, default=BATCH_TXS, help="txs per batched request")
    parser.add_argument(
        "--concurrency", type=int, default=BATCH_CONCURRENCY, help="batched requests in flight"
    )
    parser.add_argument(
        "--etcd", action=argparse.BooleanOptionalAction, default=etcd.binary() is not None,
        help="throughput: the same runs on a 4-member etcd cluster (default: if installed)",
    )  # fmt: skip
    parser.add_argument("--profile", type=Path, help="py-spy every node into this directory")
    parser.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE",
        help="a genesis consensus parameter of the bench cluster (e.g. block_interval_ms=50)",
    )  # fmt: skip
    parser.add_argument(
        "--nice", type=int, default=0,
        help="niceness of the benchmark's processes (negative: ahead of other work on a "
        "shared machine; needs the privilege)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.from_json:
        return harness.report(json.loads(args.from_json.read_text()), args, "write_all", _print)
    harness.set_nice(args.nice)
    for item in args.param:
        name, _, value = item.partition("=")
        harness.PARAMS[name] = int(value)
    verify = harness.verify_rate()
    report: dict[str, Any] = {
        "machine": harness.machine(), "ed25519_verify_per_s": verify, "nice": args.nice,
        "genesis_params": harness.PARAMS,
    }  # fmt: skip
    started = time.perf_counter()
    if args.what in ("throughput", "all"):
        report |= throughput(
            args.nodes, args.txs, args.single_txs, verify, args.profile,
            (args.batch, args.concurrency), reference=args.etcd,
        )  # fmt: skip
    if args.what in ("latency", "all"):
        report["latency_run"] = latency(args.nodes, args.rate, args.seconds)
    if args.what in ("sweep", "all"):
        rates = [float(r) for r in args.rates.split(",")]
        report["sweep"] = sweep(args.nodes, rates, min(args.seconds, 15.0), verify)
    if args.what in ("tls", "all"):
        report["tls_cost"] = tls_cost(args.nodes, args.txs, verify, (args.batch, args.concurrency))
    if args.what in ("fiscal", "all"):
        report["fiscal_workload"] = fiscal(
            args.nodes, args.txs, verify, (args.batch, args.concurrency), args.profile
        )
    if args.what in ("nodes", "all"):
        report["nodes_scaling"] = [
            throughput(int(n), args.txs, 0, verify) | {"nodes": int(n)}
            for n in args.nodes_list.split(",")
        ]
    report["bench_wall_s"] = round(time.perf_counter() - started, 1)
    if args.out:
        harness.write_json(args.out, report)
    return harness.report(report, args, "write_all", _print)


def _print(r: dict[str, Any]) -> None:
    m = r["machine"]
    print(f"machine: {m['cpus']} cpus ({m['cpu_model']}), {m['memory_gib']} GiB, "
          f"load avg {m['load_average_1m']}")  # fmt: skip
    print(f"raw Ed25519 verify: {r['ed25519_verify_per_s']['cpu']:,}/s per core (CPU time), "
          f"{r['ed25519_verify_per_s']['wall']:,}/s (wall)")  # fmt: skip
    if "tx_per_s" in r:
        print(f"\n{r['nodes']} nodes, batched ({r['batch_txs']} txs/request, "
              f"{r['concurrency']} in flight): {r['txs']:,} txs committed")  # fmt: skip
        _print_run(r)
        print(f"  disk: {r['disk_bytes_per_tx']} bytes/tx per node; RSS max MB: {r['rss_mb_max']}")
    if "tls_cost" in r:
        t = r["tls_cost"]
        print(f"\nTLS cost, the same batched run on fresh clusters: insecure (plain HTTP) "
              f"{t['insecure']['tx_per_s']:,} tx/s, TLS {t['tls']['tx_per_s']:,} tx/s "
              f"(TLS/insecure = {t['tls_over_insecure']})")  # fmt: skip
        for name in ("insecure", "tls"):
            print(f"  {name}:")
            _print_run(t[name])
    if "fiscal_workload" in r:
        f = r["fiscal_workload"]
        print(f"\nfiscal workload (typed records with rules, 1 in {f['refused_every']} payments "
              f"refused in block order) against plain records, same cluster: "
              f"{f['fiscal']['tx_per_s']:,} vs {f['plain']['tx_per_s']:,} tx/s "
              f"(fiscal/plain = {f['fiscal_over_plain']}, target {f['target']})")  # fmt: skip
        for name in ("plain", "fiscal"):
            print(f"  {name}:")
            _print_run(f[name])
    if "single" in r:
        s = r["single"]
        print(f"\nsingle-tx submissions ({s['concurrency']} in flight): {s['txs']:,} txs")
        _print_run(s)
    if "etcd" in r:
        _print_reference(r)
    if "latency_run" in r:
        lr = r["latency_run"]
        lat = lr["latency_ms"]
        print(f"\nlatency at {lr['offered_tx_per_s']:g} tx/s offered (single-tx): "
              f"{lr['tx_per_s']} tx/s committed, p50 {lat['p50']} ms, p95 {lat['p95']} ms, "
              f"p99 {lat['p99']} ms")  # fmt: skip
    if "sweep" in r:
        print("\noffered tx/s -> committed tx/s (p50 / p99 ms)")
        for p in r["sweep"]["points"]:
            print(f"  {p['offered_tx_per_s']:>7g} -> {p['tx_per_s']:>8} "
                  f"({p['latency_ms']['p50']} / {p['latency_ms']['p99']})")  # fmt: skip
    for run in r.get("nodes_scaling", ()):
        print(f"\n{run['nodes']} nodes, batched: {run['tx_per_s']} tx/s, limit "
              f"{run['limit_tx_per_s']}, ratio {run['ratio']}")  # fmt: skip


def _print_reference(r: dict[str, Any]) -> None:
    e, over = r["etcd"], r["over_etcd"]
    print(f"\netcd, {e['batched']['members']} members, the same load process and concurrency, "
          f"puts of {e['batched']['put_bytes']:g} bytes (CityLedger / etcd):")  # fmt: skip
    for mode in ("batched", "single"):
        if mode not in e:
            continue
        run, lat = e[mode], e[mode]["latency_ms"]
        what = f"Txn of {run['batch_txs']} puts" if mode == "batched" else "one put"
        print(f"  {mode} ({what} per request, {run['concurrency']} in flight): "
              f"{run['tx_per_s']:,} puts/s, p50 {lat['p50']} ms, p99 {lat['p99']} ms, "
              f"{run['cpu_us_per_put_per_member']} µs CPU/put/member; "
              f"CityLedger / etcd = {over[mode]}")  # fmt: skip
        if run["errors"]:
            print(f"    errors: {run['errors']}")


def _print_run(s: dict[str, Any]) -> None:
    lat = s["latency_ms"]
    print(f"  committed: {s['tx_per_s']:,} tx/s; limit {s['limit_tx_per_s']:,} tx/s; "
          f"ratio {s['ratio']:.3f}")  # fmt: skip
    print(f"  commit latency: p50 {lat['p50']} ms, p95 {lat['p95']} ms, p99 {lat['p99']} ms")
    print(f"  blocks: {s['blocks']} ({s['txs_per_block']} txs per block)")
    print(f"  CPU s per node: {s['cpu_s_per_node']} ({s['cpu_us_per_tx_per_node']} µs/tx/node); "
          f"load process {s['load_cpu_s']} s")  # fmt: skip
    print(f"  of which the event loop thread: {s['main_thread_us_per_tx_per_node']} µs/tx/node")
    threads = ", ".join(f"{k} {v}" for k, v in s["thread_us_per_tx_per_node"].items())
    print(f"  by thread, µs/tx/node: {threads}")
    print(f"  waiting for a core (run delay), s per node: {s['run_delay_s_per_node']}")
    print(f"  nodes used {s['cluster_cpu_share']:.0%} of the machine; CPU-bound estimate "
          f"{s['cpu_bound_tx_per_s']:,} tx/s, ratio {s['cpu_ratio']:.3f}")  # fmt: skip
    if s["rejected"] or s["errors"]:
        print(f"  rejected: {s['rejected']}; errors: {s['errors']}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())

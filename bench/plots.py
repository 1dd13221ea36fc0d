"""PNG plots of the benchmark reports (matplotlib: a dependency of the benchmarks only).

`write_all(report, out_dir)` draws what a bench/cluster.py report holds; `write_scaling(report,
out_dir)` what a bench/scaling.py report holds. Each returns the files it wrote.
"""

from pathlib import Path
from typing import Any

import matplotlib as mpl

mpl.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

DPI = 110


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _caption(report: dict[str, Any]) -> str:
    m = report["machine"]
    verify = report["ed25519_verify_per_s"]["cpu"]
    return (f"{m['cpus']} CPUs ({m['cpu_model']}), Python {m['python']}; "
            f"Ed25519 verify {verify:,}/s per core")  # fmt: skip


def write_all(report: dict[str, Any], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    if "sweep" in report:
        written.append(_sweep(report, out_dir / "throughput_vs_offered.png"))
    cdfs = {}
    if "latency_cdf_ms" in report:
        cdfs[f"batched, {report['concurrency']} x {report['batch_txs']} txs in flight"] = report
    if "single" in report and "latency_cdf_ms" in report["single"]:
        cdfs[f"single-tx, {report['single']['concurrency']} in flight"] = report["single"]
    if "latency_run" in report:
        run = report["latency_run"]
        cdfs[f"single-tx at {run['offered_tx_per_s']:g} tx/s offered"] = run
    if cdfs:
        written.append(_cdf(report, cdfs, out_dir / "latency_cdf.png"))
    if "timeline" in report:
        written.append(_timeline(report, out_dir / "committed_over_time.png"))
    if "nodes_scaling" in report:
        written.append(_nodes(report, out_dir / "nodes_4_vs_7.png"))
    return written


def _sweep(report: dict[str, Any], path: Path) -> Path:
    sweep = report["sweep"]
    points = sweep["points"]
    offered = [p["offered_tx_per_s"] for p in points]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 7), sharex=True)
    top.plot(offered, [p["tx_per_s"] for p in points], "o-", label="committed")
    top.plot(offered, offered, ":", color="grey", label="offered")
    limit = sweep["limit_tx_per_s"]
    top.axhline(limit, color="red", linestyle="--", label=f"signature limit {limit:,} tx/s")
    top.axhline(0.6 * limit, color="orange", linestyle=":", label="60% of the limit")
    top.set_ylabel("committed tx/s")
    top.set_title(f"{sweep['nodes']} nodes, batched submissions: throughput vs offered load")
    top.legend(loc="upper left", fontsize=8)
    top.grid(alpha=0.3)
    for q, style in (("p50", "o-"), ("p99", "s--")):
        bottom.plot(offered, [p["latency_ms"][q] for p in points], style, label=q)
    bottom.set_yscale("log")
    bottom.set_xlabel("offered tx/s")
    bottom.set_ylabel("commit latency, ms")
    bottom.legend(fontsize=8)
    bottom.grid(alpha=0.3, which="both")
    fig.text(0.01, 0.005, _caption(report), fontsize=7, color="grey")
    return _save(fig, path)


def _cdf(report: dict[str, Any], runs: dict[str, dict[str, Any]], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, run in runs.items():
        values = run["latency_cdf_ms"]
        if not values:
            continue
        fractions = [i / (len(values) - 1) for i in range(len(values))]
        ax.plot(values, fractions, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("commit latency (submit to the node's commit answer), ms")
    ax.set_ylabel("fraction of txs")
    ax.set_title(f"Commit latency CDF, {report.get('nodes', 4)} nodes")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    fig.text(0.01, 0.005, _caption(report), fontsize=7, color="grey")
    return _save(fig, path)


def _timeline(report: dict[str, Any], path: Path) -> Path:
    points = report["timeline"]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([t for t, _ in points], [n for _, n in points])
    ax.set_xlabel("seconds since the first submission")
    ax.set_ylabel("txs committed")
    ax.set_title(f"Batched run: {report['tx_per_s']:,} tx/s committed "
                 f"({report['ratio']:.0%} of the signature limit)")  # fmt: skip
    ax.grid(alpha=0.3)
    fig.text(0.01, 0.005, _caption(report), fontsize=7, color="grey")
    return _save(fig, path)


def _nodes(report: dict[str, Any], path: Path) -> Path:
    runs = report["nodes_scaling"]
    labels = [f"{r['nodes']} nodes" for r in runs]
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = range(len(runs))
    ax.bar([x - 0.2 for x in xs], [r["tx_per_s"] for r in runs], 0.4, label="committed tx/s")
    ax.bar([x + 0.2 for x in xs], [r["limit_tx_per_s"] for r in runs], 0.4,
           label="signature limit", color="lightgrey")  # fmt: skip
    ax.set_xticks(list(xs), labels)
    ax.set_ylabel("tx/s")
    ax.set_title("Batched throughput by cluster size")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    fig.text(0.01, 0.005, _caption(report), fontsize=7, color="grey")
    return _save(fig, path)


def write_scaling(report: dict[str, Any], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    points = report["points"]
    sizes = [p["chain_txs"] for p in points]
    fig, axes = plt.subplots(3, 2, figsize=(9, 10))
    (startup, rss), (verify, catch_up), (rate, cost) = axes
    startup.plot(sizes, [p["startup_s"] for p in points], "o-")
    startup.axhline(2.0, color="orange", linestyle=":", label="target 2 s")
    startup.set_title("node startup (spawn to healthy), s")
    growth = report["growth"]
    rss.plot([g["chain_txs"] for g in growth],
             [max(g["rss_mb"].values()) for g in growth], ".-", label="largest node")  # fmt: skip
    rss.axhline(300, color="orange", linestyle=":", label="target 300 MB")
    rss.set_title("RSS per node while the chain grows, MB")
    limit = report["ed25519_verify_per_s"]["cpu"]
    verify.plot(sizes, [p["verify"]["tx_per_cpu_s"] for p in points], "o-", label="verify")
    verify.axhline(limit, color="red", linestyle="--", label="raw Ed25519 verify, 1 core")
    verify.axhline(0.8 * limit, color="orange", linestyle=":", label="80% of it")
    verify.set_title("full `cityledger verify`, txs per CPU second")
    catch_up.plot(sizes, [p["catch_up_tx_per_s"] for p in points], "o-")
    catch_up.axhline(5000, color="orange", linestyle=":", label="target 5,000 tx/s")
    catch_up.set_title("catch-up of a wiped node, tx/s")
    _growth_costs(growth, rate, cost)
    for ax in (startup, rss, verify, catch_up, rate, cost):
        ax.set_xscale("log")
        ax.set_xlabel("txs in the chain")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.text(0.01, 0.005, _caption(report), fontsize=7, color="grey")
    return [_save(fig, out_dir / "chain_scaling.png")]


def _growth_costs(growth: list[dict[str, Any]], rate: Any, cost: Any) -> None:
    """Committed tx/s of each growth chunk, and the nodes' CPU per tx in it."""
    sizes = [g["chain_txs"] for g in growth]
    rate.plot(sizes, [g["tx_per_s"] for g in growth], ".-", label="batched, 16 x 250 txs in flight")
    rate.set_title("committed tx/s while the chain grows")
    before = 0
    per_tx = []
    for g in growth:
        txs = g["chain_txs"] - before
        before = g["chain_txs"]
        per_tx.append(sum(g["cpu_s"].values()) / len(g["cpu_s"]) / max(txs, 1) * 1e6)
    cost.plot(sizes, per_tx, ".-", label="mean of the nodes")
    cost.set_title("node CPU per committed tx, µs")

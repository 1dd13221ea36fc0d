"""Benchmark: `verify_chain` throughput against the raw Ed25519 verify rate, single core.

Builds a chain of at least N signed txs (1000 per block, every signature and certificate real)
into a temporary block store, then measures in the same run, for several rounds:

- raw: how many Ed25519 signatures per second `cryptography` verifies over exactly those txs'
  signed bytes (prepared beforehand), with nothing else in the loop;
- chain: how many txs per second `verify_chain` re-verifies from the store: reading and
  decoding every block, every rule, every tx signature, every certificate and index entry.

Each rate is taken on CPU time of this (single-threaded) process and on wall-clock time; the
best round of each is kept, as other processes on the machine can only slow a round down.
The ratio chain / raw is the share of the verifier's time that is signature checking.

    .venv/bin/python bench/verify.py [--txs N] [--rounds R] [--json]
"""

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TXS_PER_BLOCK = 1000
RATIO_TARGET = 0.80


def _build(store_path: Path, txs_wanted: int) -> tuple[Any, list[Any]]:
    """A certified chain of ceil(txs_wanted / 1000) full blocks, appended to a new store."""
    from ledger.store import BlockStore
    from tests import factory

    net = factory.network()
    blocks_count = -(-txs_wanted // TXS_PER_BLOCK)
    with BlockStore.open(store_path, net.genesis) as store:
        for block, cert in factory.chain(net, blocks_count, TXS_PER_BLOCK):
            store.append(block, cert)
            sys.stderr.write(f"\rgenerated block {block.height}/{blocks_count}")
        sys.stderr.write("\n")
        txs = [t for b, _ in store.iter_certified(1, store.height) for t in b.txs]
    return net.genesis, txs


def _timed(run: Callable[[], int]) -> tuple[float, float]:
    """(units per CPU second, units per wall second) of one call of `run`."""
    wall, cpu = time.perf_counter(), time.process_time()
    units = run()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return units / cpu, units / wall


def _raw_verifier(genesis: Any, txs: list[Any]) -> Callable[[], int]:
    from ledger import crypto

    work = [
        (genesis.clients[t.client_id].key, crypto.Domain.TX.value + t.unsigned_payload(), t)
        for t in txs
    ]

    def run() -> int:
        for key, message, t in work:
            key.verify(t.signature, message)
        return len(work)

    return run


def _chain_verifier(store: Any, genesis: Any) -> Callable[[], int]:
    from ledger.verify import verify_chain

    def run() -> int:
        report = verify_chain(store, genesis)
        if not report.ok:
            raise SystemExit(f"verify_chain failed on a good chain: {report}")
        return report.txs_checked

    return run


def measure(txs_wanted: int, rounds: int) -> dict[str, Any]:
    from ledger.store import BlockStore

    with tempfile.TemporaryDirectory(prefix="cityledger-bench-") as tmp:
        store_path = Path(tmp) / "data"
        genesis, txs = _build(store_path, txs_wanted)
        raw_run = _raw_verifier(genesis, txs)
        raw: list[tuple[float, float]] = []
        chain: list[tuple[float, float]] = []
        with BlockStore.open_for_audit(store_path, genesis) as store:
            chain_run = _chain_verifier(store, genesis)
            for r in range(rounds):  # interleaved, so both see the same machine
                raw.append(_timed(raw_run))
                chain.append(_timed(chain_run))
                sys.stderr.write(f"round {r + 1}/{rounds}: raw {raw[-1][0]:,.0f}/s cpu, ")
                sys.stderr.write(f"verify_chain {chain[-1][0]:,.0f} txs/s cpu\n")
    raw_cpu, raw_wall = max(x[0] for x in raw), max(x[1] for x in raw)
    chain_cpu, chain_wall = max(x[0] for x in chain), max(x[1] for x in chain)
    return {
        "txs": len(txs),
        "txs_per_block": TXS_PER_BLOCK,
        "rounds": rounds,
        "raw_ed25519_verify_per_cpu_s": round(raw_cpu),
        "verify_chain_txs_per_cpu_s": round(chain_cpu),
        "ratio_cpu": round(chain_cpu / raw_cpu, 3),
        "raw_ed25519_verify_per_wall_s": round(raw_wall),
        "verify_chain_txs_per_wall_s": round(chain_wall),
        "ratio_wall": round(chain_wall / raw_wall, 3),
        "target_ratio": RATIO_TARGET,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--txs", type=int, default=100_000, help="txs in the chain")
    parser.add_argument("--rounds", type=int, default=3, help="measurement rounds, best kept")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.txs < 1 or args.rounds < 1:
        parser.error("--txs and --rounds must be positive")
    result = measure(args.txs, args.rounds)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"txs verified per round:  {result['txs']} ({TXS_PER_BLOCK} per block)")
    for clock in ("cpu", "wall"):
        raw = result[f"raw_ed25519_verify_per_{clock}_s"]
        chain = result[f"verify_chain_txs_per_{clock}_s"]
        print(f"[{clock:>4} time] raw Ed25519 verify: {raw:>8,} /s")
        print(f"[{clock:>4} time] verify_chain:       {chain:>8,} txs/s")
        print(f"[{clock:>4} time] ratio:              {result[f'ratio_{clock}']:.3f}")
    print(f"target ratio: >= {RATIO_TARGET}")
    return 0


if __name__ == "__main__":
    # `python bench/verify.py` puts bench/ first on sys.path; the packages live one level up.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())

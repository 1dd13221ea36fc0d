"""The reference cluster of `bench/cluster.py`: etcd, driven by the same load process.

A 4-member etcd cluster (Debian's `etcd-server` package, which `make bench` installs; Raft,
so crash faults only, and no signature on anything) on loopback, each member its own process
and data directory, fsync on as shipped. The load process (bench/load.py with target `etcd`)
submits puts of the same size as CityLedger's signed txs (250 bytes of key and value) through
etcd's JSON gateway at the same concurrency: one put per request (`/v3/kv/put`), or a batch as
one Txn of puts (`/v3/kv/txn`). etcd answers once its Raft majority has committed and the
member has applied the request, as `wait=true` answers once the node has committed.

Everything here starts processes and stops exactly those, by PID, within bounded times.
"""

import base64
import http.client
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import harness

BINARY = "etcd"
MEMBERS = 4
MAX_TXN_OPS = 1024  # above any batch the bench sends (etcd's default is 128 puts per Txn)
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
HTTP_TIMEOUT_S = 2.0


def binary() -> str | None:
    return shutil.which(BINARY)


class EtcdCluster(harness.Processes):
    """A fresh etcd cluster in a temporary directory; a context manager that always stops it."""

    def __init__(self, members: int = MEMBERS) -> None:
        found = binary()
        if found is None:
            raise RuntimeError("etcd is not installed (make bench installs Debian's etcd-server)")
        self._binary = found
        self._tmp = tempfile.TemporaryDirectory(prefix="cityledger-bench-etcd-")
        self.root = Path(self._tmp.name)
        ports = harness.free_ports(2 * members)
        self._client_ports, peer_ports = ports[:members], ports[members:]
        self._names = [f"m{i}" for i in range(members)]
        self._peers = [f"http://127.0.0.1:{p}" for p in peer_ports]
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.rss_max: dict[str, int] = {}

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{p}" for p in self._client_ports]

    def __enter__(self) -> "EtcdCluster":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
        self._tmp.cleanup()

    def _command(self, i: int) -> list[str]:
        initial = ",".join(f"{n}={u}" for n, u in zip(self._names, self._peers, strict=True))
        return [
            self._binary, "--name", self._names[i], "--data-dir", str(self.root / self._names[i]),
            "--listen-client-urls", self.urls[i], "--advertise-client-urls", self.urls[i],
            "--listen-peer-urls", self._peers[i], "--initial-advertise-peer-urls", self._peers[i],
            "--initial-cluster", initial, "--initial-cluster-state", "new",
            "--initial-cluster-token", "cityledger-bench", "--max-txn-ops", str(MAX_TXN_OPS),
            "--logger", "zap", "--log-level", "warn",
        ]  # fmt: skip

    def start(self) -> float:
        """Start every member; return seconds until each says it is healthy."""
        started = time.perf_counter()
        for i, name in enumerate(self._names):
            log = (self.root / f"{name}.log").open("wb")
            self.procs[name] = subprocess.Popen(
                self._command(i), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
            log.close()
        deadline = started + READY_TIMEOUT_S
        for i, name in enumerate(self._names):
            while not self._healthy(i):
                if self.procs[name].poll() is not None:
                    raise RuntimeError(f"etcd member {name} exited: see its log")
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"etcd member {name} not healthy in {READY_TIMEOUT_S} s")
                time.sleep(harness.POLL_S)
        return time.perf_counter() - started

    def _call(self, i: int, method: str, path: str, doc: Any = None) -> Any:
        connection = http.client.HTTPConnection(
            "127.0.0.1", self._client_ports[i], timeout=HTTP_TIMEOUT_S
        )
        try:
            body = None if doc is None else json.dumps(doc)
            connection.request(method, path, body=body)
            return json.loads(connection.getresponse().read())
        finally:
            connection.close()

    def _healthy(self, i: int) -> bool:
        try:
            return bool(self._call(i, "GET", "/health").get("health") == "true")
        except (OSError, ValueError):
            return False

    def head(self) -> int:
        """The cluster's revision: one per put or Txn applied."""
        doc = {"key": base64.b64encode(b"\0").decode(), "count_only": True}
        return int(self._call(0, "POST", "/v3/kv/range", doc)["header"]["revision"])

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()


def run(txs: int, mode: str, batch: int, concurrency: int) -> dict[str, Any]:
    """One load run on a fresh etcd cluster: the load process's result, with the members' CPU."""
    with EtcdCluster() as cluster:
        cluster.start()
        spec = harness.LoadSpec(
            txs, mode, batch if mode == "batched" else 1, concurrency, run_id=mode, target="etcd"
        )
        result, cpu = harness.run_load(cluster, spec)
        cluster.sample_rss()
    committed = max(result["committed"], 1)
    return {
        "members": MEMBERS,
        "mode": mode,
        "batch_txs": spec.batch,
        "concurrency": concurrency,
        "puts": result["committed"],
        "submitted": result["submitted"],
        "tx_per_s": result["tx_per_s"],
        "latency_ms": result["latency_ms"],
        "cpu_us_per_put_per_member": round(sum(cpu.values()) / len(cpu) / committed * 1e6, 1),
        "put_bytes": result["tx_bytes_mean"],
        "errors": result["errors"],
        "rss_mb_max": {k: round(v / 2**20, 1) for k, v in cluster.rss_max.items()},
    }

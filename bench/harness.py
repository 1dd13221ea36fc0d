"""A benchmark cluster: real node processes on loopback, the load process, and /proc readings.

Everything here starts processes and stops exactly those, by PID (`cli.processes`), within
bounded times. Nothing here is imported by the product: it serves bench/cluster.py and
bench/scaling.py.
"""

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cli import network, processes  # noqa: E402
from cli.api import NodeClient, NodeUnreachable, Refused, Signer  # noqa: E402
from cli.ports import free_ports  # noqa: E402
from ledger import crypto  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
NICE = 0  # niceness of every process the bench starts (set by `set_nice`)
PARAMS: dict[str, int] = {}  # genesis consensus parameters of every bench cluster


def set_nice(value: int) -> None:
    """Run this process and every process it starts at niceness `value`: on a machine shared
    with other work, a negative value gives the benchmark the cores as a dedicated machine
    would (it needs the privilege to raise priority). Children inherit it. 0 leaves it."""
    global NICE  # noqa: PLW0603 - one setting for the whole benchmark run
    NICE = value
    if value:
        os.setpriority(os.PRIO_PROCESS, 0, value)
        _nice_autogroup(os.getpid())


def _nice_autogroup(pid: int) -> None:
    """With autogroup scheduling (Linux: each session shares the CPU equally, whatever the
    niceness of its processes) a process's niceness only counts inside its own session: give
    the session of `pid` (a node runs in a session of its own) the same niceness."""
    if not NICE:
        return
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/autogroup").write_text(str(NICE))


LOAD_READY_TIMEOUT_S = 900.0
STATUS_TIMEOUT_S = 5.0
POLL_S = 0.05


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def main_thread_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process's main thread (the node's event loop: everything that holds
    the GIL there; signature checks run on the verify pool, LevelDB compacts on its own)."""
    try:
        fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds of a live process's threads (the scheduler's nanosecond count, not the
    tick-sampled user and system times), summed by kind: the thread's OS name without
    its pool number (`verify_0` and `verify_1` are `verify`; a node names its pool threads).
    Threads that ended are not counted."""
    out: dict[str, float] = {}
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
        program = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return out
    for task in tasks:
        try:
            name = re.sub(r"_\d+$", "", (task / "comm").read_text().strip())
            on_cpu_ns = int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        if task.name == str(pid):
            name = "event-loop"  # the main thread (its OS name is the program's)
        elif name == program:
            name = "other"  # unnamed: LevelDB's compaction thread (it inherits the name)
        out[name] = out.get(name, 0.0) + on_cpu_ns / 1e9
    return out


def run_delay_seconds(pid: int) -> float:
    """Seconds the threads of a process spent runnable but waiting for a CPU (schedstat):
    high when the machine is short of cores, low when the process idles by itself."""
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            total += int((task / "schedstat").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return total / 1e9


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import cryptography
    import msgpack
    import plyvel

    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError):
        mem = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    return {
        "cpus": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "memory_gib": round(mem / 2**30, 1),
        "python": sys.version.split()[0],
        "cryptography": cryptography.__version__,
        "msgpack": ".".join(map(str, msgpack.version)),
        "plyvel": plyvel.__version__,
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def verify_rate(count: int = 3000, rounds: int = 3) -> dict[str, float]:
    """Raw Ed25519 verifies per second on one core (`cryptography`, ~250-byte messages), best
    of `rounds`, on CPU time and on wall-clock time."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    keys = [Ed25519PrivateKey.generate() for _ in range(4)]
    work = []
    for i in range(count):
        key = keys[i % len(keys)]
        message = os.urandom(250)
        work.append((key.public_key(), key.sign(message), message))
    cpu_best = wall_best = 0.0
    for _ in range(rounds):
        wall, cpu = time.perf_counter(), time.process_time()
        for public, signature, message in work:
            public.verify(signature, message)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        cpu_best, wall_best = max(cpu_best, count / cpu), max(wall_best, count / wall)
    return {"cpu": round(cpu_best), "wall": round(wall_best)}


@dataclass
class NodeStats:
    node_id: str
    cpu_s: float
    rss_mb_max: float
    disk_bytes: int
    height: int


class Processes:
    """/proc readings of a cluster's processes (`procs`, by member name): what `run_load`
    measures, for CityLedger's nodes and for the reference cluster alike."""

    root: Path  # where the load process reads the cluster's genesis and keys, if it has any
    procs: dict[str, subprocess.Popen[bytes]]
    rss_max: dict[str, int]

    @property
    def urls(self) -> list[str]:
        raise NotImplementedError

    def head(self) -> int:
        """How far the cluster's history is (blocks, or revisions): counted per load run."""
        raise NotImplementedError

    def sample_rss(self) -> None:
        for name, proc in self.procs.items():
            self.rss_max[name] = max(self.rss_max.get(name, 0), rss_bytes(proc.pid))

    def cpu(self) -> dict[str, float]:
        return {k: cpu_seconds(p.pid) for k, p in self.procs.items()}

    def run_delay(self) -> dict[str, float]:
        return {k: run_delay_seconds(p.pid) for k, p in self.procs.items()}

    def main_cpu(self) -> dict[str, float]:
        return {k: main_thread_cpu_seconds(p.pid) for k, p in self.procs.items()}

    def thread_cpu(self) -> dict[str, dict[str, float]]:
        return {k: thread_cpu_seconds(p.pid) for k, p in self.procs.items()}


class Cluster(Processes):
    """A fresh cluster in a temporary directory; a context manager that always stops it."""

    def __init__(
        self, nodes: int, params: dict[str, int] | None = None, keep: Path | None = None,
        insecure: bool = False,
    ) -> None:  # fmt: skip
        """`insecure`: plain HTTP instead of TLS (to measure what TLS costs)."""
        self._tmp = None if keep else tempfile.TemporaryDirectory(prefix="cityledger-bench-")
        self.root = keep or Path(self._tmp.name) / "net"  # type: ignore[union-attr]
        params = {**PARAMS, **(params or {})}
        where = network.addresses("127.0.0.1", free_ports(nodes), insecure=insecure)
        self.net = network.init(self.root, nodes=where, params=params, insecure=insecure)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.rss_max: dict[str, int] = {}

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.net.nodes]

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def start(self, node_ids: list[str] | None = None, timeout_s: float = 60.0) -> float:
        """Start the nodes (all by default); return seconds until all answered healthy."""
        entries = [n for n in self.net.nodes if node_ids is None or n.id in node_ids]
        started = time.perf_counter()
        for entry in entries:
            self.procs[entry.id] = self._spawn(entry)
        processes.wait_healthy(self.net, {e.id: self.procs[e.id] for e in entries}, timeout_s)
        return time.perf_counter() - started

    def _spawn(self, entry: network.NodeEntry) -> subprocess.Popen[bytes]:
        proc = processes.spawn(
            processes.node_command(entry.config.resolve()), self.net.log_file(entry.id),
            banner=f"bench: starting {entry.id}", cwd=ROOT,
        )  # fmt: skip
        _nice_autogroup(proc.pid)
        return proc

    def start_timed(self, node_id: str, timeout_s: float = 60.0) -> float:
        """Start one node and poll its status tightly: seconds from spawn to its first answer."""
        entry = self.net.node(node_id)
        started = time.perf_counter()
        self.procs[node_id] = proc = self._spawn(entry)
        deadline = started + timeout_s
        while time.perf_counter() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{node_id} exited: {processes.last_log_line(self.net, node_id)}"
                )
            if processes.probe(entry, self.net.genesis, timeout_s=1.0).healthy:
                return time.perf_counter() - started
            time.sleep(0.01)
        raise RuntimeError(f"{node_id} not healthy within {timeout_s} s")

    def stop(self, node_ids: list[str] | None = None) -> None:
        chosen = {k: p for k, p in self.procs.items() if node_ids is None or k in node_ids}
        processes.stop_children(self.net, chosen)  # SIGTERM by PID, SIGKILL after a bound
        for k in chosen:
            del self.procs[k]

    def pid(self, node_id: str) -> int:
        return self.procs[node_id].pid

    def data_dir(self, node_id: str) -> Path:
        return self.root / network.NODES_DIR / node_id / "data"

    def wipe(self, node_id: str) -> None:
        assert node_id not in self.procs, "stop a node before wiping it"
        shutil.rmtree(self.data_dir(node_id), ignore_errors=True)

    def status(self, node_id: str) -> dict[str, Any]:
        entry = self.net.node(node_id)  # asked as that validator (its own key signs)
        signer = Signer(node_id, crypto.load_private_key(entry.key), self.net.genesis.chain_id)
        with NodeClient(entry.url, STATUS_TIMEOUT_S, signer, genesis=self.net.genesis) as client:
            value: dict[str, Any] = client.get("/v1/status")
            return value

    def height(self, node_id: str) -> int:
        try:
            return int(self.status(node_id)["height"])
        except (NodeUnreachable, Refused, KeyError, TypeError, ValueError):
            return -1

    def head(self) -> int:
        """The first node's height (blocks committed during a load run)."""
        return self.height(self.net.nodes[0].id)

    def wait_height(self, node_id: str, height: int, timeout_s: float) -> float:
        """Seconds until `node_id` reports at least `height` (raise after `timeout_s`)."""
        started = time.perf_counter()
        while self.height(node_id) < height:
            if time.perf_counter() - started > timeout_s:
                raise RuntimeError(f"{node_id} did not reach height {height} in {timeout_s} s")
            self.sample_rss()
            time.sleep(POLL_S)
        return time.perf_counter() - started


@dataclass(frozen=True)
class LoadSpec:
    txs: int
    mode: str = "batched"
    batch: int = 200
    concurrency: int = 16
    rate: float = 0.0
    deadline_s: float = 120.0
    run_id: str = "r0"
    nonce_base: int = 0
    clients: int = 4
    workload: str = "plain"  # plain | fiscal-setup | fiscal (bench/fiscal.py)
    target: str = "cityledger"  # cityledger | etcd (bench/etcd.py)


def run_load(
    cluster: Processes, spec: LoadSpec, profile_dir: Path | None = None
) -> tuple[dict[str, Any], dict[str, float]]:
    """Run one load process against `cluster`; return its result and each node's CPU seconds
    spent during the measured phase (signing happens before and is not counted). With
    `profile_dir`, py-spy samples every node during that phase (collapsed stacks per node)."""
    doc = {"dir": str(cluster.root), "urls": cluster.urls, **asdict(spec)}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "load.py"), json.dumps(doc)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        line = _readline(proc, LOAD_READY_TIMEOUT_S)
        if line.strip() != b"ready":
            raise RuntimeError(f"the load process did not get ready: {line!r}")
        spies = _profile(cluster, profile_dir) if profile_dir else []
        height_before = cluster.head()
        before, main_before, wait_before = cluster.cpu(), cluster.main_cpu(), cluster.run_delay()
        threads_before = cluster.thread_cpu()
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
        out = _await_line(proc, cluster, spec.deadline_s + 60)
        after, main_after, wait_after = cluster.cpu(), cluster.main_cpu(), cluster.run_delay()
        threads_after = cluster.thread_cpu()
        blocks = cluster.head() - height_before
        proc.wait(timeout=30)
    finally:
        for spy in spies:
            spy.send_signal(signal.SIGINT)
            try:
                spy.wait(timeout=30)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    spent = {k: round(after.get(k, 0.0) - before.get(k, 0.0), 2) for k in before}
    result: dict[str, Any] = json.loads(out)
    result["blocks"] = blocks
    result["run_delay_s"] = {
        k: round(wait_after.get(k, 0.0) - wait_before.get(k, 0.0), 2) for k in wait_before
    }
    result["main_thread_cpu_s"] = {
        k: round(main_after.get(k, 0.0) - main_before.get(k, 0.0), 2) for k in main_before
    }
    result["thread_cpu_s"] = _thread_cpu_spent(threads_before, threads_after)
    return result, spent


def _thread_cpu_spent(
    before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]
) -> dict[str, float]:
    """CPU seconds spent by each kind of thread, summed over the nodes."""
    spent: dict[str, float] = {}
    for node, threads in after.items():
        for name, seconds in threads.items():
            used = seconds - before.get(node, {}).get(name, 0.0)
            spent[name] = round(spent.get(name, 0.0) + used, 2)
    return dict(sorted(spent.items(), key=lambda kv: -kv[1]))


def _profile(cluster: Processes, out_dir: Path) -> list[subprocess.Popen[bytes]]:
    """A py-spy sampler per node (py-spy from the venv: a tool of the bench, not a dependency)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    spy = Path(sys.executable).parent / "py-spy"
    procs = []
    for node_id, proc in cluster.procs.items():
        # --gil: samples the thread that holds the GIL, i.e. Python work; signature checks
        # release it (their share shows in the per-thread CPU figures instead).
        command = [
            str(spy), "record", "--pid", str(proc.pid), "--rate", "200", "--format", "raw",
            "--output", str(out_dir / f"{node_id}.txt"), "--nonblocking", "--gil",
        ]  # fmt: skip
        procs.append(
            subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )
    return procs


def _readline(proc: subprocess.Popen[bytes], timeout_s: float) -> bytes:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    os.set_blocking(proc.stdout.fileno(), True)
    import selectors

    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if sel.select(timeout=0.5):
                return proc.stdout.readline()
            if proc.poll() is not None:
                break
    raise RuntimeError("the load process gave no answer in time")


def _await_line(proc: subprocess.Popen[bytes], cluster: Processes, timeout_s: float) -> bytes:
    """The load process's result line, sampling node RSS while it runs."""
    assert proc.stdout is not None
    import selectors

    deadline = time.monotonic() + timeout_s
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            cluster.sample_rss()
            if sel.select(timeout=0.5):
                return proc.stdout.readline()
            if proc.poll() is not None:
                break
    raise RuntimeError("the load process did not finish in time")


@contextlib.contextmanager
def started_cluster(
    nodes: int, params: dict[str, int] | None = None, insecure: bool = False
) -> Iterator[Cluster]:
    with Cluster(nodes, params, insecure=insecure) as cluster:
        cluster.start()
        yield cluster


def write_json(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")


def report(
    result: dict[str, Any], args: Any, kind: str, show: Callable[[dict[str, Any]], None]
) -> int:
    """Plot `result` (`--plots DIR`, by `plots.<kind>`), then print it: one JSON object with
    `--json`, else the text of `show`. The exit status of a benchmark run."""
    if args.plots:
        plot(result, args.plots, kind)
    if args.json:
        print(json.dumps(result))
    else:
        show(result)
    return 0


def plot(report: dict[str, Any], out_dir: Path, kind: str) -> None:
    """PNG plots of `report` by `plots.<kind>` (matplotlib: installed by `make bench` only)."""
    try:
        import plots
    except ImportError as exc:
        sys.stderr.write(f"no plots ({exc}): pip install matplotlib\n")
        return
    for path in getattr(plots, kind)(report, out_dir):
        sys.stderr.write(f"wrote {path}\n")

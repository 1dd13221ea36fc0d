"""Node processes of a local cluster: started, awaited until healthy, stopped by PID.

The one process-control module: `cluster up`, the demo, the fault tests (tests/faults/harness.py)
and the benchmarks (bench/harness.py) all start a node with `spawn` and stop the processes they
started with `stop` / `kill_child` / `stop_children`.

Each node runs as `python -m cli.main node run nodes/<id>/node.toml` (the interpreter of this
CLI), in its own session so that a terminal's Ctrl-C reaches only `cluster up`, which then stops
them in order. Its stdout and stderr go to `logs/<id>.log`; its PID and config path to
`pids/<id>.pid`. A process is only ever signalled by that PID, and only while /proc (where
there is one) shows it still runs that config: a stale PID file never kills a stranger.
"""

import contextlib
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cli.api import NodeClient, NodeUnreachable, Refused, Signer
from cli.errors import Failed
from cli.network import LOGS_DIR, PIDS_DIR, Network, NodeEntry
from ledger.errors import LedgerError
from ledger.genesis import Genesis
from ledger.primitives import VALIDATORS_MAX
from node.config import ConfigError, load, load_key

START_TIMEOUT_S: Final = 60.0
STOP_TIMEOUT_S: Final = 15.0
POLL_INTERVAL_S: Final = 0.1
PROBE_TIMEOUT_S: Final = 2.0
LOG_LINE_CHARS_MAX: Final = 300
LOG_FILE_MODE: Final = 0o600
PRIVATE_DIR_MODE: Final = 0o700  # logs/ and pids/


@dataclass(frozen=True)
class PidRecord:
    node_id: str
    pid: int
    config: str


@dataclass(frozen=True)
class Health:
    """What a node's /v1/status said, or why it said nothing (`status` None)."""

    node_id: str
    status: dict[str, Any] | None
    problem: str

    @property
    def healthy(self) -> bool:
        return self.status is not None and not self.problem


def node_command(config: Path) -> list[str]:
    return [sys.executable, "-m", "cli.main", "node", "run", str(config)]


# --- PID files -------------------------------------------------------------------------------


def write_pid(net: Network, node_id: str, pid: int, config: Path) -> None:
    path = net.pid_file(node_id)
    path.parent.mkdir(mode=PRIVATE_DIR_MODE, exist_ok=True)
    path.write_text(json.dumps({"pid": pid, "config": str(config.resolve())}) + "\n")


def read_pid(net: Network, node_id: str) -> PidRecord | None:
    try:
        doc = json.loads(net.pid_file(node_id).read_text())
        pid, config = doc["pid"], doc["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 1 or not isinstance(config, str):
        return None
    return PidRecord(node_id, pid, config)


def remove_pid(net: Network, node_id: str) -> None:
    net.pid_file(node_id).unlink(missing_ok=True)


def is_running(record: PidRecord) -> bool:
    """Whether `record`'s process is alive (not a zombie) and, where /proc tells, runs its node."""
    try:
        os.kill(record.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # another user's process: not ours, whatever the PID file says
    proc = Path("/proc") / str(record.pid)
    if not Path("/proc/self").exists():
        return True
    try:
        stat = (proc / "stat").read_text()
        cmdline = (proc / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if stat.rpartition(")")[2].split()[:1] == ["Z"]:
        return False
    return record.config.encode() in cmdline


def running(net: Network) -> list[PidRecord]:
    records = (read_pid(net, n.id) for n in net.nodes)
    return [r for r in records if r is not None and is_running(r)]


# --- Starting --------------------------------------------------------------------------------


def check_ports_free(net: Network) -> None:
    """Refuse to start when something already listens at a node's address (a cluster started
    from another directory, or one whose PID files were lost): its answers would pass for ours.
    """
    for entry in net.nodes:
        parts = urlsplit(entry.url)
        address = (parts.hostname or "", parts.port or 80)
        try:
            with socket.create_connection(address, timeout=PROBE_TIMEOUT_S):
                pass
        except ConnectionRefusedError:
            continue
        except OSError as exc:
            raise Failed(
                f"cannot use {entry.url} for node {entry.id}: {exc.strerror or exc}"
            ) from None
        raise Failed(
            f"something already listens at {entry.url}, where node {entry.id} should: "
            "is another cluster running?"
        )


def start(net: Network) -> dict[str, subprocess.Popen[bytes]]:
    """Start every node of `net`; return the processes by node id."""
    (net.root / LOGS_DIR).mkdir(mode=PRIVATE_DIR_MODE, exist_ok=True)
    (net.root / PIDS_DIR).mkdir(mode=PRIVATE_DIR_MODE, exist_ok=True)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for entry in net.nodes:
            procs[entry.id] = _start_one(net, entry)
    except OSError as exc:
        stop_children(net, procs)
        raise Failed(f"cannot start the nodes: {exc.strerror or exc}") from None
    return procs


def _open_log(path: Path) -> BinaryIO:
    """A node's log, appended to and readable by its owner only (logs can name records)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, LOG_FILE_MODE)
    os.fchmod(fd, LOG_FILE_MODE)  # also a log left by an older version with a wider mode
    return os.fdopen(fd, "ab")


def _start_one(net: Network, entry: NodeEntry) -> subprocess.Popen[bytes]:
    proc = spawn(
        node_command(entry.config.resolve()),
        net.log_file(entry.id),
        banner=f"cityledger cluster up: starting {entry.id}",
    )
    write_pid(net, entry.id, proc.pid, entry.config)
    return proc


def spawn(
    command: Sequence[str], log_path: Path, *, banner: str, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start one node process (`command`: `node_command`, or a wrapper of it) in a session of
    its own, so that a terminal's Ctrl-C does not reach it; its output is appended to
    `log_path` after a `# <time> <banner>` line."""
    log_path.parent.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    with _open_log(log_path) as log:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        log.write(f"# {stamp} {banner}\n".encode())
        log.flush()
        return subprocess.Popen(  # noqa: S603 - our own interpreter and module, no shell
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            cwd=cwd,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


@functools.lru_cache(maxsize=VALIDATORS_MAX)
def node_key(config: Path) -> Ed25519PrivateKey:
    """A node's own key, read as the node reads it (an encrypted one with the passphrase its
    node.toml names), once per command: decrypting takes a quarter of a second."""
    return load_key(load(config))


def probe(entry: NodeEntry, genesis: Genesis, timeout_s: float = PROBE_TIMEOUT_S) -> Health:
    """Ask one node's /v1/status (signed with that node's own key, a validator's identity);
    healthy when it answers for this chain and is running (over TLS: when it is the validator
    of the genesis it claims to be)."""
    genesis_hash = genesis.hash
    try:
        signer = Signer(entry.id, node_key(entry.config.resolve()))
    except (LedgerError, ConfigError) as exc:
        return Health(entry.id, None, str(exc))
    try:
        with NodeClient(entry.url, timeout_s, signer, genesis=genesis) as client:
            status = client.get("/v1/status")
    except (NodeUnreachable, Refused) as exc:
        return Health(entry.id, None, str(exc))
    if not isinstance(status, dict):
        return Health(entry.id, None, "its status is not a JSON object")
    if status.get("genesis_hash") != genesis_hash.hex():
        return Health(entry.id, status, f"{entry.url} serves another chain")
    if not status.get("running", False):
        return Health(entry.id, status, "the node is shutting down or has failed")
    return Health(entry.id, status, "")


def wait_healthy(
    net: Network, procs: dict[str, subprocess.Popen[bytes]], timeout_s: float = START_TIMEOUT_S
) -> None:
    """Return once every node answers its status; raise `Failed` if one exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    pending = {n.id: n for n in net.nodes if n.id in procs}
    while pending:
        for node_id, entry in list(pending.items()):
            code = procs[node_id].poll()
            if code is not None:
                raise Failed(
                    f"node {node_id} exited during start-up (code {code}): "
                    f"{last_log_line(net, node_id)} (log: {net.log_file(node_id)})"
                )
            health = probe(entry, net.genesis, timeout_s=PROBE_TIMEOUT_S)
            if health.healthy:
                del pending[node_id]
            elif health.status is not None and "another chain" in health.problem:
                raise Failed(f"node {node_id}: {health.problem}; is another cluster running?")
        if pending and time.monotonic() > deadline:
            names = ", ".join(sorted(pending))
            raise Failed(f"not healthy within {timeout_s:g} s: {names} (see {net.root / LOGS_DIR})")
        if pending:
            time.sleep(POLL_INTERVAL_S)  # start-up readiness poll, bounded by the deadline


def last_log_line(net: Network, node_id: str) -> str:
    try:
        with net.log_file(node_id).open("rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - 8192))
            lines = [ln.strip() for ln in log.read().decode(errors="replace").splitlines()]
    except OSError:
        return "no log"
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if not lines:
        return "nothing logged"
    line = lines[-1]
    with contextlib.suppress(ValueError, AttributeError):
        entry = json.loads(line)
        line = str(entry.get("msg", line))
    return line[:LOG_LINE_CHARS_MAX]


# --- Stopping --------------------------------------------------------------------------------


def stop(proc: subprocess.Popen[bytes], timeout_s: float = STOP_TIMEOUT_S) -> int | None:
    """SIGTERM one process this program started and reap it: its exit code, or None if it
    had to be killed after `timeout_s`."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
    return _reap(proc, timeout_s)


def _reap(proc: subprocess.Popen[bytes], timeout_s: float) -> int | None:
    """Wait for a process already told to stop (never signal it twice: a second SIGTERM is
    not a harder one); its exit code, or None if it had to be killed after `timeout_s`."""
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        kill_child(proc)
        return None


def kill_child(proc: subprocess.Popen[bytes]) -> int:
    """SIGKILL one process this program started (a crash) and reap it: its exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    return proc.wait(timeout=STOP_TIMEOUT_S)


def stop_children(net: Network, procs: dict[str, subprocess.Popen[bytes]]) -> dict[str, str]:
    """Stop processes this CLI started (SIGTERM, then SIGKILL after a bound); reap them."""
    for proc in procs.values():
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    outcome: dict[str, str] = {}
    for node_id, proc in procs.items():
        already = proc.returncode is not None
        if _reap(proc, max(0.0, deadline - time.monotonic())) is not None:
            outcome[node_id] = "was not running" if already else "stopped"
        else:
            outcome[node_id] = "killed after the stop timeout"
        remove_pid(net, node_id)
    return outcome


def stop_recorded(net: Network, node_ids: Iterable[str]) -> dict[str, str]:
    """Stop nodes by the PIDs in their PID files (`cluster down`)."""
    outcome: dict[str, str] = {}
    live: list[PidRecord] = []
    for node_id in node_ids:
        record = read_pid(net, node_id)
        if record is None or not is_running(record):
            outcome[node_id] = "was not running"
            remove_pid(net, node_id)
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.pid, signal.SIGTERM)
        live.append(record)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for record in live:
        if _await(functools.partial(_exited, record), deadline):
            outcome[record.node_id] = "stopped"
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(record.pid, signal.SIGKILL)
            outcome[record.node_id] = "killed after the stop timeout"
        remove_pid(net, record.node_id)
    return outcome


def kill(record: PidRecord) -> None:
    """SIGKILL one node (the demo's crash), if it is still the process its PID file names."""
    if is_running(record):
        os.kill(record.pid, signal.SIGKILL)


def _exited(record: PidRecord) -> bool:
    return not is_running(record)


def _await(condition: Callable[[], bool], deadline: float) -> bool:
    """Poll `condition` until it holds or `deadline` passes (a process we did not start cannot
    be waited for, so its exit is polled)."""
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_INTERVAL_S)
    return True

"""`cluster up` as a real process: in the foreground Ctrl-C (SIGINT) or SIGTERM stops every node
cleanly; a taken port stops it before it starts anything; a node that cannot start is named."""

import json
import queue
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.cli.conftest import (
    RunningCluster,
    alive,
    cityledger_command,
    free_base_port,
    kill_all,
    no_traceback,
    run,
)

READY_TIMEOUT_S = 60.0


def _lines(proc: subprocess.Popen[str]) -> "queue.Queue[str | None]":
    """The process's output lines as they come (None at the end), read by a thread so that the
    test can wait for one with a deadline."""
    out: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.put(line)
        out.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return out


def _await_line(lines: "queue.Queue[str | None]", text: str, seen: list[str]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        if line is None:
            raise AssertionError("cluster up ended early:\n" + "".join(seen))
        seen.append(line)
        if text in line:
            return


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_stops_every_node(tmp_path: Path, stop_signal: signal.Signals) -> None:
    root = tmp_path / "net"
    cluster = RunningCluster(root, free_base_port(4))
    init = run("cluster", "init", str(root), "--base-port", str(cluster.base_port))
    assert init.returncode == 0
    proc = subprocess.Popen(
        [*cityledger_command(), "cluster", "up", str(root)], stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    pids: list[int] = []
    try:
        seen: list[str] = []
        _await_line(_lines(proc), "Press Ctrl-C", seen)
        assert f"https://127.0.0.1:{cluster.base_port}" in "".join(seen)
        pids = cluster.pids()
        assert len(pids) == 4
        assert all(alive(p) for p in pids)
        status = run("cluster", "status", str(root), "--json")
        assert all(n["healthy"] for n in json.loads(status.stdout)["nodes"])
        submit = run("submit", *cluster.client("finance-clerk"), "fiscal/a", "t", "{}", "--wait",
                     "--json", CITYLEDGER_NODE=cluster.url,
                     CITYLEDGER_GENESIS=str(cluster.genesis))  # fmt: skip
        assert json.loads(submit.stdout)["height"] == 1
        proc.send_signal(stop_signal)
        assert proc.wait(timeout=60) == 0
        assert not any(alive(p) for p in pids)
        assert not list((root / "pids").glob("*.pid"))
        for log in (root / "logs").glob("*.log"):
            assert "store closed" in log.read_text()  # each node stopped cleanly, not killed
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        kill_all(pids or cluster.pids())


def test_a_taken_port_stops_cluster_up_before_it_starts(tmp_path: Path) -> None:
    root = tmp_path / "net"
    base = free_base_port(2)
    assert run("cluster", "init", str(root), "-n", "2", "--base-port", str(base)).returncode == 0
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", base + 1))
        squatter.listen(1)
        result = run("cluster", "up", str(root), "--detach")
    assert result.returncode == 1
    assert f"something already listens at https://127.0.0.1:{base + 1}" in result.stderr
    no_traceback(result.stderr)
    assert not (root / "pids").exists()  # nothing was started


def test_a_node_that_cannot_start_is_reported_with_its_log(tmp_path: Path) -> None:
    root = tmp_path / "net"
    base = free_base_port(2)
    assert run("cluster", "init", str(root), "-n", "2", "--base-port", str(base)).returncode == 0
    (root / "nodes" / "planning" / "key.pem").unlink()
    result = run("cluster", "up", str(root), "--detach")
    assert result.returncode == 1
    assert "node planning exited during start-up" in result.stderr
    assert "key_file" in result.stderr
    no_traceback(result.stderr)
    assert not list((root / "pids").glob("*.pid"))  # the node that did start was stopped
    status = run("cluster", "status", str(root), "--json")
    assert not any(n["healthy"] for n in json.loads(status.stdout)["nodes"])

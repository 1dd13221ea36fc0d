"""`cityledger demo` end to end, as `make demo` runs it (the Makefile adds only the venv)."""

import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.cli.conftest import cityledger_command, kill_all, no_traceback, run

DEMO_SECONDS_MAX = 120  # the bound for `make demo` on 2 cores, venv creation included


def test_the_demo_runs_end_to_end() -> None:
    started = time.monotonic()
    result = run("demo")
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    no_traceback(result.stderr)
    out = result.stdout
    for expected in (
        "kill -9", "view", "verify --node", "OK", "VALID offline", "REJECTED",
        "over_allocation", "duplicate_payment", "over_loss", "split_payment",
        "outcome refused (over_loss)",
        "submitted (block", "-> approved (block", "-> issued (block", "Demo complete",
        "effective from block", "refused at once (revoked)",
    ):  # fmt: skip
        assert expected in out, expected
    assert elapsed < 120


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="finds the nodes through /proc")
def test_a_closed_output_still_stops_every_node() -> None:
    """`cityledger demo | head -1`: the demo dies of the closed pipe, its nodes must not live on."""
    proc = subprocess.Popen(
        [*cityledger_command(), "demo"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert proc.stdout is not None
    first = proc.stdout.readline().decode()
    proc.stdout.close()
    try:
        assert proc.wait(timeout=60) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    match = re.search(r"logs in (\S+)/logs\)", first)
    assert match, first
    left = [pid for pid in _node_pids() if match.group(1) in _cmdline(pid)]
    kill_all(left)
    assert not left


def _node_pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""

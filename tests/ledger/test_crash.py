"""kill -9 at any instant loses no acknowledged block and leaves a store that opens and verifies.

A child process appends blocks and prints each height once `append` returned; the parent reads
the pipe and SIGKILLs the child right after a fixed number of lines. The child made its whole
chain before appending, so the kill lands inside its next `append` (checks, batch or fsync).
The same store is then reopened and resumed by the next child, kill after kill, and finally
completed.
"""

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from ledger.store import BlockStore
from ledger.verify import verify_chain
from tests import factory

REPO = Path(__file__).resolve().parents[2]
BLOCKS = 50
TXS_PER_BLOCK = 40
KILL_AFTER_LINES = (1, 7, 23)  # lines read from each successive child before its SIGKILL
TIMEOUT_S = 60.0  # for every child: a hung child fails the test instead of hanging it


def _start(path: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.ledger.crash_child", str(path), str(BLOCKS),
         str(TXS_PER_BLOCK)],
        cwd=REPO, stdout=subprocess.PIPE,
    )  # fmt: skip


def _read_lines(child: subprocess.Popen[bytes], count: int | None) -> list[tuple[int, str]]:
    """Read at least `count` lines (None: until EOF) from the child's stdout, within TIMEOUT_S.

    Waits on the pipe with select(), never by sleeping. One read may bring several lines: all
    complete ones are returned, as each is an acknowledged block.
    """
    assert child.stdout is not None
    fd = child.stdout.fileno()
    deadline = time.monotonic() + TIMEOUT_S
    buffer, lines = b"", list[tuple[int, str]]()
    while count is None or len(lines) < count:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"child sent {len(lines)} lines in {TIMEOUT_S} s"
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break  # EOF: the child finished (or died)
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        for line in complete:
            height, block_hash = line.decode().split()
            lines.append((int(height), block_hash))
    return lines


def _check(path: Path, acknowledged: list[tuple[int, str]]) -> int:
    net = factory.network()
    with BlockStore.open(path, net.genesis) as store:
        report = verify_chain(store, net.genesis)
        assert report.ok, report
        for height, block_hash in acknowledged:
            block = store.block(height)
            assert block is not None, f"acknowledged block {height} was lost"
            assert block.hash.hex() == block_hash
        return store.height


def test_kill_9_loses_no_acknowledged_block(tmp_path: Path) -> None:
    path = tmp_path / "data"
    acknowledged: list[tuple[int, str]] = []
    for kill_after in KILL_AFTER_LINES:
        child = _start(path)
        try:
            lines = _read_lines(child, kill_after)
            assert len(lines) >= kill_after, "the child ended before it could be killed"
            os.kill(child.pid, signal.SIGKILL)
            assert child.wait(timeout=TIMEOUT_S) == -signal.SIGKILL
            lines += _read_lines(child, None)  # acknowledged just before the kill
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=TIMEOUT_S)
            assert child.stdout is not None
            child.stdout.close()
        acknowledged += lines
        height = _check(path, acknowledged)
        assert height >= acknowledged[-1][0]
    child = _start(path)
    try:
        acknowledged += _read_lines(child, None)
        assert child.wait(timeout=TIMEOUT_S) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=TIMEOUT_S)
        assert child.stdout is not None
        child.stdout.close()
    assert _check(path, acknowledged) == BLOCKS
    assert [h for h, _ in acknowledged] == sorted({h for h, _ in acknowledged})

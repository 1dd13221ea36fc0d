"""`node.main.run` as a real process: kill -9 and restart recovers and catches up by itself;
SIGTERM drains and closes the store cleanly. Waits follow the node's JSON log lines."""

import asyncio
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from ledger import genesis as genesis_mod
from ledger.store import BlockStore
from ledger.verify import verify_chain
from tests.node.conftest import Cluster, start_cluster, stop_all, tx_json, within

ROOT = Path(__file__).resolve().parents[2]
Entry = dict[str, Any]


class NodeProcess:
    """One `node.main.run` child whose JSON log lines are read as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[Entry] = []
        self._changed = asyncio.Condition()
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def start(cls, config: Path) -> "NodeProcess":
        code = f"from pathlib import Path; from node.main import run; run(Path({str(config)!r}))"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, cwd=ROOT, stderr=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            try:
                entry = json.loads(line)
            except ValueError:
                entry = {"msg": line.decode(errors="replace")}
            async with self._changed:
                self.lines.append(entry)
                self._changed.notify_all()
        async with self._changed:
            self.lines.append({"msg": "<eof>"})
            self._changed.notify_all()

    async def wait_log(self, match: Callable[[Entry], bool]) -> Entry:
        def found() -> Entry | None:
            return next((e for e in self.lines if match(e)), None)

        async with self._changed:
            await within(self._changed.wait_for(lambda: found() is not None or self.eof()))
        entry = found()
        assert entry is not None, f"the node exited first: {self.lines[-5:]}"
        return entry

    def eof(self) -> bool:
        return any(e.get("msg") == "<eof>" for e in self.lines)

    async def wait_height(self, height: int) -> None:
        await self.wait_log(lambda e: e.get("msg") == "block committed" and e["height"] >= height)

    async def exit_code(self) -> int:
        code = await within(self.proc.wait())
        await within(self._reader)
        return code


async def submit(c: Cluster, http: aiohttp.ClientSession, node: int, name: str) -> int:
    tx = c.tx("fiscal/", name, {"name": name})
    async with http.post(c.url(node) + "/v1/transactions?wait=true", json=tx_json(tx)) as r:
        body = await r.json()
        assert r.status == 200, body
    return int(body["height"])


async def test_kill_9_then_restart_recovers_and_catches_up_then_sigterm_closes_cleanly(
    tmp_path: Path, http
) -> None:
    c = await start_cluster(tmp_path, 4)
    child: NodeProcess | None = None
    try:
        await c.stop(3)  # node 3 runs as a real process from here on
        config = c.write_config(3)
        child = await NodeProcess.start(config)
        await child.wait_log(lambda e: e.get("msg") == "node started")
        height = 0
        for j in range(3):
            height = await submit(c, http, j, f"before-{j}")
        await child.wait_height(height)

        child.proc.send_signal(signal.SIGKILL)
        assert await child.exit_code() == -signal.SIGKILL
        for j in range(3):  # 3 of 4 still commit
            height = await submit(c, http, j, f"while-dead-{j}")

        child = await NodeProcess.start(config)
        started = await child.wait_log(lambda e: e.get("msg") == "node started")
        assert started["height"] >= 1  # recovered what it had from its own store
        await child.wait_height(height)  # and fetched the rest from its peers

        child.proc.send_signal(signal.SIGTERM)
        assert await child.exit_code() == 0
        assert any(e.get("msg") == "node stopped, store closed" for e in child.lines)
        child = None
        genesis = genesis_mod.load(tmp_path / "genesis.toml")
        with BlockStore.open(tmp_path / "node3" / "data", genesis) as store:
            assert store.height >= height
            report = verify_chain(store, genesis)
        assert report.ok, report.reason
    finally:
        if child is not None and child.proc.returncode is None:
            child.proc.kill()
            await child.exit_code()
        await stop_all(c)


async def test_a_bad_config_does_not_start(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text('node_id = "n"\nlisten = "nowhere"\n')
    child = await NodeProcess.start(config)
    assert await child.exit_code() != 0
    text = " ".join(str(e.get("msg")) for e in child.lines)
    assert "listen" in text
    assert "key_file" in text


async def test_a_second_signal_during_the_stop_changes_nothing(tmp_path: Path) -> None:
    """A supervisor that repeats its SIGTERM, or a second Ctrl-C, while the node closes: the
    node logs it and still finishes its clean stop (it is not killed by the default action).
    A signal while the node is still starting stops it cleanly once it has started."""
    c = await start_cluster(tmp_path, 4)
    child: NodeProcess | None = None
    try:
        await c.stop(3)
        config = c.write_config(3)
        child = await NodeProcess.start(config)
        await child.wait_log(lambda e: e.get("msg") == "listening")  # started: its last line
        child.proc.send_signal(signal.SIGTERM)
        first = await child.wait_log(lambda e: e.get("msg") == "stopping")
        assert first["signal"] == "SIGTERM"
        child.proc.send_signal(signal.SIGINT)
        assert await child.exit_code() == 0
        messages = [e.get("msg") for e in child.lines]
        assert messages[-1] == "<eof>"
        assert messages[-2] == "node stopped, store closed"
        assert messages.count("stopping") == 1

        child = await NodeProcess.start(config)
        await child.wait_log(lambda e: e.get("msg") == "node started")  # not yet listening
        child.proc.send_signal(signal.SIGTERM)
        assert await child.exit_code() == 0
        messages = [e.get("msg") for e in child.lines]
        assert messages.count("stopping") == 1
        assert messages[-2] == "node stopped, store closed"
        child = None
    finally:
        if child is not None and child.proc.returncode is None:
            child.proc.kill()
            await child.exit_code()
        await stop_all(c)

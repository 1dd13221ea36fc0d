"""Helpers for the CLI tests: click's runner, stores and bundles built with tests/factory.py, the
real `cityledger` executable, free loopback ports, and a cluster that is always stopped by PID.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from cli.main import cli
from cli.ports import free_base_port, free_ports
from ledger import genesis as genesis_mod
from ledger.store import BlockStore
from node import codec, proofs
from tests import factory

COMMAND_TIMEOUT_S = 120.0
BIN = Path(sys.executable).parent / "cityledger"


def cityledger_command() -> list[str]:
    """The installed console script; the module when the tests run outside the venv."""
    return [str(BIN)] if BIN.exists() else [sys.executable, "-m", "cli.main"]


def run(*args: str, input_text: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """`cityledger ARGS` as a real process, bounded in time."""
    return subprocess.run(
        [*cityledger_command(), *args], input=input_text, capture_output=True, text=True,
        timeout=COMMAND_TIMEOUT_S, env={**os.environ, **env}, check=False,
    )  # fmt: skip


def invoke(*args: str, input_text: str | None = None, **env: str) -> Result:
    """`cityledger ARGS` through click's runner; our own bugs propagate as exceptions."""
    return CliRunner().invoke(cli, list(args), input=input_text, env=env, catch_exceptions=False)


def no_traceback(text: str) -> None:
    assert "Traceback" not in text, text


def closed_port() -> int:
    """A port nothing listens on."""
    return free_ports(1)[0]


# --- offline material ------------------------------------------------------------------------


@dataclass
class Stored:
    net: factory.Network
    genesis_path: Path
    data: Path

    @property
    def genesis(self) -> genesis_mod.Genesis:
        return self.net.genesis


def build_store(root: Path, blocks: int, txs_per_block: int) -> Stored:
    net = factory.network()
    root.mkdir(parents=True, exist_ok=True)
    genesis_path = root / "genesis.toml"
    genesis_path.write_text(genesis_mod.dump_toml(net.genesis))
    data = root / "data"
    with BlockStore.open(data, net.genesis) as store:
        for block, cert in factory.chain(net, blocks, txs_per_block):
            store.append(block, cert)
    return Stored(net, genesis_path, data)


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Stored:
    """A 6-block chain of 3 txs per block from every organisation."""
    return build_store(tmp_path_factory.mktemp("store"), 6, 3)


def make_bundle(stored: Stored, height: int, index: int) -> dict[str, Any]:
    """The node's bundle of tx (height, index), as JSON values."""
    with BlockStore.open(stored.data, stored.genesis) as store:
        block = store.block(height)
        assert block is not None
        doc = proofs.bundle(store, block.txs[index].tx_id)
        assert doc is not None
    return json.loads(json.dumps(codec.to_json_value(doc)))


# --- a running cluster -----------------------------------------------------------------------


@dataclass
class RunningCluster:
    root: Path
    base_port: int

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.base_port}"

    @property
    def genesis(self) -> Path:
        return self.root / "genesis.toml"

    def client(self, name: str) -> list[str]:
        return ["--client", name, "--key", str(self.root / "clients" / f"{name}.pem")]

    def env(self, name: str) -> dict[str, str]:
        """The environment that makes every command talk to this cluster as client `name`."""
        return {"CITYLEDGER_NODE": self.url, "CITYLEDGER_CLIENT": name,
                "CITYLEDGER_KEY": str(self.root / "clients" / f"{name}.pem"),
                "CITYLEDGER_GENESIS": str(self.genesis)}  # fmt: skip

    def pids(self) -> list[int]:
        out = []
        for path in (self.root / "pids").glob("*.pid"):
            with contextlib.suppress(OSError, ValueError, KeyError):
                out.append(int(json.loads(path.read_text())["pid"]))
        return out


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rpartition(")")[2].split()[0] != "Z"
    return True


def kill_all(pids: list[int]) -> None:
    """The last resort of a test's finally: SIGKILL by PID, then wait (bounded) until gone."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)


@contextlib.contextmanager
def running_cluster(root: Path, validators: int = 4) -> Iterator[RunningCluster]:
    """`cluster init` and `cluster up --detach` as real processes; always stopped afterwards."""
    base = free_base_port(validators)
    cluster = RunningCluster(root, base)
    done = run("cluster", "init", str(root), "--validators", str(validators),
               "--base-port", str(base))  # fmt: skip
    assert done.returncode == 0, done.stderr
    try:
        up = run("cluster", "up", str(root), "--detach")
        assert up.returncode == 0, up.stdout + up.stderr
        yield cluster
    finally:
        pids = cluster.pids()
        run("cluster", "down", str(root))
        kill_all(pids)

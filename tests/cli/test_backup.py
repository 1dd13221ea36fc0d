"""`cityledger backup` and `restore` against a real 4-node cluster: a backup taken while clerks
submit restores into a node whose store was lost; the node rejoins, catches up past the backup
and its chain verifies. Refusals: a clerk may not back up, a changed blocks file or a data
directory that holds a store is not restored over."""

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

from cli.client import Client, ClientError, load_genesis, load_key
from tests.cli.conftest import (
    COMMAND_TIMEOUT_S,
    RunningCluster,
    alive,
    cityledger_command,
    kill_all,
    no_traceback,
    run,
    running_cluster,
)

LOAD_TXS_MAX = 2000  # the load thread's bound, whatever happens
CATCH_UP_S = 60.0


class Load:
    """A clerk submitting records without waiting, until stopped (bounded)."""

    def __init__(self, cluster: RunningCluster) -> None:
        self.cluster = cluster
        self.sent = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Load":
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=COMMAND_TIMEOUT_S)

    def _run(self) -> None:
        c = self.cluster
        key = load_key(c.root / "clients" / "finance-clerk.pem")
        with Client(c.url, identity="finance-clerk", key=key,
                    genesis=load_genesis(c.genesis)) as node:  # fmt: skip
            while not self._stop.is_set() and self.sent < LOAD_TXS_MAX:
                try:
                    node.submit(node.build(f"fiscal/load/{self.sent}", "record", {"n": self.sent}))
                    self.sent += 1
                except ClientError as exc:
                    self.errors.append(str(exc))
                    return


def node_dir(c: RunningCluster, node_id: str) -> Path:
    return c.root / "nodes" / node_id


def stop_node(c: RunningCluster, node_id: str) -> None:
    record = json.loads((c.root / "pids" / f"{node_id}.pid").read_text())
    os.kill(record["pid"], signal.SIGTERM)
    deadline = time.monotonic() + COMMAND_TIMEOUT_S
    while alive(record["pid"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(record["pid"])


def height_of(c: RunningCluster, url: str) -> int:
    key = load_key(c.root / "clients" / "auditor.pem")
    with Client(url, identity="auditor", key=key, genesis=load_genesis(c.genesis)) as node:
        return int(node.node_status()["height"])


def test_a_backup_under_load_restores_into_a_node_that_rejoins(tmp_path: Path) -> None:
    with running_cluster(tmp_path / "net") as c:
        auditor = c.env("auditor")
        backup_dir = tmp_path / "backup"
        with Load(c) as load:
            deadline = time.monotonic() + CATCH_UP_S
            while load.sent < 20 and not load.errors and time.monotonic() < deadline:
                time.sleep(0.01)  # the backup starts once txs flow
            done = run("backup", "--node", c.url, "-o", str(backup_dir), "--json", **auditor)
            sent_during = load.sent
        assert not load.errors, load.errors
        assert done.returncode == 0, done.stderr
        manifest = json.loads(done.stdout)
        assert manifest["height"] >= 1
        assert sent_during > 20  # the load went on during the backup

        clerk = c.env("finance-clerk")
        refused = run("backup", "--node", c.url, "-o", str(tmp_path / "nope"), **clerk)
        assert refused.returncode == 1
        assert "validators and auditors" in refused.stderr
        assert not (tmp_path / "nope").exists()
        no_traceback(refused.stderr)

        victim = "civic-shield"
        url = f"https://127.0.0.1:{c.base_port + 3}"
        stop_node(c, victim)
        data = node_dir(c, victim) / "data"
        occupied = run("restore", str(backup_dir), "--data-dir", str(data))
        assert occupied.returncode == 1
        assert "not empty" in occupied.stderr
        data.rename(node_dir(c, victim) / "data.lost")  # the store is gone

        tampered = tmp_path / "tampered"
        subprocess.run(["cp", "-r", str(backup_dir), str(tampered)], check=True)
        blob = bytearray((tampered / "blocks.msgpack").read_bytes())
        blob[len(blob) // 2] ^= 1
        (tampered / "blocks.msgpack").write_bytes(bytes(blob))
        bad = run("restore", str(tampered), "--data-dir", str(data))
        assert bad.returncode == 1
        assert "SHA-256 differs" in bad.stderr
        assert not data.exists()

        restored = run("restore", str(backup_dir), "--data-dir", str(data), "--json")
        assert restored.returncode == 0, restored.stderr
        assert json.loads(restored.stdout)["height"] == manifest["height"]

        log = (tmp_path / "restored.log").open("wb")
        proc = subprocess.Popen(
            [*cityledger_command(), "node", "run", str(node_dir(c, victim) / "node.toml")],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            key = load_key(c.root / "clients" / "finance-clerk.pem")
            with Client(c.url, identity="finance-clerk", key=key,
                        genesis=load_genesis(c.genesis)) as node:  # fmt: skip
                after = node.submit(node.build("fiscal/after", "record", {"n": 1}), wait=True)
            assert after.height is not None
            assert after.height > manifest["height"]
            deadline = time.monotonic() + CATCH_UP_S
            reached = 0
            while time.monotonic() < deadline:  # it catches up from its peers: poll, bounded
                try:
                    reached = height_of(c, url)
                except ClientError:
                    reached = 0  # still starting
                if reached >= after.height:
                    break
                time.sleep(0.1)
            assert reached >= after.height
            verified = run("verify", "--node", url, **auditor)
            assert verified.returncode == 0, verified.stdout + verified.stderr
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=COMMAND_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                kill_all([proc.pid])
            log.close()

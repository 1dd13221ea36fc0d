"""Validators join, leave and rotate their keys on a real cluster, under steady acknowledged
load, all through the `cityledger` command (docs/protocol.md 13.5, 13.6, 20.8).

A fifth validator of a new agency is written with `cluster add-node`, added with `gov propose` /
`gov approve`, started, and seen signing certificates; a validator other than the last is
removed (every later index moves down); a validator's key is rotated and the node restarted
with it. Throughout, one client submits txs and waits for each commit: none it was told is
committed may be lost. At the end every validator is on one head, `verify` replays each data
dir from the genesis alone, and `verify-proof` proves a tx committed after two epoch changes
with the genesis alone, and refuses every altered byte tried. The processes this test starts
itself are stopped by PID, as `cluster down` stops the others.
"""

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pytest

from cli import processes
from cli.client import Client
from cli.network import load as load_network
from ledger import crypto
from ledger import genesis as genesis_mod
from tests.cli.conftest import RunningCluster, alive, no_traceback, run, running_cluster

NEW_AGENCY: Final = "City Transport Authority"
NEW_ID: Final = "transport"
REMOVED: Final = "planning"  # index 1 of 4: the ones after it move down
ROTATED: Final = "harbor-mutual"
WAIT_S: Final = 90.0  # for a block, a head or a process: generous on a loaded machine
POLL_S: Final = 0.1
ACKS_BETWEEN_STEPS: Final = 3  # acknowledged txs the load must make between two steps
ALTERED_BYTES: Final = 24  # bytes of the bundle altered one at a time


@dataclass
class Load:
    """One client submitting a record at a time to the finance bureau's node, waiting for
    each commit; `acked` holds what the node said was committed (tx id -> height)."""

    cluster: RunningCluster
    acked: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> "Load":
        self.thread = threading.Thread(target=self._run, name="load", daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        key = crypto.load_private_key(self.cluster.root / "clients" / "finance-clerk.pem")
        genesis = genesis_mod.load(self.cluster.genesis)
        with Client(self.cluster.url, identity="finance-clerk", key=key, genesis=genesis) as node:
            n = 0
            while not self.stop.is_set():
                n += 1
                tx = node.build(f"fiscal/load/{n}", "record", {"n": n})
                try:
                    status = node.submit(tx, wait=True, timeout_s=30)
                except Exception as exc:  # noqa: BLE001 - counted: only acknowledged txs count
                    self.failures.append(repr(exc))
                    continue
                if status.committed and status.height is not None:
                    self.acked[status.tx_id] = status.height

    def finish(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=60)
            assert not self.thread.is_alive()

    def wait_acks(self, more: int) -> None:
        target = len(self.acked) + more
        wait_until(lambda: len(self.acked) >= target, f"{more} more acknowledged txs")


def wait_until(check: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(POLL_S)  # a poll interval of a real condition, bounded by the deadline


def cl(cluster: RunningCluster, *args: str) -> Any:
    result = run(*args, **cluster.env("auditor"))
    no_traceback(result.stderr)
    return result


def gov(cluster: RunningCluster, slug: str, *args: str) -> dict[str, Any]:
    key = str(cluster.root / "admins" / f"{slug}-admin.pem")
    result = cl(cluster, "gov", args[0], "--admin", f"{slug}-admin", "--key", key, *args[1:],
                "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    answer: dict[str, Any] = json.loads(result.stdout)
    assert answer["outcome"] == "accepted", answer
    return answer


def enact(cluster: RunningCluster, approvers: tuple[str, ...], *change: str) -> int:
    """Proposed by the finance bureau, approved by `approvers`; the effective height."""
    pid = gov(cluster, "finance", "propose", *change)["id"]
    last: dict[str, Any] = {}
    for slug in approvers:
        last = gov(cluster, slug, "approve", pid)
    assert last["proposal_status"] == "effective", last
    return int(last["effective_height"])


def members(cluster: RunningCluster) -> list[dict[str, Any]]:
    """The validators in force now, as `cityledger members` prints them."""
    shown = cl(cluster, "members", "--json")
    assert shown.returncode == 0, shown.stderr
    validators: list[dict[str, Any]] = json.loads(shown.stdout)["validators"]
    return validators


def auditor(cluster: RunningCluster, url: str) -> Client:
    """The auditor's client, holding the genesis alone: it learns the validators in force
    (added, removed, re-keyed) from the chain itself (cli/client/trust.py)."""
    key = crypto.load_private_key(cluster.root / "clients" / "auditor.pem")
    return Client(url, identity="auditor", key=key, genesis=genesis_mod.load(cluster.genesis))


def signers_after(cluster: RunningCluster, height: int) -> Callable[[], set[str]]:
    """The signers of the latest block, once it is above `height` (else none)."""

    def latest() -> set[str]:
        with auditor(cluster, cluster.url) as node:
            block = node.block("latest")
        return set(block["certificate"]["signers"]) if block["height"] > height else set()

    return latest


def start_node(cluster: RunningCluster, node_id: str) -> subprocess.Popen[bytes]:
    net = load_network(cluster.root)
    config = cluster.root / "nodes" / node_id / "node.toml"
    proc = processes.spawn(
        processes.node_command(config.resolve()), net.log_file(node_id),
        banner=f"test: starting {node_id}",
    )  # fmt: skip
    processes.write_pid(net, node_id, proc.pid, config)  # `cluster down` stops it too
    return proc


def stop_pid(pid: int) -> None:
    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not alive(pid), f"process {pid} to stop")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RunningCluster]:
    with running_cluster(tmp_path / "net") as running:
        yield running


def test_a_validator_joins_one_leaves_one_rotates_its_key_under_load(
    cluster: RunningCluster, tmp_path: Path
) -> None:
    load = Load(cluster).start()
    started: list[subprocess.Popen[bytes]] = []
    try:
        load.wait_acks(ACKS_BETWEEN_STEPS)
        added_at = join(cluster, started)
        load.wait_acks(ACKS_BETWEEN_STEPS)
        removed_at = enact(cluster, ("planning", "harbor-mutual"),
                           "remove-validator", "--id", REMOVED)  # fmt: skip
        wait_until(lambda: signers_after(cluster, removed_at)() >= {NEW_ID}, "the new set")
        load.wait_acks(ACKS_BETWEEN_STEPS)
        rotated_at = rotate(cluster, started, tmp_path / "rotated.pem")
        load.wait_acks(ACKS_BETWEEN_STEPS)
        load.finish()
        one_head_and_nothing_lost(cluster, load.acked)
    finally:
        load.finish()
        for proc in started:
            processes.stop(proc)
    assert added_at < removed_at < rotated_at
    assert len(load.acked) >= 4 * ACKS_BETWEEN_STEPS
    for node_id in (NEW_ID, ROTATED):  # stopped: their stores replayed from the genesis alone
        data = cluster.root / "nodes" / node_id / "data"
        verified = cl(cluster, "verify", "--data-dir", str(data), "--genesis", str(cluster.genesis))
        assert verified.returncode == 0, verified.stdout + verified.stderr
    after_two = [tx for tx, height in load.acked.items() if height > removed_at + 1]
    assert after_two, "a tx acknowledged after two epoch changes"
    proven_with_the_genesis_alone(cluster, after_two[0], tmp_path / "bundle.json")


def join(cluster: RunningCluster, started: list[subprocess.Popen[bytes]]) -> int:
    """The agency's admin first (an organisation the configuration knows), then `cluster
    add-node`, `gov` add-validator, start it: it signs certificates."""
    admin_key = cluster.root / "admins" / "transport-admin.pem"
    assert cl(cluster, "keys", "new", str(admin_key)).returncode == 0
    enact(cluster, ("planning", "harbor-mutual"), "add-admin", "--id", "transport-admin",
          "--organisation", NEW_AGENCY, "--public-key-file", str(admin_key))  # fmt: skip
    made = cl(cluster, "cluster", "add-node", str(cluster.root), NEW_ID,
              "--organisation", NEW_AGENCY, "--kind", "municipal", "--json")  # fmt: skip
    assert made.returncode == 0, made.stderr
    new = json.loads(made.stdout)
    added_at = enact(cluster, ("planning", "harbor-mutual"), "add-validator", "--id", NEW_ID,
                     "--organisation", NEW_AGENCY, "--kind", "municipal", "--url", new["url"],
                     "--public-key", new["public_key"], "--proof", new["proof"])  # fmt: skip
    started.append(start_node(cluster, NEW_ID))
    wait_until(lambda: NEW_ID in signers_after(cluster, added_at)(), "a block signed by it")
    return added_at


def rotate(cluster: RunningCluster, started: list[subprocess.Popen[bytes]], key: Path) -> int:
    """A new key for a validator, the rotation enacted, the node restarted with the key."""
    assert cl(cluster, "keys", "new", str(key)).returncode == 0
    url = next(v["url"] for v in members(cluster) if v["id"] == ROTATED)
    rotated_at = enact(cluster, ("harbor-mutual", "civic-shield"), "rotate-validator-key",
                       "--id", ROTATED, "--public-key-file", str(key), "--url", url)  # fmt: skip
    record = processes.read_pid(load_network(cluster.root), ROTATED)
    assert record is not None
    stop_pid(record.pid)
    key_file = cluster.root / "nodes" / ROTATED / "key.pem"
    key_file.unlink()
    key_file.write_bytes(key.read_bytes())
    key_file.chmod(0o600)
    started.append(start_node(cluster, ROTATED))
    wait_until(lambda: ROTATED in signers_after(cluster, rotated_at + 1)(), "its new key signing")
    return rotated_at


def one_head_and_nothing_lost(cluster: RunningCluster, acked: dict[str, int]) -> None:
    """Every validator in force on one head; every acknowledged tx where it was acknowledged."""
    in_force = members(cluster)

    def heads() -> set[tuple[int, str]]:
        seen = set()
        for v in in_force:  # the added and the re-keyed one reached with the genesis alone
            with auditor(cluster, v["url"]) as node:
                status = node.node_status()
            seen.add((int(status["height"]), str(status["head_hash"])))
        return seen

    wait_until(lambda: len(heads()) == 1, "one head on every validator")
    assert {v["id"] for v in in_force} == {"finance", "harbor-mutual", "civic-shield", NEW_ID}
    with auditor(cluster, cluster.url) as node:
        stable, _ = node.stable_checkpoint()  # its votes checked against its own block's set
        assert stable >= 1
        for tx_id, height in acked.items():
            status = node.status(tx_id)
            assert (status.committed, status.height) == (True, height), tx_id
    shown = cl(cluster, "cluster", "status", str(cluster.root), "--json")
    assert shown.returncode == 0, shown.stdout + shown.stderr  # every validator in force healthy
    rows = json.loads(shown.stdout)["nodes"]
    assert {r["node_id"]: r["member"] for r in rows} == {
        "finance": "in force", "harbor-mutual": "in force", "civic-shield": "in force",
        NEW_ID: "in force", REMOVED: "removed",
    }  # fmt: skip
    for url in (cluster.url, next(v["url"] for v in in_force if v["id"] == "civic-shield")):
        verified = cl(cluster, "verify", "--node", url, "--genesis", str(cluster.genesis))
        assert verified.returncode == 0, verified.stdout + verified.stderr


def proven_with_the_genesis_alone(cluster: RunningCluster, tx_id: str, path: Path) -> None:
    made = cl(cluster, "proof", tx_id, "-o", str(path), "--genesis", str(cluster.genesis))
    assert made.returncode == 0, made.stderr
    verified = cl(cluster, "verify-proof", str(path), "--genesis", str(cluster.genesis), "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert json.loads(verified.stdout)["governance_changes"] >= 2
    data = path.read_bytes()
    start = data.index(b'"governance"')
    step = max(1, (len(data) - start) // ALTERED_BYTES)
    tried = 0
    for i in range(start + 20, len(data), step):
        if data[i : i + 1] not in b"0123456789abcdef":
            continue
        path.write_bytes(data[:i] + (b"0" if data[i : i + 1] != b"0" else b"1") + data[i + 1 :])
        altered = cl(cluster, "verify-proof", str(path), "--genesis", str(cluster.genesis))
        assert altered.returncode == 1, (i, data[i - 30 : i + 30])
        tried += 1
    assert tried >= ALTERED_BYTES // 2

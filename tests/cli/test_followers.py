"""Nodes the validator set in force does not hold follow the chain, on a real cluster under
steady acknowledged load (docs/protocol.md 13.6).

A genesis validator's key is rotated, the node stopped, its data dir wiped and the node
started on the new key: it follows from the genesis (a syncing node, no validator), then the
set in force seats it and it signs certificates again. A validator is removed while it runs:
it goes on following the chain as a reader (its head keeps up with the validators', each
block checked against its epoch's set), says so in `/v1/status` and `/readyz` (503
`following`; `/healthz` 200), serves reads and refuses txs (`not_validator`). No acknowledged
tx is lost. The processes this test starts itself are stopped by PID.
"""

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest

from cli import processes
from cli.client import Client, Refused
from cli.network import load as load_network
from ledger import crypto
from ledger import genesis as genesis_mod
from tests.cli.conftest import RunningCluster, running_cluster
from tests.cli.test_epochs import (
    ACKS_BETWEEN_STEPS,
    Load,
    auditor,
    cl,
    enact,
    signers_after,
    start_node,
    stop_pid,
    wait_until,
)

REMOVED: Final = "planning"
WIPED: Final = "harbor-mutual"
FOLLOWED_BLOCKS: Final = 3  # blocks the removed node must fetch after it left the set


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RunningCluster]:
    with running_cluster(tmp_path / "net") as running:
        yield running


def test_a_wiped_node_resyncs_on_its_rotated_key_and_a_removed_one_follows(
    cluster: RunningCluster, tmp_path: Path
) -> None:
    load = Load(cluster).start()
    started: list[subprocess.Popen[bytes]] = []
    try:
        load.wait_acks(ACKS_BETWEEN_STEPS)
        rotated_at = wiped_and_rotated(cluster, started, tmp_path / "rotated.pem")
        load.wait_acks(ACKS_BETWEEN_STEPS)
        removed_at = enact(cluster, ("harbor-mutual", "civic-shield"),
                           "remove-validator", "--id", REMOVED)  # fmt: skip
        followed(cluster, removed_at)
        load.wait_acks(ACKS_BETWEEN_STEPS)
        load.finish()
    finally:
        load.finish()
        for proc in started:
            processes.stop(proc)
    assert rotated_at < removed_at
    trust = genesis_mod.load(cluster.genesis)
    with auditor(cluster, cluster.url, trust) as node:
        for tx_id, height in load.acked.items():
            status = node.status(tx_id)
            assert (status.committed, status.height) == (True, height), tx_id
    data = cluster.root / "nodes" / WIPED / "data"  # stopped: replayed from the genesis alone
    verified = cl(cluster, "verify", "--data-dir", str(data), "--genesis", str(cluster.genesis))
    assert verified.returncode == 0, verified.stdout + verified.stderr


def wiped_and_rotated(
    cluster: RunningCluster, started: list[subprocess.Popen[bytes]], key: Path
) -> int:
    """The key rotated, the node stopped, its data dir wiped, restarted on the new key: it
    follows from the genesis until the set in force names its key, then signs again."""
    assert cl(cluster, "keys", "new", str(key)).returncode == 0
    url = next(v.url for v in genesis_mod.load(cluster.genesis).validators if v.id == WIPED)
    rotated_at = enact(cluster, ("harbor-mutual", "civic-shield"), "rotate-validator-key",
                       "--id", WIPED, "--public-key-file", str(key), "--url", url)  # fmt: skip
    net = load_network(cluster.root)
    record = processes.read_pid(net, WIPED)
    assert record is not None
    stop_pid(record.pid)
    node_dir = cluster.root / "nodes" / WIPED
    shutil.rmtree(node_dir / "data")
    key_file = node_dir / "key.pem"
    key_file.unlink()
    key_file.write_bytes(key.read_bytes())
    key_file.chmod(0o600)
    log_file = net.log_file(WIPED)
    logged_before = len(log_file.read_text().splitlines()) if log_file.exists() else 0
    started.append(start_node(cluster, WIPED))
    wait_until(lambda: WIPED in signers_after(cluster, rotated_at + 1)(), "its new key signing")
    events = [line.get("event") for line in log_lines(log_file)[logged_before:]]
    assert "following" in events, events  # it started as a follower: no validator at height 0
    assert events.index("following") < events.index("seated")
    return rotated_at


def log_lines(path: Path) -> list[dict[str, Any]]:
    lines = []
    for text in path.read_text().splitlines():
        try:
            lines.append(json.loads(text))
        except json.JSONDecodeError:
            lines.append({})  # a banner line: not a structured one
    return lines


def followed(cluster: RunningCluster, removed_at: int) -> None:
    """The removed node, still running, follows the chain past its removal and says so."""
    genesis = genesis_mod.load(cluster.genesis)
    url = next(v.url for v in genesis.validators if v.id == REMOVED)
    key = crypto.load_private_key(cluster.root / "clients" / "auditor.pem")
    target = removed_at + FOLLOWED_BLOCKS
    with Client(url, identity="auditor", key=key, genesis=genesis) as node:
        wait_until(lambda: int(node.node_status()["height"]) >= target, "the follower's head")
        status = node.node_status()
        assert (status["validator"], status["index"]) == (False, None), status
        assert status["not_validator_since"] == removed_at + 1, status
        assert (status["ready"], status["not_ready"]) == (False, "following"), status
        with auditor(cluster, cluster.url, genesis) as validator:
            assert node.block(target)["hash"] == validator.block(target)["hash"]
        assert node.get("/healthz")["status"] == "alive"
        with pytest.raises(Refused) as refused:
            node.get("/readyz")
        assert (refused.value.status, refused.value.code) == (503, "following")
        with pytest.raises(Refused) as refused:
            node.submit(node.build("fiscal/follower/1", "record", {"n": 1}))
        assert (refused.value.status, refused.value.code) == (503, "not_validator")

"""Nodes the validator set in force does not hold follow the chain, on a real cluster under
steady acknowledged load (docs/protocol.md 13.6).

A genesis validator's key is rotated, the node stopped, its data dir wiped and the node
started on the new key: it follows from the genesis (a syncing node, no validator), then the
set in force seats it and it signs certificates again. A validator is removed while it runs:
it says it is none (`/readyz` 503 `following`, `/healthz` 200), and the validators serve it
no block after the one that removed it (its key is no longer theirs): its store ends there
and verifies from the genesis alone. No acknowledged tx is lost. The processes this test
starts itself are stopped by PID.
"""

import http.client
import json
import re
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest

from cli import processes
from cli.network import load as load_network
from ledger import genesis as genesis_mod
from node import tls
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
BLOCKS_AFTER: Final = (
    3  # blocks the validators commit after the removal, the removed node gets none
)


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
        retired_head = retired(cluster, removed_at)
        load.wait_acks(ACKS_BETWEEN_STEPS)
        load.finish()
    finally:
        load.finish()
        for proc in started:
            processes.stop(proc)
    assert rotated_at < removed_at
    assert retired_head == removed_at  # it holds the block that removed it, and none after
    with auditor(cluster, cluster.url) as node:
        for tx_id, height in load.acked.items():
            status = node.status(tx_id)
            assert (status.committed, status.height) == (True, height), tx_id
    data = cluster.root / "nodes" / WIPED / "data"  # stopped: replayed from the genesis alone
    assert verified_head(cluster, data) > removed_at


def verified_head(cluster: RunningCluster, data: Path) -> int:
    """`cityledger verify` of a stopped node's store from the genesis alone: its head."""
    verified = cl(cluster, "verify", "--data-dir", str(data), "--genesis", str(cluster.genesis))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    found = re.search(r"to head (\d+) ", verified.stdout)
    assert found is not None, verified.stdout
    return int(found.group(1))


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


def retired(cluster: RunningCluster, removed_at: int) -> int:
    """The removed node, still running, says it is no validator; the validators move on and
    serve it nothing (403 to its block fetches). Stopped by PID; returns its store's head."""
    net = load_network(cluster.root)
    log_file = net.log_file(REMOVED)

    def following() -> bool:
        lines = log_lines(log_file)
        return any(
            x.get("event") == "following" and x.get("since") == removed_at + 1 for x in lines
        )

    wait_until(following, "the removed node to say it follows")
    genesis = genesis_mod.load(cluster.genesis)
    url = next(v.url for v in genesis.validators if v.id == REMOVED)
    with auditor(cluster, cluster.url) as validator:
        wait_until(lambda: int(validator.node_status()["height"]) >= removed_at + BLOCKS_AFTER,
                   "the validators to commit past the removal")  # fmt: skip
    port = int(url.rsplit(":", 1)[1])
    context = ssl.create_default_context(cadata=tls.anchors_pem(genesis))  # its genesis anchor
    assert probe(context, port, "/healthz") == (200, "alive")
    assert probe(context, port, "/readyz") == (503, "following")
    record = processes.read_pid(net, REMOVED)
    assert record is not None
    stop_pid(record.pid)
    return verified_head(cluster, cluster.root / "nodes" / REMOVED / "data")


def probe(context: ssl.SSLContext, port: int, path: str) -> tuple[int, str]:
    """An open probe of the node at `port` over TLS: its status and its status or error word."""
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = json.loads(response.read())
    finally:
        conn.close()
    return response.status, str(body.get("status") or body.get("error"))

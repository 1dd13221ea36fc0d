"""Governance against a real 4-node cluster, all through the `cityledger` command: a clerk is
added by one admin's proposal and two other organisations' approvals, commits, reads; then it
is revoked and its next tx is refused `revoked`; `members` and `/v1/config` show each
configuration by height; every node holds the same chain, which `verify` replays from genesis.

One cluster for the module (`cluster init` writes one admin per organisation), stopped by PID.
Nothing sleeps: every command waits for its commit.
"""

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli.conftest import RunningCluster, no_traceback, run, running_cluster

FINANCE = "City Finance Bureau"
NODES = ("finance", "planning", "harbor-mutual", "civic-shield")
LOG_WAIT_S = 10.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    with running_cluster(tmp_path_factory.mktemp("cluster") / "net") as running:
        yield running


def cl(cluster: RunningCluster, *args: str) -> Any:
    """`cityledger ARGS` against the cluster, as its auditor unless ARGS say otherwise."""
    result = run(*args, **cluster.env("auditor"))
    no_traceback(result.stderr)
    return result


def admin(cluster: RunningCluster, slug: str) -> list[str]:
    return ["--admin", f"{slug}-admin", "--key", str(cluster.root / "admins" / f"{slug}-admin.pem")]


def gov(cluster: RunningCluster, *args: str) -> dict[str, Any]:
    result = cl(cluster, "gov", *args, "--json")
    assert result.returncode == 0, result.stderr
    answer: dict[str, Any] = json.loads(result.stdout)
    assert answer["outcome"] == "accepted", answer
    return answer


def enact(cluster: RunningCluster, change: str, *options: str) -> dict[str, Any]:
    """Propose as the finance bureau, approve as the planning office and one insurer (3 of 4
    voting organisations: the default quorum); the last approval's status."""
    proposal = gov(cluster, "propose", *admin(cluster, "finance"), change, *options)
    pid = proposal["id"]
    gov(cluster, "approve", *admin(cluster, "planning"), pid)
    listed = json.loads(cl(cluster, "gov", "list", "--json").stdout)
    assert [p["id"] for p in listed["proposals"]] == [pid], "pending: 2 of 3 approvals"
    last = gov(cluster, "approve", *admin(cluster, "harbor-mutual"), pid)
    assert (last["proposal_status"], last["effective_height"]) == ("effective", last["height"])
    return last


def logged_by_every_node(cluster: RunningCluster, text: str) -> None:
    """Each node's log holds `text` (a node logs a block's effects once it commits it: the
    others may be a moment behind the one that answered)."""
    logs = [cluster.root / "logs" / f"{n}.log" for n in NODES]
    deadline = time.monotonic() + LOG_WAIT_S
    while not all(text in log.read_text() for log in logs):
        assert time.monotonic() < deadline, [
            log.name for log in logs if text not in log.read_text()
        ]
        time.sleep(0.05)


def submit(cluster: RunningCluster, client: str, key: Path, record: str) -> Any:
    return cl(cluster, "submit", "--client", client, "--key", str(key), record, "record",
              json.dumps({"by": client}), "--wait", "--json")  # fmt: skip


def test_a_clerk_added_commits_and_once_revoked_is_refused(
    cluster: RunningCluster, tmp_path: Path
) -> None:
    key = tmp_path / "new-clerk.pem"
    made = cl(cluster, "keys", "new", str(key), "--json")
    assert made.returncode == 0, made.stderr
    before = submit(cluster, "new-clerk", key, "fiscal/gov/1")
    assert before.returncode == 1
    assert "unknown_identity" in before.stderr  # its signed request is refused at once

    added = enact(cluster, "add-client", "--id", "new-clerk", "--organisation", FINANCE,
                  "--public-key-file", str(key))  # fmt: skip
    h = str(added["height"])
    followed = cl(cluster, "events", "--from", h, "--until", h)
    assert followed.returncode == 0, followed.stderr
    assert f"gov    {h}  effect  {added['id']}  add-client new-clerk" in followed.stdout
    logged_by_every_node(cluster, '"governance_effect"')
    committed = submit(cluster, "new-clerk", key, "fiscal/gov/1")
    assert committed.returncode == 0, committed.stderr
    status = json.loads(committed.stdout)
    assert (status["status"], status["outcome"]) == ("committed", "accepted")
    assert status["height"] > added["height"]
    read = cl(cluster, "get", "fiscal/gov/1", "--json", "--client", "new-clerk", "--key", str(key))
    assert read.returncode == 0, read.stderr
    assert json.loads(read.stdout)["value"] == {"by": "new-clerk"}

    revoked = enact(cluster, "revoke-client", "--id", "new-clerk")
    after = submit(cluster, "new-clerk", key, "fiscal/gov/2")
    assert after.returncode == 1
    assert "revoked" in after.stderr

    now = json.loads(cl(cluster, "members", "--json").stdout)
    assert "new-clerk" not in {c["id"] for c in now["clients"]}
    assert now["retired"] == ["new-clerk"]
    assert (now["epoch"], now["version"], now["since"]) == (0, 2, revoked["height"])
    then = json.loads(cl(cluster, "members", "--at", str(added["height"]), "--json").stdout)
    assert "new-clerk" in {c["id"] for c in then["clients"]}
    assert then["version"] == 1
    shown = json.loads(cl(cluster, "gov", "show", revoked["id"], "--json").stdout)
    assert (shown["status"], shown["effective_height"]) == ("effective", revoked["height"])
    assert len(shown["approvals"]) == 3
    clerk = cluster.root / "clients" / "planning-clerk.pem"
    assert submit(cluster, "planning-clerk", clerk, "permits/gov/after").returncode == 0
    proven_with_the_genesis_alone(cluster, status["tx_id"], tmp_path / "bundle.json")


def proven_with_the_genesis_alone(cluster: RunningCluster, tx_id: str, path: Path) -> None:
    """The added clerk's tx, proven after its revocation: the bundle carries both changes
    (docs/protocol.md 14.5) and `verify-proof` needs the genesis alone; altered bytes of its
    governance part are refused."""
    made = cl(cluster, "proof", tx_id, "-o", str(path), "--genesis", str(cluster.genesis))
    assert made.returncode == 0, made.stderr
    verified = cl(cluster, "verify-proof", str(path), "--genesis", str(cluster.genesis), "--json")
    assert verified.returncode == 0, verified.stderr
    view = json.loads(verified.stdout)
    assert (view["client_id"], view["outcome"], view["governance_changes"]) == (
        "new-clerk", "accepted", 2,
    )  # fmt: skip
    data = path.read_bytes()
    start = data.index(b'"governance"')
    for i in range(start + 20, len(data), (len(data) - start) // 7):
        if data[i : i + 1] not in b"0123456789abcdef":
            continue
        path.write_bytes(data[:i] + (b"0" if data[i : i + 1] != b"0" else b"1") + data[i + 1 :])
        altered = cl(cluster, "verify-proof", str(path), "--genesis", str(cluster.genesis))
        assert altered.returncode == 1, (i, data[i - 30 : i + 30])


def test_a_clerks_key_rotated_signs_and_the_old_one_no_longer(
    cluster: RunningCluster, tmp_path: Path
) -> None:
    old_key = cluster.root / "clients" / "planning-clerk.pem"
    new_key = tmp_path / "planning-clerk-2.pem"
    assert cl(cluster, "keys", "new", str(new_key)).returncode == 0
    enact(cluster, "rotate-client-key", "--id", "planning-clerk", "--public-key-file", str(new_key))
    fresh = submit(cluster, "planning-clerk", new_key, "permits/gov/1")
    assert fresh.returncode == 0, fresh.stderr
    assert json.loads(fresh.stdout)["outcome"] == "accepted"
    stale = submit(cluster, "planning-clerk", old_key, "permits/gov/2")
    assert stale.returncode == 1
    assert "bad_signature" in stale.stderr  # its signed request no longer verifies


def test_refusals_carry_their_codes(cluster: RunningCluster) -> None:
    outsider = cl(cluster, "gov", "approve", *admin(cluster, "finance"), "no-such-proposal")
    assert outsider.returncode == 1
    assert "unknown_proposal" in outsider.stderr
    rules = cl(cluster, "gov", "propose", *admin(cluster, "finance"), "set-params",
               "--param", "rules.round_amount_cents=100")  # fmt: skip
    assert rules.returncode == 1
    assert "not_in_force" in rules.stderr
    usage = cl(cluster, "gov", "propose", *admin(cluster, "finance"), "add-client", "--id", "x")
    assert usage.returncode == 2
    assert "missing" in usage.stderr


def test_every_node_verifies_the_chain_with_its_governance_from_genesis(
    cluster: RunningCluster,
) -> None:
    for port in range(cluster.base_port, cluster.base_port + 4):
        node = f"https://127.0.0.1:{port}"
        result = cl(cluster, "verify", "--node", node, "--genesis", str(cluster.genesis))
        assert result.returncode == 0, result.stdout + result.stderr

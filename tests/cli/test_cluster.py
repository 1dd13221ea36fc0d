"""The CLI against a real 4-node cluster: `cluster init` and `cluster up --detach` as real
processes, then every online command and its `--json` and errors, then `cluster down`.

One cluster for the module, stopped by PID in the fixture's finally. Commits are awaited with
`submit --wait`; nothing sleeps.
"""

import http.client
import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli.conftest import RunningCluster, alive, no_traceback, run, running_cluster

ALLOCATION = "fiscal/budget/2025/roads"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    with running_cluster(tmp_path_factory.mktemp("cluster") / "net") as running:
        yield running


def cl(cluster: RunningCluster, *args: str, input_text: str | None = None) -> Any:
    """`cityledger ARGS` against the cluster, signed as its auditor unless ARGS say otherwise."""
    result = run(*args, input_text=input_text, **cluster.env("auditor"))
    no_traceback(result.stderr)
    return result


def submitted(cluster: RunningCluster, client: str, key: str, body: dict[str, Any]) -> Any:
    result = cl(cluster, "submit", *cluster.client(client), key, "record", json.dumps(body),
                "--wait", "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def history(cluster: RunningCluster) -> list[dict[str, Any]]:
    """Two versions of one record and one record of every other organisation."""
    out = [submitted(cluster, "finance-clerk", ALLOCATION, {"amount_cents": 100})]
    out.append(submitted(cluster, "planning-clerk", "permits/b/1", {"status": "approved"}))
    out.append(
        submitted(
            cluster, "harbor-mutual-clerk", "policies/harbor-mutual/1", {"permit": "permits/b/1"}
        )
    )
    out.append(
        submitted(
            cluster,
            "civic-shield-clerk",
            "claims/civic-shield/1",
            {"policy": "policies/harbor-mutual/1"},
        )
    )
    out.append(submitted(cluster, "finance-clerk", ALLOCATION, {"amount_cents": 250}))
    return out


def test_status_shows_every_node_healthy(cluster: RunningCluster) -> None:
    table = cl(cluster, "cluster", "status", str(cluster.root))
    assert table.returncode == 0
    lines = table.stdout.strip().splitlines()
    assert lines[0].split() == ["NODE", "ORGANISATION", "KIND", "MEMBER", "ROLE", "VIEW", "HEIGHT",
                                "HEAD", "HEALTHY"]  # fmt: skip
    assert lines[1].startswith("finance ")
    assert " primary " in lines[1]
    doc = json.loads(cl(cluster, "cluster", "status", str(cluster.root), "--json").stdout)
    rows = doc["nodes"]
    assert [r["node_id"] for r in rows] == ["finance", "planning", "harbor-mutual", "civic-shield"]
    assert all(r["healthy"] and r["view"] == 0 and r["member"] == "in force" for r in rows)
    assert [r["role"] for r in rows] == ["primary", "backup", "backup", "backup"]


def test_up_again_refuses(cluster: RunningCluster) -> None:
    result = cl(cluster, "cluster", "up", str(cluster.root), "--detach")
    assert result.returncode == 1
    assert "already running" in result.stderr


def test_submit_wait_json_is_the_contract(history: list[Any]) -> None:
    for status in history:
        assert set(status) == {"tx_id", "status", "height", "index", "outcome", "reason"}
        assert status["status"] == "committed"
        assert (status["outcome"], status["reason"]) == ("accepted", None)
        assert status["height"] >= 1
    heights = [s["height"] for s in history]
    assert heights == sorted(heights)


def test_submit_prints_the_height(cluster: RunningCluster) -> None:
    result = cl(cluster, "submit", *cluster.client("planning-clerk"), "permits/b/2", "permit",
                "-", "--wait", input_text='{"floors": 6}')  # fmt: skip
    assert result.returncode == 0, result.stderr
    fields = dict(line.split(":", 1) for line in result.stdout.strip().splitlines())
    assert fields["status"].strip() == "committed"
    assert int(fields["height"]) >= 1
    without_wait = cl(cluster, "submit", *cluster.client("planning-clerk"), "permits/b/3",
                      "permit", "{}", "--json")  # fmt: skip
    status = json.loads(without_wait.stdout)
    assert status["status"] in ("pending", "committed")


def test_submit_with_genesis_checks_locally(cluster: RunningCluster) -> None:
    result = cl(cluster, "submit", *cluster.client("finance-clerk"), "--genesis",
                str(cluster.genesis), "fiscal/g/1", "t", "{}", "--wait", "--json")  # fmt: skip
    assert json.loads(result.stdout)["status"] == "committed"


@pytest.mark.parametrize(
    ("client", "key_of", "record_key", "says"),
    [
        (
            "finance-clerk",
            "finance-clerk",
            "claims/x",
            "City Finance Bureau may not write 'claims/x'",
        ),
        ("mayor", "finance-clerk", "fiscal/x", "in force (`cityledger members`)?"),
        ("finance-clerk", "planning-clerk", "fiscal/x", "is --key the private key of --client?"),
    ],
)
def test_refused_records(
    cluster: RunningCluster, client: str, key_of: str, record_key: str, says: str
) -> None:
    key = str(cluster.root / "clients" / f"{key_of}.pem")
    for extra in ([], ["--genesis", str(cluster.genesis)]):
        result = cl(cluster, "submit", "--client", client, "--key", key, *extra, record_key,
                    "t", "{}", "--wait")  # fmt: skip
        assert result.returncode == 1
        assert says in result.stderr
        assert result.stderr.count("\n") == 1
        assert result.stderr.startswith("Error: ")


def test_get(cluster: RunningCluster, history: list[Any]) -> None:
    table = cl(cluster, "get", ALLOCATION)
    assert table.returncode == 0
    assert '"amount_cents": 250' in table.stdout
    assert history[-1]["tx_id"] in table.stdout
    doc = json.loads(cl(cluster, "get", ALLOCATION, "--json").stdout)
    assert doc["value"] == {"amount_cents": 250}
    assert doc["height"] == history[-1]["height"]
    missing = cl(cluster, "get", "fiscal/none")
    assert missing.returncode == 1
    assert "no record 'fiscal/none'" in missing.stderr


def test_history(cluster: RunningCluster, history: list[Any]) -> None:
    text = cl(cluster, "history", ALLOCATION)
    assert text.returncode == 0
    assert text.stdout.startswith(f"{ALLOCATION}: 2 versions, oldest first")
    assert text.stdout.index(history[0]["tx_id"]) < text.stdout.index(history[-1]["tx_id"])
    doc = json.loads(cl(cluster, "history", ALLOCATION, "--json").stdout)
    assert [v["tx_id"] for v in doc["versions"]] == [history[0]["tx_id"], history[-1]["tx_id"]]
    assert cl(cluster, "history", "claims/none").returncode == 1


def test_tx(cluster: RunningCluster, history: list[Any]) -> None:
    tx_id = history[3]["tx_id"]
    text = cl(cluster, "tx", tx_id)
    assert text.returncode == 0
    assert "claims/civic-shield/1" in text.stdout
    assert "civic-shield-clerk" in text.stdout
    doc = json.loads(cl(cluster, "tx", tx_id, "--json").stdout)
    assert {"tx_id", "status", "height", "index"} <= set(doc)
    assert (doc["status"], doc["height"]) == ("committed", history[3]["height"])
    unknown = cl(cluster, "tx", "00" * 32)
    assert unknown.returncode == 1
    assert "no tx" in unknown.stderr


def test_block(cluster: RunningCluster, history: list[Any]) -> None:
    height = history[2]["height"]
    text = cl(cluster, "block", str(height))
    assert text.returncode == 0
    assert text.stdout.startswith(f"block {height}  ")
    assert "of 4 validators" in text.stdout
    assert "policies/harbor-mutual/1" in text.stdout
    doc = json.loads(cl(cluster, "block", str(height), "--json").stdout)
    assert {"height", "hash", "header", "txs", "certificate"} <= set(doc)
    latest = json.loads(cl(cluster, "block", "latest", "--json").stdout)
    assert latest["height"] >= history[-1]["height"]
    named = cl(cluster, "block", "latest", "--genesis", str(cluster.genesis))
    assert "certified by" in named.stdout
    missing = cl(cluster, "block", "100000")
    assert missing.returncode == 1
    assert "no block at height 100000" in missing.stderr


def test_proof_and_verify_proof(
    cluster: RunningCluster, history: list[Any], tmp_path: Path
) -> None:
    tx_id = history[3]["tx_id"]
    out = tmp_path / "bundle.json"
    made = cl(cluster, "proof", tx_id, "-o", str(out), "--genesis", str(cluster.genesis))
    assert made.returncode == 0, made.stderr
    assert f"written to {out}" in made.stdout
    checked = cl(cluster, "verify-proof", str(out), "--genesis", str(cluster.genesis))
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.strip().splitlines()[-1].startswith(f"VALID: tx {tx_id[:16]}")
    doc = json.loads(cl(cluster, "verify-proof", str(out), "--genesis", str(cluster.genesis),
                        "--json").stdout)  # fmt: skip
    assert doc["ok"]
    assert (doc["height"], doc["index"]) == (history[3]["height"], history[3]["index"])
    assert doc["key"] == "claims/civic-shield/1"
    printed = cl(cluster, "proof", tx_id)
    assert json.loads(printed.stdout)["tx_id"] == tx_id
    summary = json.loads(cl(cluster, "proof", tx_id, "-o", str(out), "--json").stdout)
    assert summary["height"] == history[3]["height"]
    assert summary["file"] == str(out)
    altered = tmp_path / "altered.json"
    altered.write_text(out.read_text().replace('"index": ', '"index": 1', 1))
    bad = cl(cluster, "verify-proof", str(altered), "--genesis", str(cluster.genesis))
    assert bad.returncode == 1
    assert "the proof does not verify" in bad.stderr
    assert cl(cluster, "proof", "00" * 32).returncode == 1


def test_verify_node(cluster: RunningCluster, history: list[Any]) -> None:
    text = cl(cluster, "verify", "--node", cluster.url, "--genesis", str(cluster.genesis))
    assert text.returncode == 0, text.stdout + text.stderr
    assert text.stdout.strip().splitlines()[-1].startswith("OK: ")
    from_env = cl(cluster, "verify", "--genesis", str(cluster.genesis), "--json")
    doc = json.loads(from_env.stdout)
    assert doc["ok"]
    assert doc["blocks_checked"] >= history[-1]["height"]
    assert doc["source"] == cluster.url


def test_verify_data_dir_of_a_running_node_says_use_node(cluster: RunningCluster) -> None:
    data = cluster.root / "nodes" / "planning" / "data"
    result = cl(cluster, "verify", "--data-dir", str(data), "--genesis", str(cluster.genesis))
    assert result.returncode == 1
    assert "--node URL" in result.stderr


def test_the_cli_refuses_a_node_whose_certificate_is_not_bound_to_the_genesis_keys(
    cluster: RunningCluster, tmp_path: Path
) -> None:
    """Another network with the same chain id and the same validator names, other keys: its
    genesis does not vouch for these nodes, and the CLI sends them nothing."""
    other = tmp_path / "other"
    assert run("cluster", "init", str(other), "--base-port", str(cluster.base_port)).returncode == 0
    for args in (["verify", "--node", cluster.url], ["get", "fiscal/x"]):
        result = cl(cluster, *args, "--genesis", str(other / "genesis.toml"))
        assert result.returncode == 1, result.stdout
        assert "is not a validator of the genesis" in result.stderr, result.stderr
    env_only = run("get", "fiscal/x", CITYLEDGER_NODE=cluster.url,
                   CITYLEDGER_GENESIS=str(other / "genesis.toml"))  # fmt: skip
    assert env_only.returncode == 1
    assert "is not a validator of the genesis" in env_only.stderr
    no_genesis = run("get", "fiscal/x", CITYLEDGER_NODE=cluster.url, CITYLEDGER_GENESIS="")
    assert no_genesis.returncode == 1
    assert "pass --genesis" in no_genesis.stderr


def test_tls_anchors_let_an_ordinary_tls_client_check_the_nodes(
    cluster: RunningCluster, tmp_path: Path
) -> None:
    anchors = tmp_path / "anchors.pem"
    result = run("tls-anchors", "--genesis", str(cluster.genesis), "-o", str(anchors))
    assert result.returncode == 0, result.stderr
    context = ssl.create_default_context(cafile=str(anchors))  # host names checked as well
    conn = http.client.HTTPSConnection("127.0.0.1", cluster.base_port, context=context)
    try:
        conn.request("GET", "/v1/openapi.json")  # public: no identity needed
        assert conn.getresponse().status == 200
    finally:
        conn.close()


def test_plain_http_to_a_tls_node_gets_no_answer(cluster: RunningCluster) -> None:
    plain = cluster.url.replace("https://", "http://")
    result = run("get", "fiscal/x", CITYLEDGER_NODE=plain)
    assert result.returncode == 1
    assert "did not answer in HTTP" in result.stderr, result.stderr


def test_zz_down_stops_every_node(cluster: RunningCluster) -> None:
    """Last in the module: the fixture's own down then finds nothing to stop."""
    pids = cluster.pids()
    assert len(pids) == 4
    assert all(alive(p) for p in pids)
    down = cl(cluster, "cluster", "down", str(cluster.root), "--json")
    assert down.returncode == 0
    assert [n["result"] for n in json.loads(down.stdout)["nodes"]] == ["stopped"] * 4
    assert not any(alive(p) for p in pids)
    assert not list((cluster.root / "pids").glob("*.pid"))
    status = cl(cluster, "cluster", "status", str(cluster.root))
    assert status.returncode == 1
    assert "not running" in status.stdout
    offline = cl(cluster, "verify", "--data-dir", str(cluster.root / "nodes" / "finance"),
                 "--genesis", str(cluster.genesis))  # fmt: skip
    assert offline.returncode == 0
    assert offline.stdout.startswith("OK: ")

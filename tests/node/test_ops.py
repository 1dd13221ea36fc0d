"""Operations: /v1/status, /metrics (parsed as Prometheus text), /v1/openapi.json (validated)."""

import json
import re
import time
from pathlib import Path
from typing import Any

from openapi_spec_validator import validate
from prometheus_client.parser import text_string_to_metric_families

from node import openapi
from node.app import create_app
from node.config import Config, Identity
from node.metrics import COUNTED_BY_NODE
from tests import factory
from tests.node.conftest import start_cluster, stop_all, tx_json

DASHBOARD = Path(__file__).resolve().parents[2] / "configs" / "grafana" / "cityledger-node.json"
# What a dashboard expression names besides metrics: PromQL functions, keywords, label names.
_PROMQL_WORDS = {"rate", "increase", "histogram_quantile", "sum", "by", "le", "instance", "time"}


def check_conventions(families: dict[str, Any], status: dict[str, Any]) -> None:
    """The ecosystem's conventions: process and platform collectors, build info, peers up by
    validator id, the last commit's time, and each event counted by one series only."""
    for name in ("process_resident_memory_bytes", "process_cpu_seconds", "process_open_fds",
                 "python_info", "cityledger_build_info", "cityledger_last_commit_timestamp_seconds",
                 "cityledger_quorum_reachable", "cityledger_ready"):  # fmt: skip
        assert name in families, name
    (build,) = families["cityledger_build_info"].samples
    assert build.labels["version"]
    assert build.value == 1
    peers_up = {s.labels["peer"]: s.value for s in families["cityledger_peer_up"].samples}
    assert peers_up == {"node1": 1.0, "node2": 1.0, "node3": 1.0}  # by id, all heard
    (last,) = families["cityledger_last_commit_timestamp_seconds"].samples
    assert abs(last.value - time.time()) < 600
    events = {s.labels["event"] for s in families["cityledger_replica_events"].samples}
    assert events.isdisjoint(COUNTED_BY_NODE)  # counted once, by their own series
    assert status["ready"] is True


def check_dashboard(metrics_text: str) -> None:
    """Every metric the Grafana dashboard queries is in a node's /metrics output (a family is
    there from its TYPE line on, before its first labelled sample)."""
    names = {line.split("{")[0].split(" ")[0] for line in metrics_text.splitlines()
             if line and not line.startswith("#")}  # fmt: skip
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    for line in metrics_text.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(" ")
            names |= {family + end for end in suffixes.get(kind, ("",))}
    queried = set()
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel["targets"]:
            expr = re.sub(r'\{\{[^}]*\}\}|\[[0-9a-z]+\]|"[^"]*"|[0-9.]+', " ", target["expr"])
            queried |= set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr)) - _PROMQL_WORDS
    assert queried, "the dashboard queries nothing"
    missing = sorted(queried - names)
    assert not missing, f"the dashboard queries metrics /metrics does not have: {missing}"


async def test_status_metrics_and_openapi(tmp_path: Path, http) -> None:
    c = await start_cluster(tmp_path, 4)
    try:
        tx = c.tx("fiscal/", "m", {"v": 1})
        async with http.post(c.url(0) + "/v1/transactions?wait=true", json=tx_json(tx)) as r:
            assert r.status == 200
        async with http.post(c.url(0) + "/v1/transactions", json=tx_json(tx)) as r:
            assert r.status == 409
        async with http.get(c.url(0) + "/v1/status") as r:
            status = await r.json()
        assert set(status) >= {
            "node_id", "view", "primary", "height", "head_hash", "mempool", "peers",
        }  # fmt: skip
        assert status["node_id"] == "node0"
        assert status["height"] >= 1
        assert [p["id"] for p in status["peers"]] == ["node1", "node2", "node3"]

        async with http.get(c.metrics_url(0) + "/metrics") as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/plain")
            text = await r.text()
            families = {f.name: f for f in text_string_to_metric_families(text)}
        check_conventions(families, status)
        check_dashboard(text)
        for name in (
            "cityledger_height", "cityledger_view", "cityledger_view_changes",
            "cityledger_txs_committed", "cityledger_txs_rejected", "cityledger_mempool_txs",
            "cityledger_peer_send_failures", "cityledger_commit_latency_seconds",
        ):  # fmt: skip
            assert name in families, name
        value = {s.name: s.value for s in families["cityledger_height"].samples}
        assert value["cityledger_height"] == status["height"]
        latency = {s.name: s.value for s in families["cityledger_commit_latency_seconds"].samples}
        assert latency["cityledger_commit_latency_seconds_count"] == 1
        rejected = families["cityledger_txs_rejected"].samples
        assert [(s.labels, s.value) for s in rejected if s.name.endswith("_total")] == [
            ({"reason": "duplicate"}, 1.0)
        ]

        async with http.get(c.url(2) + "/v1/openapi.json") as r:
            document = await r.json()
        validate(document)  # raises on any violation of the OpenAPI 3.1 schema
    finally:
        await stop_all(c)


def test_openapi_documents_every_route(tmp_path: Path) -> None:
    net = factory.network(4)
    config = Config("node0", tmp_path / "key.pem", tmp_path / "data", "127.0.0.1", 0,
                    tmp_path / "genesis.toml")  # fmt: skip
    app = create_app(config, Identity(net.genesis, 0, net.validator_keys[0]))  # not started
    documented = {
        (method.upper(), path)
        for path, ops in openapi.document()["paths"].items()
        for method in ops
    }
    routes = set()
    for route in app.router.routes():
        assert route.resource is not None
        info = route.resource.get_info()
        path = str(info.get("path") or info.get("formatter"))
        if route.method != "HEAD":
            routes.add((route.method, path.replace("{key:.+}", "{key}")))
    assert routes == documented


def test_every_operation_has_its_own_id_and_every_body_form_a_named_schema() -> None:
    document = openapi.document()
    ids = [op["operationId"] for ops in document["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    assert all(i.isidentifier() for i in ids)
    schemas = document["components"]["schemas"]
    for name in ("Submission", "TransactionIn"):  # a generator names inline forms itself
        assert all(set(form) == {"$ref"} for form in schemas[name]["oneOf"]), name
    submit = document["paths"]["/v1/transactions"]["post"]
    assert submit["operationId"] == "submit_transactions"

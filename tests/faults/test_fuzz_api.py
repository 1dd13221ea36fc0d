"""Fuzz the HTTP API of a real node from its own OpenAPI document with schemathesis.

Schemathesis (the CLI, as its own process) reads GET /v1/openapi.json of one node of a running
4-node cluster and runs its phases (coverage, fuzzing, stateful) with a bounded example count per
operation, every check on but one (with its reason) (tests/faults/schemathesis.toml is written
per run). Record keys, tx ids and heights of a few committed txs are offered half of the time,
so reads reach real data. Afterwards: no 5xx (the `not_a_server_error` check and the HAR record
of every exchange), no submission was admitted (every POST /v1/transactions got a 4xx), every
node still healthy on the same head with nothing pending: nothing was written.
"""

import asyncio
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Final

import pytest

from node import tls
from tests.faults.conftest import ClusterFactory
from tests.faults.figures import report
from tests.faults.harness import ROOT, Cluster, loopback_network, make_tx

pytest.importorskip("schemathesis", reason="schemathesis (a test dependency) is not installed")
from tests.faults import st_hooks  # after the skip: it imports schemathesis

RUN_TIMEOUT_S: Final = 600.0

CONFIG: Final = """
[generation]
database = "none"
deterministic = true  # the same cases every run: a failure replays as it is

# 413 is how the node refuses what is too large (a body, a batch of more than 10,000 txs).
[checks.negative_data_rejection]
expected-statuses = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429]

[dictionaries.tx_ids]
values = {tx_ids}

[dictionaries.keys]
values = {keys}

[dictionaries.heights]
values = ["1", "2", "latest"]

[parameters]
"path.tx_id" = {{ dictionary = "tx_ids", probability = 0.5 }}
"path.key" = {{ dictionary = "keys", probability = 0.5 }}
"path.height" = {{ dictionary = "heights", probability = 0.5 }}
"""


async def seed_data(c: Cluster) -> tuple[list[str], list[str]]:
    tx_ids, keys = [], []
    for k, ns in enumerate(("fiscal/", "permits/", "claims/harbor-mutual/")):
        tx = make_tx(c.net, ns, f"fuzz/{k}", {"seq": k}, nonce=k)
        status, body = await c.submit(0, tx)
        assert status == 200, body
        tx_ids.append(tx.tx_id.hex())
        keys.append(tx.key)
    return tx_ids, keys


async def schemathesis_run(c: Cluster, workdir: Path, max_examples: int) -> tuple[int, str]:
    tx_ids, keys = await seed_data(c)
    config = workdir / "schemathesis.toml"
    config.write_text(CONFIG.format(tx_ids=json.dumps(tx_ids), keys=json.dumps(keys)))
    anchors = workdir / "anchors.pem"  # the genesis' validators: all it trusts (TLS)
    anchors.write_text(tls.anchors_pem(c.net.genesis))
    command = [
        sys.executable, "-c", "from schemathesis.cli import schemathesis; schemathesis()",
        "--config-file", str(config), "run", c.api(0) + "/v1/openapi.json",
        "--max-examples", str(max_examples), "--checks", "all",
        # The schema cannot say what makes a tx valid (a client signature over the canonical
        # bytes, a fresh timestamp) nor every bound the node checks: schema-valid requests are
        # refused, as they must be, and this check would only restate that.
        "--exclude-checks", "positive_data_acceptance",
        # A record key is a path of segments: most generated strings are not usable in the URL
        # path, and schemathesis would stop the operation for filtering too much.
        "--suppress-health-check", "filter_too_much",
        # The event stream answers a valid request with a stream that never ends (it follows
        # the chain): a client that reads whole answers would wait forever. Its bad input (400)
        # and its bounds are tested in tests/node/test_events.py.
        "--exclude-path", "/v1/events",
        "--tls-verify", str(anchors),
        "--workers", "1", "--report", "json,har", "--report-dir", str(workdir),
        "--report-json-path", str(workdir / "run.json"),
        "--report-har-path", str(workdir / "run.har"), "--output-truncate", "true",
    ]  # fmt: skip
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.faults.st_hooks",
           "PYTHONPATH": str(ROOT), "NO_COLOR": "1",
           # every request signed by validator 0, which may read everything
           st_hooks.IDENTITY_ENV: c.net.nodes[0].node_id,
           st_hooks.CHAIN_ENV: c.net.genesis.chain_id,
           st_hooks.KEY_ENV: str(c.net.nodes[0].key)}  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *command, cwd=workdir, env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), RUN_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


def exchanges(har: Path) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = json.loads(har.read_text())["log"]["entries"]
    return entries


async def fuzz(clusters: ClusterFactory, tmp_path: Path, max_examples: int) -> None:
    c = clusters(loopback_network(tmp_path / "net", 4))
    await c.start_all()
    workdir = tmp_path / "schemathesis"
    workdir.mkdir()
    code, output = await schemathesis_run(c, workdir, max_examples)
    summary = json.loads((workdir / "run.json").read_text())
    failures = output[output.find("FAILURES") :][:6000] if "FAILURES" in output else output[-3000:]
    assert code == 0, f"schemathesis found failures:\n{failures}"
    entries = exchanges(workdir / "run.har")
    statuses = Counter(e["response"]["status"] for e in entries)
    assert not [s for s in statuses if s >= 500], statuses
    admitted = [
        e["request"]["url"]
        for e in entries
        if e["request"]["method"] == "POST"
        and "/v1/transactions" in e["request"]["url"]
        and e["response"]["status"] < 300
    ]
    assert not admitted, f"a fuzzed submission was admitted: {admitted[:3]}"  # fmt: skip
    head = await c.wait_converged(timeout_s=30)
    for i in range(c.n):
        status = await c.status(i)
        assert status is not None
        assert status["running"]
        assert status["mempool"] == 0
        assert (status["height"], status["head_hash"]) == (head["height"], head["head_hash"])
    cases = summary["test_cases"]["generated"]
    report(
        f"API fuzz (schemathesis, max {max_examples} examples per operation)",
        f"{summary['operations']['tested']} operations, {cases} test cases, {len(entries)} "
        f"requests; statuses {dict(sorted(statuses.items()))}; no 5xx, no submission "
        f"admitted, head still {head['height']} on all 4 nodes, nothing pending",
    )


async def test_schemathesis_finds_no_server_error_and_nothing_is_written(
    clusters: ClusterFactory, tmp_path: Path
) -> None:
    await fuzz(clusters, tmp_path, max_examples=30)


@pytest.mark.slow
async def test_schemathesis_soak(clusters: ClusterFactory, tmp_path: Path) -> None:
    await fuzz(clusters, tmp_path, max_examples=1000)

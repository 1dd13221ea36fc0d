"""Who reads what, against a real cluster (`cluster init` + `cluster up` as processes): the
identities `cluster init` writes (a clerk per organisation and the auditor), the read policies
and public namespaces it writes, anonymous requests, and a browser that signs in with a key
file in the node's own page (headless Chromium) and reads what that identity may."""

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ledger import genesis as genesis_mod
from node import tls
from tests.browser import Browser, chromium_path, node_certificates, trust_certificates
from tests.cli.conftest import RunningCluster, no_traceback, run, running_cluster

CLAIM = "claims/harbor-mutual/9"  # each insurer writes its own claims/ and policies/ only
POLICY = "policies/civic-shield/3"
RECORDS = {  # clerk -> a record it writes
    "finance-clerk": "fiscal/budget/2026/parks",
    "planning-clerk": "permits/b/7",
    "harbor-mutual-clerk": CLAIM,
    "civic-shield-clerk": POLICY,
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    with running_cluster(tmp_path_factory.mktemp("access") / "net") as running:
        yield running


def as_(cluster: RunningCluster, who: str, *args: str) -> Any:
    result = run(*args, **cluster.env(who))
    no_traceback(result.stderr)
    return result


@pytest.fixture(scope="module")
def tx_ids(cluster: RunningCluster) -> dict[str, str]:
    out = {}
    for clerk, key in RECORDS.items():
        done = as_(cluster, clerk, "submit", key, "record", '{"n": 1}', "--wait", "--json")
        assert done.returncode == 0, done.stderr
        out[key.split("/")[0]] = json.loads(done.stdout)["tx_id"]
    return out


def anonymous_get(url: str, genesis: Path) -> int:
    """The status of an anonymous GET (over TLS, trusting the genesis' validators only)."""
    context = tls.genesis_client_context(genesis_mod.load(genesis))
    try:
        with urllib.request.urlopen(url, timeout=10, context=context) as answer:  # noqa: S310
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        body = json.loads(exc.read())
        assert set(body) >= {"error", "reason"}
        return int(exc.code)


def test_anonymous_requests_answer_401_except_the_public_ones(
    cluster: RunningCluster, tx_ids: dict[str, str]
) -> None:
    expected = {
        "/v1/status": 401, "/v1/blocks/1": 401, "/v1/checkpoint": 401,
        "/v1/records/fiscal/budget/2026/parks": 401, "/v1/history/claims/harbor-mutual/9": 401,
        f"/v1/transactions/{tx_ids['fiscal']}": 401,
        f"/v1/transactions/{tx_ids['permits']}/proof": 401,
        "/v1/records/permits/b/7": 200, "/v1/history/permits/b/7": 200,  # public records
        "/v1/openapi.json": 200, "/v1/auth/challenge": 200, "/explorer/": 200,
    }  # fmt: skip
    got = {path: anonymous_get(cluster.url + path, cluster.genesis) for path in expected}
    assert got == expected
    no_identity = run("get", "fiscal/budget/2026/parks", CITYLEDGER_NODE=cluster.url,
                      CITYLEDGER_GENESIS=str(cluster.genesis))  # fmt: skip
    assert no_identity.returncode == 1
    assert "pass --client and --key" in no_identity.stderr


def test_clerks_read_their_own_and_granted_namespaces_only(
    cluster: RunningCluster, tx_ids: dict[str, str]
) -> None:
    allowed = [  # (who, record): the finance bureau also reads claims/, planning fiscal/
        ("finance-clerk", "fiscal/budget/2026/parks"), ("finance-clerk", CLAIM),
        ("planning-clerk", "fiscal/budget/2026/parks"), ("harbor-mutual-clerk", CLAIM),
        ("civic-shield-clerk", "permits/b/7"),
    ]  # fmt: skip
    for who, key in allowed:
        done = as_(cluster, who, "get", key, "--json")
        assert done.returncode == 0, (who, key, done.stderr)
        assert json.loads(done.stdout)["key"] == key
    refused = [
        ("finance-clerk", POLICY), ("harbor-mutual-clerk", "fiscal/budget/2026/parks"),
        ("planning-clerk", CLAIM),
    ]  # fmt: skip
    for who, key in refused:
        done = as_(cluster, who, "history", key)
        assert done.returncode == 1, (who, key)
        assert "may not read" in done.stderr
    for args in (["block", "1"], ["verify", "--node", cluster.url, "--genesis",
                                  str(cluster.genesis)]):  # fmt: skip
        done = as_(cluster, "finance-clerk", *args)
        assert done.returncode == 1
        assert "validators and auditors" in done.stderr
    proof = as_(cluster, "finance-clerk", "proof", tx_ids["claims"], "--genesis",
                str(cluster.genesis))  # fmt: skip
    assert proof.returncode == 0, proof.stderr
    assert as_(cluster, "harbor-mutual-clerk", "proof", tx_ids["fiscal"]).returncode == 1


def test_the_auditor_reads_everything_and_writes_nothing(
    cluster: RunningCluster, tx_ids: dict[str, str]
) -> None:
    for key in RECORDS.values():
        assert as_(cluster, "auditor", "get", key).returncode == 0
    block = as_(cluster, "auditor", "block", "latest", "--json")
    assert block.returncode == 0, block.stderr
    verify = as_(cluster, "auditor", "verify", "--node", cluster.url, "--genesis",
                 str(cluster.genesis), "--json")  # fmt: skip
    assert verify.returncode == 0, verify.stderr
    assert json.loads(verify.stdout)["ok"]
    for tx_id in tx_ids.values():
        done = as_(cluster, "auditor", "proof", tx_id, "--genesis", str(cluster.genesis))
        assert done.returncode == 0, done.stderr
    write = as_(cluster, "auditor", "submit", "fiscal/audit/1", "record", "{}")
    assert write.returncode == 1
    assert "'auditor' is an auditor: auditors read everything and write nothing" in write.stderr


async def browser_read(browser: Browser, kind: str, value: str) -> str:
    """Click a read button of the page; the status line it shows (`200 ok`, `403 forbidden`)."""
    field, button = ("record-key", "record-button") if kind == "record" else (
        "block-height", "block-button")  # fmt: skip
    await browser.evaluate(
        f"document.getElementById('read-status').textContent = '';"
        f"document.getElementById('{field}').value = {json.dumps(value)};"
        f"document.getElementById('{button}').click()"
    )
    status: str = await browser.wait_for(
        "(t => t && t !== 'reading…' && t)(document.getElementById('read-status').textContent)"
    )
    return status


async def sign_in(
    browser: Browser, cluster: RunningCluster, who: str, key_of: str | None = None
) -> str:
    # The sign-in page by its fragment: once the explorer is open this changes no document, so
    # the file input found next is the one the page shows (a reload could replace it meanwhile).
    await browser.goto(cluster.url + "/explorer/#/signin", "document.body.dataset.ready === 'true'")
    await browser.evaluate(f"document.getElementById('identity').value = {json.dumps(who)}")
    await browser.set_files("#keyfile", cluster.root / "clients" / f"{key_of or who}.pem")
    await browser.evaluate("document.getElementById('signin-button').click()")
    status: str = await browser.wait_for(
        "(t => (t === 'signed in' || t.startsWith('sign-in failed')) && t)"
        "(document.getElementById('signin-status').textContent)"
    )
    return status


@pytest.mark.skipif(chromium_path() is None, reason="chromium is not installed (make test "
                    "installs it when run as root)")  # fmt: skip
async def test_a_browser_signs_in_with_a_key_file_and_reads_what_it_may(
    cluster: RunningCluster, tx_ids: dict[str, str]
) -> None:
    assert tx_ids
    # Over TLS: the browser trusts the cluster's node certificates by their keys.
    browser = await Browser.start(trust_certificates(node_certificates(cluster.root)))
    try:
        assert await sign_in(browser, cluster, "finance-clerk") == "signed in"
        who = await browser.evaluate("document.getElementById('who').textContent")
        assert who == "finance-clerk (City Finance Bureau, clerk)"
        reads = {
            "fiscal/budget/2026/parks": await browser_read(browser, "record",
                                                           "fiscal/budget/2026/parks"),
            CLAIM: await browser_read(browser, "record", CLAIM),
            POLICY: await browser_read(browser, "record", POLICY),
            "block": await browser_read(browser, "block", "latest"),
        }  # fmt: skip
        assert reads == {"fiscal/budget/2026/parks": "200 ok", CLAIM: "200 ok",
                         POLICY: "403 forbidden", "block": "403 forbidden"}  # fmt: skip
        # The session cookie is HttpOnly: no script in the page can read it.
        assert "cityledger_session" not in await browser.evaluate("document.cookie")
        # The auditor's key file opens an auditor's session, which reads blocks.
        assert await sign_in(browser, cluster, "auditor") == "signed in"
        assert await browser_read(browser, "block", "latest") == "200 ok"
        assert await browser_read(browser, "record", POLICY) == "200 ok"
        # A key file that is not the identity's is refused; nothing is signed in with it.
        failed = await sign_in(browser, cluster, "planning-clerk", key_of="finance-clerk")
        assert failed.startswith("sign-in failed: bad_signature"), failed
    finally:
        await asyncio.wait_for(browser.close(), 30)

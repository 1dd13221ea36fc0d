"""The client library and a generated OpenAPI client against a real 4-node cluster over TLS.

The library (`cli.client`) signs, submits under its retry rule (a second send of the same tx is
answered 409 `duplicate` and is success), waits, reads, pages histories, fetches the raw
certified chain and verifies it, and proves a tx against the genesis alone: synchronously and
with asyncio. Then openapi-python-client builds a client from the node's own /v1/openapi.json,
and that client submits, waits and reads, signing each request with a small httpx hook.
"""

import importlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli.client import (
    AsyncClient,
    Client,
    NotCommitted,
    Refused,
    RetryPolicy,
    load_genesis,
    load_key,
)
from cli.client.events import Event
from ledger.genesis import Genesis
from ledger.verify import ChainVerifier
from node import auth_request, tls
from tests.cli.conftest import RunningCluster, running_cluster

GENERATOR = Path(sys.executable).parent / "openapi-python-client"
GENERATE_TIMEOUT_S = 180


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    with running_cluster(tmp_path_factory.mktemp("client")) as c:
        yield c


def client_of(c: RunningCluster, name: str) -> Client:
    genesis = load_genesis(c.genesis)
    key = load_key(c.root / "clients" / f"{name}.pem")
    return Client(c.url, identity=name, key=key, genesis=genesis)


def verify_chain_pages(node: Client, genesis: Genesis, head: int) -> int:
    """Fetch blocks 1..head as bytes and verify every one against the genesis."""
    verifier = ChainVerifier(genesis, lambda _tx_id: None)
    height = 1
    while height <= head:
        _, pairs = node.chain(height, head)
        assert pairs, f"no block at {height}"
        for block, cert in pairs:
            verifier.feed(block, cert)
        height += len(pairs)
    return verifier.blocks_checked


def test_sync_client_submits_retries_waits_reads_and_proves(cluster: RunningCluster) -> None:
    genesis = load_genesis(cluster.genesis)
    with client_of(cluster, "finance-clerk") as node:
        first = node.build("fiscal/budget/2027/roads", "record", {"amount": 100})
        status = node.submit(first, wait=True)
        assert status.committed
        assert status.tx_id == first.tx_id.hex()
        assert status.height is not None
        again = node.submit(first)  # the node answers 409 duplicate: success for a retry
        assert again == status
        second = node.submit(node.build("fiscal/budget/2027/roads", "record", {"amount": 90}))
        assert second.status in ("pending", "committed")
        done = node.wait(second.tx_id, timeout_s=30)
        assert done.committed
        assert node.record("fiscal/budget/2027/roads")["value"] == {"amount": 90}
        amounts = [v["value"]["amount"] for v in node.history("fiscal/budget/2027/roads")]
        assert amounts == [100, 90]
        proven = node.prove(status.tx_id)
        assert (proven.block.header.height, proven.index) == (status.height, status.index)
        with pytest.raises(Refused) as refused:
            node.chain(1)  # whole-chain reads are for validators and auditors only
        assert refused.value.status == 403
        with pytest.raises(Refused) as unknown:
            node.status("00" * 32)
        assert (unknown.value.status, unknown.value.code) == (404, "not_found")
    with client_of(cluster, "auditor") as auditor:
        head = auditor.node_status()["height"]
        assert head >= done.height  # type: ignore[operator]
        assert verify_chain_pages(auditor, genesis, head) == head


def test_sync_client_wait_gives_up_on_an_unknown_deadline(cluster: RunningCluster) -> None:
    with client_of(cluster, "finance-clerk") as node:
        tx = node.build("fiscal/deadline", "record", {"n": 1})
        with pytest.raises(Refused):
            node.wait(tx.tx_id.hex(), timeout_s=0)  # never sent: unknown to the node
        status = node.submit(tx)
        if status.status == "pending":  # a zero wait gives up at once, naming the status
            with pytest.raises(NotCommitted, match="not committed yet"):
                node.wait(status.tx_id, timeout_s=0)
        assert node.wait(status.tx_id, timeout_s=30).committed


def tx_events(events: Iterator[Event], count: int) -> list[Event]:
    """The first `count` tx events of a stream (block events in between are skipped)."""
    seen: list[Event] = []
    for event in events:
        if event.event == "tx":
            seen.append(event)
            if len(seen) == count:
                break
    return seen


def test_sync_client_queries_pages_and_follows_events(cluster: RunningCluster) -> None:
    with client_of(cluster, "finance-clerk") as node:
        statuses = [node.submit(node.build(f"fiscal/lib-query/{n}", "record", {"n": n}),
                                wait=True) for n in (3, 1, 2)]  # fmt: skip
        keys = [r["key"] for r in node.query("fiscal/lib-query/")]
        assert keys == ["fiscal/lib-query/1", "fiscal/lib-query/2", "fiscal/lib-query/3"]
        first = node.query_page("fiscal/lib-query/", "record", limit=2)
        assert [r["key"] for r in first["records"]] == keys[:2]
        assert first["next_cursor"]
        rest = node.query_page("fiscal/lib-query/", cursor=first["next_cursor"], limit=2)
        assert ([r["key"] for r in rest["records"]], rest["next_cursor"]) == (keys[2:], None)
        assert list(node.query("fiscal/lib-query/", "no-such-type")) == []

        start = min(s.height for s in statuses if s.height is not None)
        seen = tx_events(node.events(from_height=start, prefix="fiscal/lib-query/"), 3)
        assert [e.data["tx_id"] for e in seen] == [s.tx_id for s in statuses]
        # resuming after the first tx's id gives the other two, neither the first again
        resumed = tx_events(node.events(last_id=seen[0].id, prefix="fiscal/lib-query/"), 2)
        assert [e.data["tx_id"] for e in resumed] == [s.tx_id for s in statuses[1:]]
    last = max(s.height for s in statuses if s.height is not None)
    with client_of(cluster, "harbor-mutual-clerk") as other:  # another agency: blocks, no txs
        kinds = []
        for event in other.events(from_height=start, prefix="fiscal/lib-query/"):
            kinds.append(event.event)
            if event.event == "block" and event.data["height"] >= last:
                break
        assert kinds == ["block"] * (last - start + 1)
    with pytest.raises(ValueError, match="block 1 or later"):
        next(iter(node.events(from_height=0)))


async def test_a_tx_status_carries_the_rules_outcome_and_reason(cluster: RunningCluster) -> None:
    """Refused in block order: committed, with outcome and reason (both clients read them);
    refused at admission (settled already): a `Refused` with the rule's code, nothing sent on."""
    closes = time.time_ns() // 1_000_000 + 3_600_000
    with client_of(cluster, "finance-clerk") as node:
        grant = node.build("fiscal/2027/lib/parks", "budget.appropriation", {
            "fiscal_year": 2027, "fund": "general", "department": "parks",
            "amount_cents": 1000, "closes_at_ms": closes})  # fmt: skip
        granted = node.submit(grant, wait=True)
        assert (granted.outcome, granted.reason) == ("accepted", None)
        greedy = node.build(
            "fiscal/2027/lib/lines/benches",
            "budget.allocation",
            {"appropriation": "fiscal/2027/lib/parks", "amount_cents": 1001},
        )
        refused = node.submit(greedy, wait=True)
        assert refused.committed
        assert (refused.outcome, refused.reason) == ("refused", "over_appropriation")
        assert node.status(refused.tx_id) == refused
        broken = node.build("fiscal/2027/lib/lines/paths", "budget.allocation", {"amount_cents": 5})
        with pytest.raises(Refused) as settled:
            node.submit(broken)
        assert (settled.value.status, settled.value.code) == (422, "schema")
    genesis = load_genesis(cluster.genesis)
    key = load_key(cluster.root / "clients" / "finance-clerk.pem")
    async with AsyncClient(cluster.url, identity="finance-clerk", key=key,
                           genesis=genesis) as aio:  # fmt: skip
        assert await aio.status(refused.tx_id) == refused


async def test_async_client_does_the_same(cluster: RunningCluster) -> None:
    genesis = load_genesis(cluster.genesis)
    key = load_key(cluster.root / "clients" / "harbor-mutual-clerk.pem")
    async with AsyncClient(cluster.url, identity="harbor-mutual-clerk", key=key,
                           genesis=genesis) as node:  # fmt: skip
        tx = await node.build("claims/harbor-mutual/async/1", "record", {"loss": 5000})
        status = await node.submit(tx, wait=True)
        assert status.committed
        assert await node.submit(tx) == status  # 409 duplicate: success
        assert (await node.record("claims/harbor-mutual/async/1"))["value"] == {"loss": 5000}
        versions = [v async for v in node.history("claims/harbor-mutual/async/1")]
        assert [v["tx_id"] for v in versions] == [status.tx_id]
        proven = await node.prove(status.tx_id)
        assert proven.block.header.height == status.height
        with pytest.raises(Refused) as refused:
            await node.block(1)
        assert refused.value.status == 403
        mine = "claims/harbor-mutual/async/"
        assert [r["key"] async for r in node.query(mine)] == [f"{mine}1"]
        async for event in node.events(from_height=status.height or 1, prefix=mine):
            if event.event == "tx":
                assert (event.data["tx_id"], event.id) == (status.tx_id, f"{status.height}:0")
                break


# --- a client generated from the OpenAPI document ----------------------------------------------


def generate_client(document_url: str, genesis: Genesis, out: Path) -> str:
    """Fetch /v1/openapi.json (anonymous) and run openapi-python-client on it; the package name."""
    doc = out / "openapi.json"
    answer = httpx.get(document_url, verify=tls.genesis_client_context(genesis), timeout=30)
    assert answer.status_code == 200
    doc.write_bytes(answer.content)
    done = subprocess.run(
        [str(GENERATOR), "generate", "--path", str(doc), "--meta", "none",
         "--output-path", str(out / "ledger_api")],
        capture_output=True, text=True, timeout=GENERATE_TIMEOUT_S, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "duplicate" not in (done.stdout + done.stderr).lower()
    return "ledger_api"


def signing_hook(identity: str, key: Any, chain_id: str) -> Any:
    """An httpx request hook that signs like docs/protocol.md section 16 says."""

    def sign(request: httpx.Request) -> None:
        body = request.read()
        request.headers.update(
            auth_request.sign_headers(
                key,
                chain_id=chain_id,
                identity=identity,
                method=request.method,
                target=request.url.raw_path.decode(),
                body=body,
                now_ms=time.time_ns() // 1_000_000,
            )
        )

    return sign


def test_a_generated_client_submits_waits_and_reads(
    cluster: RunningCluster, tmp_path: Path
) -> None:
    genesis = load_genesis(cluster.genesis)
    package = generate_client(cluster.url + "/v1/openapi.json", genesis, tmp_path)
    sys.path.insert(0, str(tmp_path))
    try:
        api = importlib.import_module(package)
        submit = importlib.import_module(f"{package}.api.default.submit_transactions")
        get_tx = importlib.import_module(f"{package}.api.default.get_transaction")
        get_record = importlib.import_module(f"{package}.api.default.get_record")
        models = importlib.import_module(f"{package}.models")
    finally:
        sys.path.remove(str(tmp_path))
    key = load_key(cluster.root / "clients" / "finance-clerk.pem")
    hook = signing_hook("finance-clerk", key, genesis.chain_id)
    with client_of(cluster, "finance-clerk") as ours:  # only to sign the tx itself
        tx = ours.build("fiscal/generated/1", "record", {"amount": 7})
    generated = api.Client(
        base_url=cluster.url, verify_ssl=tls.genesis_client_context(genesis),
        httpx_args={"event_hooks": {"request": [hook]}}, raise_on_unexpected_status=True,
    )  # fmt: skip
    with generated:
        result = submit.sync_detailed(
            client=generated, body=models.RawTransaction(raw=tx.raw.hex()), wait=True
        )
        assert result.status_code in (200, 202), result.content
        assert result.parsed.tx_id == tx.tx_id.hex()
        deadline = time.monotonic() + 30
        while True:  # the generated client has no wait: poll the status, bounded
            found = get_tx.sync(client=generated, tx_id=tx.tx_id.hex())
            if found.status == "committed" or time.monotonic() > deadline:
                break
        assert found.status == "committed"
        record = get_record.sync(client=generated, key="fiscal/generated/1")
        assert record.tx_id == tx.tx_id.hex()
        assert record.value.to_dict() == {"amount": 7}
        anonymous = get_record.sync_detailed(
            client=api.Client(base_url=cluster.url, verify_ssl=tls.genesis_client_context(genesis)),
            key="fiscal/generated/1",
        )
        assert anonymous.status_code == 401


def test_the_retry_policy_pauses_are_bounded() -> None:
    policy = RetryPolicy()
    assert [policy.pause_s(n, None) for n in (1, 2, 3, 6, 10)] == [0.25, 0.5, 1.0, 5.0, 5.0]
    assert policy.pause_s(1, "2") == 2.0  # the node's Retry-After, in seconds
    assert policy.pause_s(1, "3600") == policy.backoff_s_max
    with pytest.raises(ValueError, match="at least one attempt"):
        RetryPolicy(attempts=0)

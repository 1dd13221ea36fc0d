"""The permission matrix against real node processes: every way in that must be refused is
refused with its reason, and nothing is written.

Client API (POST /v1/transactions): unknown client, a record outside the client's namespaces,
a bad signature, a replayed tx, a wrong chain id, a stale and a future timestamp, an oversize
request body and an oversize record body: each a 4xx with its reason code.
Peer endpoints: messages from a non-member, with a forged signature, or for another chain are
dropped and counted by reason (the endpoint answers 204: one bad message in a batch must not
refuse the others). Block sync: two validators whose keys the test holds (their nodes stopped)
report a higher head, and the test serves forged certificates from their addresses: the node
refuses every answer (`fetch_invalid`) and writes nothing.
"""

import dataclasses
import itertools
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Final

import msgpack
import pytest
from aiohttp import web

from consensus import messages as m
from ledger import crypto
from ledger import tx as txs
from ledger.block import Block, Certificate, ChainHead, commit_payload, make_block
from ledger.encoding import encode
from ledger.verify import ChainVerifier
from node import tls
from tests.faults.conftest import ClusterFactory
from tests.faults.figures import report
from tests.faults.harness import Cluster, certify, loopback_network, make_tx, now_ms

BODY_BYTES_MAX: Final = 64 * 1024  # the node's client body limit in this test
VICTIM: Final = 1  # the node the forged block sync is aimed at
IMPERSONATED: Final = (2, 3)  # stopped validators whose addresses and keys the test takes


def refusals(c: Cluster) -> list[tuple[str, Callable[[], Any], int, str]]:
    """(case, request body maker, expected status, expected reason code)."""
    net = c.net
    g = net.genesis
    stranger = crypto.generate_key()

    def tx(**kw: Any) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "chain_id": g.chain_id, "client_id": net.client_for("fiscal/"), "nonce": 7,
            "timestamp_ms": now_ms(), "key": "fiscal/matrix", "type_": "matrix",
            "body": {"case": "matrix"},
        } | kw  # fmt: skip
        key = fields.pop("signing_key", None) or net.client_keys.get(fields["client_id"])
        # Signed and encoded by hand: `txs.create` itself refuses some of these.
        values = [fields[k] for k in ("chain_id", "client_id", "nonce", "timestamp_ms", "key",
                                      "type_", "body")]  # fmt: skip
        signature = crypto.sign(key or stranger, crypto.Domain.TX, encode(values))
        return {"raw": encode([txs.TX_VERSION, *values, signature]).hex()}

    params = g.params
    return [
        ("unknown client", lambda: tx(client_id="nobody-clerk", signing_key=stranger), 403,
         "unknown_client"),
        ("record outside the client's namespaces", lambda: tx(key="permits/matrix"), 403,
         "forbidden_namespace"),
        ("bad signature", lambda: tx(signing_key=stranger), 401, "bad_signature"),
        ("wrong chain id", lambda: tx(chain_id="othercity"), 422, "wrong_chain"),
        ("stale timestamp", lambda: tx(timestamp_ms=now_ms() - params.tx_ttl_ms - 60_000), 422,
         "stale_timestamp"),
        ("future timestamp",
         lambda: tx(timestamp_ms=now_ms() + params.clock_skew_ms + 60_000), 422,
         "future_timestamp"),
        ("oversize record body", lambda: tx(body={"blob": "x" * 17_000}), 413, "too_large"),
        ("oversize request body", lambda: {"raw": "00" * BODY_BYTES_MAX}, 413, "too_large"),
    ]  # fmt: skip


async def post(c: Cluster, i: int, body: Any) -> tuple[int, dict[str, Any]]:
    url = c.api(i) + "/v1/transactions?wait=true"
    async with c.http.post(url, json=body, middlewares=c.signing) as r:
        return r.status, await r.json()


async def post_peer(c: Cluster, i: int, envelopes: list[bytes]) -> int:
    body = msgpack.packb(envelopes, use_bin_type=True)
    headers = {"Content-Type": "application/msgpack"}
    async with c.http.post(c.api(i) + "/peer/v1/messages", data=body, headers=headers) as r:
        return r.status


def events(metrics: dict[str, float], name: str) -> float:
    return metrics.get(f'cityledger_replica_events_total{{event="{name}"}}', 0.0)


async def client_matrix(c: Cluster) -> list[str]:
    committed = make_tx(c.net, "fiscal/", "matrix/ok", {"ok": True}, nonce=1)
    status, body = await c.submit(0, committed)
    assert status == 200, body
    assert body["status"] == "committed", body
    cases = refusals(c)
    cases.append(("replayed tx", lambda: {"raw": committed.raw.hex()}, 409, "duplicate"))
    lines = []
    for case, make, want_status, want_code in cases:
        status, body = await post(c, 0, make())
        assert (status, body.get("error")) == (want_status, want_code), (case, status, body)
        assert body.get("reason"), (case, body)
        lines.append(f"{case} -> {status} {want_code}")
    return lines


async def peer_matrix(c: Cluster) -> list[str]:
    g = c.net.genesis
    outsider = crypto.generate_key()
    before = await c.metrics(0)

    def signed(msg: m.Status, key: Any, chain_id: str = g.chain_id) -> bytes:
        domain, payload = m.signed_payload(msg, chain_id)
        sig = crypto.sign(key, domain, payload)
        return m.encode_message(dataclasses.replace(msg, signature=sig), chain_id)

    # Counted by the node's first look at an envelope (node.envelopes), before its body is
    # decoded and before the replica sees anything of it.
    cases = [
        ("a non-member (sender index 9 of 4)", signed(m.Status(0, 10**6, 9), outsider),
         "unknown_sender"),
        ("a forged signature (validator 2, signed by an outsider)",
         signed(m.Status(0, 10**6, 2), outsider), "bad_signature"),
        ("a real validator's message for another chain",
         signed(m.Status(0, 10**6, 2), c.net.validator_keys[2], "othercity"),
         "wrong_chain"),
    ]  # fmt: skip
    for _, envelope, _ in cases:
        assert await post_peer(c, 0, [envelope]) == 204
    assert await post_peer(c, 0, []) == 204
    after = await c.metrics(0)
    lines = []
    for case, _, reason in cases:
        key = f'cityledger_invalid_peer_messages_total{{why="{reason}"}}'
        grew = after.get(key, 0) - before.get(key, 0)
        assert grew >= 1, (case, reason)
        lines.append(f"{case} -> dropped, counted as {reason}")
    async with c.http.post(c.api(0) + "/peer/v1/messages", data=b"\xc1garbage",
                           headers={"Content-Type": "application/msgpack"}) as r:  # fmt: skip
        assert r.status == 400
        assert (await r.json())["error"] == "malformed"
    lines.append("a batch that is not msgpack -> 400 malformed")
    return lines


async def chain_head(c: Cluster, i: int, height: int) -> ChainHead:
    verifier = ChainVerifier(c.net.genesis, lambda _tx_id: None)
    for raw_block, raw_cert in await c.chain(i, 1, height):
        verifier.feed(raw_block, raw_cert)
    return verifier.head


def forgeries(c: Cluster, head: ChainHead) -> list[tuple[str, Block, Certificate]]:
    """Blocks that extend `head` validly, each under a certificate that must not pass."""
    net, g = c.net, c.net.genesis
    tx = make_tx(net, "claims/harbor-mutual/", "forged/sync", {"forged": True}, nonce=99)
    block = make_block(head, (tx,), now_ms(), 0, 0)
    other = make_block(head, (), now_ms(), 0, 0)
    real = certify(net, block)
    payload = commit_payload(g.chain_id, 0, block.height, block.hash)
    strangers = [crypto.generate_key() for _ in range(g.quorums.commit)]
    forged_votes = tuple((i, crypto.sign(k, crypto.Domain.COMMIT, payload))
                         for i, k in enumerate(strangers))  # fmt: skip
    return [
        ("votes signed by keys that are not the validators'", block,
         Certificate(block.height, block.hash, 0, forged_votes)),
        ("f+1 real votes instead of 2f+1", block,
         Certificate(block.height, block.hash, 0, real.votes[: g.quorums.weak])),
        ("one real vote three times", block,
         Certificate(block.height, block.hash, 0, (real.votes[0],) * g.quorums.commit)),
        ("a real certificate under another block", other, real),
    ]  # fmt: skip


@pytest.fixture
async def fake_peers() -> AsyncIterator[list[web.AppRunner]]:
    runners: list[web.AppRunner] = []
    try:
        yield runners
    finally:
        for runner in runners:
            await runner.cleanup()


async def forged_block_sync(c: Cluster, runners: list[web.AppRunner]) -> list[str]:
    """Stop the impersonated validators, serve forged blocks at their addresses, make them
    report a higher head to the victim, and check that it refuses every answer."""
    for i in IMPERSONATED:
        assert await c.stop(i) == 0
    victim = await c.status(VICTIM)
    assert victim is not None
    head = await chain_head(c, VICTIM, victim["height"])
    forged = forgeries(c, head)
    served: list[str] = []
    cycle = itertools.cycle(forged)

    async def blocks(_request: web.Request) -> web.Response:
        case, block, cert = next(cycle)
        served.append(case)
        body = msgpack.packb([[block.encode(), cert.encode()]], use_bin_type=True)
        return web.Response(body=body, content_type="application/msgpack")

    async def messages(_request: web.Request) -> web.Response:
        return web.Response(status=204)

    for i in IMPERSONATED:
        app = web.Application()
        app.router.add_get("/peer/v1/blocks", blocks)
        app.router.add_post("/peer/v1/messages", messages)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        runners.append(runner)
        port = int(c.net.nodes[i].listen.rpartition(":")[2])
        # A Byzantine validator: it holds its key, so its certificate is a real one.
        spec = c.net.nodes[i]
        own = tls.node_identity(c.net.validator_keys[i], c.net.genesis, spec.node_id,
                                c.net.root / f"fake-{spec.node_id}", ["127.0.0.1"])  # fmt: skip
        context = tls.server_context(own, None, require_peer=False)
        site = web.TCPSite(runner, "127.0.0.1", port, ssl_context=context, reuse_address=True)
        await site.start()
    before = events(await c.metrics(VICTIM), "fetch_invalid")
    claim = victim["height"] + 50
    for i in IMPERSONATED:
        status = m.sign(m.Status(victim["view"], claim, i), c.net.validator_keys[i],
                        c.net.genesis.chain_id)  # fmt: skip
        assert await post_peer(c, VICTIM, [m.encode_message(status, c.net.genesis.chain_id)]) == 204

    async def refused_all() -> bool:
        return events(await c.metrics(VICTIM), "fetch_invalid") - before >= len(forged)

    await c.wait_for("the victim to fetch (and refuse) every forgery", refused_all, 30)
    after = await c.status(VICTIM)
    assert after is not None
    assert (after["height"], after["head_hash"]) == (victim["height"], victim["head_hash"])
    code, _ = await c.get(VICTIM, "/v1/records/claims/forged/sync")
    assert code == 404
    return [f"{case} -> refused (fetch_invalid), nothing written" for case, _, _ in forged] + [
        f"{len(served)} forged answers served in all"
    ]


async def test_every_refusal_has_its_reason_and_writes_nothing(
    clusters: ClusterFactory, fake_peers: list[web.AppRunner], tmp_path: Path
) -> None:
    net = loopback_network(tmp_path / "net", 4, extra={"body_bytes_max": BODY_BYTES_MAX})
    c = clusters(net)
    await c.start_all()
    lines = await client_matrix(c)
    head = await c.wait_converged()
    lines += await peer_matrix(c)
    for i in range(c.n):  # nothing written anywhere: same head, empty pools, no such records
        status = await c.status(i)
        assert status is not None
        assert (status["height"], status["head_hash"]) == (head["height"], head["head_hash"])
        assert status["mempool"] == 0
        for key in ("fiscal/matrix", "permits/matrix"):
            code, _ = await c.get(i, f"/v1/records/{key}")
            assert code == 404, (i, key)
    lines += await forged_block_sync(c, fake_peers)
    report("permission matrix", "; ".join(lines))

"""The client API over real HTTP on a 4-node loopback cluster: every route, both encodings, and
every refusal with its status code, its reason, and nothing written."""

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import pytest
import yarl
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cli.client import core
from ledger import genesis as genesis_mod
from ledger import proofs
from ledger import tx as txs
from ledger.encoding import encode
from ledger.verify import ChainVerifier
from node.app import STATUS_OF
from tests.node.conftest import WAIT_S, Cluster, now_ms, start_cluster, stop_all, tx_json

MSGPACK = "application/msgpack"


async def post(
    http: aiohttp.ClientSession, url: str, body: Any, *, as_msgpack: bool = False
) -> tuple[int, Any, aiohttp.ClientResponse]:
    if as_msgpack:
        data = msgpack.packb(body, use_bin_type=True)
        headers = {"Content-Type": MSGPACK, "Accept": MSGPACK}
        async with http.post(url, data=data, headers=headers) as r:
            return r.status, msgpack.unpackb(await r.read(), raw=False), r
    async with http.post(url, json=body) as r:
        return r.status, await r.json(), r


async def get(http: aiohttp.ClientSession, url: str | yarl.URL) -> tuple[int, Any]:
    async with http.get(url) as r:
        return r.status, await r.json()


def written(c: Cluster) -> list[tuple[int, int]]:
    """What a refused request must not change: each node's height and pool size."""
    return [(n.runtime.store.height, n.runtime.replica.pending) for n in c.nodes if n is not None]


async def submit_committed(c: Cluster, http: aiohttp.ClientSession, tx: txs.Transaction) -> Any:
    status, body, _ = await post(http, c.url(1) + "/v1/transactions?wait=true", tx_json(tx))
    assert status == 200, body
    assert body["status"] == "committed"
    return body


# --- Submitting and reading ------------------------------------------------------------------


async def test_submit_json_wait_then_read_everything(cluster: Cluster, http) -> None:
    c = cluster
    first = c.tx("fiscal/", "budget/2027", {"amount": 100, "memo": "draft"})
    second = c.tx("fiscal/", "budget/2027", {"amount": 120, "memo": "final"})
    one = await submit_committed(c, http, first)
    two = await submit_committed(c, http, second)
    await c.wait_height(two["height"])
    for i in range(4):  # every node answers reads from its own store
        status, record = await get(http, c.url(i) + "/v1/records/fiscal/budget/2027")
        assert status == 200
        assert record["value"] == {"amount": 120, "memo": "final"}
        assert record["tx_id"] == second.tx_id.hex()
    status, history = await get(http, c.url(3) + "/v1/history/fiscal/budget/2027")
    assert status == 200
    assert [v["tx_id"] for v in history["versions"]] == [first.tx_id.hex(), second.tx_id.hex()]
    assert [(v["height"], v["index"]) for v in history["versions"]] == [
        (one["height"], one["index"]), (two["height"], two["index"]),
    ]  # fmt: skip
    assert history["truncated"] is False
    assert history["next_cursor"] is None
    # Paged: one version a page, the cursor leads to the next; the documented maximum works.
    status, page = await get(http, c.url(3) + "/v1/history/fiscal/budget/2027?limit=1")
    assert (status, [v["tx_id"] for v in page["versions"]]) == (200, [first.tx_id.hex()])
    cursor = page["next_cursor"]
    status, page = await get(http, c.url(3) + f"/v1/history/fiscal/budget/2027?cursor={cursor}")
    assert (status, [v["tx_id"] for v in page["versions"]]) == (200, [second.tx_id.hex()])
    assert page["next_cursor"] is None
    status, page = await get(http, c.url(3) + "/v1/history/fiscal/budget/2027?limit=10000")
    assert (status, len(page["versions"])) == (200, 2)
    for bad in ("?limit=10001", "?cursor=zz", "?cursor=" + "f" * 24, "/../budget/2027"):
        url = yarl.URL(c.url(3) + "/v1/history/fiscal/budget" + bad, encoded=True)  # as sent
        status, refused = await get(http, url)
        assert (status, refused["error"]) == (400, "malformed"), bad
    status, found = await get(http, c.url(2) + f"/v1/transactions/{first.tx_id.hex()}")
    assert status == 200
    assert (found["status"], found["height"], found["index"]) == (
        "committed", one["height"], one["index"],
    )  # fmt: skip
    assert found["tx"]["raw"] == first.raw.hex()
    status, block = await get(http, c.url(0) + f"/v1/blocks/{one['height']}")
    assert status == 200
    assert set(block) >= {"height", "hash", "header", "txs", "certificate"}
    assert first.tx_id.hex() in [t["tx_id"] for t in block["txs"]]
    assert block["header"]["tx_count"] == len(block["txs"])
    ids = [v.id for v in c.genesis.validators]
    votes = block["certificate"]["votes"]
    assert len(votes) >= c.genesis.quorums.commit
    assert [v["validator_id"] for v in votes] == [ids[v["validator"]] for v in votes]
    assert block["certificate"]["signers"] == [v["validator_id"] for v in votes]
    status, latest = await get(http, c.url(0) + "/v1/blocks/latest")
    assert status == 200
    assert latest["height"] >= two["height"]


async def test_msgpack_raw_and_batch_submissions(cluster: Cluster, http) -> None:
    c = cluster
    a, b = (c.tx("claims/", f"c-{i}", {"n": i, "blob": b"\x00\x01"}) for i in range(2))
    d = c.tx("claims/", "c-2", {"n": 2})  # the JSON field form has no bytes in bodies
    url = c.url(3) + "/v1/transactions?wait=true"
    status, body, _ = await post(http, url, a.raw, as_msgpack=True)
    assert status == 200
    assert body["tx_id"] == a.tx_id  # msgpack answers carry bytes as bin
    status, body, _ = await post(http, url, {"transactions": [{"raw": b.raw.hex()}, tx_json(d)]})
    assert status == 200, body
    assert [s["tx_id"] for s in body["accepted"]] == [b.tx_id.hex(), d.tx_id.hex()]
    assert all(s["status"] == "committed" for s in body["accepted"])
    async with http.get(
        c.url(0) + f"/v1/transactions/{a.tx_id.hex()}", headers={"Accept": MSGPACK}
    ) as r:
        found = msgpack.unpackb(await r.read(), raw=False)
    assert found["tx"]["body"] == {"n": 0, "blob": b"\x00\x01"}


async def test_a_large_batch_is_admitted_off_the_event_loop_and_committed(
    cluster: Cluster, http
) -> None:
    batch = [cluster.tx("permits/", f"bulk-{i}", {"i": i}) for i in range(300)]
    url = cluster.url(1) + "/v1/transactions?wait=true"
    status, body, _ = await post(http, url, {"transactions": [{"raw": t.raw} for t in batch]},
                                 as_msgpack=True)  # fmt: skip
    assert status == 200, body["rejected"][:3]
    assert [s["tx_id"] for s in body["accepted"]] == [t.tx_id for t in batch]
    assert {s["status"] for s in body["accepted"]} == {"committed"}


async def test_single_core_nodes_check_signatures_and_sync_writes_on_the_event_loop(
    tmp_path: Path, http
) -> None:
    c = await start_cluster(tmp_path, 4, cores=1)  # as `cluster init` sets up a small machine
    try:
        for node in c.nodes:
            assert node is not None
            assert (node.runtime.admission._executor, node.runtime.shell._writer) == (None, None)
        batch = [c.tx("permits/", f"one-core-{i}", {"i": i}) for i in range(100)]
        forged = {40, 90}  # in different slices of the event loop's checks
        raws = [t.raw[:-1] + bytes([t.raw[-1] ^ 1]) if i in forged else t.raw
                for i, t in enumerate(batch)]  # fmt: skip
        url = c.url(2) + "/v1/transactions?wait=true"
        status, body, _ = await post(http, url, {"transactions": [{"raw": r} for r in raws]},
                                     as_msgpack=True)  # fmt: skip
        assert status == 200, body["rejected"][:3]
        good = [t.tx_id for i, t in enumerate(batch) if i not in forged]
        assert [s["tx_id"] for s in body["accepted"]] == good
        assert {s["status"] for s in body["accepted"]} == {"committed"}
        assert [(r["index"], r["error"]) for r in body["rejected"]] == [
            (i, txs.BAD_SIGNATURE) for i in sorted(forged)
        ]
        height = c.node(2).runtime.store.height
        await c.wait_height(height)  # every node verified the relayed txs on its loop
        for node in c.nodes:
            assert node is not None
            assert all(node.runtime.store.has_tx(tx_id) for tx_id in good)
    finally:
        await stop_all(c)


async def test_submit_without_wait_is_202_pending_or_committed(cluster: Cluster, http) -> None:
    tx = cluster.tx("permits/", "p-1", {"ok": True})
    status, body, _ = await post(http, cluster.url(0) + "/v1/transactions", tx_json(tx))
    assert status == 202
    assert body["accepted"][0]["tx_id"] == tx.tx_id.hex()
    assert body["status"] in ("pending", "committed")


async def test_proof_bundle_checkpoint_and_consistency_verify_offline(
    cluster: Cluster, http
) -> None:
    c = cluster
    genesis = genesis_mod.load(c.root / "genesis.toml")  # the auditor has only this file
    early = c.tx("policies/", "pol-1", {"premium": 10})
    await submit_committed(c, http, early)
    for i in range(3):
        await submit_committed(c, http, c.tx("policies/", f"pol-x{i}", {"premium": i}))
    status, bundle = await get(http, c.url(2) + f"/v1/transactions/{early.tx_id.hex()}/proof")
    assert status == 200
    assert proofs.verify_bundle(bundle, genesis).tx.tx_id == early.tx_id
    assert bundle["anchor"] is not None  # proven against a later head as well
    tampered = dict(bundle, tx_proof=[h[::-1] for h in bundle["tx_proof"]] or ["00" * 32])
    with pytest.raises(proofs.InvalidProof):
        proofs.verify_bundle(tampered, genesis)
    status, checkpoint = await get(http, c.url(1) + "/v1/checkpoint")
    assert status == 200
    height = proofs.verify_checkpoint(checkpoint, genesis).header.height
    assert height == checkpoint["height"] >= 4
    # Ask the node that certified this head: another may still be a block behind it.
    status, proof = await get(http, c.url(1) + f"/v1/consistency?from=1&to={height}")
    assert status == 200
    assert proofs.verify_consistency(proof, genesis) == (1, height)
    for query in ("from=0", f"from=2&to={height + 50}", "from=x", "to=1"):
        status, body = await get(http, c.url(3) + "/v1/consistency?" + query)
        assert status == 400, query
        assert body["error"] == "malformed"


async def test_lookups_of_unknown_things_are_404_and_bad_ids_400(cluster: Cluster, http) -> None:
    base = cluster.url(0)
    cases = {
        f"/v1/transactions/{'ab' * 32}": 404, f"/v1/transactions/{'ab' * 32}/proof": 404,
        "/v1/transactions/xyz": 400, "/v1/transactions/" + "zz" * 32: 400,
        "/v1/blocks/99": 404, "/v1/blocks/latest": 404, "/v1/blocks/-1": 400,
        "/v1/records/fiscal/nothing": 404, "/v1/history/fiscal/nothing": 404,
        "/v1/history/fiscal/x?limit=0": 400, "/v1/checkpoint": 404, "/v1/nowhere": 404,
    }  # fmt: skip
    for path, expected in cases.items():
        status, body = await get(http, base + path)
        assert status == expected, path
        assert set(body) >= {"error", "reason"}, path
    async with http.delete(base + "/v1/status") as r:
        assert r.status == 405
        assert (await r.json())["error"] == "method_not_allowed"


# --- Refusals: status code, reason, nothing written ------------------------------------------


def signed(signing_key: Ed25519PrivateKey, **fields: Any) -> txs.Transaction:
    base: dict[str, Any] = {
        "chain_id": "testcity", "client_id": "fiscal-clerk0", "nonce": 7,
        "timestamp_ms": now_ms(), "key": "fiscal/x", "type_": "record", "body": {"a": 1},
    }  # fmt: skip
    return txs.create(signing_key, **(base | fields))


def bad_transactions(c: Cluster) -> dict[str, Any]:
    """One submission (as JSON) per rejection reason."""
    client = "fiscal-clerk0"
    key = c.net.client_keys[client]
    ttl, skew = c.genesis.params.tx_ttl_ms, c.genesis.params.clock_skew_ms
    good = c.tx("fiscal/", "sig", {"a": 1})
    forged = encode([1, *msgpack.unpackb(good.raw)[1:8], bytes(64)])
    return {
        txs.MALFORMED: {"chain_id": "testcity", "client_id": client},
        txs.TOO_LARGE: {"raw": (b"\x99" * (txs.TX_BYTES_MAX + 1)).hex()},
        txs.WRONG_CHAIN: tx_json(signed(key, chain_id="othercity")),
        txs.UNKNOWN_CLIENT: tx_json(signed(Ed25519PrivateKey.generate(), client_id="ghost")),
        txs.FORBIDDEN_NAMESPACE: tx_json(signed(key, key="claims/not-mine")),
        txs.STALE_TIMESTAMP: tx_json(signed(key, timestamp_ms=now_ms() - ttl - 60_000)),
        txs.FUTURE_TIMESTAMP: tx_json(signed(key, timestamp_ms=now_ms() + skew + 60_000)),
        txs.BAD_SIGNATURE: {"raw": forged.hex()},
    }


async def test_every_rejection_reason_has_its_status_and_writes_nothing(
    cluster: Cluster, http
) -> None:
    c = cluster
    committed = c.tx("fiscal/", "dup", {"v": 1})
    await submit_committed(c, http, committed)
    await c.wait_height(c.node(1).runtime.store.height)
    cases = bad_transactions(c) | {txs.DUPLICATE: tx_json(committed)}
    before = written(c)
    for reason, body in cases.items():
        for i in (0, 2):
            status, answer, _ = await post(http, c.url(i) + "/v1/transactions?wait=true", body)
            assert status == STATUS_OF[reason], (reason, answer)
            assert answer["error"] == reason, answer
            assert answer["reason"]
            assert answer["rejected"][0]["error"] == reason
    assert written(c) == before
    status, text = await http_text(http, c.metrics_url(0) + "/metrics")
    for reason in cases:
        assert f'cityledger_txs_rejected_total{{reason="{reason}"}} 1.0' in text


async def http_text(http: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with http.get(url) as r:
        return r.status, await r.text()


async def test_malformed_bodies_of_every_kind(cluster: Cluster, http) -> None:
    c = cluster
    url = c.url(1) + "/v1/transactions"
    before = written(c)
    bodies: list[tuple[bytes, str, int]] = [
        (b"{not json", "application/json", 400),
        (b"\xc1\xc1", MSGPACK, 400),
        (b"[1, 2]", "application/json", 400),
        (b'{"transactions": []}', "application/json", 400),
        (b'{"transactions": [1], "x": 2}', "application/json", 400),
        (b'{"raw": "abc"}', "application/json", 400),
        (b"<xml/>", "application/xml", 415),
        (msgpack.packb({"raw": 5}), MSGPACK, 400),
    ]
    tx = tx_json(c.tx("fiscal/", "f", {"a": 1}))
    bodies.append((msgpack.packb(tx | {"body": {"a": 1.5}}), MSGPACK, 400))
    bodies.append((json.dumps(tx | {"nonce": 2**70}).encode(), "application/json", 400))
    bodies.append((json.dumps(tx | {"body": [1]}).encode(), "application/json", 400))
    for data, content_type, expected in bodies:
        async with http.post(url, data=data, headers={"Content-Type": content_type}) as r:
            assert r.status == expected, data
            answer = await r.json()
            assert set(answer) >= {"error", "reason"}
    assert written(c) == before


async def test_oversize_body_is_refused_before_it_is_read(tmp_path: Path, http) -> None:
    c = await start_cluster(tmp_path, 4, body_bytes_max=4096)
    try:
        url = c.url(0) + "/v1/transactions"
        big = b"{" + b" " * 100_000 + b"}"
        async with http.post(url, data=big, headers={"Content-Type": "application/json"}) as r:
            assert r.status == 413
            assert (await r.json())["error"] == "too_large"

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: refused at once
            for _ in range(100):
                yield b" " * 1000

        async with http.post(url, data=chunks(), headers={"Content-Type": MSGPACK}) as r:
            assert r.status == 411
            assert (await r.json())["error"] == "length_required"
    finally:
        await stop_all(c)


async def test_batch_answers_accepted_ids_and_a_reason_per_rejected_tx(
    cluster: Cluster, http
) -> None:
    c = cluster
    good = c.tx("permits/", "ok", {"v": 1})
    bad = bad_transactions(c)
    batch = [tx_json(good), bad[txs.FORBIDDEN_NAMESPACE], tx_json(good), bad[txs.MALFORMED]]
    status, body, _ = await post(http, c.url(2) + "/v1/transactions", {"transactions": batch})
    assert status == 202
    assert [s["tx_id"] for s in body["accepted"]] == [good.tx_id.hex()]
    assert [(r["index"], r["error"]) for r in body["rejected"]] == [
        (1, txs.FORBIDDEN_NAMESPACE), (2, txs.DUPLICATE), (3, txs.MALFORMED),
    ]  # fmt: skip


async def test_full_pool_answers_429_with_retry_after(tmp_path: Path, http) -> None:
    c = await start_cluster(tmp_path, 4, pool_capacity=2)
    try:
        await c.stop(3)
        await c.stop(2)  # 2 of 4: no quorum, so nothing drains the pools
        batch = [tx_json(c.tx("fiscal/", f"k{i}", {"i": i})) for i in range(3)]
        url = c.url(1) + "/v1/transactions"
        status, body, _ = await post(http, url, {"transactions": batch})
        assert status == 202
        assert len(body["accepted"]) == 2
        assert [(r["index"], r["error"]) for r in body["rejected"]] == [(2, "pool_full")]
        status, body, response = await post(http, url, batch[2])
        assert status == 429
        assert body["error"] == "pool_full"
        assert response.headers["Retry-After"] == "1"
        assert c.node(1).runtime.replica.pending == 2
        refused = body["rejected"][0]["tx_id"]
        for i in (0, 1):
            status, _ = await get(http, c.url(i) + f"/v1/transactions/{refused}")
            assert status == 404
    finally:
        await stop_all(c)


# --- Peers -----------------------------------------------------------------------------------


async def test_peer_endpoints_refuse_garbage_and_serve_block_ranges(cluster: Cluster, http) -> None:
    c = cluster
    for i in range(3):
        await submit_committed(c, http, c.tx("claims/", f"r{i}", {"i": i}))
    url = c.url(0) + "/peer/v1/messages"
    peer = c.peer_tls(2)  # the peer endpoints answer validators only
    async with http.post(url, data=b"\xc1", headers={"Content-Type": MSGPACK}) as r:
        assert r.status == 403  # no client certificate
    for data in (b"\xc1", msgpack.packb([1, 2]), msgpack.packb({"a": b""})):
        async with http.post(url, data=data, headers={"Content-Type": MSGPACK}, ssl=peer) as r:
            assert r.status == 400
    async with http.post(
        url, data=msgpack.packb([b"junk"]), headers={"Content-Type": MSGPACK}, ssl=peer
    ) as r:
        assert r.status == 204  # dropped and counted: the transport contract is fire-and-forget
    async with http.get(c.url(1) + "/peer/v1/blocks?from=1&to=2", ssl=peer) as r:
        pairs = msgpack.unpackb(await r.read(), raw=False)
    assert len(pairs) == 2
    assert pairs[0][0] == c.node(1).runtime.store.raw_block(1)
    async with http.get(c.url(1) + "/peer/v1/blocks?from=0", ssl=peer) as r:
        assert r.status == 400
    async with http.get(c.url(1) + "/peer/v1/blocks?from=1&to=2") as r:
        assert r.status == 403


async def test_wait_is_bounded_and_a_pending_tx_is_a_duplicate(tmp_path: Path, http) -> None:
    c = await start_cluster(tmp_path, 4, wait_timeout_ms=200)
    try:
        await c.stop(3)
        await c.stop(2)  # no quorum: nothing commits
        tx = tx_json(c.tx("claims/", "slow", {"v": 1}))
        status, body, _ = await post(http, c.url(0) + "/v1/transactions?wait=true", tx)
        assert status == 202
        assert (body["status"], body["height"], body["index"]) == ("pending", None, None)
        status, found = await get(http, c.url(0) + f"/v1/transactions/{body['tx_id']}")
        assert (status, found["status"]) == (200, "pending")
        status, again, _ = await post(http, c.url(0) + "/v1/transactions", tx)
        assert (status, again["error"]) == (409, txs.DUPLICATE)
        assert "pending" in again["reason"]
        # the refusal names the tx, so a client retrying knows which tx it already holds
        assert again["tx_id"] == body["tx_id"]
        assert again["rejected"][0]["tx_id"] == body["tx_id"]
    finally:
        await stop_all(c)


async def test_a_request_of_bad_signatures_is_checked_only_in_its_probe(
    cluster: Cluster, http
) -> None:
    c = cluster
    before = written(c)
    good = c.tx("fiscal/", "probe-good", {"v": 1})
    forged = [
        tx_json(txs.create(Ed25519PrivateKey.generate(), chain_id=c.genesis.chain_id,
                           client_id="fiscal-clerk0", nonce=i, timestamp_ms=now_ms(),
                           key=f"fiscal/probe-{i}", type_="record", body={"i": i}))
        for i in range(100)
    ]  # fmt: skip
    status, body, _ = await post(http, c.url(1) + "/v1/transactions", {"transactions": forged})
    assert (status, body["error"]) == (401, txs.BAD_SIGNATURE)
    reasons = [r["error"] for r in body["rejected"]]
    assert reasons == [txs.BAD_SIGNATURE] * 16 + ["unchecked"] * 84
    assert written(c) == before
    # A few bad ones among good txs are refused one by one, the rest admitted.
    mixed = [tx_json(good), *forged[:3]]
    status, body, _ = await post(http, c.url(1) + "/v1/transactions", {"transactions": mixed})
    assert status == 202
    assert [r["error"] for r in body["rejected"]] == [txs.BAD_SIGNATURE] * 3


async def test_waiting_requests_are_capped(tmp_path: Path, http) -> None:
    c = await start_cluster(tmp_path, 4, wait_requests_max=1, wait_timeout_ms=5000)
    try:
        url = c.url(0) + "/v1/transactions?wait=true"
        for i in (1, 2):  # no quorum: the first request keeps waiting
            await c.stop(i)
        first = asyncio.ensure_future(post(http, url, tx_json(c.tx("fiscal/", "w1", {"v": 1}))))
        deadline = asyncio.get_running_loop().time() + WAIT_S
        while c.node(0).runtime.replica.pending == 0:  # poll, bounded: the first one waits
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
        status, body, r = await post(http, url, tx_json(c.tx("fiscal/", "w2", {"v": 2})))
        assert (status, body["error"], r.headers["Retry-After"]) == (503, "busy", "1")
        assert c.node(0).runtime.replica.pending == 1  # refused before admission
        first.cancel()
    finally:
        await stop_all(c)


async def test_raw_chain_and_stable_checkpoint_votes(tmp_path: Path, http) -> None:
    """`/v1/chain` serves the exact stored bytes, which verify from the genesis alone;
    `/v1/checkpoint/stable` serves q Checkpoint votes that prove the stable checkpoint, before
    and after the node restarts."""
    c = await start_cluster(tmp_path, 4)  # the factory's checkpoint interval: 4 blocks
    try:
        status, _ = await get(http, c.url(0) + "/v1/checkpoint/stable")
        assert status == 404  # nothing stable yet
        for i in range(c.genesis.params.checkpoint_interval):
            await submit_committed(c, http, c.tx("fiscal/", f"cp/{i}", {"n": i}))
        interval = c.genesis.params.checkpoint_interval
        await c.wait_height(interval)
        deadline = asyncio.get_running_loop().time() + WAIT_S
        while True:  # the votes of the other validators arrive after the commit: poll, bounded
            status, stable = await get(http, c.url(0) + "/v1/checkpoint/stable")
            if status == 200 or asyncio.get_running_loop().time() > deadline:
                break
            await c.node(0).runtime.shell.wait_height(c.node(0).runtime.store.height)
        assert status == 200, stable
        height, digest = core.verify_stable_checkpoint(stable, c.genesis)
        assert digest == c.node(1).runtime.store.block(height).hash  # type: ignore[union-attr]
        forged = {**stable, "votes": stable["votes"][:1] * 3}
        with pytest.raises(ValueError, match="not a valid checkpoint signature"):
            core.verify_stable_checkpoint(forged, c.genesis)
        await c.stop(0)  # the votes are kept with the consensus state: a restart keeps them
        await c.start(0)
        status, again = await get(http, c.url(0) + "/v1/checkpoint/stable")
        assert (status, again) == (200, stable)

        head = c.node(2).runtime.store.height
        async with http.get(c.url(2) + "/v1/chain?from=1", headers={"Accept": MSGPACK}) as r:
            page = msgpack.unpackb(await r.read(), raw=False)
        assert (r.status, page["head"], len(page["blocks"])) == (200, head, head)
        verifier = ChainVerifier(c.genesis, lambda _tx_id: None)
        for n, item in enumerate(page["blocks"], 1):
            assert item["height"] == n
            assert item["block"] == c.node(2).runtime.store.raw_block(n)
            verifier.feed(item["block"], item["certificate"])
        status, text = await get(http, c.url(2) + f"/v1/chain?from=2&to={head + 5}")
        assert status == 200
        assert [b["height"] for b in text["blocks"]] == list(range(2, head + 1))
        assert bytes.fromhex(text["blocks"][0]["block"]) == c.node(2).runtime.store.raw_block(2)
        for bad in ("", "?from=0", "?from=x", "?from=3&to=2"):
            status, body = await get(http, c.url(2) + "/v1/chain" + bad)
            assert (status, body["error"]) == (400, txs.MALFORMED), bad
    finally:
        await stop_all(c)

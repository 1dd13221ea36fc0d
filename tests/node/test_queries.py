"""`GET /v1/records` (pages, filters, read policy, bad input), the probes and the access log
on a live node."""

import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ledger import tx as txs
from node import queries
from node.service import ACCESS_LOGGER
from tests.node.conftest import Cluster, now_ms, signed_as, start_cluster, stop_all

FISCAL = "fiscal-clerk0"
PERMITS = "permits-clerk0"


def record(c: Cluster, client: str, key: str, type_: str, body: dict[str, Any]) -> txs.Transaction:
    nonce = c.net.nonces.get(client, 0)
    c.net.nonces[client] = nonce + 1
    return txs.create(
        c.net.client_keys[client], chain_id=c.genesis.chain_id, client_id=client, nonce=nonce,
        timestamp_ms=now_ms(), key=key, type_=type_, body=body,
    )  # fmt: skip


async def commit(c: Cluster, http: aiohttp.ClientSession, batch: list[txs.Transaction]) -> None:
    body = {"transactions": [{"raw": t.raw.hex()} for t in batch]}
    async with http.post(c.url(0) + "/v1/transactions?wait=true", json=body) as r:
        assert r.status == 200, await r.text()


async def pages(http: aiohttp.ClientSession, url: str, **query: str) -> list[list[dict[str, Any]]]:
    out: list[list[dict[str, Any]]] = []
    cursor = ""
    while True:
        params = {**query, **({"cursor": cursor} if cursor else {})}
        async with http.get(url + "/v1/records", params=params) as r:
            assert r.status == 200, await r.text()
            body = await r.json()
        assert set(body) == {"records", "next_cursor"}
        out.append(body["records"])
        if body["next_cursor"] is None:
            return out
        cursor = body["next_cursor"]


async def test_records_pages_filters_and_read_policy(tmp_path: Path, http, anonymous) -> None:
    c = await start_cluster(tmp_path, 1, genesis_extra={"public_namespaces": ["permits/public/"]})
    try:
        batch = [record(c, FISCAL, f"fiscal/line/{i:02d}", "budget.line", {"i": i})
                 for i in range(25)]  # fmt: skip
        batch += [record(c, FISCAL, "fiscal/line/03", "budget.line", {"i": 103})]  # a version
        batch += [record(c, FISCAL, f"fiscal/memo/{i}", "memo", {"i": i}) for i in range(5)]
        batch += [record(c, PERMITS, f"permits/public/{i}", "permit", {"i": i}) for i in range(3)]
        batch += [record(c, PERMITS, "permits/private/1", "permit", {"i": 0})]
        await commit(c, http, batch)
        url = c.url(0)

        got = await pages(http, url, prefix="fiscal/line/", limit="10")
        assert [len(p) for p in got] == [10, 10, 5]
        keys = [r["key"] for p in got for r in p]
        assert keys == [f"fiscal/line/{i:02d}" for i in range(25)]  # each record once, in order
        line3 = next(r for p in got for r in p if r["key"] == "fiscal/line/03")
        assert line3["value"] == {"i": 103}  # the current version
        assert set(line3) >= {"key", "type", "value", "tx_id", "height", "index"}

        memos = await pages(http, url, prefix="fiscal/", type="memo", limit="2")
        assert [r["key"] for p in memos for r in p] == [f"fiscal/memo/{i}" for i in range(5)]
        everything = await pages(http, url, limit="1000")
        assert sum(len(p) for p in everything) == 25 + 5 + 3 + 1

        fiscal = signed_as(FISCAL, c.net.client_keys[FISCAL])
        async with http.get(url + "/v1/records", middlewares=fiscal) as r:
            mine = await r.json()
        assert {k["key"].split("/")[0] for k in mine["records"]} == {"fiscal", "permits"}
        assert {k["key"] for k in mine["records"] if k["key"].startswith("permits/")} == {
            f"permits/public/{i}" for i in range(3)
        }  # another organisation's namespace is not listed, its public one is
        async with http.get(url + "/v1/records?prefix=permits/private/", middlewares=fiscal) as r:
            assert r.status == 403
            assert (await r.json())["error"] == "forbidden"
        async with anonymous.get(url + "/v1/records?prefix=permits/") as r:
            assert r.status == 200
            assert len((await r.json())["records"]) == 3
        async with anonymous.get(url + "/v1/records?prefix=fiscal/") as r:
            assert r.status == 401
    finally:
        await stop_all(c)


async def test_records_bad_input_is_400(single: Cluster, http) -> None:
    url = single.url(0)
    for query in (
        "prefix=fiscal/%00", "prefix=" + "a" * 1000, "type=1bad", "type=a%20b", "limit=0",
        f"limit={queries.RECORDS_LIMIT_MAX + 1}", "limit=x", "cursor=zz", "cursor=00",
        "cursor=" + b"..".hex(),
    ):  # fmt: skip
        async with http.get(f"{url}/v1/records?{query}") as r:
            assert r.status == 400, query
            body = await r.json()
            assert body["error"] == "malformed", query
            assert body["reason"], query


async def test_probes_on_a_single_validator(single: Cluster, anonymous) -> None:
    url = single.url(0)
    async with anonymous.get(url + "/healthz") as r:
        assert (r.status, await r.json()) == (200, {"status": "alive"})
    async with anonymous.get(url + "/readyz") as r:  # f = 0: it is its own quorum
        body = await r.json()
        assert r.status == 200, body
        assert body["ready"] is True


async def test_access_log_when_turned_on(
    tmp_path: Path, http, caplog: pytest.LogCaptureFixture
) -> None:
    c = await start_cluster(tmp_path, 1, access_log="true")
    try:
        with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
            async with http.get(c.url(0) + "/v1/records?prefix=fiscal/&limit=5") as r:
                assert r.status == 200
            async with http.get(c.url(0) + "/v1/records?limit=0") as r:
                assert r.status == 400
        lines = [rec for rec in caplog.records if rec.name == ACCESS_LOGGER]
        assert [(rec.levelname, rec.path, rec.status) for rec in lines] == [  # type: ignore[attr-defined]
            ("INFO", "/v1/records", 200), ("INFO", "/v1/records", 400),
        ]  # fmt: skip
        assert lines[0].identity == "node0"  # type: ignore[attr-defined]
    finally:
        await stop_all(c)


async def test_no_access_log_by_default(single: Cluster, http, caplog) -> None:
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        async with http.get(single.url(0) + "/v1/records") as r:
            assert r.status == 200
    assert not [rec for rec in caplog.records if rec.name == ACCESS_LOGGER]

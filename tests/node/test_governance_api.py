"""Governance over real HTTP on one validator (one voting organisation: a quorum of one, so a
proposal takes effect in its own block): /v1/config by height, the proposals, admission under
the configuration in force (a clerk added, then revoked), and every bad input a 4xx that
changes nothing."""

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

import aiohttp
import pytest

from ledger import crypto
from ledger import tx as txs
from tests import factory
from tests.node.conftest import Cluster, now_ms, start_cluster, stop_all, tx_json, within
from tests.node.test_api import get, post, written
from tests.node.test_events import read_events, stream

ADMIN: Final = "fiscal-admin"
ADMIN_KEY: Final = factory.seeded_key("gov-api/admin")
CLERK_KEY: Final = factory.seeded_key("gov-api/clerk")
FINANCE: Final = "City Finance Bureau"


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    admins = [{"id": ADMIN, "organisation": FINANCE,
               "public_key": crypto.public_key_bytes(ADMIN_KEY).hex()}]  # fmt: skip
    c = await start_cluster(tmp_path, 1, genesis_extra={"admins": admins})
    try:
        yield c
    finally:
        await stop_all(c)


def signed(signer: str, key: Any, record_key: str, type_: str, body: dict[str, Any]) -> Any:
    return txs.create(
        key, chain_id=factory.CHAIN_ID, client_id=signer, nonce=now_ms(), timestamp_ms=now_ms(),
        key=record_key, type_=type_, body=body,
    )  # fmt: skip


async def committed(c: Cluster, http: aiohttp.ClientSession, tx: Any) -> dict[str, Any]:
    status, body, _ = await post(http, c.url(0) + "/v1/transactions?wait=true", tx_json(tx))
    assert (status, body["status"]) == (200, "committed"), body
    await c.wait_height(body["height"])
    return dict(body)


async def test_a_clerk_added_and_revoked_over_http(cluster: Cluster, http: Any) -> None:
    c = cluster
    clerk_tx = signed("clerk9", CLERK_KEY, "fiscal/by-clerk9", "record", {})
    status, refused, _ = await post(http, c.url(0) + "/v1/transactions", tx_json(clerk_tx))
    assert (status, refused["error"]) == (403, "unknown_client")
    add = signed(ADMIN, ADMIN_KEY, "_gov/proposals/p1", "gov.proposal", {
        "change": "add-client", "id": "clerk9", "organisation": FINANCE, "role": "clerk",
        "public_key": crypto.public_key_bytes(CLERK_KEY).hex(),
    })  # fmt: skip
    made = await committed(c, http, add)
    assert made["outcome"] == "accepted"
    status, proposal = await get(http, c.url(0) + "/v1/governance/proposals/p1")
    assert (status, proposal["status"], proposal["effective_height"]) == (
        200, "effective", made["height"],
    )  # fmt: skip
    assert (await committed(c, http, clerk_tx))["outcome"] == "accepted"
    status, now = await get(http, c.url(0) + "/v1/config")
    assert status == 200
    assert "clerk9" in {x["id"] for x in now["clients"]}
    assert (now["epoch"], now["version"], now["since"]) == (0, 1, made["height"])
    status, then = await get(http, c.url(0) + f"/v1/config?height={made['height'] - 1}")
    assert "clerk9" not in {x["id"] for x in then["clients"]}

    revoke = signed(ADMIN, ADMIN_KEY, "_gov/proposals/p2", "gov.proposal",
                    {"change": "revoke-client", "id": "clerk9"})  # fmt: skip
    assert (await committed(c, http, revoke))["outcome"] == "accepted"
    before = written(c)
    late = signed("clerk9", CLERK_KEY, "fiscal/by-clerk9/2", "record", {})
    status, refused, _ = await post(http, c.url(0) + "/v1/transactions", tx_json(late))
    assert (status, refused["error"]) == (422, "revoked")
    assert written(c) == before
    status, listed = await get(http, c.url(0) + "/v1/governance/proposals?all=true")
    assert [p["id"] for p in listed["proposals"]] == ["p1", "p2"]
    status, pending = await get(http, c.url(0) + "/v1/governance/proposals")
    assert (status, pending["proposals"]) == (200, [])
    status, state = await get(http, c.url(0) + "/v1/status")
    assert state["epoch"] == 0


async def test_governance_refusals_are_recorded_and_bad_requests_are_4xx(
    cluster: Cluster, http: Any, anonymous: Any
) -> None:
    c = cluster
    rules = {"change": "set-params", "params": {"rules.round_amount_cents": 100}}
    not_yet = signed(ADMIN, ADMIN_KEY, "_gov/proposals/v1", "gov.proposal", rules)
    assert (await committed(c, http, not_yet))["reason"] == "not_in_force"
    clerk = c.net.client_for("fiscal/")
    by_clerk = c.net.tx(clerk, "_gov/proposals/x", {"change": "revoke-client"}, now_ms(),
                        "gov.proposal")  # fmt: skip
    before = written(c)
    status, refused, _ = await post(http, c.url(0) + "/v1/transactions", tx_json(by_clerk))
    assert (status, refused["error"]) == (403, "forbidden_namespace")
    for path, code in [
        ("/v1/config?height=x", 400), ("/v1/config?height=-1", 400),
        ("/v1/config?height=99999999999999999999", 400), ("/v1/config?height=999", 404),
        ("/v1/governance/proposals?all=maybe", 400), ("/v1/governance/proposals/Bad%20Id", 400),
        ("/v1/governance/proposals/nothing", 404),
    ]:  # fmt: skip
        status, answer = await get(http, c.url(0) + path)
        assert status == code, (path, answer)
        assert set(answer) == {"error", "reason"}
    for path in ("/v1/config", "/v1/governance/proposals"):
        status, _ = await get(anonymous, c.url(0) + path)
        assert status == 401
    assert written(c) == before


async def test_governance_events_and_the_log_line_of_an_effect(
    cluster: Cluster, http: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A proposal that takes effect in its own block (a quorum of one) gives a `proposal` and
    an `effect` event after its block's txs; a refused one none; the same events come live and
    from the store, and the effect is logged at INFO."""
    c = cluster
    caplog.set_level(logging.INFO, logger="cityledger.node.governance")
    add = signed(ADMIN, ADMIN_KEY, "_gov/proposals/p1", "gov.proposal", {
        "change": "add-client", "id": "clerk9", "organisation": FINANCE, "role": "clerk",
        "public_key": crypto.public_key_bytes(CLERK_KEY).hex(),
    })  # fmt: skip
    url = c.url(0)
    async with http.get(url + "/v1/events") as live:
        made = await committed(c, http, add)
        live_events = await within(read_events(live, made["height"]))
    again = signed(ADMIN, ADMIN_KEY, "_gov/proposals/p1", "gov.proposal", {"change": "x"})
    refused = await committed(c, http, again)
    assert refused["outcome"] == "refused"
    stored = await stream(http, url, refused["height"], params={"from": str(made["height"])})
    h = made["height"]
    governance = [e for e in stored if e.event == "governance"]
    assert [(e.id, e.data["kind"]) for e in governance] == [(f"{h}:1", "proposal"),
                                                            (f"{h}:2", "effect")]  # fmt: skip
    effect = governance[1].data
    assert (effect["proposal"], effect["change"]["id"], effect["effective_height"]) == (
        "p1", "clerk9", h,
    )  # fmt: skip
    assert (effect["approvals"], effect["admin"]) == ([FINANCE], ADMIN)
    assert [(e.id, e.data) for e in live_events if e.event == "governance"] == [
        (e.id, e.data) for e in governance
    ]
    resumed = await stream(http, url, refused["height"], headers={"Last-Event-ID": f"{h}:1"})
    assert [e.id for e in resumed][:2] == [f"{h}:2", str(h)]
    effects = [r for r in caplog.records if getattr(r, "event", "") == "governance_effect"]
    assert [(r.proposal, r.change, r.subject, r.height) for r in effects] == [  # type: ignore[attr-defined]
        ("p1", "add-client", "clerk9", h)
    ]

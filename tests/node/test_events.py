"""`GET /v1/events` on a live node: positions and resumption, filters and read policy, bad
input; the hub's bounds (subscribers, a slow subscriber dropped with a reason)."""

from typing import Any

import aiohttp
import pytest

from cli.client.events import Event, EventParser
from ledger import block as blocks
from ledger import tx as txs
from node.eventhub import SLOW, EventHub
from tests import factory
from tests.node.conftest import Cluster, now_ms, signed_as, within
from tests.node.test_queries import FISCAL, PERMITS, commit, record


async def read_events(response: aiohttp.ClientResponse, until_height: int) -> list[Event]:
    """The events of one stream up to and including the `block` event of `until_height`."""
    parser = EventParser()
    out: list[Event] = []
    async for raw in response.content:
        event = parser.line(raw.decode().rstrip("\r\n"))
        if event is None:
            continue
        out.append(event)
        if event.event == "block" and event.data["height"] >= until_height:
            return out
    raise AssertionError(f"the stream ended before block {until_height}: {out}")


async def stream(http: aiohttp.ClientSession, url: str, until: int, **kw: object) -> list[Event]:
    async with http.get(url + "/v1/events", **kw) as r:  # type: ignore[arg-type]
        assert r.status == 200, await r.text()
        assert r.headers["Content-Type"].startswith("text/event-stream")
        return await within(read_events(r, until))


async def three_blocks(c: Cluster, http: aiohttp.ClientSession) -> None:
    for h in range(3):
        batch = [record(c, FISCAL, f"fiscal/e/{h}-{i}", "memo", {"i": i}) for i in range(3)]
        await commit(c, http, [*batch, record(c, PERMITS, f"permits/e/{h}", "permit", {"h": h})])
    await c.wait_height(3)


async def test_positions_resume_and_filters(single: Cluster, http) -> None:
    await three_blocks(single, http)
    url = single.url(0)
    events = await stream(http, url, 3, params={"from": "1"})
    ids = [e.id for e in events]
    assert ids[:5] == ["1:0", "1:1", "1:2", "1:3", "1"]  # txs in block order, then the block
    assert len(ids) == len(set(ids)) == 15
    assert events[4].data["tx_count"] == 4
    assert len(events[4].data["hash"]) == 64

    again = await stream(http, url, 3, headers={"Last-Event-ID": "2:1"})
    assert [e.id for e in again] == ids[ids.index("2:1") + 1 :]  # exactly what followed
    after_block = await stream(http, url, 3, headers={"Last-Event-ID": "1"})
    assert [e.id for e in after_block] == ids[5:]

    permits = await stream(http, url, 3, params={"from": "1", "prefix": "permits/"})
    keys = [e.data["key"] for e in permits if e.event == "tx"]
    assert keys == [f"permits/e/{h}" for h in range(3)]

    fiscal = signed_as(FISCAL, single.net.client_keys[FISCAL])
    mine = await stream(http, url, 3, params={"from": "1"}, middlewares=fiscal)
    assert {e.data["key"].split("/")[0] for e in mine if e.event == "tx"} == {"fiscal"}
    assert all(set(e.data) == {"height"} for e in mine if e.event == "block")  # no block content


async def test_live_events_follow_commits(single: Cluster, http) -> None:
    url = single.url(0)
    async with http.get(url + "/v1/events") as r:
        assert r.status == 200
        await commit(single, http, [record(single, FISCAL, "fiscal/live", "memo", {"a": 1})])
        events = await within(read_events(r, 1))
    assert [(e.event, e.id) for e in events] == [("tx", "1:0"), ("block", "1")]
    assert events[0].data["key"] == "fiscal/live"


async def committed(c: Cluster, http: aiohttp.ClientSession, tx: txs.Transaction) -> Any:
    async with http.post(c.url(0) + "/v1/transactions?wait=true", json={"raw": tx.raw.hex()}) as r:
        body = await r.json()
        assert (r.status, body["status"]) == (200, "committed"), body
        return body


async def test_outcomes_and_risk_alerts_arrive_on_the_stream(single: Cluster, http) -> None:
    c, closes = single, now_ms() + 3_600_000
    for key, type_, body in [
        ("fiscal/2027/roads", "budget.appropriation", {"fiscal_year": 2027, "fund": "general",
         "department": "roads", "amount_cents": 5_000_000, "closes_at_ms": closes}),
        ("fiscal/lines/roads", "budget.allocation",
         {"appropriation": "fiscal/2027/roads", "amount_cents": 2_000_000}),
        ("fiscal/payees/acme", "payee.registration",
         {"name": "Acme", "tax_id": "T-1", "status": "active"}),
    ]:  # fmt: skip
        await committed(c, http, record(c, FISCAL, key, type_, body))
    # Three payments under the approval threshold (1,000,000 cents) that together pass it: the
    # third raises `split_payment`; then one beyond what the line has left: refused in order.
    pays = [record(c, FISCAL, f"fiscal/pay/{n}", "budget.disbursement", {
        "line": "fiscal/lines/roads", "payee": "fiscal/payees/acme", "invoice": f"A-{n}",
        "amount_cents": cents}) for n, cents in ((1, 400_000), (2, 400_000), (3, 400_000),
                                                  (4, 900_000))]  # fmt: skip
    statuses = [await committed(c, http, t) for t in pays]
    assert [(s["outcome"], s["reason"]) for s in statuses] == [("accepted", None)] * 3 + [
        ("refused", "over_allocation")]  # fmt: skip
    third, head = statuses[2]["height"], statuses[3]["height"]

    events = await stream(http, c.url(0), head, params={"from": "1"})
    outcomes = {e.data["tx_id"]: (e.data["outcome"], e.data["reason"])
                for e in events if e.event == "tx"}  # fmt: skip
    assert outcomes.pop(pays[3].tx_id.hex()) == ("refused", "over_allocation")
    assert set(outcomes.values()) == {("accepted", None)}
    assert len(outcomes) == 6
    alerts = [e for e in events if e.event == "alert"]
    found = [(e.id, e.data["kind"], e.data["height"]) for e in alerts]
    assert found == [(f"{third}:1", "split_payment", third)]  # after the block's one tx
    assert alerts[0].data["evidence"] == [t.tx_id.hex() for t in pays[:3]]
    ids = [e.id for e in events]
    assert ids[ids.index(f"{third}:1") + 1] == str(third)

    resumed = await stream(http, c.url(0), head, headers={"Last-Event-ID": f"{third}:0"})
    assert [e.id for e in resumed] == ids[ids.index(f"{third}:0") + 1 :]  # the alert, once
    permits = signed_as(PERMITS, c.net.client_keys[PERMITS])
    theirs = await stream(http, c.url(0), head, params={"from": "1"}, middlewares=permits)
    assert [e.event for e in theirs] == ["block"] * head  # no fiscal tx, nor its alert
    filtered = await stream(http, c.url(0), head, params={"from": "1", "prefix": "permits/"})
    assert [e.event for e in filtered] == ["block"] * head


@pytest.mark.parametrize("query", [
    {"headers": {"Last-Event-ID": "x"}}, {"headers": {"Last-Event-ID": "1:"}},
    {"params": {"from": "0"}}, {"params": {"from": "-1"}}, {"params": {"from": "a"}},
    {"params": {"prefix": "bad prefix"}},
])  # fmt: skip
async def test_bad_positions_are_400(
    single: Cluster, http, query: dict[str, dict[str, str]]
) -> None:
    async with http.get(single.url(0) + "/v1/events", **query) as r:  # type: ignore[arg-type]
        assert r.status == 400
        assert (await r.json())["error"] == "malformed"


def a_block() -> blocks.Block:
    net = factory.network(1)
    head = blocks.ChainHead.genesis(net.genesis)
    return blocks.make_block(head, (), factory.BASE_TIME_MS, 0, 0)


async def test_hub_bounds_subscribers_and_drops_the_slow() -> None:
    hub = EventHub(subscribers_max=2, queue_blocks_max=2)
    first, second = hub.subscribe(), hub.subscribe()
    assert first is not None
    assert second is not None
    assert hub.subscribe() is None  # a third is refused (the route answers 503)
    block = a_block()
    for _ in range(2):
        hub.committed(block)
    second.queue.clear()  # the second one keeps up
    hub.committed(block)
    assert first.dropped == SLOW
    assert not first.queue  # its blocks are let go at once
    assert second.dropped is None
    assert len(second.queue) == 1
    hub.unsubscribe(first)
    assert hub.subscribe() is not None
    hub.close()
    assert second.dropped == "shutting_down"

"""Records with rules over real HTTP on a 4-node cluster: a settled refusal is a 422 with its
code at admission and writes nothing; a refusal only block order decides is recorded,
answered with outcome and reason, and proven by the bundle; every node agrees."""

from typing import Any

from ledger import proofs
from ledger import tx as txs
from ledger.kinds.table import KINDS
from tests.node.conftest import Cluster, now_ms, tx_json
from tests.node.test_api import get, post, written


def typed(c: Cluster, key: str, type_: str, body: dict[str, Any]) -> txs.Transaction:
    return c.net.tx(c.net.client_for("fiscal/"), key, body, now_ms(), type_)


async def committed(c: Cluster, http: Any, tx: txs.Transaction) -> dict[str, Any]:
    status, body, _ = await post(http, c.url(0) + "/v1/transactions?wait=true", tx_json(tx))
    assert (status, body["status"]) == (200, "committed"), body
    return dict(body)


async def test_rules_at_admission_and_in_block_order(cluster: Cluster, http) -> None:
    c = cluster
    appropriation = typed(c, "fiscal/2027/parks", "budget.appropriation", {
        "fiscal_year": 2027, "fund": "general", "department": "parks", "amount_cents": 1000,
        "closes_at_ms": now_ms() + 3_600_000,
    })  # fmt: skip
    body = await committed(c, http, appropriation)
    assert (body["outcome"], body["reason"]) == ("accepted", None)
    await c.wait_height(body["height"])
    # Settled at admission: a field missing is a schema refusal, answered at once.
    before = written(c)
    broken = typed(c, "fiscal/lines/x", "budget.allocation", {"amount_cents": 5})
    status, refused, _ = await post(http, c.url(1) + "/v1/transactions", tx_json(broken))
    assert (status, refused["error"]) == (422, "schema"), refused
    assert written(c) == before
    # Decided in block order: the line asks more than the appropriation holds.
    greedy = typed(c, "fiscal/lines/x", "budget.allocation",
                   {"appropriation": "fiscal/2027/parks", "amount_cents": 1001})  # fmt: skip
    body = await committed(c, http, greedy)
    assert (body["outcome"], body["reason"]) == ("refused", "over_appropriation")
    await c.wait_height(body["height"])
    for i in range(4):
        status, found = await get(http, c.url(i) + f"/v1/transactions/{greedy.tx_id.hex()}")
        assert (status, found["outcome"], found["reason"]) == (200, "refused", "over_appropriation")
        status, missing = await get(http, c.url(i) + "/v1/records/fiscal/lines/x")
        assert status == 404, missing  # refused: no version of its record
    status, block = await get(http, c.url(2) + f"/v1/blocks/{body['height']}")
    assert {"outcome": "refused", "reason": "over_appropriation"} in block["outcomes"]
    status, bundle = await get(http, c.url(3) + f"/v1/transactions/{greedy.tx_id.hex()}/proof")
    assert status == 200
    assert proofs.verify_bundle(bundle, c.genesis).outcome == "over_appropriation"


async def test_kinds_are_published_and_budget_lines_read(cluster: Cluster, http, anonymous) -> None:
    c = cluster
    status, kinds = await get(anonymous, c.url(0) + "/v1/kinds")  # no identity needed
    assert status == 200
    assert [k["type"] for k in kinds["kinds"]] == list(KINDS)
    status, one = await get(anonymous, c.url(1) + "/v1/kinds/budget.disbursement")
    assert status == 200
    assert one["schema"]["required"] == ["line", "payee", "invoice", "amount_cents"]
    assert one["schema"]["additionalProperties"] is False
    assert {r["code"] for r in one["rules"]} >= {"duplicate_payment", "over_allocation"}
    status, missing = await get(anonymous, c.url(1) + "/v1/kinds/budget.nothing")
    assert (status, missing["error"]) == (404, "not_found")
    for tx in (
        typed(c, "fiscal/2027/roads", "budget.appropriation", {
            "fiscal_year": 2027, "fund": "general", "department": "roads",
            "amount_cents": 5000, "closes_at_ms": now_ms() + 3_600_000}),
        typed(c, "fiscal/lines/potholes", "budget.allocation",
              {"appropriation": "fiscal/2027/roads", "amount_cents": 3000}),
        typed(c, "fiscal/payees/acme", "payee.registration",
              {"name": "Acme", "tax_id": "T-1", "status": "active"}),
    ):  # fmt: skip
        await committed(c, http, tx)
    pay = typed(c, "fiscal/pay/1", "budget.disbursement", {
        "line": "fiscal/lines/potholes", "payee": "fiscal/payees/acme", "invoice": "A-1",
        "amount_cents": 1200})  # fmt: skip
    body = await committed(c, http, pay)
    await c.wait_height(body["height"])
    status, line = await get(http, c.url(2) + "/v1/budget/fiscal/lines/potholes")
    assert status == 200
    assert (line["appropriated"], line["allocated"], line["spent"], line["remaining"]) == (
        5000, 3000, 1200, 1800)  # fmt: skip
    status, lines = await get(http, c.url(3) + "/v1/budget?prefix=fiscal/lines/")
    assert (status, [ln["line"] for ln in lines["lines"]]) == (200, ["fiscal/lines/potholes"])
    status, _ = await get(anonymous, c.url(3) + "/v1/budget/fiscal/lines/potholes")
    assert status == 401
    status, _ = await get(http, c.url(3) + "/v1/budget/fiscal/lines/none")
    assert status == 404


async def test_risk_pages_go_on_inside_a_block_whose_alerts_fill_them(
    single: Cluster, http
) -> None:
    c = single
    payee = {"name": "Acme", "tax_id": "T-1", "status": "active"}
    for tx in (
        typed(c, "fiscal/2027/roads", "budget.appropriation", {
            "fiscal_year": 2027, "fund": "general", "department": "roads",
            "amount_cents": 10**12, "closes_at_ms": now_ms() + 3_600_000}),
        typed(c, "fiscal/lines/asphalt", "budget.allocation",
              {"appropriation": "fiscal/2027/roads", "amount_cents": 10**11}),
        typed(c, "fiscal/payees/acme", "payee.registration", payee),
    ):  # fmt: skip
        await committed(c, http, tx)
    # Five round payments in one request: one block, five round_amount alerts in it.
    payments = [
        typed(c, f"fiscal/pay/{i}", "budget.disbursement", {
            "line": "fiscal/lines/asphalt", "payee": "fiscal/payees/acme",
            "invoice": f"R-{i}", "amount_cents": 2_000_000})
        for i in range(5)
    ]  # fmt: skip
    batch = {"transactions": [tx_json(t) for t in payments]}
    status, body, _ = await post(http, c.url(0) + "/v1/transactions?wait=true", batch)
    assert status == 200, body
    heights = {a["height"] for a in body["accepted"]}
    assert len(heights) == 1, body  # the premise: they share a block
    seen, cursor, pages = [], "", 0
    while True:
        query = "/v1/risks?kind=round_amount&limit=2" + (f"&cursor={cursor}" if cursor else "")
        status, page = await get(http, c.url(0) + query)
        assert status == 200, page
        seen += page["alerts"]
        pages += 1
        if page["next_cursor"] is None:
            break
        cursor = page["next_cursor"]
    assert pages == 3  # 2 + 2 + 1: the block's alerts span three pages
    assert [a["evidence"] for a in seen] == [[t.tx_id.hex()] for t in payments]
    assert {a["height"] for a in seen} == heights
    for bad in ("", "zz", "00" * 10, "0" * 19):
        status, refused = await get(http, c.url(0) + f"/v1/risks?cursor={bad}")
        assert (status, refused["error"]) == (400, "malformed"), bad

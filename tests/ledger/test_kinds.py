"""Record kinds: each rule refuses what it must with its code, and accepts what it must.

A `Book` runs txs one at a time through `execute_tx` against an in-memory rule state, as a
block would in order; refused txs change nothing.
"""

from typing import Any, Final

import pytest

from ledger.kinds import base
from ledger.kinds.execute import Overlay, execute_tx
from tests import factory

NET: Final = factory.network()
CLIENT: Final = "fiscal-clerk0"
T0: Final = factory.BASE_TIME_MS
YEAR_END: Final = T0 + 365 * 86_400_000
FINANCE: Final = "finance"
HARBOR: Final = "harbor"
CIVIC: Final = "civic"


class Book:
    def __init__(self) -> None:
        self.state = Overlay(lambda _key: None)
        self.time_ms = T0 + 1000

    def run(self, key: str, type_: str, body: dict[str, Any], org: str = FINANCE) -> str:
        tx = NET.tx(CLIENT, key, body, self.time_ms, type_)
        before = dict(self.state.writes)
        code, writes = execute_tx(self.state, tx, org, self.time_ms)
        assert self.state.writes == before, "execution itself writes nothing"
        if code:
            assert writes == {}
        self.state.update(writes)
        return code

    def ok(self, key: str, type_: str, body: dict[str, Any], org: str = FINANCE) -> None:
        assert self.run(key, type_, body, org) == base.ACCEPTED

    def line(self, key: str) -> dict[str, Any]:
        value = self.state.get(base.state_key(b"l", key))
        assert isinstance(value, dict)
        return value


def appropriation(amount: int = 1_000_000, closes: int = YEAR_END) -> dict[str, Any]:
    return {
        "fiscal_year": 2027, "fund": "general", "department": "parks",
        "amount_cents": amount, "closes_at_ms": closes,
    }  # fmt: skip


def disbursement(
    line: str, invoice: str, cents: int, payee: str = "fiscal/payees/acme"
) -> dict[str, Any]:
    return {"line": line, "payee": payee, "invoice": invoice, "amount_cents": cents}


@pytest.fixture
def book() -> Book:
    b = Book()
    b.ok("fiscal/2027/parks", "budget.appropriation", appropriation())
    b.ok("fiscal/lines/trees", "budget.allocation",
         {"appropriation": "fiscal/2027/parks", "amount_cents": 600_000})  # fmt: skip
    b.ok("fiscal/lines/paths", "budget.allocation",
         {"appropriation": "fiscal/2027/parks", "amount_cents": 300_000})  # fmt: skip
    b.ok("fiscal/payees/acme", "payee.registration",
         {"name": "Acme Landscaping", "tax_id": "TX-1", "status": "active"})  # fmt: skip
    return b


# --- schema --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ({k: v for k, v in appropriation().items() if k != "fund"}, "missing"),
        ({**appropriation(), "amount_cents": "5"}, "wrong type"),
        ({**appropriation(), "amount_cents": -5}, "out of bounds"),
        ({**appropriation(), "amount_cents": True}, "bool is no integer"),
        ({**appropriation(), "fiscal_year": 99}, "year out of bounds"),
        ({**appropriation(), "colour": "red"}, "unknown field"),
        ({**appropriation(), "fund": ""}, "empty text"),
        ({**appropriation(), "fund": "a\nb"}, "control character"),
    ],
)
def test_schema_refuses_bad_bodies(body: dict[str, Any], why: str) -> None:
    assert Book().run("fiscal/2027/x", "budget.appropriation", body) == base.SCHEMA, why


def test_schema_refuses_a_kind_outside_its_namespace() -> None:
    assert Book().run("permits/x", "budget.appropriation", appropriation()) == base.SCHEMA


def test_schema_refuses_a_bad_reference_key_and_a_bad_enum(book: Book) -> None:
    bad_ref = {"appropriation": "fiscal//x", "amount_cents": 1}
    assert book.run("fiscal/lines/x", "budget.allocation", bad_ref) == base.SCHEMA
    bad_status = {"name": "B", "tax_id": "T", "status": "maybe"}
    assert book.run("fiscal/payees/b", "payee.registration", bad_status) == base.SCHEMA


def test_untyped_records_are_accepted_as_before() -> None:
    b = Book()
    b.ok("fiscal/notes/1", "record", {"anything": 1})
    b.ok("fiscal/notes/1", "record", {"anything": 2}, org=HARBOR)  # no owner for plain records


# --- ownership and transitions -----------------------------------------------------------


def test_not_owner_refuses_a_later_version_from_another_organisation(book: Book) -> None:
    raised = {"appropriation": "fiscal/2027/parks", "amount_cents": 10}
    assert book.run("fiscal/lines/trees", "budget.allocation", raised, org=HARBOR) == base.NOT_OWNER
    book.ok("fiscal/lines/trees", "budget.allocation", raised)


def test_a_typed_record_keeps_its_type(book: Book) -> None:
    assert book.run("fiscal/lines/trees", "record", {"x": 1}) == base.INVALID_TRANSITION
    body = {"name": "Trees", "tax_id": "T", "status": "active"}
    assert book.run("fiscal/lines/trees", "payee.registration", body) == base.INVALID_TRANSITION


# --- fiscal rules --------------------------------------------------------------------------


def test_allocation_needs_its_appropriation(book: Book) -> None:
    body = {"appropriation": "fiscal/2027/none", "amount_cents": 1}
    assert book.run("fiscal/lines/x", "budget.allocation", body) == base.UNKNOWN_REFERENCE


def test_over_appropriation(book: Book) -> None:
    body = {"appropriation": "fiscal/2027/parks", "amount_cents": 100_001}
    assert book.run("fiscal/lines/x", "budget.allocation", body) == base.OVER_APPROPRIATION
    book.ok("fiscal/lines/x", "budget.allocation", {**body, "amount_cents": 100_000})
    raised = {"appropriation": "fiscal/2027/parks", "amount_cents": 6_000_000}  # tenfold
    assert book.run("fiscal/lines/trees", "budget.allocation", raised) == base.OVER_APPROPRIATION


def test_appropriation_cannot_shrink_below_what_is_allocated(book: Book) -> None:
    shrunk = appropriation(amount=899_999)
    assert book.run("fiscal/2027/parks", "budget.appropriation", shrunk) == base.OVER_APPROPRIATION
    book.ok("fiscal/2027/parks", "budget.appropriation", appropriation(amount=900_000))
    moved = {**appropriation(), "department": "roads"}
    assert book.run("fiscal/2027/parks", "budget.appropriation", moved) == base.INVALID_TRANSITION


def test_disbursement_over_allocation_and_accepted(book: Book) -> None:
    book.ok(
        "fiscal/pay/1", "budget.disbursement", disbursement("fiscal/lines/trees", "I-1", 500_000)
    )
    over = disbursement("fiscal/lines/trees", "I-2", 100_001)
    assert book.run("fiscal/pay/2", "budget.disbursement", over) == base.OVER_ALLOCATION
    assert book.line("fiscal/lines/trees") == {
        "appropriation": "fiscal/2027/parks", "amount": 600_000, "spent": 500_000,
    }  # fmt: skip
    shrink = {"appropriation": "fiscal/2027/parks", "amount_cents": 499_999}
    assert book.run("fiscal/lines/trees", "budget.allocation", shrink) == base.OVER_ALLOCATION


def test_duplicate_payment(book: Book) -> None:
    book.ok(
        "fiscal/pay/1", "budget.disbursement", disbursement("fiscal/lines/trees", "INV-77", 100)
    )
    again = disbursement("fiscal/lines/paths", "INV-77", 100)
    assert book.run("fiscal/pay/2", "budget.disbursement", again) == base.DUPLICATE_PAYMENT


def test_unknown_references_of_a_disbursement(book: Book) -> None:
    no_line = disbursement("fiscal/lines/none", "I", 1)
    assert book.run("fiscal/pay/1", "budget.disbursement", no_line) == base.UNKNOWN_REFERENCE
    no_payee = disbursement("fiscal/lines/trees", "I", 1, payee="fiscal/payees/ghost")
    assert book.run("fiscal/pay/1", "budget.disbursement", no_payee) == base.UNKNOWN_REFERENCE


def test_blocked_payee(book: Book) -> None:
    blocked = {"name": "Acme Landscaping", "tax_id": "TX-1", "status": "blocked"}
    book.ok("fiscal/payees/acme", "payee.registration", blocked)
    pay = disbursement("fiscal/lines/trees", "I-1", 100)
    assert book.run("fiscal/pay/1", "budget.disbursement", pay) == base.BLOCKED_PAYEE


def test_fiscal_year_closed(book: Book) -> None:
    book.time_ms = YEAR_END
    pay = disbursement("fiscal/lines/trees", "I-1", 100)
    assert book.run("fiscal/pay/1", "budget.disbursement", pay) == base.FISCAL_YEAR_CLOSED
    body = {"appropriation": "fiscal/2027/parks", "amount_cents": 1}
    assert book.run("fiscal/lines/new", "budget.allocation", body) == base.FISCAL_YEAR_CLOSED


def test_disbursements_are_final(book: Book) -> None:
    pay = disbursement("fiscal/lines/trees", "I-1", 100)
    book.ok("fiscal/pay/1", "budget.disbursement", pay)
    again = disbursement("fiscal/lines/trees", "I-2", 100)
    assert book.run("fiscal/pay/1", "budget.disbursement", again) == base.INVALID_TRANSITION


def test_transfer_between_lines(book: Book) -> None:
    book.ok(
        "fiscal/pay/1", "budget.disbursement", disbursement("fiscal/lines/trees", "I-1", 550_000)
    )
    move = {
        "from_line": "fiscal/lines/trees",
        "to_line": "fiscal/lines/paths",
        "amount_cents": 50_001,
    }
    assert book.run("fiscal/tr/1", "budget.transfer", move) == base.OVER_ALLOCATION
    book.ok("fiscal/tr/1", "budget.transfer", {**move, "amount_cents": 50_000})
    assert book.line("fiscal/lines/trees")["amount"] == 550_000
    assert book.line("fiscal/lines/paths")["amount"] == 350_000
    same = {**move, "to_line": "fiscal/lines/trees"}
    assert book.run("fiscal/tr/2", "budget.transfer", same) == base.SCHEMA
    ghost = {**move, "to_line": "fiscal/lines/ghost", "amount_cents": 1}
    assert book.run("fiscal/tr/3", "budget.transfer", ghost) == base.UNKNOWN_REFERENCE


def test_transfer_into_another_appropriation_respects_it(book: Book) -> None:
    book.ok(
        "fiscal/2027/roads", "budget.appropriation", {**appropriation(100), "department": "roads"}
    )
    book.ok("fiscal/lines/potholes", "budget.allocation",
            {"appropriation": "fiscal/2027/roads", "amount_cents": 100})  # fmt: skip
    move = {
        "from_line": "fiscal/lines/trees",
        "to_line": "fiscal/lines/potholes",
        "amount_cents": 1,
    }
    assert book.run("fiscal/tr/1", "budget.transfer", move) == base.OVER_APPROPRIATION


# --- insurance rules -----------------------------------------------------------------------

TYPHOON: Final = T0 + 5_000


def policy(
    coverage: int = 1_000_000, perils: tuple[str, ...] = ("typhoon", "flood")
) -> dict[str, Any]:
    return {
        "holder": "Ana Reyes", "property_id": "parcel-17", "perils": list(perils),
        "coverage_cents": coverage, "starts_ms": T0, "ends_ms": YEAR_END,
    }  # fmt: skip


def claim(policy_key: str, loss: int, claimed: int, **changes: Any) -> dict[str, Any]:
    body = {
        "policy": policy_key, "event_id": "typhoon-2027-04", "event_ms": TYPHOON,
        "peril": "typhoon", "loss_cents": loss, "claimed_cents": claimed,
    }  # fmt: skip
    return {**body, **changes}


@pytest.fixture
def insured() -> Book:
    b = Book()
    b.ok("policies/harbor/P1", "insurance.policy", policy(), org=HARBOR)
    b.ok("policies/civic/C9", "insurance.policy", policy(), org=CIVIC)
    return b


def test_claim_rules(insured: Book) -> None:
    def run(body: dict[str, Any], org: str = HARBOR) -> str:
        return insured.run("claims/harbor/1", "insurance.claim", body, org=org)

    assert run(claim("policies/harbor/none", 10, 10)) == base.UNKNOWN_REFERENCE
    assert run(claim("policies/civic/C9", 10, 10)) == base.NOT_OWNER
    assert run(claim("policies/harbor/P1", 10, 10, event_ms=YEAR_END)) == base.POLICY_INACTIVE
    assert run(claim("policies/harbor/P1", 10, 10, peril="quake")) == base.PERIL_NOT_COVERED
    assert run(claim("policies/harbor/P1", 10, 11)) == base.OVER_LOSS
    assert run(claim("policies/harbor/P1", 2_000_000, 1_000_001)) == base.OVER_COVERAGE
    assert run(claim("policies/harbor/P1", 800_000, 800_000)) == base.ACCEPTED


def test_payouts_across_insurers_stay_within_the_loss(insured: Book) -> None:
    insured.ok(
        "claims/harbor/1",
        "insurance.claim",
        claim("policies/harbor/P1", 800_000, 800_000),
        org=HARBOR,
    )
    insured.ok(
        "claims/civic/1", "insurance.claim", claim("policies/civic/C9", 800_000, 600_000), org=CIVIC
    )
    insured.ok("claims/harbor/pay-1", "insurance.payout",
               {"claim": "claims/harbor/1", "amount_cents": 800_000}, org=HARBOR)  # fmt: skip
    second = {"claim": "claims/civic/1", "amount_cents": 600_000}
    assert (
        insured.run("claims/civic/pay-1", "insurance.payout", second, org=CIVIC) == base.OVER_LOSS
    )
    late = claim("policies/civic/C9", 700_000, 1)  # declares less than was already paid
    assert insured.run("claims/civic/2", "insurance.claim", late, org=CIVIC) == base.OVER_LOSS


def test_payout_rules(insured: Book) -> None:
    insured.ok(
        "claims/harbor/1", "insurance.claim", claim("policies/harbor/P1", 500, 300), org=HARBOR
    )
    pay = {"claim": "claims/harbor/1", "amount_cents": 301}
    assert (
        insured.run("claims/harbor/p1", "insurance.payout", pay, org=HARBOR) == base.OVER_COVERAGE
    )
    assert insured.run("claims/civic/p1", "insurance.payout", pay, org=CIVIC) == base.NOT_OWNER
    ghost = {"claim": "claims/harbor/none", "amount_cents": 1}
    assert (
        insured.run("claims/harbor/p2", "insurance.payout", ghost, org=HARBOR)
        == base.UNKNOWN_REFERENCE
    )
    insured.ok("claims/harbor/p1", "insurance.payout", {**pay, "amount_cents": 300}, org=HARBOR)


def test_policy_cover_cannot_fall_below_what_was_paid(insured: Book) -> None:
    insured.ok(
        "claims/harbor/1", "insurance.claim", claim("policies/harbor/P1", 500, 500), org=HARBOR
    )
    insured.ok("claims/harbor/p1", "insurance.payout",
               {"claim": "claims/harbor/1", "amount_cents": 500}, org=HARBOR)  # fmt: skip
    cut = policy(coverage=499)
    assert (
        insured.run("policies/harbor/P1", "insurance.policy", cut, org=HARBOR) == base.OVER_COVERAGE
    )
    moved = {**policy(), "property_id": "parcel-18"}
    assert (
        insured.run("policies/harbor/P1", "insurance.policy", moved, org=HARBOR)
        == base.INVALID_TRANSITION
    )
    backwards = {**policy(), "ends_ms": T0}
    assert (
        insured.run("policies/harbor/P2", "insurance.policy", backwards, org=HARBOR) == base.SCHEMA
    )


# --- permits -------------------------------------------------------------------------------


def permit(status: str) -> dict[str, Any]:
    return {"applicant": "Ana", "parcel": "parcel-17", "description": "garage", "status": status}


def test_permit_transitions() -> None:
    b = Book()
    assert b.run("permits/1", "permit.building", permit("approved")) == base.INVALID_TRANSITION
    for status in ("submitted", "under_review", "approved", "issued"):
        b.ok("permits/1", "permit.building", permit(status))
    assert b.run("permits/1", "permit.building", permit("submitted")) == base.INVALID_TRANSITION
    assert b.run("permits/1", "permit.building", permit("nonsense")) == base.SCHEMA


def test_an_overlay_over_an_overlay_reads_what_the_chain_of_them_holds() -> None:
    base = {b"a": 1, b"b": 2, b"c": 3}
    below = Overlay(base.get)
    below.update({b"b": 20, b"d": 40})
    above = Overlay(below.get)
    above.update({b"c": 300})
    top = Overlay(above.get)
    top.update({b"a": 1000})
    expect = {b"a": 1000, b"b": 20, b"c": 300, b"d": 40, b"e": None}
    assert {k: top.get(k) for k in expect} == expect
    below.update({b"e": 50})  # writes made below later are seen above, as through `get`
    assert (above.get(b"e"), top.get(b"e"), top.writes) == (50, 50, {b"a": 1000})
    empty_below = Overlay(base.get)
    middle = Overlay(empty_below.get)
    over = Overlay(middle.get)
    empty_below.update({b"a": 7})
    middle.update({b"b": 8})
    assert (over.get(b"a"), over.get(b"b"), over.get(b"c")) == (7, 8, 3)

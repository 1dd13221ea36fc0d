"""The records `cityledger demo` submits: the seeds' story of a city's fund flows and of two
insurers sharing one ledger with it. Pure data, stamped relative to the demo's start.

Finance appropriates road money and allocates a line from it, registers two payees and pays
two invoices; planning moves a permit along its statuses; both insurers cover one harbour
parcel against typhoons. Then the refusals: a payment beyond what the line has left (refused in
block order, recorded as evidence), the same invoice paid again (refused at admission), and,
after one typhoon, a claim at each insurer whose second payout would pay the loss twice.
"""

from typing import Any, Final

Record = tuple[str, str, str, dict[str, Any]]  # (organisation slug, key, type, body)

DAY_MS: Final = 86_400_000
YEAR_MS: Final = 365 * DAY_MS
APPROPRIATION: Final = "fiscal/2025/appropriations/public-works"
LINE: Final = "fiscal/2025/lines/road-maintenance"
NORDBAU: Final = "fiscal/payees/nordbau-roadworks"
QUAYSIDE: Final = "fiscal/payees/quayside-asphalt"
PERMIT: Final = "permits/building/2025-0117"
PARCEL: Final = "harbour-district-lot-14"
TYPHOON: Final = "typhoon-2025-haikui"
HM_POLICY: Final = "policies/harbor-mutual/HM-2025-88231"
CS_POLICY: Final = "policies/civic-shield/CS-P-2025-311"
HM_CLAIM: Final = "claims/harbor-mutual/HM-2025-0007"
CS_CLAIM: Final = "claims/civic-shield/CS-2025-0042"
JOINING: Final = "finance-2"  # the finance bureau's second validator, added on the running chain
JOINING_ORGANISATION: Final = "City Finance Bureau"
LOSS_CENTS: Final = 12_000_000  # 120,000.00 of damage to the parcel's building


def budget(now_ms: int) -> list[Record]:
    return [
        ("finance", APPROPRIATION, "budget.appropriation", {
            "fiscal_year": 2025, "fund": "general", "department": "Public Works",
            "amount_cents": 400_000_000, "closes_at_ms": now_ms + YEAR_MS,
        }),
        ("finance", LINE, "budget.allocation", {
            "appropriation": APPROPRIATION, "amount_cents": 150_000_000,
            "purpose": "Road maintenance programme 2025",
        }),
        ("finance", NORDBAU, "payee.registration",
         {"name": "Nordbau Roadworks Ltd", "tax_id": "DE-811907980", "status": "active"}),
        ("finance", QUAYSIDE, "payee.registration",
         {"name": "Quayside Asphalt Co", "tax_id": "NL-004512337B01", "status": "active"}),
    ]  # fmt: skip


def spending_and_permits(now_ms: int) -> list[Record]:
    cover = {"perils": ["typhoon", "flood"], "property_id": PARCEL,
             "starts_ms": now_ms - 30 * DAY_MS, "ends_ms": now_ms + YEAR_MS}  # fmt: skip
    return [
        _payment("0001", NORDBAU, "NR-2025-0412", 80_000_000),
        _payment("0002", QUAYSIDE, "QA-7731", 45_500_000),
        ("planning", PERMIT, "permit.building", _permit("submitted")),
        ("planning", PERMIT, "permit.building", _permit("under_review")),
        ("planning", PERMIT, "permit.building", _permit("approved")),
        ("harbor-mutual", HM_POLICY, "insurance.policy",
         {**cover, "holder": "Riverside Housing Co-op", "coverage_cents": 20_000_000}),
        ("civic-shield", CS_POLICY, "insurance.policy",
         {**cover, "holder": "Riverside Housing Co-op", "coverage_cents": 15_000_000}),
    ]  # fmt: skip


def over_spend() -> Record:
    """More than the line has left after the two payments: refused in block order."""
    return _payment("0003", NORDBAU, "NR-2025-0519", 30_000_000)


def duplicate_invoice() -> Record:
    """Invoice NR-2025-0412 of Nordbau again: already paid, refused at admission."""
    return _payment("0004", NORDBAU, "NR-2025-0412", 80_000_000)


def split_payments() -> list[Record]:
    """Three payments of 4,000.00 to one payee, each under the approval threshold (10,000.00),
    together above it: accepted, and flagged for a person (`split_payment`)."""
    return [_payment(f"01{n}", QUAYSIDE, f"QA-7740-{n}", 400_000) for n in (1, 2, 3)]


def typhoon_claims(now_ms: int) -> list[Record]:
    event = {"event_id": TYPHOON, "event_ms": now_ms - DAY_MS, "peril": "typhoon",
             "loss_cents": LOSS_CENTS}  # fmt: skip
    return [
        ("civic-shield", CS_CLAIM, "insurance.claim",
         {**event, "policy": CS_POLICY, "claimed_cents": LOSS_CENTS}),
        ("harbor-mutual", HM_CLAIM, "insurance.claim",
         {**event, "policy": HM_POLICY, "claimed_cents": LOSS_CENTS}),
        ("civic-shield", f"{CS_CLAIM}/payout-1", "insurance.payout",
         {"claim": CS_CLAIM, "amount_cents": LOSS_CENTS}),
    ]  # fmt: skip


def second_payout() -> Record:
    """Harbor Mutual pays the same loss again: all payouts would pass the loss."""
    return ("harbor-mutual", f"{HM_CLAIM}/payout-1", "insurance.payout",
            {"claim": HM_CLAIM, "amount_cents": LOSS_CENTS})  # fmt: skip


def after_crash() -> list[Record]:
    return [
        ("planning", PERMIT, "permit.building", _permit("issued")),
        _payment("0005", QUAYSIDE, "QA-7790", 20_000_000),
    ]


LEAKED_CLERK: Final = "civic-shield-clerk"


def leaked_key_use() -> Record:
    """What someone holding the leaked key signs after its revocation."""
    return ("civic-shield", "policies/civic-shield/notes/after-the-leak", "note",
            {"text": "signed with a key the insurer reported leaked"})  # fmt: skip


def _payment(number: str, payee: str, invoice: str, cents: int) -> Record:
    return ("finance", f"fiscal/2025/disbursements/{number}", "budget.disbursement",
            {"line": LINE, "payee": payee, "invoice": invoice, "amount_cents": cents})  # fmt: skip


def _permit(status: str) -> dict[str, Any]:
    return {"applicant": "Riverside Housing Co-op", "parcel": PARCEL,
            "description": "6-storey residential building, 48 flats", "status": status}  # fmt: skip


def after_join(n: int) -> Record:
    """A record of the finance bureau's, sent once the new validator is added (one block)."""
    return ("finance", f"fiscal/2025/notes/after-join-{n}", "record", {"note": n})

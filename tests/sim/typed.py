"""Typed records for the simulated clients: small fiscal, permit and insurance worlds whose
outcomes depend on the order the txs commit in (a payment before or after the transfer that
funds it, the same invoice twice, a permit's status moves), so that the sweeps check that
every honest replica reaches the same outcome for every tx under every fault.

What a tx holds is drawn from its own sequence number, not from the simulator's rng, so the
simulator's stream of draws (and every fixed-seed story) is the same as with plain records.
"""

import random
from typing import Any, Final

from tests.factory import BASE_TIME_MS

TYPED_EVERY: Final = 3  # of every 3 txs, 2 are typed (the third a plain record, as before)
_LINES: Final = ("fiscal/lines/0", "fiscal/lines/1", "fiscal/lines/2")
_PAYEES: Final = ("fiscal/payees/0", "fiscal/payees/1")
_APPROPRIATION: Final = "fiscal/2027/general"
_STATUSES: Final = ("submitted", "under_review", "approved", "rejected", "issued")

Typed = tuple[str, str, dict[str, Any]]  # key, type, body


def typed(namespace: str, seq: int) -> Typed | None:
    """The typed record a client of `namespace` writes as its tx number `seq`, or None (a plain
    record)."""
    if seq % TYPED_EVERY == 0:
        return None
    rng = random.Random(seq)
    if namespace == "fiscal":
        return _fiscal(rng, seq)
    if namespace == "permits":
        key = f"permits/p-{rng.randrange(4)}"
        body = {"applicant": "A", "parcel": key[-1], "description": "house",
                "status": rng.choice(_STATUSES)}  # fmt: skip
        return key, "permit.building", body
    if namespace == "policies":
        body = {"holder": "H", "property_id": f"parcel-{rng.randrange(3)}",
                "perils": ["typhoon"], "coverage_cents": rng.randrange(1, 5000),
                "starts_ms": BASE_TIME_MS, "ends_ms": BASE_TIME_MS + 10**12}  # fmt: skip
        return f"policies/civic/{rng.randrange(3)}", "insurance.policy", body
    # claims/: on another organisation's policies (not_owner) or on none (unknown_reference)
    body = {"policy": f"policies/civic/{rng.randrange(4)}", "event_id": "typhoon-1",
            "event_ms": BASE_TIME_MS, "peril": "typhoon", "loss_cents": 100,
            "claimed_cents": 50}  # fmt: skip
    return f"claims/harbor/{seq}", "insurance.claim", body


def _fiscal(rng: random.Random, seq: int) -> Typed:
    roll = rng.random()
    if roll < 0.08:
        body = {"fiscal_year": 2027, "fund": "general", "department": "parks",
                "amount_cents": rng.randrange(5_000, 20_000),
                "closes_at_ms": BASE_TIME_MS + 10**12}  # fmt: skip
        return _APPROPRIATION, "budget.appropriation", body
    if roll < 0.3:
        body = {"appropriation": _APPROPRIATION, "amount_cents": rng.randrange(0, 6_000)}
        return rng.choice(_LINES), "budget.allocation", body
    if roll < 0.4:
        body = {"from_line": rng.choice(_LINES), "to_line": rng.choice(_LINES),
                "amount_cents": rng.randrange(1, 2_000)}  # fmt: skip
        return f"fiscal/transfers/{seq}", "budget.transfer", body
    if roll < 0.5:
        body = {"name": "P", "tax_id": "T", "status": rng.choice(("active", "active", "blocked"))}
        return rng.choice(_PAYEES), "payee.registration", body
    invoice = f"INV-{rng.randrange(30)}"
    body = {"line": rng.choice(_LINES), "payee": rng.choice(_PAYEES), "invoice": invoice,
            "amount_cents": rng.randrange(1, 3_000)}  # fmt: skip
    return f"fiscal/payments/{seq}", "budget.disbursement", body

"""`insurance.policy`: an insurer's cover of one property against named perils for a period.

State: `y` + key -> {organisation, property_id, perils, coverage, starts_ms, ends_ms, paid},
where `paid` is what its claims' payouts took (ledger/kinds/payout.py). A later version (by
its insurer) may change the cover, never to less than was paid, nor the property it covers.
"""

from typing import Any, Final

from ledger.kinds.base import (
    INVALID_TRANSITION,
    LIST_ITEMS_MAX,
    OVER_COVERAGE,
    SCHEMA,
    TIME_MS_MAX,
    UNKNOWN_REFERENCE,
    Context,
    Field,
    Kind,
    State,
    Writes,
    amount,
    require,
    state_key,
    text,
)

TABLE: Final = b"y"


def entry(state: State, key: str) -> dict[str, Any]:
    found = state.get(state_key(TABLE, key))
    require(found is not None, UNKNOWN_REFERENCE, f"no policy {key!r}")
    assert isinstance(found, dict)
    return found


def apply(state: State, ctx: Context) -> Writes:
    body = ctx.body
    require(body["ends_ms"] > body["starts_ms"], SCHEMA, "ends_ms must follow starts_ms")
    before = state.get(state_key(TABLE, ctx.key))
    paid = 0
    if before is not None:
        require(
            before["property_id"] == body["property_id"],
            INVALID_TRANSITION,
            "a policy keeps its property",
        )
        paid = before["paid"]
    require(body["coverage_cents"] >= paid, OVER_COVERAGE, f"{paid} cents were paid out on it")
    return {
        state_key(TABLE, ctx.key): {
            "organisation": ctx.organisation,
            "property_id": body["property_id"],
            "perils": sorted(body["perils"]),
            "coverage": body["coverage_cents"],
            "starts_ms": body["starts_ms"],
            "ends_ms": body["ends_ms"],
            "paid": paid,
        }
    }


KIND: Final = Kind(
    type="insurance.policy",
    namespace="policies/",
    doc="An insurer's cover of one property against named perils, for a period.",
    fields=(
        text("holder", "the policy holder"),
        text("property_id", "the insured property (e.g. a parcel id)"),
        Field("perils", "list", f"the perils covered (1 to {LIST_ITEMS_MAX})"),
        amount("coverage_cents", "the most it pays out in all, in cents"),
        Field("starts_ms", "int", "start of cover (Unix ms)", high=TIME_MS_MAX),
        Field("ends_ms", "int", "end of cover, exclusive (Unix ms)", high=TIME_MS_MAX),
    ),
    apply=apply,
    reasons=(INVALID_TRANSITION, OVER_COVERAGE),
)

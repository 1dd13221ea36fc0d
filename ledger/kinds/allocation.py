"""`budget.allocation`: a budget line, funded from one appropriation. Its key is the line key.

State: `l` + key -> {appropriation, amount, spent}. Allocating (or changing a line's amount)
moves the difference into the appropriation's `allocated`, which may not pass its amount
(`over_appropriation`); a line's amount may not fall below what was spent from it
(`over_allocation`). A line keeps its appropriation for life.
"""

from typing import Any, Final

from ledger.kinds import appropriation
from ledger.kinds.base import (
    FISCAL_YEAR_CLOSED,
    INVALID_TRANSITION,
    OVER_ALLOCATION,
    OVER_APPROPRIATION,
    UNKNOWN_REFERENCE,
    Context,
    Kind,
    Refused,
    State,
    Writes,
    amount,
    reference,
    require,
    state_key,
    text,
)

TABLE: Final = b"l"


def line(state: State, key: str) -> dict[str, Any]:
    found = state.get(state_key(TABLE, key))
    if found is None:  # (not `require`: its message would be built for every payment)
        raise Refused(UNKNOWN_REFERENCE, f"no budget line {key!r}")
    assert isinstance(found, dict)
    return found


def moved(state: State, ctx: Context, line_key: str, delta: int) -> Writes:
    """The writes that add `delta` cents to line `line_key`'s amount (and its
    appropriation's allocated total), refused if that breaks a bound."""
    current = line(state, line_key)
    source = appropriation.entry(state, current["appropriation"])
    appropriation.check_open(source, ctx)
    return _set_amount(
        current["appropriation"], source, line_key, current, current["amount"] + delta
    )


def _set_amount(
    appr_key: str, source: dict[str, Any], line_key: str, current: dict[str, Any], new: int
) -> Writes:
    require(
        new >= current["spent"],
        OVER_ALLOCATION,
        f"line {line_key!r} has spent {current['spent']} cents",
    )
    allocated = source["allocated"] - current["amount"] + new
    require(
        allocated <= source["amount"],
        OVER_APPROPRIATION,
        f"appropriation {appr_key!r} has {source['amount'] - source['allocated']} cents left",
    )
    return {
        state_key(appropriation.TABLE, appr_key): {**source, "allocated": allocated},
        state_key(TABLE, line_key): {**current, "amount": new},
    }


def apply(state: State, ctx: Context) -> Writes:
    appr_key = ctx.body["appropriation"]
    before = state.get(state_key(TABLE, ctx.key))
    if before is not None:
        require(
            before["appropriation"] == appr_key,
            INVALID_TRANSITION,
            "a line keeps its appropriation",
        )
    current = before or {"appropriation": appr_key, "amount": 0, "spent": 0}
    source = appropriation.entry(state, appr_key)
    appropriation.check_open(source, ctx)
    return _set_amount(appr_key, source, ctx.key, current, ctx.body["amount_cents"])


KIND: Final = Kind(
    type="budget.allocation",
    namespace="fiscal/",
    doc="A budget line funded from an appropriation; the record's key is the line key.",
    fields=(
        reference("appropriation", "budget.appropriation", "the appropriation it draws on"),
        amount("amount_cents", "the amount allocated to the line, in cents", low=0),
        text("purpose", "what the line is for", required=False),
    ),
    apply=apply,
    reasons=(
        UNKNOWN_REFERENCE,
        INVALID_TRANSITION,
        OVER_APPROPRIATION,
        OVER_ALLOCATION,
        FISCAL_YEAR_CLOSED,
    ),
)

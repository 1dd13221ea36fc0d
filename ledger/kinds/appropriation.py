"""`budget.appropriation`: what a fiscal year's budget grants one department from one fund.

State: `a` + key -> {amount, allocated, closes_at_ms, department, fiscal_year, fund}, where
`allocated` is the sum of its lines' amounts (ledger/kinds/allocation.py keeps it). A later
version (by its creator) may change the amount, never below what is allocated, and nothing
that identifies it.
"""

from typing import Any, Final

from ledger.kinds.base import (
    FISCAL_YEAR_CLOSED,
    INVALID_TRANSITION,
    OVER_APPROPRIATION,
    TIME_MS_MAX,
    UNKNOWN_REFERENCE,
    YEAR_MAX,
    YEAR_MIN,
    Context,
    Field,
    Kind,
    Refused,
    State,
    Writes,
    amount,
    require,
    state_key,
    text,
)

TABLE: Final = b"a"
_FIXED: Final = ("department", "fiscal_year", "fund")


def entry(state: State, key: str) -> dict[str, Any]:
    """The appropriation `key`, which must exist (`unknown_reference`) and still be open at
    the block's time is the caller's to check with `check_open`."""
    found = state.get(state_key(TABLE, key))
    if found is None:  # (not `require`: its message would be built for every tx)
        raise Refused(UNKNOWN_REFERENCE, f"no appropriation {key!r}")
    assert isinstance(found, dict)
    return found


def check_open(appropriation: dict[str, Any], ctx: Context) -> None:
    if ctx.time_ms >= appropriation["closes_at_ms"]:
        year = appropriation["fiscal_year"]
        raise Refused(FISCAL_YEAR_CLOSED, f"fiscal year {year} closed for obligations")


def apply(state: State, ctx: Context) -> Writes:
    body = ctx.body
    before = state.get(state_key(TABLE, ctx.key))
    allocated = 0
    if before is not None:
        changed = [f for f in _FIXED if before[f] != body[f]]
        require(not changed, INVALID_TRANSITION, f"an appropriation's {changed[:1]} is fixed")
        allocated = before["allocated"]
    require(
        body["amount_cents"] >= allocated,
        OVER_APPROPRIATION,
        f"{allocated} cents are already allocated from it",
    )
    value = {
        "amount": body["amount_cents"],
        "allocated": allocated,
        "closes_at_ms": body["closes_at_ms"],
        "department": body["department"],
        "fiscal_year": body["fiscal_year"],
        "fund": body["fund"],
    }
    check_open(value, ctx)
    return {state_key(TABLE, ctx.key): value}


KIND: Final = Kind(
    type="budget.appropriation",
    namespace="fiscal/",
    doc="A fiscal year's grant to one department from one fund; lines are allocated from it.",
    fields=(
        Field("fiscal_year", "int", "the fiscal year", low=YEAR_MIN, high=YEAR_MAX),
        text("fund", "the fund it is paid from"),
        text("department", "the department it is granted to"),
        amount("amount_cents", "the amount granted, in cents", low=0),
        Field(
            "closes_at_ms",
            "int",
            "when the fiscal year closes for obligations (Unix ms)",
            high=TIME_MS_MAX,
        ),
    ),
    apply=apply,
    reasons=(INVALID_TRANSITION, OVER_APPROPRIATION, FISCAL_YEAR_CLOSED),
)

"""`budget.transfer`: moves allocated money from one budget line to another.

The source line keeps at least what it spent (`over_allocation`); the target's appropriation
may not pass its amount (`over_appropriation`). A transfer is final: no later version.
"""

from typing import Final

from ledger.kinds import allocation
from ledger.kinds.base import (
    FISCAL_YEAR_CLOSED,
    OVER_ALLOCATION,
    OVER_APPROPRIATION,
    SCHEMA,
    UNKNOWN_REFERENCE,
    Context,
    Kind,
    State,
    Writes,
    amount,
    reference,
    require,
    text,
)


class _Layered:
    """`state` seen through `writes` (the source side's, so the target side sees them)."""

    def __init__(self, state: State, writes: Writes) -> None:
        self._state = state
        self._writes = writes

    def get(self, key: bytes) -> object:
        return self._writes[key] if key in self._writes else self._state.get(key)


def apply(state: State, ctx: Context) -> Writes:
    body = ctx.body
    source, target, cents = body["from_line"], body["to_line"], body["amount_cents"]
    require(source != target, SCHEMA, "from_line and to_line must differ")
    allocation.line(state, target)  # both lines exist before any amount is weighed
    out = allocation.moved(state, ctx, source, -cents)
    out.update(allocation.moved(_Layered(state, out), ctx, target, cents))
    return out


KIND: Final = Kind(
    type="budget.transfer",
    namespace="fiscal/",
    doc="Moves allocated money between two budget lines.",
    fields=(
        reference("from_line", "budget.allocation", "the line the money leaves"),
        reference("to_line", "budget.allocation", "the line the money goes to"),
        amount("amount_cents", "the amount moved, in cents"),
        text("reason", "why", required=False),
    ),
    apply=apply,
    reasons=(UNKNOWN_REFERENCE, OVER_ALLOCATION, OVER_APPROPRIATION, FISCAL_YEAR_CLOSED),
    mutable=False,
)

"""`payee.registration`: a payee the city may pay, active or blocked (a do-not-pay list).

State: `p` + key -> {status, tax_id}. Its creator may block or unblock it later.
"""

from typing import Any, Final

from ledger.kinds.base import (
    BLOCKED_PAYEE,
    UNKNOWN_REFERENCE,
    Context,
    Kind,
    Refused,
    State,
    Writes,
    state_key,
    text,
)

TABLE: Final = b"p"
ACTIVE: Final = "active"
BLOCKED: Final = "blocked"


def active(state: State, key: str) -> dict[str, Any]:
    found = state.get(state_key(TABLE, key))
    if found is None:  # (not `require`: its message would be built for every payment)
        raise Refused(UNKNOWN_REFERENCE, f"no payee {key!r}")
    assert isinstance(found, dict)
    if found["status"] != ACTIVE:
        raise Refused(BLOCKED_PAYEE, f"payee {key!r} is blocked")
    return found


def apply(state: State, ctx: Context) -> Writes:  # noqa: ARG001 (every kind's signature)
    return {state_key(TABLE, ctx.key): {"status": ctx.body["status"], "tax_id": ctx.body["tax_id"]}}


KIND: Final = Kind(
    type="payee.registration",
    namespace="fiscal/",
    doc="A payee the city may pay; a blocked payee is paid nothing.",
    fields=(
        text("name", "the payee's name"),
        text("tax_id", "the payee's tax id"),
        text("status", "active, or blocked (nothing may be paid to it)", enum=(ACTIVE, BLOCKED)),
    ),
    apply=apply,
    reasons=(),
)

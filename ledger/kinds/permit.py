"""`permit.building`: a building permit and its status, which moves only along the table.

A new permit starts `submitted`; each later version (by the creating office) moves it along
one edge of `TRANSITIONS` or is refused (`invalid_transition`). State: `m` + key -> status.
"""

from typing import Final

from ledger.kinds.base import (
    INVALID_TRANSITION,
    Context,
    Kind,
    State,
    Writes,
    require,
    state_key,
    text,
)

TABLE: Final = b"m"
START: Final = "submitted"
TRANSITIONS: Final = {
    "submitted": ("under_review", "withdrawn"),
    "under_review": ("approved", "rejected"),
    "approved": ("issued",),
    "issued": ("revoked", "completed"),
    "rejected": (),
    "withdrawn": (),
    "revoked": (),
    "completed": (),
}


def apply(state: State, ctx: Context) -> Writes:
    status = ctx.body["status"]
    before = state.get(state_key(TABLE, ctx.key))
    if before is None:
        require(status == START, INVALID_TRANSITION, f"a new permit is {START!r}")
    else:
        require(status in TRANSITIONS[before], INVALID_TRANSITION, f"{before!r} -> {status!r}")
    return {state_key(TABLE, ctx.key): status}


KIND: Final = Kind(
    type="permit.building",
    namespace="permits/",
    doc="A building permit; its status moves along a fixed table of transitions.",
    fields=(
        text("applicant", "who applies"),
        text("parcel", "the parcel built on"),
        text("description", "what is built"),
        text("status", "the permit's status", enum=tuple(TRANSITIONS)),
    ),
    apply=apply,
    reasons=(INVALID_TRANSITION,),
)

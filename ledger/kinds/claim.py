"""`insurance.claim`: a claim on a policy for one event (e.g. a typhoon) and one peril.

Refused when the policy does not exist (`unknown_reference`) or is another insurer's
(`not_owner`), the event falls outside its period (`policy_inactive`), the peril is not
covered (`peril_not_covered`), the amount claimed passes the loss (`over_loss`) or what the
policy has left (`over_coverage`), or the loss declared is below what all insurers together
already paid for this property and event (`over_loss`). A claim is final: no later version.

State: `c` + key -> {organisation, policy, property_id, event_id, claimed, paid}, and the
cross-insurer index `e` + property NUL event -> {loss, paid, insurers}: `loss` is the least
loss any accepted claim declared, `paid` what every insurer paid out for it.
"""

from typing import Any, Final

from ledger.kinds import policy
from ledger.kinds.base import (
    NOT_OWNER,
    OVER_COVERAGE,
    OVER_LOSS,
    PERIL_NOT_COVERED,
    POLICY_INACTIVE,
    TIME_MS_MAX,
    UNKNOWN_REFERENCE,
    Context,
    Field,
    Kind,
    State,
    Writes,
    amount,
    reference,
    require,
    state_key,
    text,
)

TABLE: Final = b"c"
EVENTS: Final = b"e"


def entry(state: State, key: str) -> dict[str, Any]:
    found = state.get(state_key(TABLE, key))
    require(found is not None, UNKNOWN_REFERENCE, f"no claim {key!r}")
    assert isinstance(found, dict)
    return found


def event_key(property_id: str, event_id: str) -> bytes:
    return state_key(EVENTS, property_id, event_id)


def apply(state: State, ctx: Context) -> Writes:
    body = ctx.body
    cover = policy.entry(state, body["policy"])
    require(cover["organisation"] == ctx.organisation, NOT_OWNER, "a claim on another's policy")
    require(
        cover["starts_ms"] <= body["event_ms"] < cover["ends_ms"],
        POLICY_INACTIVE,
        "the event falls outside the policy's period",
    )
    require(body["peril"] in cover["perils"], PERIL_NOT_COVERED, f"{body['peril']!r}")
    claimed, loss = body["claimed_cents"], body["loss_cents"]
    require(claimed <= loss, OVER_LOSS, "the amount claimed passes the loss")
    left = cover["coverage"] - cover["paid"]
    require(claimed <= left, OVER_COVERAGE, f"the policy has {left} cents of cover left")
    ek = event_key(cover["property_id"], body["event_id"])
    event = state.get(ek) or {"loss": loss, "paid": 0, "insurers": []}
    require(loss >= event["paid"], OVER_LOSS, f"{event['paid']} cents were paid for this event")
    insurers = sorted({*event["insurers"], ctx.organisation})
    return {
        state_key(TABLE, ctx.key): {
            "organisation": ctx.organisation,
            "policy": body["policy"],
            "property_id": cover["property_id"],
            "event_id": body["event_id"],
            "claimed": claimed,
            "paid": 0,
        },
        ek: {"loss": min(loss, event["loss"]), "paid": event["paid"], "insurers": insurers},
    }


KIND: Final = Kind(
    type="insurance.claim",
    namespace="claims/",
    doc="A claim on a policy for the loss one event caused to its property.",
    fields=(
        reference("policy", "insurance.policy", "the policy claimed on"),
        text("event_id", "the event (e.g. a typhoon's name and year)"),
        Field("event_ms", "int", "when the event happened (Unix ms)", high=TIME_MS_MAX),
        text("peril", "the peril that caused the loss"),
        amount("loss_cents", "the loss declared, in cents"),
        amount("claimed_cents", "the amount claimed, in cents"),
    ),
    apply=apply,
    reasons=(
        UNKNOWN_REFERENCE,
        NOT_OWNER,
        POLICY_INACTIVE,
        PERIL_NOT_COVERED,
        OVER_LOSS,
        OVER_COVERAGE,
    ),
    mutable=False,
)

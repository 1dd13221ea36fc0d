"""`insurance.payout`: an insurer's payment on one of its claims.

Refused when the claim does not exist (`unknown_reference`) or is another insurer's
(`not_owner`), when it would pay more than was claimed or than the policy covers
(`over_coverage`), or when all insurers' payouts for the claim's property and event would
pass the declared loss (`over_loss`: the same loss paid twice). A payout is final.
"""

from typing import Final

from ledger.kinds import claim, policy
from ledger.kinds.base import (
    NOT_OWNER,
    OVER_COVERAGE,
    OVER_LOSS,
    UNKNOWN_REFERENCE,
    Context,
    Kind,
    State,
    Writes,
    amount,
    reference,
    require,
    state_key,
)


def apply(state: State, ctx: Context) -> Writes:
    claim_key, cents = ctx.body["claim"], ctx.body["amount_cents"]
    filed = claim.entry(state, claim_key)
    require(filed["organisation"] == ctx.organisation, NOT_OWNER, "a payout on another's claim")
    require(
        filed["paid"] + cents <= filed["claimed"],
        OVER_COVERAGE,
        f"the claim has {filed['claimed'] - filed['paid']} cents unpaid",
    )
    cover = policy.entry(state, filed["policy"])
    require(
        cover["paid"] + cents <= cover["coverage"],
        OVER_COVERAGE,
        f"the policy has {cover['coverage'] - cover['paid']} cents of cover left",
    )
    ek = claim.event_key(filed["property_id"], filed["event_id"])
    event = state.get(ek)
    assert isinstance(event, dict)  # every accepted claim wrote its event
    require(
        event["paid"] + cents <= event["loss"],
        OVER_LOSS,
        f"{event['paid']} of the {event['loss']} cents lost were paid already",
    )
    return {
        state_key(claim.TABLE, claim_key): {**filed, "paid": filed["paid"] + cents},
        state_key(policy.TABLE, filed["policy"]): {**cover, "paid": cover["paid"] + cents},
        ek: {**event, "paid": event["paid"] + cents},
    }


KIND: Final = Kind(
    type="insurance.payout",
    namespace="claims/",
    doc="An insurer's payment on one of its claims.",
    fields=(
        reference("claim", "insurance.claim", "the claim paid"),
        amount("amount_cents", "the amount paid, in cents"),
    ),
    apply=apply,
    reasons=(UNKNOWN_REFERENCE, NOT_OWNER, OVER_COVERAGE, OVER_LOSS),
    mutable=False,
)

"""`budget.disbursement`: a payment from a budget line to a registered payee for an invoice.

Refused when the line or payee does not exist (`unknown_reference`), the payee is blocked
(`blocked_payee`), the appropriation's year is closed (`fiscal_year_closed`), the payee's
invoice was paid already (`duplicate_payment`), or the line has not that much left
(`over_allocation`). State: the line's `spent`, and `i` + payee NUL invoice -> the paying tx.
A payment is final: no later version.
"""

from typing import Final

from ledger.kinds import allocation, appropriation, payee
from ledger.kinds.base import (
    BLOCKED_PAYEE,
    DUPLICATE_PAYMENT,
    FISCAL_YEAR_CLOSED,
    OVER_ALLOCATION,
    UNKNOWN_REFERENCE,
    Context,
    Kind,
    Refused,
    State,
    Writes,
    amount,
    reference,
    state_key,
    text,
)

INVOICES: Final = b"i"


def not_paid(state: State, ctx: Context) -> None:
    """An invoice once paid stays paid: `duplicate_payment` is settled at admission."""
    invoice, payee_key = ctx.body["invoice"], ctx.body["payee"]
    paid = state.get(state_key(INVOICES, payee_key, invoice))
    if paid is not None:  # (not `require`: its message would be built for every payment)
        why = f"invoice {invoice!r} of {payee_key!r} was paid by tx {paid!s}"
        raise Refused(DUPLICATE_PAYMENT, why)


def apply(state: State, ctx: Context) -> Writes:
    body = ctx.body
    line_key, payee_key, cents = body["line"], body["payee"], body["amount_cents"]
    current = allocation.line(state, line_key)
    payee.active(state, payee_key)
    appropriation.check_open(appropriation.entry(state, current["appropriation"]), ctx)
    not_paid(state, ctx)
    invoice = state_key(INVOICES, payee_key, body["invoice"])
    left = current["amount"] - current["spent"]
    if cents > left:
        raise Refused(OVER_ALLOCATION, f"line {line_key!r} has {left} cents left")
    return {
        state_key(allocation.TABLE, line_key): {**current, "spent": current["spent"] + cents},
        invoice: ctx.tx_id.hex(),
    }


KIND: Final = Kind(
    type="budget.disbursement",
    namespace="fiscal/",
    doc="A payment from a budget line to a registered payee against one invoice.",
    fields=(
        reference("line", "budget.allocation", "the budget line it is paid from"),
        reference("payee", "payee.registration", "who is paid"),
        text("invoice", "the payee's invoice number"),
        amount("amount_cents", "the amount paid, in cents"),
        text("purpose", "what is paid for", required=False),
    ),
    apply=apply,
    reasons=(
        UNKNOWN_REFERENCE,
        BLOCKED_PAYEE,
        FISCAL_YEAR_CLOSED,
        DUPLICATE_PAYMENT,
        OVER_ALLOCATION,
    ),
    mutable=False,
    settled=not_paid,
)

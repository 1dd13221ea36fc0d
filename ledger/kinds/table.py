"""The table of record kinds: a record type names its kind; every other type is untyped
(a plain record, as before kinds existed). A new kind is one module added to `KINDS`."""

from typing import Final

from ledger.kinds import (
    allocation,
    appropriation,
    claim,
    disbursement,
    payee,
    payout,
    permit,
    policy,
    transfer,
)
from ledger.kinds.base import Kind

KINDS: Final[dict[str, Kind]] = {
    k.type: k
    for k in (
        appropriation.KIND,
        allocation.KIND,
        transfer.KIND,
        payee.KIND,
        disbursement.KIND,
        policy.KIND,
        claim.KIND,
        payout.KIND,
        permit.KIND,
    )
}


def kind_of(record_type: str) -> Kind | None:
    return KINDS.get(record_type)

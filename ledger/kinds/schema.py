"""The published form of the record kinds: each kind's JSON Schema (draft 2020-12) with its
namespace, its rules and their reason codes, as `GET /v1/kinds` serves them. A clerk or an
agency system learns from it alone how to write each record. Pure data."""

from typing import Any, Final

from ledger.kinds.base import (
    BLOCKED_PAYEE,
    DUPLICATE_PAYMENT,
    FISCAL_YEAR_CLOSED,
    INVALID_TRANSITION,
    NOT_OWNER,
    OVER_ALLOCATION,
    OVER_APPROPRIATION,
    OVER_COVERAGE,
    OVER_LOSS,
    PERIL_NOT_COVERED,
    POLICY_INACTIVE,
    SCHEMA,
    UNKNOWN_REFERENCE,
    Field,
    Kind,
)  # fmt: skip
from ledger.kinds.table import KINDS
from ledger.primitives import RECORD_KEY_BYTES_MAX

JSON_SCHEMA: Final = "https://json-schema.org/draft/2020-12/schema"
KEY_PATTERN: Final = r"^[A-Za-z0-9._:-]+(/[A-Za-z0-9._:-]+)*$"
RULES: Final = {
    SCHEMA: "a field is missing, unknown, of the wrong type or out of bounds, or the key lies "
    "outside the kind's namespace",
    NOT_OWNER: "a later version of a record from another organisation than the one that "
    "created it (or a claim or payout on another insurer's policy or claim)",
    INVALID_TRANSITION: "a record changes type or what identifies it, a final record gets a "
    "later version, or a permit's status moves off its table",
    UNKNOWN_REFERENCE: "a referenced record does not exist",
    OVER_APPROPRIATION: "the lines of an appropriation would hold more than it grants",
    OVER_ALLOCATION: "spending or moving more than a budget line has left",
    DUPLICATE_PAYMENT: "the payee's invoice was already paid",
    BLOCKED_PAYEE: "the payee is blocked",
    FISCAL_YEAR_CLOSED: "the block's time is past the appropriation's closes_at_ms",
    POLICY_INACTIVE: "the event falls outside the policy's period",
    PERIL_NOT_COVERED: "the peril is not among the policy's perils",
    OVER_COVERAGE: "beyond the policy's cover or the claim's unpaid amount",
    OVER_LOSS: "all insurers' payouts for one property and event above its declared loss",
}  # fmt: skip


def _field(f: Field) -> dict[str, Any]:
    if f.type == "int":
        return {"type": "integer", "minimum": f.low, "maximum": f.high, "description": f.doc}
    text: dict[str, Any] = {
        "type": "string", "minLength": 1, "maxLength": f.max_bytes,
        "description": f.doc + " (printable text; maxLength counts UTF-8 bytes)",
    }  # fmt: skip
    if f.enum:
        text["enum"] = list(f.enum)
    if f.type == "key":
        text |= {"maxLength": RECORD_KEY_BYTES_MAX, "pattern": KEY_PATTERN, "x-references": f.ref}
        text["description"] = f"{f.doc}: the key of a {f.ref} record"
    if f.type == "list":
        return {"type": "array", "items": text, "minItems": 1, "uniqueItems": True,
                "description": f.doc}  # fmt: skip
    return text


def kind_view(kind: Kind) -> dict[str, Any]:
    codes = (SCHEMA, NOT_OWNER, INVALID_TRANSITION, *kind.reasons)
    return {
        "type": kind.type,
        "namespace": kind.namespace,
        "description": kind.doc,
        "final": not kind.mutable,
        "schema": {
            "$schema": JSON_SCHEMA, "$id": f"/v1/kinds/{kind.type}", "title": kind.type,
            "description": kind.doc, "type": "object",
            "properties": {f.name: _field(f) for f in kind.fields},
            "required": [f.name for f in kind.fields if f.required],
            "additionalProperties": False,
        },
        "rules": [{"code": c, "description": RULES[c]} for c in dict.fromkeys(codes)],
    }  # fmt: skip


def kinds_view() -> dict[str, Any]:
    return {"kinds": [kind_view(k) for k in KINDS.values()]}

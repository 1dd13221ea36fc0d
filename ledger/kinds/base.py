"""What every record kind is made of: its schema, its rule function, the reason codes.

A kind is one module (ledger/kinds/<name>.py) that defines a `Kind`: the record type it
handles, the key namespace its records live in, its fields (a schema every validator checks
the same way) and `apply`, a pure function of (the rule state before, the tx's context) that
returns the state entries the tx writes, or raises `Refused` with a stable reason code. It
never reads anything but the state it is given and never changes it: the executor
(ledger/kinds/execute.py) decides what becomes of the writes.

Money is integer cents. Strings hold no control characters (state keys join parts with NUL).
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple, Protocol

from ledger.gov.codes import GOV_REASONS
from ledger.tx import key_problem

# Reason codes (stable: the API, the CLI, metrics and docs/protocol.md use them).
SCHEMA: Final = "schema"
UNKNOWN_REFERENCE: Final = "unknown_reference"
OVER_APPROPRIATION: Final = "over_appropriation"
OVER_ALLOCATION: Final = "over_allocation"
DUPLICATE_PAYMENT: Final = "duplicate_payment"
BLOCKED_PAYEE: Final = "blocked_payee"
FISCAL_YEAR_CLOSED: Final = "fiscal_year_closed"
POLICY_INACTIVE: Final = "policy_inactive"
PERIL_NOT_COVERED: Final = "peril_not_covered"
OVER_COVERAGE: Final = "over_coverage"
OVER_LOSS: Final = "over_loss"
INVALID_TRANSITION: Final = "invalid_transition"
NOT_OWNER: Final = "not_owner"
REASONS: Final = (
    SCHEMA,
    UNKNOWN_REFERENCE,
    OVER_APPROPRIATION,
    OVER_ALLOCATION,
    DUPLICATE_PAYMENT,
    BLOCKED_PAYEE,
    FISCAL_YEAR_CLOSED,
    POLICY_INACTIVE,
    PERIL_NOT_COVERED,
    OVER_COVERAGE,
    OVER_LOSS,
    INVALID_TRANSITION,
    NOT_OWNER,
    *GOV_REASONS,  # ledger/gov: governance txs and revoked clients
)
ACCEPTED: Final = ""  # the outcome code of an accepted tx

AMOUNT_CENTS_MAX: Final = 10**15  # ten trillion units of currency, in cents
TEXT_BYTES_MAX: Final = 256
LIST_ITEMS_MAX: Final = 32
YEAR_MIN: Final = 1900
YEAR_MAX: Final = 2200
TIME_MS_MAX: Final = 2**53


class Refused(Exception):
    """A tx that a rule refuses: `code` is one of `REASONS`, `why` says what for people."""

    def __init__(self, code: str, why: str) -> None:
        assert code in REASONS, code
        super().__init__(f"{code}: {why}")
        self.code = code
        self.why = why


class State(Protocol):
    """The rule state a kind reads: `get(key)` is the value of a state entry, or None."""

    def get(self, key: bytes) -> Any: ...


Writes = dict[bytes, Any]


class Context(NamedTuple):
    """What a rule knows of the tx besides the state: its record key and body, who wrote it,
    when its block was stamped, and the rule parameters. (A named tuple: one is made for every
    tx executed, in a third of the time a frozen dataclass takes.)"""

    key: str
    body: Mapping[str, Any]
    organisation: str
    time_ms: int
    tx_id: bytes
    is_new: bool  # no earlier accepted version of this record


@dataclass(frozen=True)
class Field:
    """One body field: `type` is int, str, key (a record key, `ref` names the kind it must
    be a record of) or list (of str). Bounds: `low`/`high` for int, `max_bytes` for str and
    list items, `enum` for str and list items."""

    name: str
    type: str
    doc: str
    required: bool = True
    low: int = 0
    high: int = AMOUNT_CENTS_MAX
    max_bytes: int = TEXT_BYTES_MAX
    enum: tuple[str, ...] = ()
    ref: str = ""


@dataclass(frozen=True)
class Kind:
    type: str
    namespace: str  # the key prefix its records live under
    doc: str
    fields: tuple[Field, ...]
    apply: Callable[[State, Context], Writes] = field(compare=False)
    reasons: tuple[str, ...]  # the codes `apply` may raise, besides schema and not_owner
    mutable: bool = True  # later versions allowed (by the creating organisation)
    # The part of `apply` whose refusal no later tx can undo (admission answers it at once).
    settled: Callable[[State, Context], None] | None = field(default=None, compare=False)
    names: frozenset[str] = field(init=False, compare=False, repr=False)  # of its fields
    # `holds(key, body)`: True exactly when `check_schema` accepts them (its fast path).
    holds: Callable[[str, Mapping[str, Any]], bool] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", frozenset(f.name for f in self.fields))
        object.__setattr__(self, "holds", _compiled(self))


def state_key(table: bytes, *parts: str) -> bytes:
    """The state entry of `parts` in `table` (one byte); parts hold no NUL."""
    # The UTF-8 of parts joined with NUL is the parts' UTF-8 joined with NUL (NUL is ASCII).
    return table + "\x00".join(parts).encode()


def check_schema(kind: Kind, key: str, body: Mapping[str, Any]) -> None:
    """Raise `Refused(SCHEMA)` unless `body` holds exactly the kind's fields, each of its type
    and within its bounds, and `key` lies in the kind's namespace."""
    if kind.holds(key, body):  # the usual case, without a call per field
        return
    problem = schema_problem(kind, key, body)
    if problem is not None:
        raise Refused(SCHEMA, problem)


def schema_problem(kind: Kind, key: str, body: Mapping[str, Any]) -> str | None:
    """The schema's definition, field by field: the first problem of `key` and `body`, or
    None (`Kind.holds` is its fast form)."""
    if not key.startswith(kind.namespace):
        return f"a {kind.type} record lives under {kind.namespace}"
    if not kind.names.issuperset(body):
        unknown = sorted(set(body) - kind.names)
        return f"unknown field {unknown[0]!r}"
    for f in kind.fields:
        if f.name not in body:
            if f.required:
                return f"field {f.name!r} is missing"
            continue
        problem = _field_problem(f, body[f.name])
        if problem is not None:
            return f"field {f.name!r}: {problem}"
    return None


def _field_problem(f: Field, value: Any) -> str | None:
    if f.type == "int":
        if type(value) is not int:
            return "expected an integer"
        if not f.low <= value <= f.high:
            return f"expected {f.low} to {f.high}"
        return None
    if f.type == "list":
        if not isinstance(value, list) or not 1 <= len(value) <= LIST_ITEMS_MAX:
            return f"expected a list of 1 to {LIST_ITEMS_MAX} strings"
        if len(set(value)) != len(value):
            return "expected distinct items"
        return next((p for v in value if (p := _text_problem(f, v)) is not None), None)
    problem = _text_problem(f, value)
    if problem is None and f.type == "key":
        return key_problem(value)
    return problem


def _text_problem(f: Field, value: Any) -> str | None:
    if not isinstance(value, str):
        return "expected a string"
    if not value or len(value.encode()) > f.max_bytes:
        return f"expected 1 to {f.max_bytes} bytes"
    if not value.isprintable():
        return "expected printable text"
    if f.enum and value not in f.enum:
        return f"expected one of {', '.join(f.enum)}"
    return None


_ABSENT: Final = object()
# Reference keys already found to be record keys (a payment names the same few lines and
# payees over and over): a memo of `key_problem`, emptied when it holds this many.
VALID_KEYS_MAX: Final = 4096
_valid_keys: set[str] = set()


def _is_record_key(value: str) -> bool:
    if value in _valid_keys:
        return True
    if key_problem(value) is not None:
        return False
    if len(_valid_keys) >= VALID_KEYS_MAX:
        _valid_keys.clear()
    _valid_keys.add(value)
    return True


def _compiled(kind: Kind) -> Callable[[str, Mapping[str, Any]], bool]:
    """The test `check_schema` makes, in one function: the same conditions as
    `_field_problem` and `_text_problem`, without building a reason (the slow path, which
    names the first problem, runs only when this says no)."""
    namespace, names = kind.namespace, kind.names
    ints = tuple((f.name, f.required, f.low, f.high) for f in kind.fields if f.type == "int")
    texts = tuple(
        (f.name, f.required, f.max_bytes, frozenset(f.enum), f.type == "key")
        for f in kind.fields
        if f.type in ("str", "key")
    )
    others = tuple(f for f in kind.fields if f.type not in ("int", "str", "key"))

    def holds(key: str, body: Mapping[str, Any]) -> bool:
        if not key.startswith(namespace) or not names.issuperset(body):
            return False
        for name, required, low, high in ints:
            value = body.get(name, _ABSENT)
            if value is _ABSENT:
                if required:
                    return False
            elif type(value) is not int or not low <= value <= high:
                return False
        for name, required, max_bytes, enum, is_key in texts:
            value = body.get(name, _ABSENT)
            if value is _ABSENT:
                if required:
                    return False
            elif not (
                isinstance(value, str)
                and value
                and len(value.encode()) <= max_bytes
                and value.isprintable()
                and (not enum or value in enum)
                and (not is_key or _is_record_key(value))
            ):
                return False
        for f in others:
            if f.name in body:
                if _field_problem(f, body[f.name]) is not None:
                    return False
            elif f.required:
                return False
        return True

    return holds


def require(condition: bool, code: str, why: str) -> None:
    """A rule's assertion about the world: refuse the tx with `code` unless `condition`."""
    if not condition:
        raise Refused(code, why)


def amount(name: str, doc: str, low: int = 1) -> Field:
    return Field(name, "int", doc, low=low)


def text(name: str, doc: str, *, enum: tuple[str, ...] = (), required: bool = True) -> Field:
    return Field(name, "str", doc, enum=enum, required=required)


def reference(name: str, kind: str, doc: str) -> Field:
    return Field(name, "key", doc, ref=kind)

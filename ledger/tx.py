"""Transactions: signed record operations, their canonical bytes, id and validation rules.

Wire form (docs/protocol.md): msgpack array
`[1, chain_id, client_id, nonce, timestamp_ms, key, type, body, signature]`; the signature is
Ed25519 over `Domain.TX || encode([chain_id, client_id, nonce, timestamp_ms, key, type, body])`;
the tx id is SHA-256 of the whole canonical array. Validation rules are pure functions that
raise `InvalidTransaction` with a machine-readable reason and change nothing.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger import crypto
from ledger.encoding import (
    check_plain,
    decode_map_order_unchecked,
    encode,
    expect_bytes,
    expect_int,
    expect_list,
    expect_str,
)
from ledger.errors import InvalidEncoding, InvalidTransaction
from ledger.genesis import AUDITOR, GOV_NAMESPACE, Admin, Client, Genesis
from ledger.primitives import (
    BODY_BYTES_MAX,
    ID_BYTES_MAX,
    NONCE_MAX,
    RECORD_KEY_BYTES_MAX,
    RECORD_TYPE_BYTES_MAX,
    SIGNATURE_BYTES,
    TX_BYTES_MAX,
)

TX_VERSION: Final = 1
TIMESTAMP_MS_MAX: Final = 2**53  # far beyond any real clock, within every JSON number
_KEY_RE: Final = re.compile(r"^[A-Za-z0-9._:-]+(/[A-Za-z0-9._:-]+)*$")
# A segment that is only dots: HTTP clients and proxies remove `.` and `..` segments from URL
# paths, so `permits/../fiscal/x` would reach another record (RFC 3986, section 5.2.4).
_DOT_SEGMENTS: Final = frozenset({".", ".."})
_TYPE_RE: Final = re.compile(r"^[A-Za-z][A-Za-z0-9._-]*$")

# Rejection reasons (stable codes: the API, metrics and docs use them).
MALFORMED: Final = "malformed"
TOO_LARGE: Final = "too_large"
WRONG_CHAIN: Final = "wrong_chain"
UNKNOWN_CLIENT: Final = "unknown_client"
FORBIDDEN_NAMESPACE: Final = "forbidden_namespace"
STALE_TIMESTAMP: Final = "stale_timestamp"
FUTURE_TIMESTAMP: Final = "future_timestamp"
BAD_SIGNATURE: Final = "bad_signature"
DUPLICATE: Final = "duplicate"


@dataclass(frozen=True)
class Transaction:
    chain_id: str
    client_id: str
    nonce: int
    timestamp_ms: int
    key: str
    type: str
    body: dict[str, Any]
    signature: bytes
    raw: bytes = field(repr=False, compare=False)  # the canonical bytes this tx was made from
    tx_id: bytes = field(compare=False)
    # True only for a tx made by `decode_tx`, whose fields were read from the canonical `raw`.
    # Not an init field: an object built or `replace`d from fields encodes its fields as before.
    _parsed: bool = field(default=False, init=False, repr=False, compare=False)

    def unsigned_payload(self) -> bytes:
        if self._parsed:
            # `raw` is canonical: array-of-9 byte, version 1, the 7 signed fields, bin8 header
            # and 64 signature bytes. The signed payload is those 7 fields under an array-of-7
            # byte: a slice of `raw`, not a fresh encoding for every signature check.
            return b"\x97" + self.raw[2 : -SIGNATURE_BYTES - 2]
        return _unsigned(
            self.chain_id, self.client_id, self.nonce, self.timestamp_ms, self.key, self.type,
            self.body,
        )  # fmt: skip


def _unsigned(
    chain_id: str, client_id: str, nonce: int, timestamp_ms: int, key: str, type_: str,
    body: dict[str, Any],
) -> bytes:  # fmt: skip
    return encode([chain_id, client_id, nonce, timestamp_ms, key, type_, body])


def create(
    signing_key: Ed25519PrivateKey,
    *,
    chain_id: str,
    client_id: str,
    nonce: int,
    timestamp_ms: int,
    key: str,
    type_: str,
    body: dict[str, Any],
) -> Transaction:
    """Sign a new transaction; raises `InvalidTransaction` if its fields are out of bounds."""
    try:
        payload = _unsigned(chain_id, client_id, nonce, timestamp_ms, key, type_, body)
    except (InvalidEncoding, OverflowError, TypeError, ValueError) as exc:
        # Outside input (e.g. a JSON body) can hold what msgpack cannot encode: integers past
        # 64 bits, lone surrogates, nesting past the encoder's bound.
        raise InvalidTransaction(MALFORMED, f"cannot encode: {exc}") from None
    signature = crypto.sign(signing_key, crypto.Domain.TX, payload)
    raw = encode(
        [TX_VERSION, chain_id, client_id, nonce, timestamp_ms, key, type_, body, signature]
    )
    return decode_tx(raw)


def decode_tx(raw: bytes) -> Transaction:
    """Parse canonical tx bytes; raise `InvalidTransaction` (reason malformed/too_large)."""
    if len(raw) > TX_BYTES_MAX:
        raise InvalidTransaction(TOO_LARGE, f"{len(raw)} bytes, the limit is {TX_BYTES_MAX}")
    if isinstance(raw, bytearray | memoryview):
        raw = bytes(raw)
    try:
        # A tx's only maps are in its body, whose key order `_parse` checks (with the rest of
        # what makes a body plain): the canonical form without re-building the value.
        return _parse(decode_map_order_unchecked(raw, TX_BYTES_MAX), raw)
    except InvalidEncoding as exc:
        raise InvalidTransaction(MALFORMED, str(exc)) from None


KnownTx = Callable[[bytes], "Transaction | None"]
"""``known(tx_id)``: a tx already decoded with that id (e.g. pending in the pool), or None."""


def decode_known(raw: bytes, known: KnownTx) -> Transaction:
    """`decode_tx(raw)`, or the equal tx `known` offers: one that `decode_tx` made from exactly
    these bytes (same bytes, same parse), so a block's txs already in the pool are not parsed
    again."""
    tx = known(crypto.sha256(raw))
    if tx is not None and tx._parsed and tx.raw == raw:
        return tx
    return decode_tx(raw)


def key_problem(key: str) -> str | None:
    """What makes `key` no record key (section 4.2 of docs/protocol.md), or None."""
    if len(key.encode()) > RECORD_KEY_BYTES_MAX:
        return f"key: at most {RECORD_KEY_BYTES_MAX} bytes"
    if not _KEY_RE.fullmatch(key):
        return "key: segments of A-Z a-z 0-9 . _ : - separated by single '/'"
    if "." in key and not _DOT_SEGMENTS.isdisjoint(key.split("/")):
        return "key: no segment may be '.' or '..'"
    return None


def _parse(value: Any, raw: bytes) -> Transaction:
    items = expect_list(value, 9, "transaction")
    expect_int(items[0], TX_VERSION, TX_VERSION, "version")
    chain_id = expect_str(items[1], ID_BYTES_MAX, "chain_id")
    client_id = expect_str(items[2], ID_BYTES_MAX, "client_id")
    nonce = expect_int(items[3], 0, NONCE_MAX, "nonce")
    timestamp_ms = expect_int(items[4], 0, TIMESTAMP_MS_MAX, "timestamp_ms")
    key = expect_str(items[5], RECORD_KEY_BYTES_MAX, "key")
    problem = key_problem(key)
    if problem is not None:
        raise InvalidEncoding(problem)
    type_ = expect_str(items[6], RECORD_TYPE_BYTES_MAX, "type")
    if not _TYPE_RE.fullmatch(type_):
        raise InvalidEncoding("type: a letter followed by letters, digits, '.', '_' or '-'")
    body = items[7]
    if not isinstance(body, dict):
        raise InvalidEncoding("body: expected a map")
    check_plain(body, "body", sorted_keys=True)
    # The body's canonical bytes lie inside `raw` (checked canonical), so only a tx longer than
    # the body limit can hold a body over it: skip re-encoding every other body.
    if len(raw) > BODY_BYTES_MAX and len(encode(body)) > BODY_BYTES_MAX:
        raise InvalidTransaction(TOO_LARGE, f"body: larger than {BODY_BYTES_MAX} bytes")
    signature = expect_bytes(items[8], SIGNATURE_BYTES, "signature")
    # The layout `unsigned_payload` slices, as canonical encoding guarantees it.
    assert raw[:2] == b"\x99\x01"
    assert raw[-SIGNATURE_BYTES - 2 : -SIGNATURE_BYTES] == b"\xc4\x40"
    # Every field set at once, as the frozen dataclass's __init__ would one `object.__setattr__`
    # at a time (a third of the cost of parsing a tx): same fields, same object.
    tx = object.__new__(Transaction)
    tx.__dict__.update(
        chain_id=chain_id, client_id=client_id, nonce=nonce, timestamp_ms=timestamp_ms,
        key=key, type=type_, body=body, signature=signature, raw=raw, tx_id=crypto.sha256(raw),
        _parsed=True,
    )  # fmt: skip
    return tx


def check_stateless(tx: Transaction, genesis: Genesis) -> Client | Admin:
    """Chain, signer and namespace rules: everything but time, signature and duplicates.
    `genesis` is the genesis, or the configuration in force in its shape (ledger/gov/config.py).
    Admins sign governance txs (`_gov/` keys) and nothing else; clients never sign those."""
    if tx.chain_id != genesis.chain_id:
        raise InvalidTransaction(WRONG_CHAIN, f"tx is for chain {tx.chain_id!r}")
    if tx.key.startswith(GOV_NAMESPACE) or tx.client_id in genesis.admins:
        return _admin(tx, genesis)
    client = genesis.clients.get(tx.client_id)
    if client is None:
        why = f"no client {tx.client_id!r} in the configuration in force"
        raise InvalidTransaction(UNKNOWN_CLIENT, why)
    if not genesis.may_write(client, tx.key):
        why = (
            f"client {client.id!r} is an auditor: auditors read everything and write nothing"
            if client.role == AUDITOR
            else f"{client.organisation} may not write {tx.key!r}"
        )
        raise InvalidTransaction(FORBIDDEN_NAMESPACE, why)
    return client


def _admin(tx: Transaction, genesis: Genesis) -> Admin:
    admin = genesis.admins.get(tx.client_id)
    if admin is not None and tx.key.startswith(GOV_NAMESPACE):
        return admin
    if admin is not None:
        why = f"{tx.client_id!r} is an admin: admins write {GOV_NAMESPACE} only"
        raise InvalidTransaction(FORBIDDEN_NAMESPACE, why)
    if tx.client_id in genesis.clients:
        why = f"{GOV_NAMESPACE} is written by admins only"
        raise InvalidTransaction(FORBIDDEN_NAMESPACE, why)
    why = f"no admin {tx.client_id!r} in the configuration in force"
    raise InvalidTransaction(UNKNOWN_CLIENT, why)


def check_time(tx: Transaction, genesis: Genesis, now_ms: int) -> None:
    """The tx's timestamp must lie in [now - ttl, now + skew] (now: the block's or the node's)."""
    params = genesis.params
    if tx.timestamp_ms < now_ms - params.tx_ttl_ms:
        raise InvalidTransaction(STALE_TIMESTAMP, "timestamp older than the tx time-to-live")
    if tx.timestamp_ms > now_ms + params.clock_skew_ms:
        raise InvalidTransaction(FUTURE_TIMESTAMP, "timestamp too far in the future")


def check_signature(tx: Transaction, client: Client | Admin) -> None:
    if not crypto.verify(client.key, crypto.Domain.TX, tx.unsigned_payload(), tx.signature):
        raise InvalidTransaction(BAD_SIGNATURE, "signature does not match the client's key")


def validate(tx: Transaction, genesis: Genesis, now_ms: int) -> None:
    """Every rule but duplicates (which need the store): cheap checks first, signature last."""
    client = check_stateless(tx, genesis)
    check_time(tx, genesis, now_ms)
    check_signature(tx, client)

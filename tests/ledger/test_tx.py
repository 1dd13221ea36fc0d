"""Transactions: canonical bytes and id, every rejection reason, signatures bound to every field."""

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import crypto
from ledger import tx as txs
from ledger.encoding import encode
from ledger.errors import InvalidTransaction
from ledger.genesis import Genesis
from ledger.primitives import (
    BODY_BYTES_MAX,
    BODY_DEPTH_MAX,
    BODY_ITEMS_MAX,
    INT_MAX,
    INT_MIN,
    NONCE_MAX,
    TX_BYTES_MAX,
)
from tests import factory

NET = factory.network()
GENESIS = NET.genesis
CHAIN = GENESIS.chain_id
CLIENT = "fiscal-clerk0"
KEY = NET.client_keys[CLIENT]
NOW = factory.BASE_TIME_MS

FIELDS = ("version", "chain_id", "client_id", "nonce", "timestamp_ms", "key", "type", "body")


def bounded(max_examples: int) -> settings:
    """Fixed examples every run: derandomized, no example database, no deadline."""
    return settings(max_examples=max_examples, deadline=None, derandomize=True, database=None)


def make(**changes: Any) -> txs.Transaction:
    fields: dict[str, Any] = {
        "chain_id": CHAIN,
        "client_id": CLIENT,
        "nonce": 7,
        "timestamp_ms": NOW,
        "key": "fiscal/2025/budget",
        "type_": "budget.line",
        "body": {"amount": 1200, "memo": "q1"},
    }
    signing_key = changes.pop("signing_key", KEY)
    fields.update(changes)
    return txs.create(signing_key, **fields)


def wire(tx: txs.Transaction) -> list[Any]:
    return [
        1,
        tx.chain_id,
        tx.client_id,
        tx.nonce,
        tx.timestamp_ms,
        tx.key,
        tx.type,
        tx.body,
        tx.signature,
    ]


def reencode(tx: txs.Transaction, index: int, value: Any) -> bytes:
    items = wire(tx)
    items[index] = value
    return encode(items)


def reason_of(raw: bytes) -> str:
    with pytest.raises(InvalidTransaction) as info:
        txs.decode_tx(raw)
    return info.value.reason


def rejection(tx: txs.Transaction, genesis: Genesis = GENESIS, now_ms: int = NOW) -> str:
    with pytest.raises(InvalidTransaction) as info:
        txs.validate(tx, genesis, now_ms)
    return info.value.reason


# --- Bytes and id ----------------------------------------------------------------------------


def test_create_decode_round_trip() -> None:
    tx = make()
    again = txs.decode_tx(tx.raw)
    assert again == tx
    assert again.raw == tx.raw
    assert again.tx_id == tx.tx_id
    assert (tx.chain_id, tx.client_id, tx.nonce, tx.timestamp_ms, tx.key, tx.type, tx.body) == (
        CHAIN,
        CLIENT,
        7,
        NOW,
        "fiscal/2025/budget",
        "budget.line",
        {"amount": 1200, "memo": "q1"},
    )


def test_wire_form_and_tx_id() -> None:
    tx = make()
    assert tx.raw == encode(wire(tx))
    assert tx.raw[0] == 0x99  # a fixarray of 9 items
    assert tx.tx_id == crypto.sha256(tx.raw)
    assert len(tx.signature) == 64


def test_signature_is_over_the_domain_and_unsigned_array() -> None:
    tx = make()
    payload = encode([CHAIN, CLIENT, 7, NOW, "fiscal/2025/budget", "budget.line", tx.body])
    assert tx.unsigned_payload() == payload
    KEY.public_key().verify(tx.signature, crypto.Domain.TX.value + payload)
    assert tx.signature == crypto.sign(KEY, crypto.Domain.TX, payload)


def test_body_key_order_does_not_matter() -> None:
    a = make(body={"b": 1, "a": {"y": 2, "x": 3}})
    b = make(body={"a": {"x": 3, "y": 2}, "b": 1})
    assert a.raw == b.raw
    assert a.tx_id == b.tx_id


def test_tx_id_differs_per_content() -> None:
    assert len({make(nonce=n).tx_id for n in range(20)}) == 20


def test_a_valid_tx_passes_every_rule() -> None:
    tx = make()
    txs.validate(tx, GENESIS, NOW)
    assert txs.check_stateless(tx, GENESIS) is GENESIS.clients[CLIENT]


bodies = st.dictionaries(
    st.text(max_size=10),
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(INT_MIN, INT_MAX)
        | st.text(max_size=20)
        | st.binary(max_size=20),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
        ),
        max_leaves=20,
    ),
    max_size=6,
)


@bounded(150)
@given(bodies, st.integers(0, NONCE_MAX), st.integers(0, txs.TIMESTAMP_MS_MAX))
def test_round_trip_any_valid_fields(body: dict[str, Any], nonce: int, timestamp_ms: int) -> None:
    tx = make(body=body, nonce=nonce, timestamp_ms=timestamp_ms)
    assert txs.decode_tx(tx.raw) == tx
    assert tx.body == body
    txs.check_signature(tx, GENESIS.clients[CLIENT])


# --- Decoding: malformed and too_large -------------------------------------------------------

MALFORMED: dict[str, Any] = {
    "not msgpack": b"\xc1",
    "empty": b"",
    "trailing byte": lambda: make().raw + b"\x00",
    "not an array": lambda: encode({"chain_id": CHAIN}),
    "8 items": lambda: encode(wire(make())[:8]),
    "10 items": lambda: encode([*wire(make()), 0]),
    "version 0": lambda: reencode(make(), 0, 0),
    "version 2": lambda: reencode(make(), 0, 2),
    "version as str": lambda: reencode(make(), 0, "1"),
    "chain_id as bin": lambda: reencode(make(), 1, CHAIN.encode()),
    "empty chain_id": lambda: reencode(make(), 1, ""),
    "chain_id over 64 bytes": lambda: reencode(make(), 1, "c" * 65),
    "client_id as int": lambda: reencode(make(), 2, 5),
    "client_id over 64 bytes": lambda: reencode(make(), 2, "é" * 33),
    "negative nonce": lambda: reencode(make(), 3, -1),
    "nonce as bool": lambda: reencode(make(), 3, value=True),
    "nonce as float": lambda: reencode(make(), 3, 7.0),
    "negative timestamp": lambda: reencode(make(), 4, -1),
    "timestamp past 2**53": lambda: reencode(make(), 4, txs.TIMESTAMP_MS_MAX + 1),
    "key as bin": lambda: reencode(make(), 5, b"fiscal/x"),
    "bad key": lambda: reencode(make(), 5, "fiscal//x"),
    "bad type": lambda: reencode(make(), 6, "9lives"),
    "body an array": lambda: reencode(make(), 7, [1]),
    "body nil": lambda: reencode(make(), 7, None),
    "body with a float": lambda: reencode(make(), 7, {"amount": 1.5}),
    "body with a bin key": lambda: reencode(make(), 7, {b"amount": 1}),
    "body nested too deep": lambda: reencode(make(), 7, {"a": [[[[[[[[[1]]]]]]]]]}),
    "body list too long": lambda: reencode(make(), 7, {"a": [0] * (BODY_ITEMS_MAX + 1)}),
    "signature as str": lambda: reencode(make(), 8, "s" * 64),
    "signature of 63 bytes": lambda: reencode(make(), 8, bytes(63)),
    "signature of 65 bytes": lambda: reencode(make(), 8, bytes(65)),
    "non-canonical map order in body": lambda: make().raw.replace(
        bytes.fromhex("82a6616d6f756e74cd04b0a46d656d6fa27131"),
        bytes.fromhex("82a46d656d6fa27131a6616d6f756e74cd04b0"),
    ),
    "non-minimal nonce": lambda: make().raw.replace(b"\x07\xcf", b"\xcc\x07\xcf", 1),
}


@pytest.mark.parametrize("raw", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed(raw: Any) -> None:
    data = raw() if callable(raw) else raw
    assert reason_of(data) == txs.MALFORMED


def test_non_canonical_examples_are_what_they_claim() -> None:
    # The byte surgery above must hit the bytes it means to (else it tests nothing).
    tx = make()
    assert bytes.fromhex("82a6616d6f756e74cd04b0a46d656d6fa27131") in tx.raw
    assert tx.raw.count(b"\x07\xcf") == 1


def test_too_large_tx() -> None:
    raw = reencode(make(), 7, {"pad": "x" * TX_BYTES_MAX})
    assert len(raw) > TX_BYTES_MAX
    assert reason_of(raw) == txs.TOO_LARGE


def test_body_size_limit() -> None:
    overhead = len(encode({"pad": ""})) + 2  # + str16 length bytes for a long pad
    fits = make(body={"pad": "x" * (BODY_BYTES_MAX - overhead)})
    assert len(encode(fits.body)) == BODY_BYTES_MAX
    raw = reencode(fits, 7, {"pad": "x" * (BODY_BYTES_MAX - overhead + 1)})
    assert len(raw) <= TX_BYTES_MAX
    assert reason_of(raw) == txs.TOO_LARGE


def test_body_bounds_at_the_edge() -> None:
    deepest: Any = 1
    for _ in range(BODY_DEPTH_MAX):
        deepest = [deepest]
    make(body={"a": deepest[0]})  # the body map itself is level 0
    make(body={"a": [0] * BODY_ITEMS_MAX})
    make(body={"n": INT_MIN, "m": INT_MAX, "b": b"\x00", "t": True, "z": None})


def nested_dict(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    "changes",
    [
        {"nonce": -1},
        {"nonce": NONCE_MAX + 1},
        {"timestamp_ms": -(2**70)},
        {"key": "a b"},
        {"type_": ""},
        {"chain_id": 5},
        {"body": {"x": 0.5}},
        {"body": {"x": 2**64}},
        {"body": {"x": "\ud800"}},  # a lone surrogate, as json.loads gives for "\ud800"
        {"body": {"x": {1, 2}}},
        {"body": nested_dict(40)},
    ],
)
def test_create_refuses_out_of_bounds_fields(changes: dict[str, Any]) -> None:
    with pytest.raises(InvalidTransaction, match=r"^malformed: "):
        make(**changes)


# --- Record key and type grammar -------------------------------------------------------------

GOOD_KEYS = [
    "fiscal/2025/budget",
    "fiscal/a",
    "fiscal/A-Z_a.z:0-9",
    "fiscal/" + "k" * 249,
    "fiscal/x/y/z",
    "fiscal/..x",
    "fiscal/a./.b",
    "fiscal/...",
]
BAD_KEYS = [
    "",
    "/fiscal/a",
    "fiscal/",
    "fiscal//a",
    "fiscal/a b",
    "fiscal/a\n",
    "fiscal/a\nb",
    "fiscal/é",
    "fiscal\\a",
    "fiscal/a?b",
    "fiscal/a#b",
    "fiscal/a%2f",
    "fiscal/" + "k" * 250,
    # dot segments: URL normalisation would turn these into other keys
    "fiscal/../budget",
    "fiscal/./a",
    "fiscal/a/..",
    "./fiscal/a",
    "..",
    ".",
]
GOOD_TYPES = ["record", "R", "budget.line", "a1_b-c.d", "t" * 64]
BAD_TYPES = [
    "",
    "1record",
    "_record",
    ".record",
    "-x",
    "re cord",
    "record\n",
    "récord",
    "t" * 65,
    "a/b",
]


@pytest.mark.parametrize("key", GOOD_KEYS)
def test_good_keys(key: str) -> None:
    assert make(key=key).key == key


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_keys(key: str) -> None:
    assert reason_of(reencode(make(), 5, key)) == txs.MALFORMED


@pytest.mark.parametrize("type_", GOOD_TYPES)
def test_good_types(type_: str) -> None:
    assert make(type_=type_).type == type_


@pytest.mark.parametrize("type_", BAD_TYPES)
def test_bad_types(type_: str) -> None:
    assert reason_of(reencode(make(), 6, type_)) == txs.MALFORMED


# --- Validation: each reason triggered alone --------------------------------------------------


def test_wrong_chain() -> None:
    other = factory.network(chain_id="othercity")
    tx = txs.create(
        other.client_keys[CLIENT],
        chain_id="othercity",
        client_id=CLIENT,
        nonce=0,
        timestamp_ms=NOW,
        key="fiscal/x",
        type_="record",
        body={},
    )
    txs.validate(tx, other.genesis, NOW)
    assert rejection(tx) == txs.WRONG_CHAIN


def test_unknown_client() -> None:
    tx = make(client_id="fiscal-clerk9")
    assert rejection(tx) == txs.UNKNOWN_CLIENT


def test_forbidden_namespace() -> None:
    assert rejection(make(key="claims/1")) == txs.FORBIDDEN_NAMESPACE
    assert rejection(make(key="fiscal")) == txs.FORBIDDEN_NAMESPACE
    assert rejection(make(key="fiscalx/1")) == txs.FORBIDDEN_NAMESPACE
    claims = NET.client_for("claims/")
    tx = txs.create(
        NET.client_keys[claims],
        chain_id=CHAIN,
        client_id=claims,
        nonce=0,
        timestamp_ms=NOW,
        key="claims/1",
        type_="claim",
        body={},
    )
    txs.validate(tx, GENESIS, NOW)


def test_timestamp_window() -> None:
    params = GENESIS.params
    oldest, newest = NOW - params.tx_ttl_ms, NOW + params.clock_skew_ms
    txs.validate(make(timestamp_ms=oldest), GENESIS, NOW)
    txs.validate(make(timestamp_ms=newest), GENESIS, NOW)
    assert rejection(make(timestamp_ms=oldest - 1)) == txs.STALE_TIMESTAMP
    assert rejection(make(timestamp_ms=newest + 1)) == txs.FUTURE_TIMESTAMP
    assert rejection(make(timestamp_ms=0)) == txs.STALE_TIMESTAMP


def test_bad_signature_other_key() -> None:
    forged = make(signing_key=NET.client_keys[NET.client_for("claims/")])
    assert rejection(forged) == txs.BAD_SIGNATURE


def test_bad_signature_other_domain() -> None:
    tx = make()
    commit_signed = crypto.sign(KEY, crypto.Domain.COMMIT, tx.unsigned_payload())
    forged = txs.decode_tx(reencode(tx, 8, commit_signed))
    assert rejection(forged) == txs.BAD_SIGNATURE


def test_rules_run_cheapest_first() -> None:
    # A tx wrong in every way reports the first rule it breaks; each reason is reachable alone.
    tx = make(chain_id="elsewhere", client_id="nobody", key="claims/1", timestamp_ms=0)
    assert rejection(tx) == txs.WRONG_CHAIN
    assert rejection(make(client_id="nobody", timestamp_ms=0)) == txs.UNKNOWN_CLIENT
    assert rejection(make(key="claims/1", timestamp_ms=0)) == txs.FORBIDDEN_NAMESPACE


def test_reason_codes_are_stable() -> None:
    assert (
        txs.MALFORMED,
        txs.TOO_LARGE,
        txs.WRONG_CHAIN,
        txs.UNKNOWN_CLIENT,
        txs.FORBIDDEN_NAMESPACE,
        txs.STALE_TIMESTAMP,
        txs.FUTURE_TIMESTAMP,
        txs.BAD_SIGNATURE,
        txs.DUPLICATE,
    ) == (
        "malformed",
        "too_large",
        "wrong_chain",
        "unknown_client",
        "forbidden_namespace",
        "stale_timestamp",
        "future_timestamp",
        "bad_signature",
        "duplicate",
    )


def test_error_carries_reason_and_detail() -> None:
    with pytest.raises(InvalidTransaction) as info:
        txs.validate(make(key="claims/1"), GENESIS, NOW)
    assert info.value.reason == "forbidden_namespace"
    assert "claims/1" in info.value.detail
    assert str(info.value).startswith("forbidden_namespace: ")


# --- The signature covers every field ---------------------------------------------------------

MODIFIED: dict[str, Any] = {
    "chain_id": "testcity2",
    "client_id": "fiscal-clerk1",
    "nonce": 8,
    "timestamp_ms": NOW + 1,
    "key": "fiscal/2025/budgets",
    "type": "budget.lines",
    "body": {"amount": 1201, "memo": "q1"},
}


@pytest.mark.parametrize("name", MODIFIED)
def test_signature_never_verifies_for_a_modified_field(name: str) -> None:
    tx = make()
    changed = txs.decode_tx(reencode(tx, FIELDS.index(name), MODIFIED[name]))
    assert changed.signature == tx.signature
    assert changed.tx_id != tx.tx_id
    with pytest.raises(InvalidTransaction, match="bad_signature"):
        txs.check_signature(changed, GENESIS.clients[CLIENT])


values_for_fields = st.sampled_from(list(MODIFIED)).flatmap(
    lambda name: st.tuples(
        st.just(name),
        {
            "chain_id": st.from_regex(r"[a-z0-9]{1,64}", fullmatch=True),
            "client_id": st.from_regex(r"[a-z0-9-]{1,64}", fullmatch=True),
            "nonce": st.integers(0, NONCE_MAX),
            "timestamp_ms": st.integers(0, txs.TIMESTAMP_MS_MAX),
            "key": st.from_regex(r"fiscal/[a-z0-9]{1,20}", fullmatch=True),
            "type": st.from_regex(r"[a-z][a-z0-9.]{0,20}", fullmatch=True),
            "body": bodies,
        }[name],
    )
)


@bounded(200)
@given(values_for_fields)
def test_signature_binds_every_field(change: tuple[str, Any]) -> None:
    name, value = change
    tx = make()
    changed = txs.decode_tx(reencode(tx, FIELDS.index(name), value))
    client = GENESIS.clients[CLIENT]
    if changed == tx:
        txs.check_signature(changed, client)
    else:
        with pytest.raises(InvalidTransaction, match="bad_signature"):
            txs.check_signature(changed, client)


def test_flipping_any_signature_bit_fails() -> None:
    tx = make()
    client = GENESIS.clients[CLIENT]
    for bit in range(0, 512, 7):
        signature = bytearray(tx.signature)
        signature[bit // 8] ^= 1 << (bit % 8)
        changed = dataclasses.replace(tx, signature=bytes(signature))
        with pytest.raises(InvalidTransaction, match="bad_signature"):
            txs.check_signature(changed, client)

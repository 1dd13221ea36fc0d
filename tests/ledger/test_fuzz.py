"""Decoder fuzzing: every decoder returns a value or raises its own ledger error, nothing else.

The contract (STYLE.md item 7): `encoding.decode` raises only InvalidEncoding, `tx.decode_tx`
only InvalidTransaction, `block.decode_block` and `block.decode_certificate` only InvalidBlock.
And what a decoder accepts is canonical: re-encoding the value gives back the very same bytes.
"""

from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import block as blocks
from ledger import encoding
from ledger import tx as txs
from ledger.errors import InvalidBlock, InvalidEncoding, InvalidTransaction, LedgerError
from tests import factory

LIMIT = 1 << 20


def bounded(max_examples: int) -> settings:
    """Fixed examples every run: derandomized, no example database, no deadline."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# --- The decoders and what each may raise ----------------------------------------------------

Decoder = tuple[Callable[[bytes], Any], type[LedgerError], Callable[[Any], bytes]]

DECODERS: dict[str, Decoder] = {
    "encoding.decode": (lambda raw: encoding.decode(raw, LIMIT), InvalidEncoding, encoding.encode),
    "tx.decode_tx": (txs.decode_tx, InvalidTransaction, lambda t: t.raw),
    "block.decode_block": (blocks.decode_block, InvalidBlock, lambda b: b.encode()),
    "block.decode_certificate": (blocks.decode_certificate, InvalidBlock, lambda c: c.encode()),
}


def check(name: str, raw: bytes) -> bool:
    """Feed `raw` to one decoder; any exception but the decoder's own error fails the test."""
    decode, error, reencode = DECODERS[name]
    try:
        value = decode(raw)
    except error:
        return False
    assert reencode(value) == raw, "a decoder accepted bytes that are not canonical"
    return True


# --- Valid encodings to mutate ---------------------------------------------------------------


def _seeds() -> dict[str, list[bytes]]:
    net = factory.network()
    chain = list(factory.chain(net, 3, 2))
    clerk = net.client_for("fiscal/")
    odd = net.tx(
        clerk,
        "fiscal/a:b/c.d_e-f",
        {
            "n": -(2**63),
            "m": 2**64 - 1,
            "b": b"\x00\xff",
            "t": True,
            "z": None,
            "l": [1, [2, {"k": "é"}]],
            "s": "x" * 40,
        },
        factory.BASE_TIME_MS,
    )
    tx_raws = [t.raw for b, _ in chain for t in b.txs] + [odd.raw]
    empty = blocks.make_block(blocks.ChainHead.genesis(net.genesis), (), 0, 0, 0)
    block_raws = [b.encode() for b, _ in chain] + [empty.encode()]
    cert_raws = [c.encode() for _, c in chain] + [net.certify(chain[0][0], view=300).encode()]
    values: list[Any] = [None, 0, -1, 2**40, "s", b"b", [1, "a"], {"a": {"b": []}}]
    plain = [encoding.encode(v) for v in values]
    every = tx_raws + block_raws + cert_raws + plain
    return {
        "encoding.decode": every,
        "tx.decode_tx": tx_raws,
        "block.decode_block": block_raws,
        "block.decode_certificate": cert_raws,
    }


SEEDS = _seeds()


@pytest.mark.parametrize("name", DECODERS)
def test_seeds_decode(name: str) -> None:
    assert all(check(name, raw) for raw in SEEDS[name])


@st.composite
def mutations(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A valid encoding with a few bit flips, truncations, insertions, deletions, overwrites."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "overwrite"]))
        at = draw(st.integers(0, len(data)))
        if op == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[at:]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        elif op == "overwrite" and at < len(data):
            # Bytes that are msgpack type markers most often change the structure.
            data[at] = draw(
                st.sampled_from(
                    [
                        0x00,
                        0x7F,
                        0x80,
                        0x90,
                        0xA0,
                        0xC0,
                        0xC1,
                        0xC4,
                        0xCA,
                        0xCC,
                        0xCF,
                        0xD0,
                        0xD3,
                        0xD4,
                        0xD9,
                        0xDC,
                        0xDE,
                        0xDF,
                        0xE0,
                        0xFF,
                    ]
                )
            )
    return bytes(data)


# --- Arbitrary bytes and mutations of valid encodings ----------------------------------------


@pytest.mark.parametrize("name", DECODERS)
@bounded(400)
@given(raw=st.binary(max_size=300))
def test_arbitrary_bytes(name: str, raw: bytes) -> None:
    check(name, raw)


@pytest.mark.parametrize("name", DECODERS)
@bounded(400)
@given(data=st.data())
def test_mutated_valid_encodings(name: str, data: st.DataObject) -> None:
    check(name, data.draw(mutations(SEEDS[name])))


# --- Structured msgpack values ---------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=True)
    | st.text(max_size=20)
    | st.binary(max_size=70)
)
keys = st.text(max_size=8) | st.binary(max_size=4) | st.integers(-5, 5)
msgpack_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=15,
)


@st.composite
def packed(draw: st.DrawFn, values: st.SearchStrategy[Any]) -> bytes:
    value = draw(values)
    try:
        raw: bytes = msgpack.packb(
            value, use_bin_type=draw(st.booleans()), use_single_float=draw(st.booleans())
        )
    except (TypeError, ValueError, OverflowError):  # e.g. a float too large for float32
        raw = b"\xc1"
    return raw


junk = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
    max_leaves=5,
)


def either(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a well-typed field value, sometimes a value of any kind."""
    return st.integers(0, 3).flatmap(lambda pick: junk if pick == 0 else valid)


net = factory.network()
plain_bodies = st.dictionaries(
    st.text(max_size=6), st.integers(0, 9) | st.text(max_size=6), max_size=4
)
tx_shaped = st.tuples(
    either(st.just(1)),
    either(st.sampled_from([net.genesis.chain_id, "x" * 65, ""])),
    either(st.sampled_from([*net.client_keys, "nobody"])),
    either(st.integers(0, 2**64 - 1)),
    either(st.integers(0, 2**53 + 1)),
    either(st.sampled_from(["fiscal/a", "claims/b/c", "a//b", "x" * 257, "/"])),
    either(st.sampled_from(["record", "9x", "t" * 65])),
    either(plain_bodies),
    either(st.binary(min_size=63, max_size=65)),
).map(list)
header_shaped = st.tuples(
    either(st.just(1)),
    either(st.integers(0, 2**63)),
    either(st.binary(min_size=31, max_size=33)),
    either(st.binary(min_size=32, max_size=32)),
    either(st.binary(min_size=32, max_size=32)),
    either(st.integers(0, 2**53 + 1)),
    either(st.integers(0, 2**63)),
    either(st.integers(0, 64)),
).map(list)
tx_bytes = st.one_of(
    st.sampled_from(SEEDS["tx.decode_tx"]), packed(tx_shaped), st.binary(max_size=20)
)
block_shaped = st.tuples(either(header_shaped), either(st.lists(tx_bytes, max_size=4))).map(list)
vote_shaped = st.tuples(either(st.integers(0, 64)), either(st.binary(min_size=63, max_size=65)))
cert_shaped = st.tuples(
    either(st.integers(0, 2**63)),
    either(st.binary(min_size=31, max_size=33)),
    either(st.integers(0, 2**63)),
    either(st.lists(vote_shaped.map(list), max_size=6)),
).map(list)

STRUCTURED: dict[str, st.SearchStrategy[Any]] = {
    "encoding.decode": st.one_of(tx_shaped, block_shaped, cert_shaped),
    "tx.decode_tx": tx_shaped,
    "block.decode_block": block_shaped,
    "block.decode_certificate": cert_shaped,
}


@pytest.mark.parametrize("name", DECODERS)
@bounded(200)
@given(data=st.data())
def test_structured_msgpack(name: str, data: st.DataObject) -> None:
    # Any msgpack value at all, and values shaped like the decoder's object with fields that
    # are sometimes right, sometimes of the wrong type or out of bounds.
    check(name, data.draw(packed(msgpack_values)))
    check(name, data.draw(packed(STRUCTURED[name])))


@pytest.mark.parametrize("name", DECODERS)
@bounded(250)
@given(data=st.data())
def test_canonical_encodings_of_shaped_values(name: str, data: st.DataObject) -> None:
    # Canonical bytes get past the encoding layer, so the field checks themselves are fuzzed.
    value = data.draw(STRUCTURED[name])
    try:
        raw = encoding.encode(value)
    except (InvalidEncoding, TypeError, ValueError, OverflowError):
        return
    check(name, raw)


def test_huge_declared_lengths_and_deep_nesting() -> None:
    headers = [
        b"\xdd\xff\xff\xff\xff",
        b"\xdb\xff\xff\xff\xff",
        b"\xc6\xff\xff\xff\xff",
        b"\xdf\xff\xff\xff\xff",
        b"\x91" * 200_000,
        b"\x81\xa1a" * 50_000,
    ]
    for name in DECODERS:
        for raw in headers:
            assert not check(name, raw)


def test_oversize_inputs() -> None:
    assert not check("tx.decode_tx", b"\x00" * (20 * 1024 + 1))
    assert not check("block.decode_certificate", b"\x00" * (blocks.CERTIFICATE_BYTES_MAX + 1))
    with pytest.raises(InvalidEncoding):
        encoding.decode(b"\x00" * 11, 10)


def test_the_checker_fails_on_foreign_exceptions(monkeypatch: pytest.MonkeyPatch) -> None:
    # The harness itself: a foreign exception, or accepting non-canonical bytes, fails a test.
    monkeypatch.setitem(DECODERS, "broken", (lambda raw: raw[100], InvalidEncoding, bytes))
    monkeypatch.setitem(DECODERS, "lenient", (bytes, InvalidEncoding, lambda _v: b"other"))
    with pytest.raises(IndexError):
        check("broken", b"")
    with pytest.raises(AssertionError):
        check("lenient", b"x")

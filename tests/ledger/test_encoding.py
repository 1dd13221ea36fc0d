"""Canonical msgpack: byte-exact vectors, round trips, and every non-canonical form rejected."""

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import encoding
from ledger.encoding import check_plain, decode, encode
from ledger.errors import InvalidEncoding
from ledger.primitives import BODY_DEPTH_MAX, BODY_ITEMS_MAX, INT_MAX, INT_MIN

LIMIT = 1 << 20


def bounded(max_examples: int) -> settings:
    """Fixed examples every run: derandomized, no example database, no deadline."""
    return settings(max_examples=max_examples, deadline=None, derandomize=True, database=None)


def nested_list(depth: int) -> Any:
    value: Any = None
    for _ in range(depth):
        value = [value]
    return value


# --- Byte-exact vectors (docs/protocol.md lists the same formats) ----------------------------

VECTORS: list[tuple[Any, str]] = [
    (None, "c0"),
    (False, "c2"),
    (True, "c3"),
    (0, "00"),
    (127, "7f"),
    (128, "cc80"),
    (255, "ccff"),
    (256, "cd0100"),
    (65535, "cdffff"),
    (65536, "ce00010000"),
    (2**32 - 1, "ceffffffff"),
    (2**32, "cf0000000100000000"),
    (2**64 - 1, "cfffffffffffffffff"),
    (-1, "ff"),
    (-32, "e0"),
    (-33, "d0df"),
    (-128, "d080"),
    (-129, "d1ff7f"),
    (-32768, "d18000"),
    (-32769, "d2ffff7fff"),
    (-(2**31), "d280000000"),
    (-(2**31) - 1, "d3ffffffff7fffffff"),
    (-(2**63), "d38000000000000000"),
    ("", "a0"),
    ("a", "a161"),
    ("é", "a2c3a9"),
    ("x" * 31, "bf" + "78" * 31),
    ("x" * 32, "d920" + "78" * 32),
    ("x" * 256, "da0100" + "78" * 256),
    (b"", "c400"),
    (b"\x01\x02", "c4020102"),
    (b"\x00" * 256, "c50100" + "00" * 256),
    ([], "90"),
    ([1, "a", b"b"], "9301a161c40162"),
    (list(range(16)), "dc0010" + "".join(f"{i:02x}" for i in range(16))),
    ({}, "80"),
    ({"b": 1, "a": 2}, "82a16102a16201"),
    (
        {f"k{i:02d}": i for i in range(16)},
        "de0010" + "".join("a3" + f"k{i:02d}".encode().hex() + f"{i:02x}" for i in range(16)),
    ),
]


@pytest.mark.parametrize(("value", "hex_bytes"), VECTORS)
def test_vectors_encode_and_decode(value: Any, hex_bytes: str) -> None:
    assert encode(value).hex() == hex_bytes
    assert decode(bytes.fromhex(hex_bytes), LIMIT) == value


def test_tuples_encode_as_arrays() -> None:
    assert encode((1, (2, 3))) == encode([1, [2, 3]])


def test_map_keys_sort_by_utf8_bytes_not_by_insertion() -> None:
    keys = ["b", "a", "aa", "B", "é", "z", "\uffff", "\U00010000", "", "a\x00"]
    packed = encode(dict.fromkeys(keys, 0))
    order = sorted(keys, key=lambda k: k.encode())
    assert packed == encode(dict.fromkeys(order, 0))
    # UTF-8 order is code point order; UTF-16 order would put U+10000 before U+FFFF.
    assert packed.index(b"\xef\xbf\xbf") < packed.index(b"\xf0\x90\x80\x80")
    assert decode(packed, LIMIT) == dict.fromkeys(keys, 0)


def test_encoding_ignores_insertion_order_everywhere() -> None:
    one = {"x": {"b": 1, "a": [{"d": 1, "c": 2}]}, "w": 0}
    two = {"w": 0, "x": {"a": [{"c": 2, "d": 1}], "b": 1}}
    assert encode(one) == encode(two)


# --- Round trips -----------------------------------------------------------------------------

plain_scalars = (
    st.none()
    | st.booleans()
    | st.integers(INT_MIN, INT_MAX)
    | st.text(max_size=40)
    | st.binary(max_size=40)
)
plain_values = st.recursive(
    plain_scalars,
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=6)
    ),
    max_leaves=40,
)


@bounded(300)
@given(plain_values)
def test_round_trip(value: Any) -> None:
    packed = encode(value)
    assert decode(packed, LIMIT) == value
    assert encode(decode(packed, LIMIT)) == packed
    check_plain(value, "value")


@bounded(200)
@given(plain_values)
def test_encode_matches_plain_msgpack_after_sorting(value: Any) -> None:
    # The canonical form is ordinary msgpack (smallest formats, str/bin distinct) of sorted maps.
    assert encode(value) == msgpack.packb(encoding._canonical(value, 0), use_bin_type=True)


# --- Canonical form: everything else is rejected ---------------------------------------------

NON_CANONICAL = {
    "unsorted map keys": "82a16201a16102",
    "duplicate map keys": "82a16101a16101",
    "duplicate keys with different values": "82a16101a16102",
    "uint8 for a fixint": "cc05",
    "uint16 for a uint8": "cd00ff",
    "uint32 for a uint16": "ce0000ffff",
    "uint64 for a uint32": "cf00000000ffffffff",
    "int8 for a positive fixint": "d005",
    "int8 for a negative fixint": "d0ff",
    "int16 for an int8": "d1ff80",
    "int32 for an int16": "d2ffff8000",
    "int64 for an int32": "d3ffffffff80000000",
    "int16 for a positive value": "d10100",
    "str8 for a fixstr": "d90161",
    "str16 for a str8": "da0001" + "61",
    "str32 for a fixstr": "db0000000161",
    "bin16 for a bin8": "c5000161",
    "bin32 for a bin8": "c600000161",
    "array16 for a fixarray": "dc000101",
    "array32 for a fixarray": "dd0000000101",
    "map16 for a fixmap": "de0001a16101",
    "map32 for a fixmap": "df00000001a16101",
    "float32": "ca3fc00000",
    "extension type": "d5056162",
    "extension type (fixext1)": "d40501",
    "timestamp in the 96-bit form": "c70cff" + "00000000" + "0000000000000001",
}


@pytest.mark.parametrize("hex_bytes", NON_CANONICAL.values(), ids=NON_CANONICAL.keys())
def test_non_canonical_rejected(hex_bytes: str) -> None:
    with pytest.raises(InvalidEncoding):
        decode(bytes.fromhex(hex_bytes), LIMIT)


NOT_MSGPACK = {
    "empty": "",
    "truncated uint16": "cd01",
    "truncated str": "a3616263"[:6],
    "truncated array": "9301",
    "trailing bytes": "0101",
    "reserved byte 0xc1": "c1",
    "invalid UTF-8 in str": "a1ff",
    "UTF-8 encoded surrogate": "a3eda080",
    "overlong UTF-8": "a2c0af",
    "integer map key": "810102",
    "nil map key": "81c001",
    "array map key": "819001",
    "str and bin keys together": "82a16101c4016202",
    "array32 claiming 2**32-1 items": "ddffffffff",
    "str32 claiming 2**32-1 bytes": "dbffffffff",
    "map32 claiming 2**32-1 entries": "dfffffffff",
}


@pytest.mark.parametrize("hex_bytes", NOT_MSGPACK.values(), ids=NOT_MSGPACK.keys())
def test_not_msgpack_rejected(hex_bytes: str) -> None:
    with pytest.raises(InvalidEncoding):
        decode(bytes.fromhex(hex_bytes), LIMIT)


def test_decode_rejects_non_bytes() -> None:
    with pytest.raises(InvalidEncoding):
        decode("c0", LIMIT)  # type: ignore[arg-type]


def test_decode_accepts_bytearray_and_memoryview() -> None:
    assert decode(bytearray(b"\x93\x01\x02\x03"), LIMIT) == [1, 2, 3]  # type: ignore[arg-type]
    assert decode(memoryview(b"\x93\x01\x02\x03"), LIMIT) == [1, 2, 3]  # type: ignore[arg-type]


def test_decode_size_bound() -> None:
    packed = encode("x" * 100)
    assert decode(packed, len(packed)) == "x" * 100
    with pytest.raises(InvalidEncoding, match="exceeds the limit"):
        decode(packed, len(packed) - 1)


def test_decode_depth_bound() -> None:
    assert decode(encode(nested_list(32)), LIMIT) == nested_list(32)
    with pytest.raises(InvalidEncoding):
        decode(b"\x91" * 33 + b"\xc0", LIMIT)
    # Far deeper than Python's recursion limit: still only InvalidEncoding.
    with pytest.raises(InvalidEncoding):
        decode(b"\x91" * 100_000 + b"\xc0", LIMIT)


def test_encode_depth_bound() -> None:
    with pytest.raises(InvalidEncoding):
        encode(nested_list(40))


def test_decode_does_not_check_plainness() -> None:
    # decode is only about the byte form; which value kinds a field admits is the schema's
    # business (check_plain for bodies, expect_* for fixed fields).
    assert decode(encode(1.5), LIMIT) == 1.5
    assert decode(encode({b"k": 1}), LIMIT) == {b"k": 1}


# --- Plain values ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        INT_MIN,
        INT_MAX,
        "",
        "é",
        b"",
        b"\x00",
        [],
        {},
        {"a": [1, {"b": None}], "c": b"x"},
        nested_list(BODY_DEPTH_MAX),
        list(range(BODY_ITEMS_MAX)),
        {str(i): i for i in range(BODY_ITEMS_MAX)},
    ],
)
def test_check_plain_accepts(value: Any) -> None:
    check_plain(value, "body")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (1.5, "floats"),
        (float("nan"), "floats"),
        ({"a": [0.0]}, "floats"),
        (msgpack.ExtType(5, b"ab"), "not a plain value"),
        (msgpack.Timestamp(1, 0), "not a plain value"),
        ({1: "a"}, "map keys must be strings"),
        ({b"a": 1}, "map keys must be strings"),
        ({None: 1}, "map keys must be strings"),
        ({"a": {2: 1}}, "map keys must be strings"),
        ((1, 2), "not a plain value"),
        (bytearray(b"x"), "not a plain value"),
        ({1, 2}, "not a plain value"),
        (INT_MIN - 1, "integer out of range"),
        (INT_MAX + 1, "integer out of range"),
        (nested_list(BODY_DEPTH_MAX + 1), "nested deeper"),
        (list(range(BODY_ITEMS_MAX + 1)), "list longer"),
        ({str(i): i for i in range(BODY_ITEMS_MAX + 1)}, "map larger"),
    ],
)
def test_check_plain_rejects(value: Any, message: str) -> None:
    with pytest.raises(InvalidEncoding, match=message) as info:
        check_plain(value, "body")
    assert str(info.value).startswith("body: ")


# --- Field helpers: the schema layer that tells str from bin ---------------------------------


def test_expect_helpers_accept() -> None:
    assert encoding.expect_list([1, 2], 2, "x") == [1, 2]
    assert encoding.expect_int(5, 0, 5, "x") == 5
    assert encoding.expect_str("abc", 3, "x") == "abc"
    assert encoding.expect_bytes(b"ab", 2, "x") == b"ab"


@pytest.mark.parametrize(
    ("call", "value"),
    [
        ("list", (1, 2)),
        ("list", [1]),
        ("list", {"a": 1, "b": 2}),
        ("int", True),
        ("int", 6),
        ("int", -1),
        ("int", "5"),
        ("int", 5.0),
        ("str", b"abc"),
        ("str", ""),
        ("str", "abcd"),
        ("str", "éé"),
        ("bytes", "ab"),
        ("bytes", b"abc"),
        ("bytes", bytearray(b"ab")),
        ("bytes", [0, 1]),
    ],
)
def test_expect_helpers_reject(call: str, value: Any) -> None:
    expect: dict[str, Callable[[Any], Any]] = {
        "list": lambda v: encoding.expect_list(v, 2, "field"),
        "int": lambda v: encoding.expect_int(v, 0, 5, "field"),
        "str": lambda v: encoding.expect_str(v, 3, "field"),
        "bytes": lambda v: encoding.expect_bytes(v, 2, "field"),
    }
    with pytest.raises(InvalidEncoding, match=r"^field: "):
        expect[call](value)


def test_a_failed_encode_leaves_nothing_behind_for_the_next() -> None:
    value = [1, "two", b"\x03", {"four": [5]}]
    for bad in ([1, 2**70], [b"x" * 100, object()], {"a": [1, -(2**70)]}):
        with pytest.raises((InvalidEncoding, OverflowError, TypeError)):
            encode(bad)
        assert encode(value) == msgpack.packb(value, use_bin_type=True)


def test_threads_encode_at_once_each_with_its_own_packer() -> None:
    values = [[i, "x" * (i % 50), {"k": list(range(i % 20))}] for i in range(2000)]
    expected = [msgpack.packb(v, use_bin_type=True) for v in values]
    together = threading.Barrier(2)  # both batches run at once, on two threads

    def work(batch: list[Any]) -> tuple[list[bytes], object]:
        together.wait(timeout=30)
        return [encode(v) for v in batch], encoding._packers.packer

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(work, [values] * 2))
    assert all(out == expected for out, _ in results)
    first, second = (packer for _, packer in results)
    assert first is not second
    assert encoding._packers.packer not in (first, second)  # nor the main thread's

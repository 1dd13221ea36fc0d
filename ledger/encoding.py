"""Canonical msgpack encoding: one value, exactly one byte string.

Ledger objects are msgpack arrays of fixed order; bodies are maps of plain values (nil, bool,
int, str, bin, array, map with str keys; never floats or extension types) with keys sorted.
`decode` accepts only bytes that `encode` would have produced for the decoded value, so every
hash and signature is over a unique encoding. Decoding either returns a value or raises
`InvalidEncoding`, nothing else.
"""

import itertools
import threading
from collections.abc import Mapping
from typing import Any, Final

import msgpack

from ledger.errors import InvalidEncoding
from ledger.primitives import BODY_DEPTH_MAX, BODY_ITEMS_MAX, INT_MAX, INT_MIN

Plain = None | bool | int | str | bytes | list[Any] | dict[str, Any]

_ENCODE_DEPTH_MAX = 32  # ledger objects nest bodies a few levels deep at most


# Exact types msgpack packs as they are. Checked by identity first: `isinstance(v, Mapping)` is
# an ABC check, the slowest step of the canonical round trip every decoded tx goes through.
_SCALAR_TYPES = frozenset({str, bytes, int, bool, type(None)})
_LIST_TYPE = {list}


def _canonical(value: Any, depth: int) -> Any:
    """Return `value` with every map's keys in sorted order (msgpack keeps insertion order)."""
    if depth > _ENCODE_DEPTH_MAX:
        raise InvalidEncoding("value nested too deeply")
    kind = type(value)
    if kind in _SCALAR_TYPES:
        return value
    if kind is list or kind is tuple:
        # Arrays of scalars (a block's or a batch's tx bytes, most ledger arrays) are packed as
        # they are: one C-level pass over the item types instead of a call per item.
        if _SCALAR_TYPES.issuperset(map(type, value)):
            if value and depth >= _ENCODE_DEPTH_MAX:
                raise InvalidEncoding("value nested too deeply")
            return value
        # Arrays of arrays of scalars (rule-state lists: a payee's recent payments) likewise:
        # two C-level passes instead of a call per inner array.
        if (
            depth + 1 < _ENCODE_DEPTH_MAX
            and set(map(type, value)) == _LIST_TYPE
            and _SCALAR_TYPES.issuperset(map(type, itertools.chain.from_iterable(value)))
        ):
            return value
        return [v if type(v) in _SCALAR_TYPES else _canonical(v, depth + 1) for v in value]
    if kind is dict or isinstance(value, Mapping):
        return {k: _canonical(value[k], depth + 1) for k in sorted(value)}
    if isinstance(value, list | tuple):
        return [_canonical(v, depth + 1) for v in value]
    return value


class _Packers(threading.local):
    """One msgpack packer per thread: `msgpack.packb` builds a new one for every call, which
    costs as much as packing a small value (a tx), and a packer is not to be shared."""

    def __init__(self) -> None:
        self.packer = msgpack.Packer(use_bin_type=True)


_packers: Final = _Packers()


def _pack(value: Any) -> bytes:
    packed: bytes = _packers.packer.pack(value)
    return packed


def encode(value: Any) -> bytes:
    """The canonical bytes of `value` (maps sorted, tuples as arrays, str and bin distinct)."""
    return _pack(_canonical(value, 0))


def decode(data: bytes, max_bytes: int) -> Any:
    """Decode canonical bytes of at most `max_bytes`; raise `InvalidEncoding` otherwise."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidEncoding("expected bytes")
    if len(data) > max_bytes:
        raise InvalidEncoding(f"{len(data)} bytes exceeds the limit of {max_bytes}")
    try:
        # unpackb bounds every str/bin/array/map length by len(data) on its own.
        value = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
        )
        canonical = encode(value)
    except InvalidEncoding:
        raise
    except (ValueError, TypeError, msgpack.UnpackException, OverflowError) as exc:
        raise InvalidEncoding(f"not msgpack: {type(exc).__name__}") from None
    if canonical != bytes(data):
        raise InvalidEncoding("not in canonical form")
    return value


def decode_map_order_unchecked(data: bytes, max_bytes: int) -> Any:
    """`decode`, except that the order of map keys is left for the caller to check: the bytes
    must be exactly what msgpack packs for the decoded value, which is the canonical form as
    soon as every map's keys are in sorted order. For a schema whose only maps are checked
    with `check_plain(..., sorted_keys=True)` anyway (a tx body), this saves re-building every
    value to sort it. Raises `InvalidEncoding`, nothing else."""
    if not isinstance(data, bytes):
        raise InvalidEncoding("expected bytes")
    if len(data) > max_bytes:
        raise InvalidEncoding(f"{len(data)} bytes exceeds the limit of {max_bytes}")
    try:
        value = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
        packed = _pack(value)
    except (ValueError, TypeError, msgpack.UnpackException, OverflowError) as exc:
        raise InvalidEncoding(f"not msgpack: {type(exc).__name__}") from None
    if packed != data:
        raise InvalidEncoding("not in canonical form")
    return value


_PLAIN_LEAVES: Final = frozenset({str, bytes, bool, type(None)})  # exact types


def check_plain(value: Any, what: str, depth: int = 0, *, sorted_keys: bool = False) -> None:
    """Raise `InvalidEncoding` unless `value` is a bounded tree of plain values (no floats);
    with `sorted_keys`, also unless every map's keys are in canonical (sorted) order."""
    if depth > BODY_DEPTH_MAX:
        raise InvalidEncoding(f"{what}: nested deeper than {BODY_DEPTH_MAX}")
    kind = type(value)
    if kind is dict:
        if len(value) > BODY_ITEMS_MAX:
            raise InvalidEncoding(f"{what}: map larger than {BODY_ITEMS_MAX}")
        for key, item in value.items():
            if type(key) is not str and not isinstance(key, str):
                raise InvalidEncoding(f"{what}: map keys must be strings")
            _check_item(item, what, depth, sorted_keys)
        if sorted_keys and list(value) != sorted(value):
            raise InvalidEncoding("not in canonical form")
        return
    if kind is list:
        if len(value) > BODY_ITEMS_MAX:
            raise InvalidEncoding(f"{what}: list longer than {BODY_ITEMS_MAX}")
        for item in value:
            _check_item(item, what, depth, sorted_keys)
        return
    if kind in _PLAIN_LEAVES or isinstance(value, bool | str | bytes):
        return
    if isinstance(value, int):
        if not INT_MIN <= value <= INT_MAX:
            raise InvalidEncoding(f"{what}: integer out of range")
        return
    if isinstance(value, list | dict):  # subclasses: checked as their base types
        plain = dict(value) if isinstance(value, dict) else list(value)
        check_plain(plain, what, depth, sorted_keys=sorted_keys)
        return
    if isinstance(value, float):
        raise InvalidEncoding(f"{what}: floats are not allowed (use integers or strings)")
    raise InvalidEncoding(f"{what}: {type(value).__name__} is not a plain value")


def _check_item(item: Any, what: str, depth: int, sorted_keys: bool) -> None:
    """`check_plain` of one item of a container at `depth`; leaves are checked right here (a
    body is mostly leaves: one call each is most of the cost)."""
    kind = type(item)
    if depth < BODY_DEPTH_MAX and (
        kind in _PLAIN_LEAVES or (kind is int and INT_MIN <= item <= INT_MAX)
    ):
        return
    check_plain(item, what, depth + 1, sorted_keys=sorted_keys)


def expect_list(value: Any, length: int, what: str) -> list[Any]:
    if not isinstance(value, list) or len(value) != length:
        raise InvalidEncoding(f"{what}: expected an array of {length} items")
    return value


def expect_int(value: Any, low: int, high: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidEncoding(f"{what}: expected an integer in [{low}, {high}]")
    return value


def expect_str(value: Any, max_bytes: int, what: str) -> str:
    if not isinstance(value, str) or not value or len(value.encode()) > max_bytes:
        raise InvalidEncoding(f"{what}: expected a non-empty string of at most {max_bytes} bytes")
    return value


def expect_bytes(value: Any, length: int, what: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != length:
        raise InvalidEncoding(f"{what}: expected {length} bytes")
    return value

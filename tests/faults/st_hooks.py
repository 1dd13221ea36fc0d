"""Schemathesis hooks for the API fuzz test (loaded through SCHEMATHESIS_HOOKS): msgpack bodies.

The node speaks msgpack where a request says `application/msgpack`. Requests: generated values
are packed as msgpack (one msgpack cannot hold, such as a huge integer, is sent as the byte 0xc1,
which msgpack never uses: a malformed body, which the node must refuse with a 4xx). Responses:
unpacked, with byte strings as lowercase hex, which is exactly the JSON form the OpenAPI schemas
describe (the node's JSON view renders bytes as hex), so both media types are validated alike.
"""

from typing import Any

import msgpack
import schemathesis

NEVER_USED: bytes = b"\xc1"


@schemathesis.serializer("application/msgpack")
def to_msgpack(_ctx: Any, value: Any) -> bytes:
    try:
        packed: bytes = msgpack.packb(value, use_bin_type=True)
    except (TypeError, ValueError, OverflowError):
        return NEVER_USED
    return packed


def _hex(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): _hex(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_hex(v) for v in value]
    return value


@schemathesis.deserializer("application/msgpack")
def from_msgpack(_ctx: Any, response: Any) -> Any:
    return _hex(msgpack.unpackb(response.content, raw=False, strict_map_key=False))

"""Schemathesis hooks for the API fuzz test (loaded through SCHEMATHESIS_HOOKS): msgpack bodies.

The node speaks msgpack where a request says `application/msgpack`. Requests: generated values
are packed as msgpack (one msgpack cannot hold, such as a huge integer, is sent as the byte 0xc1,
which msgpack never uses: a malformed body, which the node must refuse with a 4xx). Responses:
unpacked, with byte strings as lowercase hex, which is exactly the JSON form the OpenAPI schemas
describe (the node's JSON view renders bytes as hex), so both media types are validated alike.
Every request is signed (docs/protocol.md section 16) by the identity the test names in the
environment, over the exact bytes sent, so the fuzz reaches the handlers behind authentication.
"""

import os
import time
from pathlib import Path
from typing import Any

import msgpack
import requests
import schemathesis

from ledger import crypto
from node import auth_request

IDENTITY_ENV = "CITYLEDGER_FUZZ_IDENTITY"  # identity, chain id and key file the run signs with
CHAIN_ENV = "CITYLEDGER_FUZZ_CHAIN"
KEY_ENV = "CITYLEDGER_FUZZ_KEY"

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


class _Signed(requests.auth.AuthBase):
    """Signs the prepared request: its final method, target and body."""

    def __init__(self) -> None:
        self.identity = os.environ[IDENTITY_ENV]
        self.chain_id = os.environ[CHAIN_ENV]
        self.key = crypto.load_private_key(Path(os.environ[KEY_ENV]))

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        body = r.body or b""
        headers = auth_request.sign_headers(
            self.key, chain_id=self.chain_id, identity=self.identity, method=r.method or "GET",
            target=r.path_url, body=body.encode() if isinstance(body, str) else bytes(body),
            now_ms=time.time_ns() // 1_000_000,
        )  # fmt: skip
        r.headers.update(headers)
        return r


_SIGNER: list[_Signed] = []


@schemathesis.hook
def before_call(_ctx: Any, _case: Any, kwargs: dict[str, Any]) -> None:
    if IDENTITY_ENV in os.environ:
        if not _SIGNER:
            _SIGNER.append(_Signed())
        kwargs["auth"] = _SIGNER[0]

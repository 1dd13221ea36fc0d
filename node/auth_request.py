"""Signed API requests: the bytes a client signs and the headers that carry them (pure).

A client authenticates every API request with its ledger identity: an Ed25519 signature by its
key over `Domain.REQUEST || encode([chain_id, identity, timestamp_ms, nonce, method, target,
SHA-256(body)])`, sent in four headers (docs/protocol.md section 16). The CLI, the client
library, the bench and the tests sign with `sign_headers`; the node checks with `payload`.
This module has no I/O and no clock: the caller passes the time.
"""

import os
from collections.abc import Mapping
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger import crypto
from ledger.encoding import encode

IDENTITY_HEADER: Final = "CityLedger-Identity"
TIMESTAMP_HEADER: Final = "CityLedger-Timestamp"
NONCE_HEADER: Final = "CityLedger-Nonce"
SIGNATURE_HEADER: Final = "CityLedger-Signature"
HEADERS: Final = (IDENTITY_HEADER, TIMESTAMP_HEADER, NONCE_HEADER, SIGNATURE_HEADER)
NONCE_BYTES: Final = 16
TIMESTAMP_DIGITS_MAX: Final = 16  # ms since 1970 stay below 10^16 until the year 318857
TARGET_BYTES_MAX: Final = 8192  # the longest request target that is signed (and served)


def payload(
    chain_id: str, identity: str, timestamp_ms: int, nonce: bytes, method: str, target: str,
    body: bytes,
) -> bytes:  # fmt: skip
    """The signed payload (without the domain tag) of one request."""
    return encode([chain_id, identity, timestamp_ms, nonce, method, target, crypto.sha256(body)])


def session_payload(chain_id: str, identity: str, challenge: bytes) -> bytes:
    """What a browser signs to turn a node's challenge into a session (section 16.4)."""
    return encode([chain_id, identity, challenge])


def sign_headers(
    key: Ed25519PrivateKey, *, chain_id: str, identity: str, method: str, target: str,
    body: bytes, now_ms: int, nonce: bytes | None = None,
) -> Mapping[str, str]:  # fmt: skip
    """The four authentication headers of one request, signed by `key` for `identity`.
    `target` is the request target exactly as sent: the path with its `?query`, if any."""
    nonce = os.urandom(NONCE_BYTES) if nonce is None else nonce
    signed = payload(chain_id, identity, now_ms, nonce, method.upper(), target, body)
    signature = crypto.sign(key, crypto.Domain.REQUEST, signed)
    return {
        IDENTITY_HEADER: identity,
        TIMESTAMP_HEADER: str(now_ms),
        NONCE_HEADER: nonce.hex(),
        SIGNATURE_HEADER: signature.hex(),
    }

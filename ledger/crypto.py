"""Ed25519 keys, domain-separated signatures and hashing.

Every signature CityLedger makes or checks is over `domain || payload`, where each domain is a
distinct NUL-terminated tag and every payload carries the chain id: a transaction signature can
never be replayed as a vote, nor anything on another chain.
"""

import enum
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ledger.errors import LedgerError
from ledger.primitives import PUBLIC_KEY_BYTES, SIGNATURE_BYTES

PEM_BYTES_MAX = 4096


class Domain(enum.Enum):
    """Signature domains. The tags are part of the protocol (docs/protocol.md)."""

    TX = b"cityledger/tx/v1\x00"
    COMMIT = b"cityledger/commit/v1\x00"
    PEER = b"cityledger/peer/v1\x00"
    CHECKPOINT = b"cityledger/checkpoint/v1\x00"
    GENESIS = b"cityledger/genesis/v1\x00"
    REQUEST = b"cityledger/request/v1\x00"  # signed API requests (node/auth_request.py)
    SESSION = b"cityledger/session/v1\x00"  # browser sign-in challenges


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def generate_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def public_key_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


def load_public_key(raw: bytes) -> Ed25519PublicKey:
    if len(raw) != PUBLIC_KEY_BYTES:
        raise LedgerError(f"a public key is {PUBLIC_KEY_BYTES} bytes, got {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def sign(key: Ed25519PrivateKey, domain: Domain, payload: bytes) -> bytes:
    return key.sign(domain.value + payload)


def verify(public_key: Ed25519PublicKey, domain: Domain, payload: bytes, signature: bytes) -> bool:
    if len(signature) != SIGNATURE_BYTES:
        return False
    try:
        public_key.verify(signature, domain.value + payload)
    except InvalidSignature:
        return False
    return True


def write_private_key(path: Path, key: Ed25519PrivateKey) -> None:
    """Write `key` as unencrypted PKCS#8 PEM, readable by its owner only (mode 0600)."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Load an Ed25519 PEM key; every failure is a `LedgerError` naming the file, not the key."""
    try:
        with path.open("rb") as file:  # read one byte past the limit: never all of a huge file
            data = file.read(PEM_BYTES_MAX + 1)
    except OSError as exc:
        raise LedgerError(f"cannot read key file {path}: {exc.strerror}") from None
    if len(data) > PEM_BYTES_MAX:
        raise LedgerError(f"key file {path} is too large to be a key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise LedgerError(f"key file {path} is not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise LedgerError(f"key file {path} does not hold an Ed25519 key")
    return key

"""Ed25519 keys, domain-separated signatures and hashing.

Every signature CityLedger makes or checks is over `domain || payload`, where each domain is a
distinct NUL-terminated tag and every payload carries the chain id: a transaction signature can
never be replayed as a vote, nor anything on another chain.

Ed25519 here is strict (docs/protocol.md section 3): a public key must be the canonical encoding
of a point of the curve that is not of small order, checked once when the key is loaded
(`load_public_key` is the only way to make one); a signature's R must be the canonical encoding
of a point that is not of small order and its S below the group order L, checked before
OpenSSL's cofactorless equation. These are libsodium's rules, so a chain one accepts the other
accepts. Without them the small-order key `01 00..00` with the signature R = `01 00..00`, S = 0
would verify for every message under OpenSSL alone.
"""

import enum
import hashlib
import os
import stat
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ledger.errors import LedgerError
from ledger.primitives import PUBLIC_KEY_BYTES, SIGNATURE_BYTES

PEM_BYTES_MAX = 4096
PASSPHRASE_BYTES_MAX: Final = 1024
ENCRYPTED_PEM_LABEL: Final = b"-----BEGIN ENCRYPTED PRIVATE KEY-----"

FIELD_PRIME: Final = 2**255 - 19  # p
GROUP_ORDER: Final = 2**252 + 27742317777372353535851937790883648493  # L
_EDWARDS_D: Final = -121665 * pow(121666, FIELD_PRIME - 2, FIELD_PRIME) % FIELD_PRIME
_Y_MASK: Final = (1 << 255) - 1  # an encoding is y (255 bits, little-endian) and x's sign bit
_Y_ORDER_8: Final = 0x7A03AC9277FDC74EC6CC392CFA53202A0F67100D760B3CBA4FD84D3D706A17C7
# The y of every point of order 1, 2, 4 or 8 (the points whose multiple by 8 is the identity):
# the identity (y = 1), (0, -1), the two points with y = 0, and four with y = +-_Y_ORDER_8.
SMALL_ORDER_Y: Final = frozenset({0, 1, FIELD_PRIME - 1, _Y_ORDER_8, FIELD_PRIME - _Y_ORDER_8})


class Domain(enum.Enum):
    """Signature domains. The tags are part of the protocol (docs/protocol.md)."""

    TX = b"cityledger/tx/v1\x00"
    COMMIT = b"cityledger/commit/v1\x00"
    PEER = b"cityledger/peer/v1\x00"
    CHECKPOINT = b"cityledger/checkpoint/v1\x00"
    GENESIS = b"cityledger/genesis/v1\x00"
    REQUEST = b"cityledger/request/v1\x00"  # signed API requests (node/auth_request.py)
    SESSION = b"cityledger/session/v1\x00"  # browser sign-in challenges
    POSSESSION = b"cityledger/possession/v1\x00"  # a new validator key signs its own proposal
    MEMBER = b"cityledger/member/v1\x00"  # genesis member files (cli/bootstrap.py)


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def generate_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def public_key_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


class WeakKey(LedgerError):
    """A public key that strict Ed25519 refuses; `reason` is one of `KEY_DEFECTS`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


KEY_DEFECTS: Final = ("length", "non_canonical", "not_on_curve", "small_order")
SIGNATURE_DEFECTS: Final = ("length", "r_non_canonical", "r_small_order", "s_not_below_l")


def check_public_key(raw: bytes) -> None:
    """Raise `WeakKey` unless `raw` is a strict public key: 32 bytes, y < p, a point of the
    curve, x's sign bit clear when x = 0, and not of small order (section 3)."""
    if len(raw) != PUBLIC_KEY_BYTES:
        raise WeakKey("length", f"a public key is {PUBLIC_KEY_BYTES} bytes, got {len(raw)}")
    y = int.from_bytes(raw, "little") & _Y_MASK
    if y >= FIELD_PRIME:
        raise WeakKey("non_canonical", "not a canonical point encoding (y is not below p)")
    p = FIELD_PRIME
    x_squared = (y * y - 1) * pow(_EDWARDS_D * y * y + 1, p - 2, p) % p
    if x_squared != 0 and pow(x_squared, (p - 1) // 2, p) != 1:  # Euler's criterion
        raise WeakKey("not_on_curve", "not a point of the curve")
    if x_squared == 0 and raw[-1] >> 7:
        raise WeakKey("non_canonical", "not a canonical point encoding (x = 0, sign bit set)")
    if y in SMALL_ORDER_Y:
        raise WeakKey("small_order", "a point of small order (a weak key that some signatures "
                      "match for every message)")  # fmt: skip


def load_public_key(raw: bytes) -> Ed25519PublicKey:
    """The only way to make a public key that `verify` accepts: checked strictly, once."""
    check_public_key(raw)
    return Ed25519PublicKey.from_public_bytes(raw)


def signature_defect(signature: bytes) -> str | None:
    """Why strict Ed25519 refuses `signature` before its equation is checked, else None: an
    integer compare for R's y and for S, and one set lookup (the hot path stays cheap)."""
    if len(signature) != SIGNATURE_BYTES:
        return "length"
    r_y = int.from_bytes(signature[:32], "little") & _Y_MASK
    if r_y >= FIELD_PRIME:
        return "r_non_canonical"
    if r_y in SMALL_ORDER_Y:  # x = 0 with a sign bit (non-canonical) has y = +-1: here too
        return "r_small_order"
    if int.from_bytes(signature[32:], "little") >= GROUP_ORDER:
        return "s_not_below_l"
    return None


def sign(key: Ed25519PrivateKey, domain: Domain, payload: bytes) -> bytes:
    return key.sign(domain.value + payload)


def verify(public_key: Ed25519PublicKey, domain: Domain, payload: bytes, signature: bytes) -> bool:
    """Strict Ed25519 over `domain || payload`; `public_key` was checked by `load_public_key`."""
    return verify_message(public_key, domain.value + payload, signature)


def verify_message(public_key: Ed25519PublicKey, message: bytes, signature: bytes) -> bool:
    """Strict Ed25519 of a whole message: section 3's rule (also what the edge vectors sign)."""
    if signature_defect(signature) is not None:
        return False
    try:
        public_key.verify(signature, message)
    except InvalidSignature:
        return False
    return True


def write_private_key(
    path: Path, key: Ed25519PrivateKey | ec.EllipticCurvePrivateKey, pem: bytes | None = None
) -> None:
    """Write `key` (a signing key, or a node's TLS key) as unencrypted PKCS#8 PEM (or the given
    PEM text of it, e.g. an encrypted one), readable by its owner only (mode 0600), never over
    an existing file."""
    if pem is None:
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)


class PassphraseNeeded(LedgerError):
    """The key file is encrypted and no passphrase was given (callers say where to give one)."""


def read_private(path: Path, what: str, size_max: int) -> bytes:
    """Read at most `size_max` bytes of a secret file, refusing one that group or others may
    use (any of the mode bits 077, as OpenSSH does; only for regular files: a pipe or device
    has no mode of its own). Errors name the file, never its content."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise LedgerError(f"cannot read {what} {path}: {exc.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise LedgerError(f"cannot read {what} {path}: it is a directory")
        if stat.S_ISREG(mode) and stat.S_IMODE(mode) & 0o077:
            raise LedgerError(
                f"{what} {path} is open to group or others (mode {stat.S_IMODE(mode):04o}): "
                "make it private with chmod 600"
            )
        data = _read_at_most(fd, size_max + 1)  # one byte past the limit: never a huge file
    except OSError as exc:
        raise LedgerError(f"cannot read {what} {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > size_max:
        raise LedgerError(f"{what} {path} is too large to be a {what}")
    return data


def _read_at_most(fd: int, size: int) -> bytes:
    chunks: list[bytes] = []
    left = size
    while left > 0:
        chunk = os.read(fd, left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def load_private_key(path: Path, passphrase: bytes | None = None) -> Ed25519PrivateKey:
    """Load an Ed25519 PKCS#8 PEM key, encrypted (then `passphrase` decrypts it) or not (then
    `passphrase` is not used). Every failure is a `LedgerError` naming the file, not the key."""
    data = read_private(path, "key file", PEM_BYTES_MAX)
    encrypted = ENCRYPTED_PEM_LABEL in data
    if encrypted and passphrase is None:
        raise PassphraseNeeded(f"key file {path} is encrypted and no passphrase was given")
    try:
        key = serialization.load_pem_private_key(data, password=passphrase if encrypted else None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        if encrypted:
            raise LedgerError(
                f"cannot decrypt key file {path}: wrong passphrase, or the file is damaged"
            ) from None
        raise LedgerError(f"key file {path} is not a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise LedgerError(f"key file {path} does not hold an Ed25519 key")
    return key


def read_passphrase_file(path: Path) -> bytes:
    """A passphrase kept in a file: its bytes less one trailing newline; private like a key."""
    data = read_private(path, "passphrase file", PASSPHRASE_BYTES_MAX)
    passphrase = data.removesuffix(b"\n").removesuffix(b"\r")
    if not passphrase:
        raise LedgerError(f"passphrase file {path} is empty")
    return passphrase

"""Private key files on the CLI's side: encrypted keys written, and the passphrase of `--key`.

`keys new OUT.pem --encrypt` writes a PKCS#8 EncryptedPrivateKeyInfo (RFC 5958) in PEM
(`-----BEGIN ENCRYPTED PRIVATE KEY-----`): PBES2 (RFC 8018) with PBKDF2-HMAC-SHA256 over a
16-byte random salt at 600 000 iterations (about a quarter of a second, so guessing passphrases
is slow too) and AES-256-CBC. The library's own encrypted output uses 2048 iterations, hence
this encoder. Reading goes through `ledger.crypto.load_private_key`, which takes any encrypted
PKCS#8 the library decodes (keys made with `openssl pkcs8 -topk8` included).

Where a passphrase comes from (docs/protocol.md section 3.2): `--passphrase-file FILE`, else the
environment variable CITYLEDGER_KEY_PASSPHRASE, else (`keys new` at a terminal only) a prompt.
Every mistake is one line and exit 2 (`BadSetup`), naming files, never their content.
"""

import base64
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeVar

import click
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from cli.errors import BadSetup
from ledger import crypto
from ledger.errors import LedgerError

F = TypeVar("F", bound=Callable[..., Any])

PASSPHRASE_ENV: Final = "CITYLEDGER_KEY_PASSPHRASE"  # noqa: S105 - its name, not a value
PASSPHRASE_CHARS_MIN: Final = 8  # for new keys; any passphrase that decrypts a key is taken
PBKDF2_ITERATIONS: Final = 600_000
SALT_BYTES: Final = 16
IV_BYTES: Final = 16
AES_KEY_BYTES: Final = 32
PEM_LINE_CHARS: Final = 64

# DER object identifiers (the content bytes, after tag and length)
_PBES2: Final = bytes.fromhex("2a864886f70d01050d")  # 1.2.840.113549.1.5.13
_PBKDF2: Final = bytes.fromhex("2a864886f70d01050c")  # 1.2.840.113549.1.5.12
_HMAC_SHA256: Final = bytes.fromhex("2a864886f70d0209")  # 1.2.840.113549.2.9
_AES256_CBC: Final = bytes.fromhex("60864801650304012a")  # 2.16.840.1.101.3.4.1.42
_END_LABEL: Final = b"-----END ENCRYPTED PRIVATE KEY-----"


def _der(tag: int, content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        return bytes([tag, size]) + content
    raw = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(raw)]) + raw + content


def _seq(*parts: bytes) -> bytes:
    return _der(0x30, b"".join(parts))


def _integer(value: int) -> bytes:  # non-negative; a leading zero byte when the top bit is set
    return _der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def encrypted_pem(key: Ed25519PrivateKey, passphrase: bytes) -> bytes:
    """`key` as encrypted PKCS#8 PEM under `passphrase` (the module docstring says how)."""
    plain = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    salt, iv = os.urandom(SALT_BYTES), os.urandom(IV_BYTES)
    secret = PBKDF2HMAC(hashes.SHA256(), AES_KEY_BYTES, salt, PBKDF2_ITERATIONS).derive(passphrase)
    padder = padding.PKCS7(128).padder()
    encryptor = Cipher(algorithms.AES(secret), modes.CBC(iv)).encryptor()
    sealed = encryptor.update(padder.update(plain) + padder.finalize()) + encryptor.finalize()
    prf = _seq(_der(0x06, _HMAC_SHA256), _der(0x05, b""))
    kdf = _seq(_der(0x06, _PBKDF2), _seq(_der(0x04, salt), _integer(PBKDF2_ITERATIONS), prf))
    scheme = _seq(_der(0x06, _AES256_CBC), _der(0x04, iv))
    der = _seq(_seq(_der(0x06, _PBES2), _seq(kdf, scheme)), _der(0x04, sealed))
    text = base64.b64encode(der)
    lines = [text[i : i + PEM_LINE_CHARS] for i in range(0, len(text), PEM_LINE_CHARS)]
    return b"\n".join([crypto.ENCRYPTED_PEM_LABEL, *lines, _END_LABEL]) + b"\n"


def _from_env() -> bytes | None:
    value = os.environ.get(PASSPHRASE_ENV)
    if value is None:
        return None
    if not value:
        raise BadSetup(f"${PASSPHRASE_ENV} is set but empty")
    return value.encode()


def _from_file(passphrase_file: Path) -> bytes:
    try:
        return crypto.read_passphrase_file(passphrase_file)
    except LedgerError as exc:
        raise BadSetup(f"--passphrase-file: {exc}") from None


def new_passphrase(passphrase_file: Path | None) -> bytes:
    """The passphrase of a key being made: file, environment, else a prompt at a terminal."""
    passphrase = _from_file(passphrase_file) if passphrase_file else _from_env()
    if passphrase is None:
        if not sys.stdin.isatty():
            where = f"give --passphrase-file FILE or set ${PASSPHRASE_ENV}"
            raise BadSetup(f"--encrypt needs a passphrase: {where}")
        typed = click.prompt("Passphrase", hide_input=True, confirmation_prompt=True)
        passphrase = str(typed).encode()
    if len(passphrase.decode(errors="replace")) < PASSPHRASE_CHARS_MIN:
        raise BadSetup(f"the passphrase is shorter than {PASSPHRASE_CHARS_MIN} characters")
    return passphrase


def load_key(path: Path, passphrase_file: Path | None = None) -> Ed25519PrivateKey:
    """The private key of `--key`: a passphrase file given is always read; the environment's
    passphrase is used only when the key is encrypted."""
    try:
        given = _from_file(passphrase_file) if passphrase_file else None
        try:
            return crypto.load_private_key(path, given)
        except crypto.PassphraseNeeded as exc:
            passphrase = _from_env()
            if passphrase is None:
                raise BadSetup(
                    f"--key: {exc}: give --passphrase-file FILE or set ${PASSPHRASE_ENV}"
                ) from None
            return crypto.load_private_key(path, passphrase)
    except LedgerError as exc:
        raise BadSetup(f"--key: {exc}") from None


def passphrase_file_option(help_text: str) -> Callable[[F], F]:
    """The `--passphrase-file FILE` option."""

    def decorate(f: F) -> F:
        return click.option(
            "--passphrase-file",
            "passphrase_file",
            metavar="FILE",
            type=click.Path(path_type=Path),  # checked when read: a mistake is one line
            help=help_text,
        )(f)

    return decorate


KEY_PASSPHRASE_HELP: Final = (
    "The passphrase of an encrypted --key: a file of mode 0600 holding it (one trailing newline "
    f"is dropped). Default: ${PASSPHRASE_ENV}."
)

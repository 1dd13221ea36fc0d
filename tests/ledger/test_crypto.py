"""Signature domains, hashing, and key files: written private, loaded strictly, leaking nothing."""

import base64
import itertools
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa, x25519

from cli import keyfile
from ledger import crypto
from ledger.crypto import Domain
from ledger.errors import LedgerError
from tests.factory import seeded_key

KEY = seeded_key("test-crypto/a")
OTHER = seeded_key("test-crypto/b")


# --- Hashing and the domain tags -------------------------------------------------------------


def test_sha256_vector() -> None:
    assert crypto.sha256(b"abc").hex() == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_domain_tags_are_exact() -> None:
    # These bytes are the protocol (docs/protocol.md); changing one forks every chain.
    assert {d.name: d.value for d in Domain} == {
        "TX": b"cityledger/tx/v1\x00",
        "COMMIT": b"cityledger/commit/v1\x00",
        "PEER": b"cityledger/peer/v1\x00",
        "CHECKPOINT": b"cityledger/checkpoint/v1\x00",
        "GENESIS": b"cityledger/genesis/v1\x00",
        "REQUEST": b"cityledger/request/v1\x00",
        "SESSION": b"cityledger/session/v1\x00",
        "POSSESSION": b"cityledger/possession/v1\x00",
        "MEMBER": b"cityledger/member/v1\x00",
    }


def test_domain_tags_are_prefix_free() -> None:
    # One NUL, at the end: no tag is a prefix of another, so `tag || payload` is unambiguous.
    for domain in Domain:
        assert domain.value.index(b"\x00") == len(domain.value) - 1
    for a, b in itertools.permutations(Domain, 2):
        assert not b.value.startswith(a.value)


# --- Signatures ------------------------------------------------------------------------------


@pytest.mark.parametrize("domain", list(Domain))
def test_sign_verify(domain: Domain) -> None:
    signature = crypto.sign(KEY, domain, b"payload")
    assert len(signature) == 64
    assert crypto.verify(KEY.public_key(), domain, b"payload", signature)
    # Ed25519 over exactly tag || payload, nothing else.
    KEY.public_key().verify(signature, domain.value + b"payload")


@pytest.mark.parametrize(("signed_in", "checked_in"), list(itertools.permutations(Domain, 2)))
def test_signature_never_verifies_in_another_domain(signed_in: Domain, checked_in: Domain) -> None:
    signature = crypto.sign(KEY, signed_in, b"payload")
    assert not crypto.verify(KEY.public_key(), checked_in, b"payload", signature)


def test_shifting_bytes_between_tag_and_payload_does_not_verify() -> None:
    # "cityledger/tx/v1\0" + "x" vs a payload that starts where a longer tag would end.
    signature = crypto.sign(KEY, Domain.TX, b"cityledger/commit/v1\x00")
    for domain in Domain:
        assert not crypto.verify(KEY.public_key(), domain, b"", signature)


def test_verify_rejects_wrong_key_payload_and_bad_signatures() -> None:
    public = KEY.public_key()
    signature = crypto.sign(KEY, Domain.TX, b"payload")
    assert not crypto.verify(OTHER.public_key(), Domain.TX, b"payload", signature)
    assert not crypto.verify(public, Domain.TX, b"payloae", signature)
    assert not crypto.verify(public, Domain.TX, b"payload", signature[:-1])
    assert not crypto.verify(public, Domain.TX, b"payload", signature + b"\x00")
    assert not crypto.verify(public, Domain.TX, b"payload", b"")
    assert not crypto.verify(public, Domain.TX, b"payload", bytes(64))
    for i in (0, 31, 32, 63):
        flipped = bytearray(signature)
        flipped[i] ^= 1
        assert not crypto.verify(public, Domain.TX, b"payload", bytes(flipped))


def test_malleated_signature_is_rejected() -> None:
    # S + L is the same scalar mod L; accepting it would give one tx a second tx id.
    group_order = 2**252 + 27742317777372353535851937790883648493
    signature = crypto.sign(KEY, Domain.TX, b"payload")
    s = int.from_bytes(signature[32:], "little")
    malleated = signature[:32] + (s + group_order).to_bytes(32, "little")
    assert not crypto.verify(KEY.public_key(), Domain.TX, b"payload", malleated)


def test_signatures_are_deterministic() -> None:
    assert crypto.sign(KEY, Domain.TX, b"x") == crypto.sign(KEY, Domain.TX, b"x")


def test_public_keys() -> None:
    raw = crypto.public_key_bytes(KEY)
    assert len(raw) == 32
    assert crypto.load_public_key(raw).public_bytes_raw() == raw
    for bad in (b"", raw[:-1], raw + b"\x00"):
        with pytest.raises(LedgerError, match="32 bytes"):
            crypto.load_public_key(bad)


def test_generated_keys_differ() -> None:
    assert crypto.public_key_bytes(crypto.generate_key()) != crypto.public_key_bytes(
        crypto.generate_key()
    )


# --- Key files -------------------------------------------------------------------------------


def test_key_file_written_0600_and_loaded_back(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    old_umask = os.umask(0)  # the mode must not depend on a permissive umask
    try:
        crypto.write_private_key(path, KEY)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\n")
    loaded = crypto.load_private_key(path)
    assert crypto.public_key_bytes(loaded) == crypto.public_key_bytes(KEY)
    assert crypto.sign(loaded, Domain.TX, b"x") == crypto.sign(KEY, Domain.TX, b"x")


def test_key_file_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    crypto.write_private_key(path, KEY)
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        crypto.write_private_key(path, OTHER)
    assert path.read_bytes() == before


def write_0600(path: Path, content: bytes) -> None:
    """A key file as its owner keeps it (load_private_key refuses any other mode)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(content)


def _pkcs8(key: object) -> bytes:
    assert hasattr(key, "private_bytes")
    pem: bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem


def _unknown_algorithm_pem() -> bytes:
    # PKCS#8 PrivateKeyInfo whose algorithm OID (1.2.3.4) no library knows.
    oid = bytes.fromhex("06032a0304")
    algorithm = bytes([0x30, len(oid)]) + oid
    body = bytes.fromhex("020100") + algorithm + bytes.fromhex("04220420") + bytes(32)
    der = bytes([0x30, len(body)]) + body
    return (
        b"-----BEGIN PRIVATE KEY-----\n" + base64.encodebytes(der) + b"-----END PRIVATE KEY-----\n"
    )


SECRET = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))

BAD_KEY_FILES: dict[str, Callable[[], bytes]] = {
    "empty": lambda: b"",
    "garbage": lambda: b"not a key at all\n",
    "binary": lambda: bytes(range(256)),
    "bad base64 in PEM": lambda: b"-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n",
    "truncated PEM": lambda: _pkcs8(SECRET)[:60],
    "public key PEM": lambda: SECRET.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ),
    "DER instead of PEM": lambda: SECRET.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ),
    "OpenSSH format": lambda: SECRET.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ),
    "raw 32 bytes": SECRET.private_bytes_raw,
    "encrypted PEM": lambda: SECRET.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"password"),
    ),
    "unknown algorithm": _unknown_algorithm_pem,
    "oversize": lambda: _pkcs8(SECRET) + b"\n" * crypto.PEM_BYTES_MAX,
}

NOT_ED25519: dict[str, Callable[[], bytes]] = {
    "rsa": lambda: _pkcs8(rsa.generate_private_key(65537, 1024)),  # noqa: S505 (only its type)
    "ec p-256": lambda: _pkcs8(ec.derive_private_key(12345, ec.SECP256R1())),
    "x25519": lambda: _pkcs8(x25519.X25519PrivateKey.from_private_bytes(bytes(range(32)))),
    "ed448": lambda: _pkcs8(ed448.Ed448PrivateKey.from_private_bytes(bytes(range(57)))),
}


def _assert_names_file_not_key(error: LedgerError, path: Path, content: bytes) -> None:
    message = str(error)
    assert str(path) in message
    assert error.__cause__ is None
    # No library error (which might quote the file) is chained to it.
    assert error.__context__ is None or error.__suppress_context__
    secret_hex = SECRET.private_bytes_raw().hex()
    assert secret_hex not in message
    for line in content.splitlines():
        if len(line) >= 8 and b"-----" not in line:
            assert line.decode("latin-1") not in message


@pytest.mark.parametrize("make", BAD_KEY_FILES.values(), ids=BAD_KEY_FILES.keys())
def test_bad_key_file(tmp_path: Path, make: Callable[[], bytes]) -> None:
    path = tmp_path / "client.pem"
    content = make()
    write_0600(path, content)
    with pytest.raises(LedgerError) as info:
        crypto.load_private_key(path)
    _assert_names_file_not_key(info.value, path, content)


@pytest.mark.parametrize("make", NOT_ED25519.values(), ids=NOT_ED25519.keys())
def test_non_ed25519_key_file(tmp_path: Path, make: Callable[[], bytes]) -> None:
    path = tmp_path / "other.pem"
    content = make()
    write_0600(path, content)
    with pytest.raises(LedgerError, match="does not hold an Ed25519 key") as info:
        crypto.load_private_key(path)
    _assert_names_file_not_key(info.value, path, content)


def test_oversize_key_file_is_not_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "big.pem"
    write_0600(path, b"x" * (crypto.PEM_BYTES_MAX + 1))
    with pytest.raises(LedgerError, match="too large"):
        crypto.load_private_key(path)
    if Path("/dev/zero").exists():  # endless: only a bounded read returns at all
        with pytest.raises(LedgerError, match="too large"):
            crypto.load_private_key(Path("/dev/zero"))


def test_missing_key_file_and_directory(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    with pytest.raises(LedgerError, match=f"cannot read key file {missing}"):
        crypto.load_private_key(missing)
    with pytest.raises(LedgerError, match="cannot read key file"):
        crypto.load_private_key(tmp_path)


def test_key_file_at_the_size_limit_loads(tmp_path: Path) -> None:
    pem = _pkcs8(SECRET)
    path = tmp_path / "padded.pem"
    # PEM readers skip text around the armour, so padding up to the limit stays a valid key.
    write_0600(path, pem + b"\n" * (crypto.PEM_BYTES_MAX - len(pem)))
    assert crypto.public_key_bytes(crypto.load_private_key(path)) == crypto.public_key_bytes(SECRET)


# --- Key custody: modes, encrypted keys, passphrase files ------------------------------------

PASSPHRASE = b"grand canal 1889"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o602, 0o620, 0o601, 0o666])
def test_a_key_file_open_to_group_or_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "k.pem"
    write_0600(path, _pkcs8(SECRET))
    path.chmod(mode)
    with pytest.raises(LedgerError) as info:
        crypto.load_private_key(path)
    assert str(info.value) == (
        f"key file {path} is open to group or others (mode {mode:04o}): make it private with "
        "chmod 600"
    )


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_a_key_file_of_its_owner_only_loads(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "k.pem"
    write_0600(path, _pkcs8(SECRET))
    path.chmod(mode)
    assert crypto.public_key_bytes(crypto.load_private_key(path)) == crypto.public_key_bytes(SECRET)


def _encrypted_by_library(key: ed25519.Ed25519PrivateKey, passphrase: bytes) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.BestAvailableEncryption(passphrase))  # fmt: skip


ENCRYPTERS: dict[str, Callable[[ed25519.Ed25519PrivateKey, bytes], bytes]] = {
    "ours (600 000 PBKDF2 rounds)": keyfile.encrypted_pem,
    "the library's": _encrypted_by_library,
}


@pytest.mark.parametrize("encrypt", ENCRYPTERS.values(), ids=ENCRYPTERS.keys())
def test_encrypted_key_files(tmp_path: Path, encrypt: Callable[..., bytes]) -> None:
    path = tmp_path / "k.pem"
    crypto.write_private_key(path, SECRET, encrypt(SECRET, PASSPHRASE))
    assert path.read_bytes().startswith(crypto.ENCRYPTED_PEM_LABEL + b"\n")
    loaded = crypto.load_private_key(path, PASSPHRASE)
    assert crypto.public_key_bytes(loaded) == crypto.public_key_bytes(SECRET)
    with pytest.raises(crypto.PassphraseNeeded) as needed:
        crypto.load_private_key(path)
    assert str(needed.value) == f"key file {path} is encrypted and no passphrase was given"
    for wrong in (b"grand canal 1888", PASSPHRASE + b"\n", b"x"):
        with pytest.raises(LedgerError) as info:
            crypto.load_private_key(path, wrong)
        assert str(info.value) == (
            f"cannot decrypt key file {path}: wrong passphrase, or the file is damaged"
        )
        _assert_names_file_not_key(info.value, path, path.read_bytes())


def test_our_encryption_is_pbes2_with_600000_rounds_and_fresh_salts() -> None:
    first, second = (keyfile.encrypted_pem(SECRET, PASSPHRASE) for _ in range(2))
    assert first != second  # a new salt and IV each time
    der = base64.b64decode(b"".join(first.splitlines()[1:-1]))
    assert bytes.fromhex("2a864886f70d01050d") in der  # PBES2
    assert bytes.fromhex("02030927c0") in der  # INTEGER 600000
    assert bytes.fromhex("60864801650304012a") in der  # AES-256-CBC


def test_a_passphrase_for_an_unencrypted_key_is_not_used(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    crypto.write_private_key(path, SECRET)
    assert crypto.public_key_bytes(crypto.load_private_key(path, PASSPHRASE)) == (
        crypto.public_key_bytes(SECRET)
    )


def test_a_damaged_encrypted_key_is_refused(tmp_path: Path) -> None:
    pem = keyfile.encrypted_pem(SECRET, PASSPHRASE)
    lines = pem.splitlines(keepends=True)
    lines[2] = lines[2][:10] + (b"A" if lines[2][10:11] != b"A" else b"B") + lines[2][11:]
    path = tmp_path / "k.pem"
    write_0600(path, b"".join(lines))
    with pytest.raises(LedgerError, match="cannot decrypt key file"):
        crypto.load_private_key(path, PASSPHRASE)


@pytest.mark.parametrize(
    ("content", "passphrase"),
    [(b"secret words\n", b"secret words"), (b"secret words\r\n", b"secret words"),
     (b"secret words", b"secret words"), (b"two\n\n", b"two\n"), (b" spaced ", b" spaced ")],
)  # fmt: skip
def test_passphrase_files_lose_one_trailing_newline(
    tmp_path: Path, content: bytes, passphrase: bytes
) -> None:
    path = tmp_path / "pass"
    write_0600(path, content)
    assert crypto.read_passphrase_file(path) == passphrase


def test_bad_passphrase_files(tmp_path: Path) -> None:
    path = tmp_path / "pass"
    for content, says in ((b"", "is empty"), (b"\n", "is empty"),
                          (b"x" * (crypto.PASSPHRASE_BYTES_MAX + 1), "too large")):  # fmt: skip
        write_0600(path, content)
        with pytest.raises(LedgerError, match=says):
            crypto.read_passphrase_file(path)
    write_0600(path, b"secret words\n")
    path.chmod(0o644)
    with pytest.raises(LedgerError) as info:
        crypto.read_passphrase_file(path)
    assert str(info.value) == (
        f"passphrase file {path} is open to group or others (mode 0644): make it private with "
        "chmod 600"
    )
    assert "secret" not in str(info.value)
    with pytest.raises(LedgerError, match=f"cannot read passphrase file {tmp_path}: it is a dir"):
        crypto.read_passphrase_file(tmp_path)
    with pytest.raises(LedgerError, match="No such file"):
        crypto.read_passphrase_file(tmp_path / "missing")

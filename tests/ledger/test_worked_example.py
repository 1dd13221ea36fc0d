"""docs/protocol.md section 15 against the code: the test keys are derived as the text says,
and the public keys printed in its table are theirs (and those of `tests/factory.py`)."""

import hashlib
import re
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ledger import crypto
from tests import factory

PROTOCOL = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
ROW = re.compile(r"^\| (validator|client) (?:(\d+) )?`([^`]+)` \| `([0-9a-f]{64})` \|$")


def printed_keys() -> list[tuple[str, str, str]]:
    """(role, name as the derivation uses it, public key hex) of each row of the 15.1 table."""
    section = PROTOCOL.read_text().split("### 15.1 Genesis", 1)[1].split("### 15.2", 1)[0]
    rows = []
    for line in section.splitlines():
        found = ROW.match(line)
        if found:
            role, index, ident, public = found.groups()
            rows.append((role, index if role == "validator" else ident, public))
    return rows


def test_the_printed_public_keys_follow_from_the_documented_derivation() -> None:
    rows = printed_keys()
    assert len(rows) == 8  # 4 validators, 4 clients
    net = factory.network()
    for role, name, public in rows:
        seed = hashlib.sha256(f"cityledger-test-key/{factory.CHAIN_ID}/{role}/{name}".encode())
        key = Ed25519PrivateKey.from_private_bytes(seed.digest())
        derived = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
        assert derived == public, (role, name)
        ours = net.validator_keys[int(name)] if role == "validator" else net.client_keys[name]
        assert crypto.public_key_bytes(ours).hex() == public

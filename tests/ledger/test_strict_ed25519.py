"""Strict Ed25519 (docs/protocol.md section 3): the rule, its edge vectors, libsodium's verdicts.

The twelve vectors of "Taming the Many EdDSAs" (vectors/ed25519_speccheck.json, which names its
source) each get the verdict the rule specifies, the same as libsodium's through PyNaCl, at the
crypto layer and in genesis loading; signatures that OpenSSL alone would accept (a small-order R
made with the real private key, the identity key's universal signature) are refused by tx
checking, block, certificate and peer message checking too. Chain verification and node admission
with real stores and nodes are in tests/cli/test_verify_strict.py and
tests/node/test_strict_signatures.py.
"""

import dataclasses
import hashlib
import json
import random
from pathlib import Path
from typing import Any, Final

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from consensus import messages as m
from ledger import block as blocks
from ledger import crypto, genesis
from ledger import tx as txs
from ledger.crypto import FIELD_PRIME, GROUP_ORDER, SMALL_ORDER_Y
from ledger.encoding import encode
from ledger.errors import InvalidBlock, InvalidGenesis, InvalidTransaction
from tests import factory

VECTORS: Final = json.loads(
    (Path(__file__).parent / "vectors" / "ed25519_speccheck.json").read_text()
)["cases"]
IDENTITY: Final = (1).to_bytes(32, "little")  # the neutral point (0, 1): `01 00..00`
P: Final = FIELD_PRIME
D: Final = -121665 * pow(121666, P - 2, P) % P

# --- a small reference of the curve, to check the rule's constants from first principles ------

Point = tuple[int, int]


def add(a: Point, b: Point) -> Point:
    (x1, y1), (x2, y2) = a, b
    t = D * x1 * x2 * y1 * y2 % P
    x = (x1 * y2 + x2 * y1) * pow(1 + t, P - 2, P) % P
    return x, (y1 * y2 + x1 * x2) * pow(1 - t, P - 2, P) % P


def times(k: int, point: Point) -> Point:
    out = (0, 1)
    while k:
        if k & 1:
            out = add(out, point)
        point, k = add(point, point), k >> 1
    return out


def decode(y: int, sign: int) -> Point | None:
    x2 = (y * y - 1) * pow(D * y * y + 1, P - 2, P) % P
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P:
        x = x * pow(2, (P - 1) // 4, P) % P
    if (x * x - x2) % P:
        return None
    return (P - x if x and (x & 1) != sign else x), y


def encoding(y: int, sign: int = 0) -> bytes:
    return (y | sign << 255).to_bytes(32, "little")


def test_small_order_y_are_exactly_the_eight_points_of_order_dividing_8() -> None:
    points = {pt for y in SMALL_ORDER_Y for sign in (0, 1) if (pt := decode(y, sign))}
    assert len(points) == 8
    assert all(times(8, pt) == (0, 1) for pt in points)
    assert sorted(next(k for k in (1, 2, 4, 8) if times(k, pt) == (0, 1)) for pt in points) == [
        1, 2, 4, 4, 8, 8, 8, 8,
    ]  # fmt: skip
    base = decode(4 * pow(5, P - 2, P) % P, 0)  # the base point B: y = 4/5
    assert base is not None
    assert times(GROUP_ORDER, base) == (0, 1)


# --- the rule, vector by vector -------------------------------------------------------------


def verdict(public: bytes, message: bytes, signature: bytes) -> str:
    """What section 3 says of (A, M, sig): 'valid', 'key:REASON', a signature defect, or
    'equation' (only the cofactorless equation fails)."""
    try:
        key = crypto.load_public_key(public)
    except crypto.WeakKey as exc:
        return f"key:{exc.reason}"
    defect = crypto.signature_defect(signature)
    if defect is not None:
        assert not crypto.verify_message(key, message, signature)
        return defect
    return "valid" if crypto.verify_message(key, message, signature) else "equation"


def libsodium_accepts(public: bytes, message: bytes, signature: bytes) -> bool:
    try:
        VerifyKey(public).verify(message, signature)
    except BadSignatureError:
        return False
    return True


def openssl_accepts(public: bytes, message: bytes, signature: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def fields(case: dict[str, str]) -> tuple[bytes, bytes, bytes]:
    return (bytes.fromhex(case["pub_key"]), bytes.fromhex(case["message"]),
            bytes.fromhex(case["signature"]))  # fmt: skip


def test_there_are_twelve_vectors_and_one_valid() -> None:
    assert [c["index"] for c in VECTORS] == list(range(12))
    assert [c["index"] for c in VECTORS if c["expected"] == "valid"] == [3]


@pytest.mark.parametrize("case", VECTORS, ids=lambda c: f"{c['index']}-{c['expected']}")
def test_vector_gets_the_specified_verdict_and_libsodiums(case: dict[str, Any]) -> None:
    public, message, signature = fields(case)
    assert verdict(public, message, signature) == case["expected"], case["case"]
    assert libsodium_accepts(public, message, signature) == (case["expected"] == "valid")


def test_openssl_alone_accepts_vectors_that_the_rule_refuses() -> None:
    # What the strict checks add: without them these would verify (as the paper's table says).
    loose = [c["index"] for c in VECTORS if openssl_accepts(*fields(c))]
    assert loose == [0, 1, 2, 3, 11]


def genesis_doc(client_key: bytes) -> dict[str, Any]:
    doc = factory.network().genesis.to_dict()
    doc["clients"][0]["public_key"] = client_key.hex()
    return doc


@pytest.mark.parametrize("case", VECTORS, ids=lambda c: f"{c['index']}-{c['expected']}")
def test_vector_key_in_genesis(case: dict[str, Any]) -> None:
    public = bytes.fromhex(case["pub_key"])
    if case["expected"].startswith("key:"):
        with pytest.raises(InvalidGenesis) as info:
            genesis.from_dict(genesis_doc(public))
        assert info.value.problems == [
            f"clients[0].public_key: refused Ed25519 public key: {_key_error(public)}"
        ]
    else:
        loaded = genesis.from_dict(genesis_doc(public))
        assert next(iter(loaded.clients.values())).public_key == public


def _key_error(public: bytes) -> str:
    with pytest.raises(crypto.WeakKey) as info:
        crypto.check_public_key(public)
    return str(info.value)


@pytest.mark.parametrize("case", [c for c in VECTORS if not c["expected"].startswith("key:")],
                         ids=lambda c: f"{c['index']}-{c['expected']}")  # fmt: skip
def test_vector_signature_in_a_tx_of_its_key_is_refused_at_admission(case: dict[str, Any]) -> None:
    # The vectors sign their own messages, never a tx payload: carried by a tx of a client
    # whose genesis key is the vector's, each signature is refused (the valid one too, for its
    # message is not the tx's), and the defective ones by the defect whatever the message.
    public, _, signature = fields(case)
    net = factory.network()
    net.genesis = genesis.from_dict(genesis_doc(public))
    client = next(iter(net.genesis.clients.values()))
    tx = with_signature(net.tx(client.id, "fiscal/v", {"n": 1}, factory.BASE_TIME_MS), signature)
    with pytest.raises(InvalidTransaction, match="bad_signature"):
        txs.check_signature(tx, client)


# --- the identity key and small-order R made with a real key ---------------------------------


def test_the_identity_key_and_its_universal_signature() -> None:
    universal = IDENTITY + bytes(32)  # R = identity, S = 0: [0]B = R + [k]O for every message
    for message in (b"", b"pay 1000000 to mallory", crypto.Domain.TX.value + b"anything"):
        assert openssl_accepts(IDENTITY, message, universal)  # the attack, without the rule
        assert not libsodium_accepts(IDENTITY, message, universal)
        assert verdict(IDENTITY, message, universal) == "key:small_order"
    for table in ("validators", "clients"):
        doc = factory.network().genesis.to_dict()
        doc[table][1]["public_key"] = IDENTITY.hex()
        with pytest.raises(InvalidGenesis) as info:
            genesis.from_dict(doc)
        weak = "a point of small order (a weak key that some signatures match for every message)"
        assert info.value.problems == [f"{table}[1].public_key: refused Ed25519 public key: {weak}"]
    key = factory.seeded_key("strict/identity-signature")
    assert not crypto.verify(key.public_key(), crypto.Domain.TX, b"x", universal)


def small_order_r_signature(key: Ed25519PrivateKey, message: bytes) -> bytes:
    """R = identity and S = k*a: then [S]B - [k]A is the identity, whose encoding is R, so the
    cofactorless equation holds (OpenSSL accepts) though R is of small order."""
    digest = hashlib.sha512(key.private_bytes_raw()).digest()
    a = int.from_bytes(digest[:32], "little") & ((1 << 254) - 8) | (1 << 254)
    public = crypto.public_key_bytes(key)
    k = int.from_bytes(hashlib.sha512(IDENTITY + public + message).digest(), "little")
    return IDENTITY + (k % GROUP_ORDER * a % GROUP_ORDER).to_bytes(32, "little")


def s_plus_l(signature: bytes) -> bytes:
    return signature[:32] + (int.from_bytes(signature[32:], "little") + GROUP_ORDER).to_bytes(
        32, "little"
    )


def with_signature(tx: txs.Transaction, signature: bytes) -> txs.Transaction:
    items = [txs.TX_VERSION, tx.chain_id, tx.client_id, tx.nonce, tx.timestamp_ms, tx.key,
             tx.type, tx.body, signature]  # fmt: skip
    return txs.decode_tx(encode(items))


def test_a_small_order_r_made_with_the_real_key_is_refused_where_openssl_accepts() -> None:
    key = factory.seeded_key("strict/small-r")
    public = crypto.public_key_bytes(key)
    message = crypto.Domain.TX.value + b"payload"
    signature = small_order_r_signature(key, message)
    assert openssl_accepts(public, message, signature)
    assert not libsodium_accepts(public, message, signature)
    assert verdict(public, message, signature) == "r_small_order"


BAD_SIGNATURE_KINDS: Final = (
    "small-order R (OpenSSL accepts it)", "S + L", "R not canonical (y = p + 1)",
    "the identity key's universal signature",
)  # fmt: skip


def bad_tx_signatures(net: factory.Network, tx: txs.Transaction) -> dict[str, bytes]:
    """Signatures of `tx` that strict Ed25519 refuses, by kind (BAD_SIGNATURE_KINDS)."""
    key = net.client_keys[tx.client_id]
    message = crypto.Domain.TX.value + tx.unsigned_payload()
    signatures = (small_order_r_signature(key, message), s_plus_l(tx.signature),
                  encoding(P + 1) + tx.signature[32:], IDENTITY + bytes(32))  # fmt: skip
    return dict(zip(BAD_SIGNATURE_KINDS, signatures, strict=True))


def test_txs_blocks_and_certificates_refuse_strictly_bad_signatures() -> None:
    net = factory.network()
    head = blocks.ChainHead.genesis(net.genesis)
    client = net.client_for("fiscal/")
    good = net.tx(client, "fiscal/strict", {"n": 1}, factory.BASE_TIME_MS)
    for signature in bad_tx_signatures(net, good).values():
        bad = with_signature(good, signature)
        with pytest.raises(InvalidTransaction, match="bad_signature"):
            txs.check_signature(bad, net.genesis.clients[client])
        block = blocks.make_block(head, (bad,), factory.BASE_TIME_MS + 1000, 0, 0)
        with pytest.raises(InvalidBlock, match="tx 0: bad_signature"):
            blocks.check_block(block, head, net.genesis, is_committed=lambda _t: False)
    block = blocks.make_block(head, (good,), factory.BASE_TIME_MS + 1000, 0, 0)
    payload = blocks.commit_payload(net.genesis.chain_id, 0, block.height, block.hash)
    message = crypto.Domain.COMMIT.value + payload
    cert = net.certify(block)
    blocks.verify_certificate(cert, block, net.genesis)
    for index in range(net.genesis.quorums.commit):
        forged = small_order_r_signature(net.validator_keys[index], message)
        assert openssl_accepts(net.genesis.validators[index].public_key, message, forged)
        for bad in (forged, IDENTITY + bytes(32)):
            votes = tuple((i, bad if i == index else s) for i, s in cert.votes)
            with pytest.raises(InvalidBlock):
                blocks.verify_certificate(
                    blocks.Certificate(cert.height, cert.block_hash, cert.view, votes),
                    block, net.genesis,
                )  # fmt: skip


# --- the same verdicts as libsodium on many more signatures ----------------------------------


def mutations(key: Ed25519PrivateKey, message: bytes, rng: random.Random) -> list[bytes]:
    good = key.sign(message)
    small = [encoding(y, s) for y in SMALL_ORDER_Y for s in (0, 1)]
    non_canonical = [encoding(y, s) for y in range(P, 1 << 255) for s in (0, 1)]
    flipped = bytearray(good)
    flipped[rng.randrange(64)] ^= 1 << rng.randrange(8)
    return [
        good, s_plus_l(good), small_order_r_signature(key, message), bytes(flipped),
        rng.randbytes(64), good[:32] + (GROUP_ORDER - 1).to_bytes(32, "little"),
        *(r + good[32:] for r in small), *(r + good[32:] for r in non_canonical),
    ]  # fmt: skip


def test_verdicts_agree_with_libsodium_on_mutated_signatures() -> None:
    rng = random.Random(13)  # fixed seed: the same cases every run
    compared = accepted = 0
    for i in range(40):
        key = factory.seeded_key(f"strict/agree/{i}")
        public = crypto.public_key_bytes(key)
        message = rng.randbytes(rng.randrange(0, 100))
        for signature in mutations(key, message, rng):
            ours = verdict(public, message, signature) == "valid"
            assert ours == libsodium_accepts(public, message, signature), (i, signature.hex())
            compared += 1
            accepted += ours
    assert accepted == 40  # exactly the unmutated signatures (a flipped bit never verifies)
    assert compared > 1000


def test_keys_that_are_no_point_or_not_canonical_agree_with_libsodium() -> None:
    signer = factory.seeded_key("strict/keys")
    message = b"m"
    signature = signer.sign(message)
    not_on_curve = next(y for y in range(2, 100) if decode(y, 0) is None)
    cases = {
        encoding(not_on_curve): "key:not_on_curve",
        encoding(P + 3): "key:non_canonical",  # y >= p
        encoding(1, 1): "key:non_canonical",  # x = 0 with its sign bit set
        encoding(0): "key:small_order",
        encoding(P - 1): "key:small_order",
    }
    for public, expected in cases.items():
        assert verdict(public, message, signature) == expected, public.hex()
        assert not libsodium_accepts(public, message, signature)
    with pytest.raises(crypto.WeakKey, match="32 bytes"):
        crypto.load_public_key(bytes(31))


def test_peer_messages_refuse_small_order_r_from_a_real_validator() -> None:
    net = factory.network()
    status = m.Status(0, 5, 2)
    good = m.sign(status, net.validator_keys[2], net.genesis.chain_id)
    assert m.verify_signature(good, net.genesis)
    domain, payload = m.signed_payload(status, net.genesis.chain_id)
    forged = small_order_r_signature(net.validator_keys[2], domain.value + payload)
    assert openssl_accepts(net.genesis.validators[2].public_key, domain.value + payload, forged)
    for bad in (forged, IDENTITY + bytes(32), s_plus_l(good.signature)):
        assert not m.verify_signature(dataclasses.replace(status, signature=bad), net.genesis)

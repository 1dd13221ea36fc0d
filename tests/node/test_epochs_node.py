"""The node across epochs, piece by piece (docs/protocol.md 13.6): its peers are named by id and
an index is a place in one epoch's set; the peer endpoints accept the TLS identity of a
validator of the set in force only; a node finds its place by its id and its key."""

import dataclasses

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger import crypto
from ledger.genesis import Genesis, Validator, ValidatorIndex
from node import tls
from node.epochs import seat
from node.peers import PeerTransport
from node.peertrust import PeerTrust
from tests import factory
from tests.node.conftest import within


def with_validators(genesis: Genesis, validators: list[Validator]) -> Genesis:
    """The set of a later epoch: the same order, each at its new index."""
    indexed = tuple(
        dataclasses.replace(v, index=ValidatorIndex(i)) for i, v in enumerate(validators)
    )
    return dataclasses.replace(genesis, validators=indexed)


def rotated(genesis: Genesis, validator_id: str, key: Ed25519PrivateKey) -> Genesis:
    raw = crypto.public_key_bytes(key)
    return with_validators(genesis, [
        dataclasses.replace(v, public_key=raw, key=crypto.load_public_key(raw))
        if v.id == validator_id else v
        for v in genesis.validators
    ])  # fmt: skip


def certificate_der(key: Ed25519PrivateKey, genesis: Genesis, validator_id: str) -> bytes:
    tls_key = ec.generate_private_key(ec.SECP256R1())
    cert = tls.node_certificate(key, genesis.chain_id, validator_id, tls_key, ["127.0.0.1"])
    return cert.public_bytes(serialization.Encoding.DER)


def test_a_node_is_seated_by_its_id_and_its_key() -> None:
    net = factory.network(4)
    genesis, keys = net.genesis, net.validator_keys
    ids = [v.id for v in genesis.validators]
    assert seat(genesis, ids[2], crypto.public_key_bytes(keys[2])) == 2
    fewer = with_validators(genesis, [v for v in genesis.validators if v.id != ids[1]])
    assert seat(fewer, ids[2], crypto.public_key_bytes(keys[2])) == 1  # moved down one
    assert seat(fewer, ids[1], crypto.public_key_bytes(keys[1])) is None  # removed
    new_key = factory.seeded_key("rotated")
    assert seat(rotated(genesis, ids[3], new_key), ids[3], crypto.public_key_bytes(keys[3])) is None
    assert seat(rotated(genesis, ids[3], new_key), ids[3], crypto.public_key_bytes(new_key)) == 3


async def test_the_transport_follows_the_set_of_each_epoch() -> None:
    net = factory.network(4)
    genesis = net.genesis
    ids = [v.id for v in genesis.validators]
    transport = PeerTransport(
        genesis, ids[0], queue_max=8, timeout_ms=1000, body_bytes_max=1 << 20,
        send_failed=lambda _peer, _why: None,
    )  # fmt: skip
    await transport.start()
    try:
        assert set(transport.peers) == set(ids[1:])
        assert transport.peer_indices() == [1, 2, 3]
        fewer = with_validators(genesis, [v for v in genesis.validators if v.id != ids[1]])
        transport.reconfigure(fewer)  # ids[1] removed: ids[2] and ids[3] are 1 and 2 now
        assert set(transport.peers) == {ids[2], ids[3]}
        assert transport.peer_indices() == [1, 2]
        joined = dataclasses.replace(genesis.validators[1], id="joined", url="http://127.0.0.1:9")
        transport.reconfigure(with_validators(fewer, [*fewer.validators, joined]))
        assert transport.peers["joined"] == "http://127.0.0.1:9"
        assert transport.peer_indices() == [1, 2, 3]
    finally:
        await within(transport.close())


def test_the_peer_endpoints_accept_only_the_set_in_force() -> None:
    net = factory.network(4)
    genesis, keys = net.genesis, net.validator_keys
    ids = [v.id for v in genesis.validators]
    trust = PeerTrust(genesis)
    trust.enter(genesis)
    first, second = (
        certificate_der(keys[1], genesis, ids[1]),
        certificate_der(keys[2], genesis, ids[2]),
    )
    assert trust.admits(first)
    assert trust.admits(second)
    assert not trust.admits(certificate_der(keys[1], genesis, ids[2]))  # another's key
    assert not trust.admits(b"not a certificate")
    trust.enter(with_validators(genesis, [v for v in genesis.validators if v.id != ids[1]]))
    assert not trust.admits(first)  # removed: refused from the boundary on
    assert trust.admits(second)
    new_key = factory.seeded_key("rotated")
    trust.enter(rotated(genesis, ids[2], new_key))
    assert not trust.admits(second)  # bound to the rotated-out key
    assert trust.admits(certificate_der(new_key, genesis, ids[2]))
    stranger = factory.seeded_key("stranger")
    assert not trust.admits(certificate_der(stranger, genesis, ids[1]))  # never a validator's
    assert not trust.admits(certificate_der(keys[1], genesis, ids[2]))  # another's, under an id

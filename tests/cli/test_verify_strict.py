"""`cityledger verify` under strict Ed25519 (docs/protocol.md section 3.1): a stored chain holding
a tx whose signature only OpenSSL alone accepts fails at its height, and a genesis listing a
small-order or non-canonical key (the edge vectors' keys among them) is refused."""

from pathlib import Path

import pytest

from ledger import block as blocks
from ledger import crypto
from ledger import genesis as genesis_mod
from ledger.store import BlockStore
from tests import factory
from tests.cli.conftest import invoke, no_traceback, run
from tests.ledger.test_strict_ed25519 import (
    BAD_SIGNATURE_KINDS,
    IDENTITY,
    VECTORS,
    bad_tx_signatures,
    with_signature,
)


def store_with(root: Path, net: factory.Network, signature_of: str) -> Path:
    """Blocks 1-2 good, block 3 holding one tx with the named bad signature (certified)."""
    data = root / "data"
    chain = list(factory.chain(net, 2, 2))
    head = blocks.ChainHead.genesis(net.genesis)
    with BlockStore.open(data, net.genesis) as store:
        for block, cert in chain:
            store.append(block, cert)
            head = head.advance(block)
        now = factory.BASE_TIME_MS + 3000
        good = net.tx(net.client_for("claims/"), "claims/strict", {"n": 3}, now - 10)
        bad = with_signature(good, bad_tx_signatures(net, good)[signature_of])
        block = blocks.make_block(head, (bad,), now, 0, 0)
        store.append(block, net.certify(block))  # the store trusts consensus: it does not check
    return data


@pytest.mark.parametrize("signature_of", BAD_SIGNATURE_KINDS)
def test_verify_finds_a_strictly_bad_signature_at_its_height(
    tmp_path: Path, signature_of: str
) -> None:
    net = factory.network()
    (tmp_path / "genesis.toml").write_text(genesis_mod.dump_toml(net.genesis))
    data = store_with(tmp_path, net, signature_of)
    result = invoke("verify", "--data-dir", str(data), "--genesis", str(tmp_path / "genesis.toml"))
    assert result.exit_code == 1, result.output
    assert result.output == (
        "FAILED at height 3: block 3 tx 0: bad_signature: signature does not match the client's "
        "key\n"
    )
    no_traceback(result.output)


WEAK_KEYS = [IDENTITY, *sorted({bytes.fromhex(c["pub_key"]) for c in VECTORS
                                 if c["expected"].startswith("key:")})]  # fmt: skip


@pytest.mark.parametrize("public", WEAK_KEYS, ids=lambda k: k.hex()[:8])
def test_verify_refuses_a_genesis_with_a_weak_key(tmp_path: Path, public: bytes) -> None:
    net = factory.network()
    weak = net.genesis.to_dict()["validators"][3]["public_key"]
    path = tmp_path / "genesis.toml"
    path.write_text(genesis_mod.dump_toml(net.genesis).replace(weak, public.hex()))
    (tmp_path / "data").mkdir()
    result = invoke("verify", "--data-dir", str(tmp_path / "data"), "--genesis", str(path))
    assert result.exit_code == 2, result.output
    assert "validators[3].public_key: refused Ed25519 public key" in result.output
    no_traceback(result.output)


def test_a_node_process_and_verify_refuse_the_identity_key_in_one_line(tmp_path: Path) -> None:
    net = factory.network()
    weak = net.genesis.to_dict()["clients"][1]["public_key"]
    path = tmp_path / "genesis.toml"
    path.write_text(genesis_mod.dump_toml(net.genesis).replace(weak, IDENTITY.hex()))
    crypto.write_private_key(tmp_path / "key.pem", net.validator_keys[0])
    (tmp_path / "node.toml").write_text(
        'node_id = "node0"\nkey_file = "key.pem"\ndata_dir = "data"\n'
        'listen = "127.0.0.1:7001"\ngenesis = "genesis.toml"\n'
    )
    (tmp_path / "store").mkdir()
    node = run("node", "run", str(tmp_path / "node.toml"))
    verify = run("verify", "--data-dir", str(tmp_path / "store"), "--genesis", str(path))
    assert len(node.stderr.strip().splitlines()) == 1, node.stderr
    for result in (node, verify):
        assert result.returncode == 2, result.stdout + result.stderr
        no_traceback(result.stderr)
        assert "clients[1].public_key: refused Ed25519 public key: a point of small order" in (
            result.stderr
        )
    assert not (tmp_path / "data").exists()  # the node stopped before it opened a store

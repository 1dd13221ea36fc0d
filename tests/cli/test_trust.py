"""A client learns the validators in force from the genesis alone (docs/protocol.md 14.6,
cli/client/trust.py): the configuration proof of a chain where a validator was added, a key
rotated and one removed gives the set of every height; an altered epoch-change certificate is
refused; a client holding only the genesis reaches the added validator over TLS and refuses
a removed validator and a rotated-out key; the stable checkpoint after a rotation verifies
against the set of its own block."""

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cli.client import core, trust
from cli.client.errors import NodeUnreachable
from cli.client.http import NodeClient
from cli.ports import free_ports
from consensus.checkpoints import StableProof
from ledger import crypto, proofs
from ledger.encoding import encode
from ledger.gov import history
from node import proofs as node_proofs
from node import tls
from tests.ledger.epoch_chain import NET, EpochChain, build, epoch_chain

STATUS: bytes = b'{"node_id": "served"}'


@pytest.fixture
def chain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EpochChain]:
    trust.forget()  # the verified sets are kept per process: each test starts from the genesis
    with epoch_chain(tmp_path / "data", monkeypatch) as opened:
        build(opened)
        yield opened
    trust.forget()


def as_received(doc: dict[str, Any]) -> Any:
    """The answer as a client decodes it (msgpack: byte strings stay bytes)."""
    return msgpack.unpackb(msgpack.packb(doc), raw=False)


def test_the_configuration_proof_gives_the_set_of_every_height(chain: EpochChain) -> None:
    proven = proofs.verify_configs(as_received(node_proofs.config_proof(chain.store)), NET.genesis)
    assert (proven.height, proven.changes) == (chain.store.height, 6)
    configs = history.configs_for(NET.genesis)
    for height in range(chain.store.height + 1):
        expected = configs.at_height(chain.store.rule_state, height)
        assert proven.after(height).members.validators == expected.members.validators, height
    ids = [v.id for v in proven.current.members.validators]
    assert "node9" in ids
    assert "node2" not in ids
    assert proven.current.epoch == 4


def test_an_altered_epoch_change_certificate_is_refused(chain: EpochChain) -> None:
    doc = as_received(node_proofs.config_proof(chain.store))
    ends = history.configs_for(NET.genesis).epoch_ends(chain.store.rule_state)
    changes = [g for g in doc["governance"] if g["height"] in ends]
    assert len(changes) == len(ends) == 4  # added, rotated, removed, parameters
    for block in changes:
        certificate = block["certificate"]
        for position in (len(certificate) // 2, len(certificate) - 1):
            altered = bytearray(certificate)
            altered[position] ^= 0x01
            block["certificate"] = bytes(altered)
            with pytest.raises(proofs.InvalidProof):
                proofs.verify_configs(doc, NET.genesis)
        block["certificate"] = certificate
    assert proofs.verify_configs(doc, NET.genesis).changes == 6  # restored: valid again
    other = dict(doc, genesis_hash=bytes(32))
    with pytest.raises(proofs.InvalidProof, match="genesis_hash"):
        proofs.verify_configs(other, NET.genesis)


def stable_votes(chain: EpochChain, height: int) -> StableProof:
    """q Checkpoint votes on block `height` by the validators of its epoch, with their keys."""
    members = history.configs_for(NET.genesis).of_block(chain.store.rule_state, height).members
    block = chain.store.block(height)
    assert block is not None
    payload = encode([NET.genesis.chain_id, height, block.hash])
    signers = members.validators[-members.quorums.commit :]
    votes = tuple(
        (int(v.index), crypto.sign(chain.keys[v.id], crypto.Domain.CHECKPOINT, payload))
        for v in signers
    )
    return StableProof(height, block.hash, votes)


def test_the_stable_checkpoint_after_a_rotation_verifies(chain: EpochChain) -> None:
    height = chain.store.height  # after node1's key was rotated and node2 removed
    doc = as_received(node_proofs.stable_checkpoint(chain.store, stable_votes(chain, height)))
    assert "node9" in {v["validator_id"] for v in doc["votes"]}  # ids of the epoch's set
    proven = proofs.verify_configs(as_received(node_proofs.config_proof(chain.store)), NET.genesis)
    block = chain.store.block(height)
    assert block is not None
    assert core.verify_stable_checkpoint(doc, proven.after(height - 1).members) == (
        height, block.hash,
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"checkpoint signature|unknown validator"):
        core.verify_stable_checkpoint(doc, NET.genesis)  # the genesis set: not its signers


@contextmanager
def serving(
    chain: EpochChain, validator_id: str, key: Ed25519PrivateKey, data: Path,
    governance: dict[str, Any] | None = None,
) -> Iterator[str]:  # fmt: skip
    """A TLS server with the certificate `key` issues for `validator_id`, answering the
    configuration proof (the chain's, or `governance`) and a status; its https:// URL."""
    identity = tls.node_identity(key, NET.genesis, validator_id, data, ["127.0.0.1"])
    context = tls.server_context(identity, None, require_peer=False)
    body = msgpack.packb(governance or node_proofs.config_proof(chain.store))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            found = {
                trust.CONFIG_PROOF_PATH: (body, trust.MSGPACK),
                "/v1/status": (STATUS, "application/json"),
            }
            answer, kind = found.get(self.path, (b'{"error": "not_found"}', "application/json"))
            self.send_response(200 if self.path in found else 404)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_ports(1)[0]), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, name=f"serve-{validator_id}")
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def status_of(url: str) -> Any:
    with NodeClient(url, 5.0, genesis=NET.genesis) as client:
        return client.get("/v1/status", expect=("node_id",))


def test_a_client_with_the_genesis_alone_reaches_an_added_validator(
    chain: EpochChain, tmp_path: Path
) -> None:
    assert "node9" not in {v.id for v in NET.genesis.validators}
    with serving(chain, "node9", chain.keys["node9"], tmp_path / "node9") as url:
        assert status_of(url) == {"node_id": "served"}


def test_a_removed_validator_and_a_rotated_out_key_are_refused(
    chain: EpochChain, tmp_path: Path
) -> None:
    genesis_keys = dict(
        zip([v.id for v in NET.genesis.validators], NET.validator_keys, strict=True)
    )
    refused = pytest.raises(NodeUnreachable, match="not a validator in force")
    with serving(chain, "node2", genesis_keys["node2"], tmp_path / "node2") as url, refused:
        status_of(url)  # removed: its genesis key no longer counts
    refused = pytest.raises(NodeUnreachable, match="not a validator in force")
    with serving(chain, "node1", genesis_keys["node1"], tmp_path / "old1") as url, refused:
        status_of(url)  # its key was rotated out
    with serving(chain, "node1", chain.keys["node1"], tmp_path / "new1") as url:
        assert status_of(url) == {"node_id": "served"}  # the key in force


def test_an_older_proof_never_takes_a_client_back(chain: EpochChain, tmp_path: Path) -> None:
    """The removed validator serves the proof of a height before its removal: the client keeps
    the newer set it verified and still refuses it."""
    with serving(chain, "node9", chain.keys["node9"], tmp_path / "node9") as url:
        assert status_of(url) == {"node_id": "served"}  # learns the set at the head
    full = node_proofs.config_proof(chain.store)
    configs = history.configs_for(NET.genesis)

    def ids(height: int) -> set[str]:
        return {v.id for v in configs.at_height(chain.store.rule_state, height).members.validators}

    removal = next(h for h in range(1, chain.store.height + 1) if "node2" not in ids(h))
    older = dict(full, height=removal - 1,
                 governance=[g for g in full["governance"] if g["height"] < removal])  # fmt: skip
    stale = proofs.verify_configs(as_received(older), NET.genesis).current.members
    assert "node2" in {v.id for v in stale.validators}  # valid, but older than the one known
    genesis_keys = dict(
        zip([v.id for v in NET.genesis.validators], NET.validator_keys, strict=True)
    )
    refused = pytest.raises(NodeUnreachable, match="not a validator in force")
    with serving(chain, "node2", genesis_keys["node2"], tmp_path / "node2", older) as url, refused:
        status_of(url)

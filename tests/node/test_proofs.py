"""Proof bundles, checkpoints and consistency proofs: built from a store, verified against the
genesis alone (also after a JSON round trip), and refused when any part is altered."""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ledger.store import BlockStore
from node import proofs
from node.codec import to_json_value
from tests import factory

BLOCKS = 9


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[factory.Network, BlockStore]]:
    net = factory.network(4)
    store = BlockStore.open(Path(tmp_path_factory.mktemp("proofs")) / "data", net.genesis)
    for block, cert in factory.chain(net, BLOCKS, 3):
        store.append(block, cert)
    yield net, store
    store.close()


def as_json(value: Any) -> Any:
    return json.loads(json.dumps(to_json_value(value)))


def test_every_tx_has_a_bundle_that_verifies(chain: tuple[factory.Network, BlockStore]) -> None:
    net, store = chain
    for height in range(1, BLOCKS + 1):
        block = store.block(height)
        assert block is not None
        for tx in block.txs:
            bundle = proofs.bundle(store, tx.tx_id)
            assert bundle is not None
            assert (bundle["anchor"] is None) == (height == BLOCKS)
            assert proofs.verify_bundle(bundle, net.genesis) == tx
            assert proofs.verify_bundle(as_json(bundle), net.genesis) == tx
    assert proofs.bundle(store, b"\x00" * 32) is None


def altered(bundle: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    out = json.loads(json.dumps(to_json_value(bundle)))
    target = out
    for name in path[:-1]:
        target = target[name]
    target[path[-1]] = value(target[path[-1]]) if callable(value) else value
    return out


def flip(text: str) -> str:
    return text[:-2] + ("00" if text[-2:] != "00" else "01")


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("tx",), flip), (("tx_id",), flip), (("header",), flip), (("block_hash",), flip),
        (("certificate",), flip), (("tx_proof",), lambda p: [flip(p[0]), *p[1:]]),
        (("index",), lambda i: i + 1), (("tx_count",), 1), (("height",), 3),
        (("genesis_hash",), flip), (("chain_id",), "elsewhere"), (("format",), "v0"),
        (("anchor", "header"), flip), (("anchor", "certificate"), flip),
        (("anchor", "history_root"), flip),
        (("anchor", "history_proof"), lambda p: [flip(p[0]), *p[1:]]),
        (("anchor", "height"), lambda h: h - 1), (("tx",), "zz"), (("tx_proof",), "nope"),
        (("anchor",), "nope"),
    ],
)  # fmt: skip
def test_any_altered_part_is_refused(
    chain: tuple[factory.Network, BlockStore], path: tuple[str, ...], value: Any
) -> None:
    net, store = chain
    tx = store.block(2).txs[1]  # type: ignore[union-attr]
    bundle = proofs.bundle(store, tx.tx_id)
    assert bundle is not None
    with pytest.raises(proofs.InvalidProof):
        proofs.verify_bundle(altered(bundle, path, value), net.genesis)


def test_a_bundle_does_not_verify_against_another_genesis(
    chain: tuple[factory.Network, BlockStore],
) -> None:
    _, store = chain
    bundle = proofs.bundle(store, store.block(1).txs[0].tx_id)  # type: ignore[union-attr]
    assert bundle is not None
    with pytest.raises(proofs.InvalidProof):
        proofs.verify_bundle(bundle, factory.network(4, chain_id="othercity").genesis)


def test_consistency_between_every_pair_of_heads(
    chain: tuple[factory.Network, BlockStore],
) -> None:
    net, store = chain
    for old in range(1, BLOCKS + 1):
        for new in range(old, BLOCKS + 1):
            proof = as_json(proofs.consistency(store, old, new))
            assert proofs.verify_consistency(proof, net.genesis) == (old, new)
            if old < new:
                bad = dict(proof, to=proof["from"], **{"from": proof["to"]})
                with pytest.raises(proofs.InvalidProof):
                    proofs.verify_consistency(bad, net.genesis)
                if proof["consistency_proof"]:
                    forged = dict(proof, consistency_proof=[flip(proof["consistency_proof"][0])])
                    with pytest.raises(proofs.InvalidProof):
                        proofs.verify_consistency(forged, net.genesis)


def test_checkpoint_is_the_certified_head(chain: tuple[factory.Network, BlockStore]) -> None:
    net, store = chain
    checkpoint = proofs.checkpoint(store, BLOCKS)
    header = proofs.verify_checkpoint(as_json(checkpoint), net.genesis)
    assert header.hash() == store.head.hash
    for path, value in ((("height",), BLOCKS - 1), (("history_root",), flip)):
        with pytest.raises(proofs.InvalidProof):
            proofs.verify_checkpoint(altered(checkpoint, path, value), net.genesis)

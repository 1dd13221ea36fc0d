"""node/proofs.py builds bundles, checkpoints and consistency proofs from a store; each verifies
with `ledger.proofs` (tested thoroughly in tests/ledger/test_proofs.py) as the node serves it:
as bytes, as JSON and as MessagePack."""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from ledger import merkle
from ledger import proofs as verifier
from ledger.block import Block
from ledger.encoding import encode
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


def block_at(store: BlockStore, height: int) -> Block:
    block = store.block(height)
    assert block is not None
    return block


def served(value: Any) -> list[Any]:
    """`value` as a client receives it: the map itself, JSON and MessagePack."""
    return [
        value,
        json.loads(json.dumps(to_json_value(value))),
        msgpack.unpackb(msgpack.packb(value, use_bin_type=True), raw=False),
    ]


def test_every_committed_tx_has_a_bundle_that_verifies(
    chain: tuple[factory.Network, BlockStore],
) -> None:
    net, store = chain
    for height in range(1, BLOCKS + 1):
        block = block_at(store, height)
        for index, tx in enumerate(block.txs):
            bundle = proofs.bundle(store, tx.tx_id)
            assert bundle is not None
            assert set(bundle) == verifier.BUNDLE_FIELDS
            assert (bundle["index"], bundle["tx_count"]) == (index, block.header.tx_count)
            assert bundle["header"] == encode(block.header.to_list())
            assert (bundle["anchor"] is None) == (height == BLOCKS)
            for form in served(bundle):
                proven = verifier.verify_bundle(form, net.genesis)
                assert (proven.tx, proven.block.header, proven.index) == (tx, block.header, index)
                assert proven.anchor is None or proven.anchor.header.height == BLOCKS
    assert proofs.bundle(store, b"\x00" * 32) is None


def test_the_anchor_is_the_head_and_its_history_proof(
    chain: tuple[factory.Network, BlockStore],
) -> None:
    _, store = chain
    bundle = proofs.bundle(store, block_at(store, 3).txs[0].tx_id)
    assert bundle is not None
    assert bundle["anchor"] == {
        **proofs.checkpoint(store, BLOCKS),
        "history_proof": store.history_inclusion_proof(BLOCKS, 3),
    }
    leaves = [store.genesis.hash, *(block_at(store, h).hash for h in range(1, BLOCKS))]
    assert bundle["anchor"]["history_proof"] == merkle.inclusion_proof(leaves, 3)


def test_checkpoints_are_the_certified_heads(chain: tuple[factory.Network, BlockStore]) -> None:
    net, store = chain
    for height in range(1, BLOCKS + 1):
        checkpoint = proofs.checkpoint(store, height)
        assert set(checkpoint) == verifier.CHECKPOINT_FIELDS
        for form in served(checkpoint):
            head = verifier.verify_checkpoint(form, net.genesis)
            assert (head.header.height, head.block_hash) == (height, block_at(store, height).hash)
    head = verifier.verify_checkpoint(proofs.checkpoint(store, BLOCKS), net.genesis)
    assert head.block_hash == store.head.hash


def test_consistency_between_every_pair_of_heads(
    chain: tuple[factory.Network, BlockStore],
) -> None:
    net, store = chain
    for old in range(1, BLOCKS + 1):
        for new in range(old, BLOCKS + 1):
            proof = proofs.consistency(store, old, new)
            assert set(proof) == verifier.CONSISTENCY_FIELDS
            for form in served(proof):
                assert verifier.verify_consistency(form, net.genesis) == (old, new)

"""A committed block as the API and the explorer show it, named by the validators of its epoch.

A certificate's votes, and a header's proposer, are indices into the validator set of the
block's epoch (docs/protocol.md 20.8), which governance may have changed since the genesis:
the set is the one of the configuration in force before the block (`Configs.of_block`), read
from the store's rule state. The node checks the certificate against that set before it
answers, so a damaged store is an error naming the height, never a block served as valid.
"""

from typing import Any

from ledger.block import verify_certificate
from ledger.errors import InvalidBlock, StoreError
from ledger.gov import history
from ledger.gov.config import Config
from ledger.store import BlockStore
from node import codec


def certifiers(store: BlockStore, height: int) -> Config:
    """The configuration block `height` (1..head + 1) is certified under: its epoch, its
    validators (`members.validators`, by index) and their quorum."""
    return history.configs_for(store.genesis).of_block(store.rule_state, height)


def block_view(store: BlockStore, height: int) -> dict[str, Any] | None:
    """`GET /v1/blocks/{height}` (docs/protocol.md 19.6); None if no block is at `height`."""
    block, cert = store.block(height), store.certificate(height)
    if block is None or cert is None:
        return None
    config = certifiers(store, height)
    try:
        verify_certificate(cert, block, config.members)
    except InvalidBlock as exc:
        raise StoreError(f"stored block {height} is damaged: {exc}") from None
    ids = [v.id for v in config.members.validators]
    proposer = block.header.proposer
    return codec.block_view(block, cert, ids) | {
        "epoch": config.epoch,
        "proposer_id": ids[proposer] if proposer < len(ids) else None,
    }

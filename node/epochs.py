"""The node across epochs: its place in each epoch's set, and syncing until it has one.

A validator's index is its place in the set of one epoch (docs/protocol.md sections 13.5 and
20.8), not a node number: removing any validator but the last, or adding one, moves the
others. The node learns the configuration in force from its store (ledger/gov): `seat` finds
its place in a set (its id with its key: a rotated-out key has none), `follow` runs a node
that has none at its head, a validator that governance adds or whose key it rotates, as a
follower: it fetches certified blocks from the validators in force (the peer block-fetch path)
and appends them to the store, which checks every block against the configuration in force
before it and every certificate against the set of its block's epoch, until the block that
seats it. Only then does the node build its replica (node/runtime.py), so a validator that
joins votes nothing before it holds the chain up to the block that made it one.
"""

import asyncio
import logging
from collections.abc import Callable
from typing import Final

from consensus.events import FETCH_BLOCKS_MAX
from ledger.errors import InvalidBlock
from ledger.genesis import Genesis
from ledger.gov.config import Config as GovConfig
from ledger.store import BlockStore
from node.peers import PeerTransport

log = logging.getLogger("cityledger.node")

FOLLOW_INTERVAL_S: Final = 0.5  # a follower that got nothing asks again after this long


def seat(members: Genesis, validator_id: str, public_key: bytes) -> int | None:
    """This node's index in `members`' validator set, if it is there with this key."""
    found = members.validator(validator_id)
    return found.index if found is not None and found.public_key == public_key else None


async def follow(
    store: BlockStore, transport: PeerTransport, configuration: Callable[[], GovConfig],
    validator_id: str, public_key: bytes,
) -> int:  # fmt: skip
    """Append certified blocks fetched from the validators in force until the configuration
    at the store's head seats this node; return its index there. Runs until then (or until
    cancelled: the node stops), asking again every `FOLLOW_INTERVAL_S` while no peer has a
    block for it (its peers accept its TLS identity only once governance made it theirs)."""
    announced = False
    while True:
        config = configuration()
        index = seat(config.members, validator_id, public_key)
        if index is not None:
            if announced:
                log.info("seated", extra={"event": "seated", "node_id": validator_id,
                                          "height": store.height, "epoch": config.epoch,
                                          "index": index})  # fmt: skip
            return index
        if not announced:
            announced = True
            log.info("following: not a validator of the configuration in force", extra={
                "event": "following", "node_id": validator_id, "height": store.height,
                "epoch": config.epoch,
            })  # fmt: skip
        transport.reconfigure(config.members)
        if not await _fetch_some(store, transport, configuration, validator_id, public_key):
            await asyncio.sleep(FOLLOW_INTERVAL_S)  # a poll interval, not a wait for an event


async def _fetch_some(
    store: BlockStore, transport: PeerTransport, configuration: Callable[[], GovConfig],
    validator_id: str, public_key: bytes,
) -> bool:  # fmt: skip
    """Ask the validators in force, one after the other, for the blocks above the head; append
    the first answer's blocks until one is refused or one seats this node (or ends the epoch:
    the next answer then comes from the new set). True if a block was appended."""
    epoch = configuration().epoch
    for peer in sorted(transport.peers):
        low = store.height + 1
        pairs = await transport.fetch_from(peer, low, low + FETCH_BLOCKS_MAX - 1)
        appended = False
        for block, certificate in pairs:
            try:
                store.append(block, certificate)  # every check, the certificate's included
            except InvalidBlock as exc:
                log.warning("a fetched block was refused", extra={
                    "event": "fetched_block_refused", "peer": peer, "height": block.height,
                    "reason": str(exc),
                })  # fmt: skip
                break
            appended = True
            config = configuration()
            if config.epoch != epoch or seat(config.members, validator_id, public_key) is not None:
                break
        if appended:
            return True
    return False

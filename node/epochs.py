"""The node across epochs: its place in each epoch's set, and following the chain without one.

A validator's index is its place in the set of one epoch (docs/protocol.md sections 13.5 and
20.8), not a node number: removing any validator but the last, or adding one, moves the
others. The node learns the configuration in force from its store (ledger/gov): `seat` finds
its place in a set (its id with its key: a rotated-out key has none). A node that has none,
a validator that governance adds, removes, or whose key it rotates, is a follower (its
replica is retired, node/runtime.py): a `Follower` fetches certified blocks from the
validators in force (the peer block-fetch path) and appends them to the store, which checks
every block against the configuration in force before it and every certificate against the
set of its block's epoch, until a block seats it. Only then does the node build a replica,
so a validator that joins votes nothing before it holds the chain up to the block that made
it one; meanwhile the node serves reads of what it holds.
"""

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Final

from consensus.events import FETCH_BLOCKS_MAX
from ledger.block import Block
from ledger.errors import InvalidBlock
from ledger.genesis import Genesis
from ledger.gov.config import Config as GovConfig
from ledger.kinds.risks import Alert
from ledger.store import BlockStore
from ledger.storelayout import BlockWrite
from node.config import Identity
from node.peers import PeerTransport

log = logging.getLogger("cityledger.node")

FOLLOW_INTERVAL_S: Final = 0.5  # a follower that got nothing asks again after this long


def seat(members: Genesis, validator_id: str, public_key: bytes) -> int | None:
    """This node's index in `members`' validator set, if it is there with this key."""
    found = members.validator(validator_id)
    return found.index if found is not None and found.public_key == public_key else None


class Follower:
    """Appends certified blocks fetched from the validators in force while the set in force
    does not seat this node, then calls `seated` with its index there and ends. It appends
    only while `idle()` (no write of the node's replica under way), and calls `appended` with
    each block it wrote and its alerts. `since`: the first height of the epoch in force once
    the replica's last writes are done (None until then), which does not seat the node: it
    is no validator from there on."""

    def __init__(
        self, store: BlockStore, transport: PeerTransport,
        configuration: Callable[[], GovConfig], identity: Identity, *,
        idle: Callable[[], bool], appended: Callable[[Block, tuple[Alert, ...]], None],
        seated: Callable[[int], None],
    ) -> None:  # fmt: skip
        self._store = store
        self._transport = transport
        self._configuration = configuration
        self._id, self._key = identity.validator_id, identity.public_key
        self._idle, self._appended, self._seated = idle, appended, seated
        self.since: int | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def _begin(self, config: GovConfig) -> None:
        self.since = config.epoch_height + 1
        log.info("following: not a validator of the configuration in force", extra={
            "event": "following", "node_id": self._id, "height": self._store.height,
            "epoch": config.epoch, "since": self.since,
        })  # fmt: skip

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            if self._idle():  # the store holds all the retired replica committed
                config = self._configuration()
                index = seat(config.members, self._id, self._key)
                if index is not None:
                    log.info("seated", extra={"event": "seated", "node_id": self._id,
                                              "height": self._store.height,
                                              "epoch": config.epoch, "index": index})  # fmt: skip
                    self._task = None
                    self._seated(index)
                    return
                if self.since is None:
                    self._begin(config)
                self._transport.reconfigure(config.members)
                if await self._fetch_some():
                    continue
            await asyncio.sleep(FOLLOW_INTERVAL_S)  # a poll interval, not a wait for an event

    async def _fetch_some(self) -> bool:
        """Ask the validators in force, one after the other, for the blocks above the head;
        append the first answer's blocks until one is refused or one seats this node (or
        ends the epoch: the next answer then comes from the new set). True if a block was
        appended."""
        epoch = self._configuration().epoch
        for peer in sorted(self._transport.peers):
            low = self._store.height + 1
            pairs = await self._transport.fetch_from(peer, low, low + FETCH_BLOCKS_MAX - 1)
            appended = False
            for block, certificate in pairs:
                if self._store.height != block.height - 1 or not self._idle():
                    break  # (the node may have stopped, or seated, while the fetch was away)
                try:  # every check, the certificate's included
                    pending = self._store.prepare([BlockWrite(block, certificate)])
                except InvalidBlock as exc:
                    log.warning("a fetched block was refused", extra={
                        "event": "fetched_block_refused", "peer": peer, "height": block.height,
                        "reason": str(exc),
                    })  # fmt: skip
                    break
                pending.write()
                self._store.advance(pending)
                appended = True
                self._appended(block, tuple(pending.alerts))
                config = self._configuration()
                if config.epoch != epoch or seat(config.members, self._id, self._key) is not None:
                    break
            if appended:
                return True
        return False

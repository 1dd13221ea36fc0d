"""The rule state each block in flight executes against: pure overlays over the committed state.

Blocks are pipelined: block h is checked (and proposed) while the blocks below it are accepted
but not committed, and committed blocks reach the store a little later than the replica
commits them. So the state a block at height h executes against is

    the store's committed state (read through `CommittedState`, at its `height`)
    + the writes of the blocks this replica committed above that height
    + the writes of the accepted blocks from the head up to h - 1, in height order.

This module owns the last two (a block's writes, keyed by its hash while it is in flight, by
height once committed, until the store's height passes it) and builds that overlay. Writes
are absolute values (ledger/kinds/execute.py), so a store a little ahead of the height it
reports still reads right. It never reads a disk or a clock: the shell hands in the reader.
"""

from collections.abc import Iterable
from typing import Any, Protocol

from ledger.block import Block
from ledger.genesis import Genesis
from ledger.gov import history
from ledger.gov.config import Config
from ledger.kinds.base import Writes
from ledger.kinds.execute import Executed, Overlay, execute
from ledger.tx import Transaction

from consensus.epoch import Epoch


class CommittedState(Protocol):
    """The committed rule state as the node's store holds it (the shell provides it)."""

    @property
    def height(self) -> int:
        """The height of the last block whose writes the state holds."""
        ...

    def get(self, key: bytes) -> Any: ...


class MemoryState:
    """A committed state kept in memory, for a replica without a store (unit tests): the
    replica's commits are applied to it at once."""

    def __init__(self) -> None:
        self.height = 0
        self.entries: Writes = {}

    def get(self, key: bytes) -> Any:
        return self.entries.get(key)

    def apply(self, height: int, writes: Writes) -> None:
        self.entries.update(writes)
        self.height = height


class RuleStates:
    def __init__(self, genesis: Genesis, committed: CommittedState | None) -> None:
        self._genesis = genesis
        self._memory = MemoryState() if committed is None else None
        self._committed: CommittedState = committed or self._memory  # type: ignore[assignment]
        self._in_flight: dict[bytes, Writes] = {}  # block hash -> writes, accepted blocks
        # height -> (block hash, writes) of the blocks committed but maybe not stored yet
        self._unstored: dict[int, tuple[bytes, Writes]] = {}
        self._configs = history.Configs(genesis)  # this replica's own, derived from its state
        # (parent hash, height, time, tx ids) -> execution of the last proposal (`outcomes`)
        self._proposed: tuple[tuple[bytes, int, int, tuple[bytes, ...]], Executed] | None = None

    def below(self, accepted: Iterable[Block]) -> Overlay:
        """The state after the committed head and then `accepted` (the accepted blocks from the
        head up, in height order): the state the next block executes against."""
        state = self._after_head()
        for block in accepted:
            writes = self._in_flight.get(block.hash)
            if writes is None:  # accepted before a restart: executed again, not re-checked
                writes = self._execute(state, block)
                self._in_flight[block.hash] = writes
            state.update(writes)
        return state

    def _after_head(self) -> Overlay:
        stored = self._committed.height
        for height in [h for h in self._unstored if h <= stored]:
            del self._unstored[height]
        state = Overlay(self._committed.get)
        for height in sorted(self._unstored):
            state.update(self._unstored[height][1])
        return state

    def _execute(self, state: Overlay, block: Block) -> Writes:
        time_ms = block.header.timestamp_ms
        return execute(state.get, block.txs, self._genesis, time_ms, block.height).writes

    def outcomes(
        self, state: Overlay, body: tuple[Transaction, ...], time_ms: int, height: int,
        parent: bytes,
    ) -> tuple[str, ...]:  # fmt: skip
        """The outcomes of `body` as the block at `height` on the block `parent` (whose chain
        gives `state`) stamped `time_ms`: the primary's proposal. Its execution is kept for the
        primary's own check of the block (`proposed`), the one proposal last made."""
        executed = execute(state.get, body, self._genesis, time_ms, height)
        self._proposed = ((parent, height, time_ms, tuple(t.tx_id for t in body)), executed)
        return executed.outcomes

    def proposed(self, block: Block) -> Executed | None:
        """The execution `outcomes` made of `block`'s body, if it is the proposal last made
        (same parent, height, time and txs: the same state and the same result); once."""
        if self._proposed is None:
            return None
        (parent, height, time_ms, ids), executed = self._proposed
        self._proposed = None
        header = block.header
        same = (parent, height, time_ms) == (header.prev_hash, block.height, header.timestamp_ms)
        return executed if same and ids == tuple(t.tx_id for t in block.txs) else None

    def config_after_head(self) -> Config:
        """The configuration in force after the committed head (ledger/gov)."""
        return self._configs.of_state(self._after_head().get)

    def epoch_at_head(self) -> Epoch:
        """The epoch of the heights above the committed head, and the one before it."""
        state = self._after_head()
        config = self._configs.of_state(state.get)
        if config.epoch == 0:
            return Epoch(config)
        return Epoch(config, self._configs.at_height(state.get, config.epoch_height - 1))

    def writes_in_flight(self, block: Block) -> Writes | None:
        """The writes of an accepted block, if it was executed here."""
        return self._in_flight.get(block.hash)

    def remember(self, block: Block, writes: Writes) -> None:
        self._in_flight[block.hash] = writes

    def committed(self, block: Block) -> Writes:
        """`block` is the replica's new head (by consensus or by state transfer): its writes."""
        writes = self._in_flight.pop(block.hash, None)
        if writes is None:
            writes = self._execute(self._after_head(), block)
        if self._memory is not None:
            self._memory.apply(block.height, writes)
        else:
            self._unstored[block.height] = (block.hash, writes)
        return writes

    def writes_of(self, block: Block) -> Writes | None:
        """What committed `block` wrote, while it is not known stored (the store's write of
        it takes them instead of executing it again); None if not held."""
        held = self._unstored.get(block.height)
        return held[1] if held is not None and held[0] == block.hash else None

    def keep_only(self, hashes: Iterable[bytes]) -> None:
        """Forget the writes of every block in flight but these (a commit or a view change
        voided the rest)."""
        keep = set(hashes)
        for digest in [d for d in self._in_flight if d not in keep]:
            del self._in_flight[digest]

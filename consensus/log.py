"""The replica's log: the consensus instances of the heights in flight, in the current view.

Owns, for the heights above the committed head and within the watermark window, the instance
of each height (its accepted block and votes, `consensus/instance.py`), the prepared proofs
(kept across views: a ViewChange carries them), the pre-prepares that wait for their parent,
and the blocks behind those proofs by hash (accepted here in any view, or fetched for a NewView:
a ViewChange names blocks by hash, and a peer that lacks one asks for it).
It answers questions about the chain of accepted blocks above the head (the parent of a height,
the tip, the txs already in flight) and forgets what a commit or a view change makes void. It
never signs, sends or persists: the replica does, from what this returns. The rule state
each block executes against (its outcomes) is `RuleStates`' (consensus/rulestate.py).
"""

from collections.abc import Callable, Container, Iterable, Iterator
from typing import Final

from ledger.block import Block, ChainHead, check_block
from ledger.errors import InvalidBlock
from ledger.genesis import Genesis
from ledger.kinds.execute import Overlay
from ledger.tx import Transaction

from consensus import messages as m
from consensus.epoch import ends_epoch
from consensus.instance import Instance
from consensus.journal import Restored
from consensus.rulestate import CommittedState, RuleStates
from consensus.viewchange import check_prepared_proof

# Blocks kept per height above the head: one per view that accepted one, the latest views first
# (the one a prepared proof names is always kept).
BLOCKS_PER_HEIGHT_MAX: Final = 4


class Log:
    def __init__(self, genesis: Genesis, state: CommittedState | None = None) -> None:
        self.rules = RuleStates(genesis, state)
        self.slots: dict[int, Instance] = {}
        self.prepared: dict[int, m.PreparedProof] = {}  # kept across views until committed
        self.waiting: dict[int, m.PrePrepare] = {}  # pre-prepares whose parent is not here yet
        self.blocks: dict[bytes, Block] = {}  # hash -> block, for the heights above the head

    def accept(
        self, view: int, block: Block, parent: ChainHead, own: m.PrePrepare | None = None, *,
        checked: bool,
    ) -> Instance:  # fmt: skip
        """The instance of `block`'s height accepts it (held by hash too): `checked` if it
        passed check_block against `parent` here, `own` the primary's own proposal of it."""
        slot = self.slot(view, block.height)
        slot.accept(block, parent)
        slot.checked = checked
        slot.own_pre_prepare = own
        self.keep(block)
        return slot

    def hold(self, pp: m.PrePrepare) -> None:
        """Keep a pre-prepare until the block below it is here (one per height, the last)."""
        self.waiting[pp.height] = pp

    def follower(self, height: int, view: int) -> m.PrePrepare | None:
        """The pre-prepare held for the height above `height`, if it is of `view` (either way,
        no longer held)."""
        pp = self.waiting.pop(height + 1, None)
        return pp if pp is not None and pp.view == view else None

    def keep(self, block: Block) -> None:
        """Hold `block` for a later NewView (ours or a peer's): a bounded number per height."""
        self.blocks.pop(block.hash, None)
        self.blocks[block.hash] = block  # the latest last
        named = {p.block_hash for p in self.prepared.values()}
        same = [d for d, b in self.blocks.items() if b.height == block.height and d not in named]
        for digest in same[: max(0, len(same) - BLOCKS_PER_HEIGHT_MAX)]:
            del self.blocks[digest]

    def known(self, hashes: Iterable[bytes]) -> list[Block]:
        """The blocks with these hashes that are here."""
        return [self.blocks[d] for d in hashes if d in self.blocks]

    def slot(self, view: int, height: int) -> Instance:
        return self.slots.setdefault(height, Instance(height, view))

    def accepted(self, height: int) -> Block | None:
        slot = self.slots.get(height)
        return None if slot is None else slot.block

    def restore(self, head: ChainHead, restored: Restored, members: Genesis) -> None:
        """Take back the proofs, and accept again the blocks accepted, before a restart. A
        proof the set in force (`members`) did not sign was made before the boundary below
        the head was committed: dropped, as on the commit (`committed`)."""
        for height, proof in restored.prepared.items():
            try:
                check_prepared_proof(proof, members)
            except m.InvalidMessage:
                continue
            self.prepared[height] = proof
        for block in restored.blocks:
            self.keep(block)
        parent = head
        for block in restored.accepted:
            slot = self.accept(restored.view, block, parent, checked=False)
            assert slot.head_after is not None
            parent = slot.head_after

    def parent(self, height: int, head: ChainHead) -> ChainHead | None:
        """The head a block at `height` extends: the committed head, or the block below."""
        if height == head.height + 1:
            return head
        below = self.slots.get(height - 1)
        return below.head_after if below is not None else None

    def tip(self, head: ChainHead) -> ChainHead:
        """The head after every block accepted in this view, in order."""
        tip = head
        while (slot := self.slots.get(tip.height + 1)) is not None and slot.head_after:
            tip = slot.head_after
        return tip

    def blocks_in_flight(self) -> Iterator[tuple[int, bytes, frozenset[bytes]]]:
        """(height, hash, tx ids) of every accepted block above the head."""
        return ((h, s.block.hash, s.tx_ids) for h, s in self.slots.items() if s.block is not None)

    def seen_below(
        self, height: int, committed: Callable[[bytes], bool]
    ) -> Callable[[bytes], bool]:
        """Is a tx committed, or in an accepted block below `height` (so not again)?"""
        earlier = [s.tx_ids for h, s in self.slots.items() if h < height and s.block]

        def seen(tx_id: bytes) -> bool:
            return committed(tx_id) or any(tx_id in ids for ids in earlier)

        return seen

    def checked_parent(
        self, block: Block, head: ChainHead, genesis: Genesis, committed: Callable[[bytes], bool],
        signatures_checked: Container[bytes],
    ) -> ChainHead:  # fmt: skip
        """The head `block` extends, once it passed every ledger rule against it (its txs new
        to the chain and to the blocks below it here); raise `InvalidBlock` otherwise."""
        parent = self.parent(block.height, head)
        if parent is None:
            raise InvalidBlock("the block below is not here")
        executed = check_block(
            block, parent, genesis, is_committed=self.seen_below(block.height, committed),
            signatures_checked=signatures_checked, state=self._state_below(block.height, head).get,
            executed=self.rules.proposed(block),  # the primary's own: executed to propose it
        )  # fmt: skip
        self.rules.remember(block, executed.writes)
        return parent

    def _state_below(self, height: int, head: ChainHead) -> "Overlay":
        below = []
        for h in range(head.height + 1, height):
            slot = self.slots.get(h)
            if slot is None or slot.block is None:
                raise InvalidBlock("the block below is not here")
            below.append(slot.block)
        return self.rules.below(below)

    def outcomes(
        self, height: int, head: ChainHead, body: tuple[Transaction, ...], time_ms: int
    ) -> tuple[str, ...]:
        """The outcomes of `body` as the block at `height` stamped `time_ms` (the proposer's)."""
        parent = self.parent(height, head)
        assert parent is not None, "proposed on the tip"
        state = self._state_below(height, head)
        return self.rules.outcomes(state, body, time_ms, height, parent.hash)

    def newly_prepared(self, quorum: int) -> list[m.PreparedProof]:
        """Proofs of the instances that reached a quorum of Prepares just now (kept here)."""
        proofs = []
        for height in sorted(self.slots):
            slot = self.slots[height]
            if slot.reaches_prepared(quorum):
                proof = slot.prepared_proof(quorum)
                self.prepared[height] = proof
                proofs.append(proof)
        return proofs

    def prepared_run(self, head_height: int) -> Iterator[Instance]:
        """The prepared instances right above the head, lowest first, up to the first height
        that is not prepared (a replica sends Commit in height order)."""
        height = head_height + 1
        while (slot := self.slots.get(height)) is not None and slot.prepared:
            yield slot
            height += 1

    def committable(self, head_height: int, quorum: int) -> Instance | None:
        """The instance right above the head, if a quorum of Commits lets it commit."""
        slot = self.slots.get(head_height + 1)
        return slot if slot is not None and slot.can_commit(quorum) else None

    def committed(self, block: Block) -> bool:
        """`block` is the new head: forget its height and below, and votes it made void.
        True if it ends its epoch (consensus/epoch.py)."""
        ends = ends_epoch(self.rules.committed(block))
        for table in (self.slots, self.prepared, self.waiting):
            for height in [h for h in table if h <= block.height]:
                del table[height]
        if ends:  # proofs above, by the set it ends, are of blocks not on it: void, and not
            self.prepared.clear()  # valid in the next set's ViewChanges (docs 13.5)
        for digest in [d for d, b in self.blocks.items() if b.height <= block.height]:
            del self.blocks[digest]
        nxt = self.slots.get(block.height + 1)
        if nxt is not None and nxt.block is not None and nxt.block.header.prev_hash != block.hash:
            self.slots.clear()  # built on a block that lost: those votes are void
        self.rules.keep_only(s.block.hash for s in self.slots.values() if s.block is not None)
        return ends

    def epoch_end(self, head: ChainHead) -> int | None:
        """The lowest accepted block above the head that ends the epoch, if one does: nothing
        above it is proposed or accepted until it commits (docs/protocol.md section 13.5)."""
        height = head.height + 1
        while (slot := self.slots.get(height)) is not None and slot.block is not None:
            writes = self.rules.writes_in_flight(slot.block)
            if writes is None:  # accepted before a restart: execute it now
                self._state_below(height + 1, head)
                writes = self.rules.writes_in_flight(slot.block)
            if writes is not None and ends_epoch(writes):
                return height
            height += 1
        return None

    def new_view(self) -> None:
        """Instances belong to a view: a new one starts empty (prepared proofs stay)."""
        self.slots.clear()
        self.waiting.clear()
        self.rules.keep_only(())

    def take_waiting(self, view: int) -> list[m.PrePrepare]:
        """The buffered pre-prepares of `view`, lowest height first (the buffer empties)."""
        waiting = [pp for _, pp in sorted(self.waiting.items()) if pp.view == view]
        self.waiting.clear()
        return waiting

    def own_messages(self) -> Iterator[m.Message]:
        """This replica's own messages of the heights in flight, to send again."""
        for height in sorted(self.slots):
            slot = self.slots[height]
            for msg in (slot.own_pre_prepare, slot.own_prepare, slot.own_commit):
                if msg is not None:
                    yield msg

    def within(self, low: int, high: int) -> bool:
        """Every entry lies above `low`, instances and waiting pre-prepares up to `high`."""
        return (
            all(low < h <= high for h in self.slots)
            and all(low < h <= high for h in self.waiting)
            and all(h > low for h in self.prepared)
            and all(low < b.height <= high for b in self.blocks.values())
        )

    def size(self) -> int:
        return (
            sum(1 + s.vote_count() for s in self.slots.values())
            + len(self.prepared)
            + len(self.waiting)
            + len(self.blocks)
        )

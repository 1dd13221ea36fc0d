"""A NewView's re-proposal while it waits: for the head to reach the selection's base, and for
the blocks it names by hash that this replica does not hold.

Owns the selection being installed and the rounds of asking for its missing blocks. A block is
taken only if it is the one the selection names at its height (the hash covers the header; the
header's tx root must then match the txs). Which peer is asked rotates through the holders of
each block, one further at each retransmit tick, so a holder that does not answer delays the
view, never blocks it (and if no holder answers, the progress timer moves to the next view).
It emits nothing: the replica sends the requests and installs the blocks this returns.
"""

from collections.abc import Callable, Container

from ledger.block import Block, ChainHead, check_body
from ledger.errors import InvalidBlock

from consensus import messages as m
from consensus.viewchange import Selection, linked

Held = Callable[[bytes], Block | None]  # the block with this hash, if the replica holds it


class Reproposal:
    def __init__(self, selection: Selection, own_index: int) -> None:
        self.selection = selection
        self._index = own_index
        self._round = 0  # retransmit ticks since the NewView: which holder to ask
        self._asked = False  # this round's requests went out

    @property
    def base_height(self) -> int:
        return self.selection.base_height

    def _above(self, head: ChainHead) -> list[tuple[bytes, tuple[int, ...]]]:
        """(hash, holders) of the selected heights above `head`, lowest first."""
        skip = max(0, head.height - self.selection.base_height)
        return list(zip(self.selection.hashes, self.selection.holders, strict=True))[skip:]

    def ready(self, head: ChainHead, held: Held) -> tuple[Block, ...] | None:
        """The blocks to re-propose above `head`, once the head reached the base and every
        block the rule needs is held; None while something is missing."""
        if head.height < self.selection.base_height:
            return None
        wanted = self._above(head)
        found: list[Block] = []
        for digest, _ in wanted:
            block = held(digest)
            if block is None:
                break
            found.append(block)
        chain = linked(head.hash, found)
        if len(chain) < len(found) or len(found) == len(wanted):
            return chain  # complete, or cut where a block does not extend the one below
        return None

    def requests(self, head: ChainHead, held: Held) -> list[tuple[int, tuple[bytes, ...]]]:
        """(peer, hashes) to ask for the missing blocks, once per round."""
        if self._asked or head.height < self.selection.base_height:
            return []
        self._asked = True
        by_peer: dict[int, list[bytes]] = {}
        for digest, holders in self._above(head):
            others = [h for h in holders if h != self._index]
            if held(digest) is None and others:
                by_peer.setdefault(others[self._round % len(others)], []).append(digest)
        return [(peer, tuple(hashes)) for peer, hashes in sorted(by_peer.items())]

    def tick(self) -> None:
        """A retransmit tick: ask again, each block of its next holder."""
        self._round += 1
        self._asked = False

    def wants(self, block: Block, head: ChainHead, held: Container[bytes]) -> bool:
        """Is `block` one the selection names above `head`, and not `held` yet? Raise
        `InvalidMessage` if it is, by its header, but its txs are not the ones the header
        commits to. Nothing is wanted while the head is below the base (we ask for nothing
        then, and a block kept must lie within the window above the head)."""
        index = block.height - self.selection.base_height - 1
        hashes = self.selection.hashes
        if head.height < self.selection.base_height or block.height <= head.height:
            return False
        if not 0 <= index < len(hashes) or block.hash in held:
            return False
        if hashes[index] != block.hash:
            return False
        try:
            check_body(block)
        except InvalidBlock as exc:
            raise m.InvalidMessage(m.Reason.INVALID_BLOCK, str(exc)) from None
        return True

"""The replica's door for peer messages: which ones it takes in at all, and the count of those
it refused.

Owns the cache of peer signatures already checked (consensus/signatures.py) and the counts of
refused messages by reason (`invalid_message:<reason>`, the labels as they are). The checks run
cheapest first and the signature last, so a forgery or a flood of stale votes costs no
signature check: the sender is a validator other than us; a PrePrepare, Prepare or Commit is
for the current view and a height in the window, and a Checkpoint for a block of this epoch
(else dropped uncounted: an honest replica sends those when it is ahead or behind, and its
Checkpoint of the block that ended the previous epoch names it by that epoch's index, to be
counted by that set); a PrePrepare comes from the primary. What a message
then means is the replica's business; one it finds invalid later is refused here too.
"""

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from consensus import messages as m
from consensus.chain import Chain
from consensus.epoch import Epoch
from consensus.signatures import SignatureCache
from consensus.viewstate import ViewState


class Inbox:
    def __init__(self, epoch: Epoch, index: int, counters: Counter[str]) -> None:
        self.signatures = SignatureCache(epoch.members)  # the set of the epoch, by index
        self._index = index
        self._n = epoch.size
        self._first = epoch.first_height
        self._counters = counters

    def admits(self, msg: m.Message, views: ViewState, chain: Chain) -> bool:
        """False if the replica drops `msg` (a refusal counted here)."""
        per_height = msg if isinstance(msg, m.PrePrepare | m.Prepare | m.Commit) else None
        if isinstance(msg, m.Checkpoint) and msg.height < self._first:
            return False  # the set before ours vouches for that block, not ours, by its indices
        if msg.sender == self._index or not 0 <= msg.sender < self._n:
            reason = m.Reason.SENDER
        elif per_height and not (
            views.is_current(per_height.view) and chain.takes(per_height.height)
        ):
            return False  # not a height we take part in, whatever its signature
        elif isinstance(msg, m.PrePrepare) and msg.sender != views.primary:
            reason = m.Reason.NOT_PRIMARY
        elif not self.signatures.verify(msg):
            reason = m.Reason.BAD_SIGNATURE
        else:
            return True
        self.refuse(reason)
        return False

    def size(self) -> int:
        return len(self.signatures)

    def refuse(self, reason: m.Reason) -> None:
        self._counters[f"invalid_message:{reason}"] += 1

    @contextmanager
    def refusals(self) -> Iterator[None]:
        """Handle a message inside: an `InvalidMessage` raised (the world's fault, not ours)
        ends its handling and is counted as a refusal, never raised further."""
        try:
            yield
        except m.InvalidMessage as exc:
            self.refuse(exc.reason)

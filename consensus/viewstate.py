"""The view and the view change under way: the state beside the pure rules of viewchange.py.

Owns the current view, whether a view change is under way, the ViewChanges received for this
view and the views just above it, this replica's own ViewChange (re-sent while no NewView
comes), the NewView that installed the view (handed to replicas left behind), its re-proposal
while it waits for missing blocks (consensus/reproposal.py), and the back-off of repeated
attempts. It decides nothing about blocks and emits nothing: the replica asks it, signs and
sends what it returns.

The rules: a replica whose pending work made no progress within the view-change timeout asks
for the next view; f+1 ViewChanges for later views make a replica join the lowest of them (one
honest replica at least wants it); the new primary sends NewView with a quorum of ViewChanges
and every replica recomputes what it re-proposes (consensus/viewchange.py). A view change that
gets no quorum is re-sent, not escalated, so a lone replica cannot run ahead; one with a quorum
whose primary fails moves on, waiting twice as long each time up to a cap.
"""

from collections.abc import Container
from dataclasses import dataclass
from typing import Final

from ledger.block import Block, Certificate, ChainHead

from consensus import messages as m
from consensus.epoch import Epoch
from consensus.events import Send
from consensus.reproposal import Reproposal
from consensus.signatures import SignatureCache
from consensus.viewchange import check_view_change, select

VIEW_AHEAD_MAX: Final = 64  # ViewChanges kept for views at most this far above ours
BACKOFF_DOUBLINGS_MAX: Final = 16


@dataclass(frozen=True)
class Sent:
    """This replica's ViewChange for the current view, and when it (last) went out."""

    message: m.ViewChange
    at_ms: int
    patience_ms: int  # how long to wait for the NewView before trying again


class ViewState:
    def __init__(self, epoch: Epoch, index: int, timeout_max_ms: int) -> None:
        self._timeout_max_ms = timeout_max_ms
        self.new_epoch(epoch, index)
        self.view = 0
        self.in_view_change = False
        self._attempts = 0  # view changes since the last commit (the back-off exponent)

    def new_epoch(self, epoch: Epoch, index: int) -> None:
        """The set changed (its size, quorum, our index): the view stays, what was counted in
        the old set goes (a view change under way is asked for again, in the new set)."""
        self._epoch = epoch
        self._index = index
        self._n = epoch.size
        self._quorum = epoch.quorums.commit
        self._weak = epoch.quorums.weak
        self.votes: dict[int, dict[int, m.ViewChange]] = {}  # view -> sender -> ViewChange
        self.sent: Sent | None = None
        self.new_view: m.NewView | None = None  # the one that installed `view`, if any
        self.reproposal: Reproposal | None = None  # the NewView's, until its blocks are here

    @property
    def primary(self) -> int:
        return self.view % self._n

    def is_current(self, view: int) -> bool:
        """Is `view` ours, with no view change under way (the normal case runs in it)?"""
        return view == self.view and not self.in_view_change

    def start(self, new_view: int) -> None:
        assert new_view > self.view or (new_view == self.view and self.in_view_change)
        self.view = new_view
        self.in_view_change = True
        self.reproposal = None
        self.new_view = None

    def view_change(
        self, head: ChainHead, certificate: Certificate | None,
        prepared: dict[int, m.PreparedProof],
    ) -> m.ViewChange:  # fmt: skip
        """Our (unsigned) ViewChange for the current view: our head and prepared proofs."""
        assert self.in_view_change
        proofs = tuple(prepared[h] for h in sorted(prepared))
        return m.ViewChange(self.view, head.height, head.hash, certificate, proofs, self._index)

    def own(self, vc: m.ViewChange, now_ms: int) -> None:
        """Our ViewChange for the current view goes out (again): wait longer each attempt."""
        assert vc.new_view == self.view
        assert vc.sender == self._index
        base = self._epoch.params.view_change_timeout_ms
        patience = min(base << min(self._attempts, BACKOFF_DOUBLINGS_MAX), self._timeout_max_ms)
        self._attempts += 1
        self.sent = Sent(vc, now_ms, patience)
        self.votes.setdefault(self.view, {})[self._index] = vc

    def deadline_ms(self) -> int | None:
        if not self.in_view_change or self.sent is None:
            return None
        return self.sent.at_ms + self.sent.patience_ms

    def committed(self) -> None:
        self._attempts = 0

    def on_view_change(self, vc: m.ViewChange, window: int) -> tuple[int | None, list[Send]]:
        """A peer's ViewChange (signature checked): the view to join, if any, and what to send
        it (the NewView it missed, if it asks for a view we are past)."""
        if self.is_stale(vc.new_view):
            return None, self.remind(vc.sender, vc.new_view - 1)
        return self.add(vc, window), []

    def is_stale(self, view: int) -> bool:
        """A ViewChange or NewView for `view` asks for nothing new."""
        return view < self.view or (view == self.view and not self.in_view_change)

    def add(self, vc: m.ViewChange, window: int) -> int | None:
        """Count a peer's ViewChange (signature checked); the view to join, if f+1 want one
        above ours (at least one honest replica does: join the lowest of them)."""
        assert not self.is_stale(vc.new_view)
        if vc.new_view > self.view + VIEW_AHEAD_MAX or not self.crossed(vc):
            return None
        check_view_change(vc, self._epoch, window)
        self.votes.setdefault(vc.new_view, {})[vc.sender] = vc
        above = {s for v, d in self.votes.items() if v > self.view for s in d}
        if len(above) < self._weak:
            return None
        return min(v for v, d in self.votes.items() if v > self.view and d)

    def quorum_for_new_view(self) -> tuple[m.ViewChange, ...] | None:
        """The ViewChanges for our NewView, if we are the new primary and have a quorum."""
        votes = self.votes.get(self.view, {})
        if self.primary != self._index or not self.in_view_change or len(votes) < self._quorum:
            return None
        return tuple(votes[s] for s in sorted(votes)[: self._quorum])

    def has_quorum_support(self) -> bool:
        """A quorum asked for this view or a later one, yet no NewView came: its primary
        failed. With less support a replica asks again rather than run ahead alone (a lone
        replica in a later view helps no quorum)."""
        support = {s for v, d in self.votes.items() if v >= self.view for s in d}
        return len(support) >= self._quorum

    def check_new_view(self, nv: m.NewView, signatures: SignatureCache, window: int) -> None:
        """Raise `InvalidMessage` unless `nv` is a valid NewView (its own signature apart)."""
        if nv.sender != nv.view % self._n:
            raise m.InvalidMessage(m.Reason.NOT_PRIMARY, "not from the primary of that view")
        senders = [vc.sender for vc in nv.view_changes]
        if len(set(senders)) != len(senders) or len(senders) < self._quorum:
            raise m.InvalidMessage(m.Reason.NEW_VIEW, "needs view changes of a quorum")
        for vc in nv.view_changes:
            if vc.new_view != nv.view or not 0 <= vc.sender < self._n:
                raise m.InvalidMessage(m.Reason.NEW_VIEW, "a view change for another view")
            if not signatures.verify(vc):
                raise m.InvalidMessage(m.Reason.NEW_VIEW, "a view change's bad signature")
            if not self.crossed(vc):
                raise m.InvalidMessage(m.Reason.NEW_VIEW, "a view change of an earlier epoch")
            check_view_change(vc, self._epoch, window)

    def crossed(self, vc: m.ViewChange) -> bool:
        """Is the sender's head in this epoch (the last block of the previous one or above)?
        A replica behind the boundary changes views among the set it is in, and catches up."""
        return vc.committed_height >= self._epoch.first_height - 1

    def remind(self, peer: int, peer_view: int) -> list[Send]:
        """Hand the NewView that installed our view to a replica left in an older one."""
        if peer_view < self.view and self.new_view is not None and not self.in_view_change:
            return [Send(peer, self.new_view)]
        return []

    def wants(self, block: Block, head: ChainHead, held: Container[bytes]) -> bool:
        """Is `block` one the pending re-proposal waits for (consensus/reproposal.py)? Raise
        `InvalidMessage` if it names one by its header but not by its txs."""
        return self.reproposal is not None and self.reproposal.wants(block, head, held)

    def at_boundary(self, certificate: Certificate | None) -> bool:
        """Enter the view `certificate` (of our head) was made in, if it is of the block that
        ended the previous epoch and our view is earlier (or is that one, still changing):
        nothing above that block is in flight, so the NewView of its view binds nothing more,
        and those who held it dropped it with the old set (docs/protocol.md 13.5 rule 5).
        True if the view changed."""
        if certificate is None or certificate.height != self._epoch.first_height - 1:
            return False
        view = certificate.view
        if view < self.view or (view == self.view and not self.in_view_change):
            return False
        self.view, self.in_view_change = view, False
        self.sent = self.new_view = self.reproposal = None
        for v in [v for v in self.votes if v <= view]:
            del self.votes[v]
        return True

    def install(self, nv: m.NewView, window: int) -> None:
        """Enter `nv`'s view; what it re-proposes waits in `reproposal` until installed."""
        self.view = nv.view
        self.in_view_change = False
        self.new_view = nv
        self.reproposal = Reproposal(select(nv.view_changes, window), self._index)
        for v in [v for v in self.votes if v <= nv.view]:
            del self.votes[v]

    def size(self) -> int:
        return sum(len(v) for v in self.votes.values())

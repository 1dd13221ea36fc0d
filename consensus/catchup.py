"""Catch-up (state transfer): what peers report, which peer to fetch blocks from, and whether a
fetched block may be applied.

Owns the peers' reported views and heads, the fetch under way and the peers that answered
badly. A replica that learns that f+1 peers (so one honest peer at least) are ahead fetches
certified blocks from one of them; a block is applied only if it extends the head and its
certificate verifies (`check_certified`). This object returns the fetch to make; the replica
emits it, applies the blocks and arms the timer (`deadline_ms`). Status gossip on the
retransmit timer tells each replica the others' views and heads.
"""

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from ledger.block import (
    Block,
    Certificate,
    ChainHead,
    check_body,
    verify_certificate,
    verify_certificate_votes,
)
from ledger.errors import InvalidBlock
from ledger.genesis import Genesis, Quorums

from consensus.epoch import Epoch
from consensus.events import FetchBlocks
from consensus.messages import ViewChange


@dataclass(frozen=True)
class Fetching:
    peer: int
    since_ms: int


class CatchUp:
    def __init__(self, index: int, quorums: Quorums, blocks_max: int, timeout_ms: int) -> None:
        self._index, self._size = index, quorums.n
        self._weak = quorums.weak
        self._blocks_max = blocks_max
        self._timeout_ms = timeout_ms
        self.peer_status: dict[int, tuple[int, int]] = {}  # peer -> (view, committed height)
        self.fetching: Fetching | None = None
        self._bad_peers: set[int] = set()
        self._probes = 0  # blind fetches made: the next one asks the next peer

    def note(self, peer: int, view: int | None, height: int) -> None:
        old_view, old_height = self.peer_status.get(peer, (0, 0))
        self.peer_status[peer] = (old_view if view is None else view, max(old_height, height))

    def head_shown(
        self, vc: ViewChange, epoch: Epoch, height: int, now_ms: int
    ) -> list[FetchBlocks]:
        """A peer's ViewChange shows its committed head, with its certificate: if that head is
        above ours at `height` and the certificate holds a quorum of the head block's set (as
        `epoch` knows it), blocks we lack are committed: fetch them from the sender, as no f+1
        reports are needed when the head proves itself. The one replica past the block that
        ended an epoch may be the only one ahead, and it counts no ViewChange from behind the
        boundary (13.5): without this its peers wait for a NewView that never comes. The
        certificate is checked only when no fetch is under way: at most once per fetch."""
        self.note(vc.sender, None, vc.committed_height)
        cert = vc.certificate
        if cert is None or cert.height <= height or self.fetching is not None:
            return []
        members = epoch.set_of(cert.height)
        if members is None or (cert.height, cert.block_hash) != (
            vc.committed_height,
            vc.committed_hash,
        ):
            return []
        try:
            verify_certificate_votes(cert, members)
        except InvalidBlock:
            return []
        return self.fetch(vc.sender, height, cert.height, now_ms)

    def peers_ahead(self) -> int:
        """The highest head that f+1 peers (so one honest peer at least) report: 0 if unknown."""
        heights = sorted((h for _, h in self.peer_status.values()), reverse=True)
        return heights[self._weak - 1] if len(heights) >= self._weak else 0

    def deadline_ms(self) -> int | None:
        return None if self.fetching is None else self.fetching.since_ms + self._timeout_ms

    def catch_up(self, height: int, now_ms: int) -> list[FetchBlocks]:
        """The fetch to make if f+1 peers are ahead of `height` and none is under way."""
        target = self.peers_ahead()
        if target <= height or self.fetching is not None:
            return []
        ahead = [p for p, (_, h) in sorted(self.peer_status.items()) if h >= target]
        fresh = [p for p in ahead if p not in self._bad_peers]
        if not fresh:
            self._bad_peers.clear()  # every peer ahead failed once: give them all a new chance
            fresh = ahead
        return self.fetch(fresh[height % len(fresh)], height, target, now_ms)

    def probe(self, height: int, now_ms: int) -> list[FetchBlocks]:
        """The blocks above `height` from the next peer of our set in turn, whatever peers
        report. A replica that lags behind a change of the set cannot check the new set's
        messages (their indices name other validators, or keys it does not know), so no
        report of a head ahead reaches it: asking is the one way it learns. What comes back
        is checked like any fetched block, so a peer gains nothing by its answer."""
        peer = self._next_peer()
        return [] if peer is None else self.fetch(peer, height, height + self._blocks_max, now_ms)

    def fetch_base(self, peer: int, height: int, base: int, now_ms: int) -> list[FetchBlocks]:
        """The blocks up to a NewView's `base` from `peer`, whose ViewChange named it; if its
        last answer gave nothing (it is down, or no longer in the set: it may never answer),
        from the next peer in turn: a certified block is held by a quorum."""
        other = self._next_peer() if peer in self._bad_peers else None
        return self.fetch(peer if other is None else other, height, base, now_ms)

    def _next_peer(self) -> int | None:
        """Each other validator of the set in turn (None: a set of one has no one to ask)."""
        size = self._size
        if size < 2:
            return None
        self._probes += 1
        return (self._index + 1 + self._probes % (size - 1)) % size

    def fetch(self, peer: int, height: int, target: int, now_ms: int) -> list[FetchBlocks]:
        """Ask `peer` for the blocks above `height` up to `target` (a bounded number), unless a
        fetch is under way."""
        if self.fetching is not None or peer == self._index:
            return []
        self.fetching = Fetching(peer, now_ms)
        return [FetchBlocks(peer, height + 1, min(target, height + self._blocks_max))]

    def answered(self, peer: int) -> bool:
        """The fetch from `peer` is answered (or gave up on); False if we no longer wait."""
        if self.fetching is None or self.fetching.peer != peer:
            return False
        self.fetching = None
        return True

    def new_epoch(self, index: int, quorums: Quorums) -> None:
        """The set changed: indices name other validators, so what peers reported goes (a
        fetch under way stays: its blocks are checked like any other)."""
        self._index, self._size, self._weak = index, quorums.n, quorums.weak
        self.peer_status.clear()
        self._bad_peers.clear()

    def apply_answer(
        self, peer: int, fetched: tuple[tuple[Block, Certificate], ...],
        commit: Callable[[Block, Certificate], bool | None], counts: Counter[str],
    ) -> int:  # fmt: skip
        """Hand the blocks of `peer`'s answer (or of its time-out: none) to `commit` in order,
        which checks each against the set of its own epoch (`check_certified`: one block may
        end the epoch) and says whether it applied it (None: committed already; False: and
        stop). Counts a forged answer (`fetch_invalid`) and one with nothing to apply
        (`fetch_failures`); a peer whose answer gave nothing is asked last next time. Returns
        the number of blocks applied."""
        if not self.answered(peer):
            return 0  # an answer we no longer wait for
        applied = forged = 0
        for block, cert in fetched:
            try:
                done = commit(block, cert)
            except InvalidBlock:
                forged = 1
                break
            applied += done is not None
            if done is False:
                break
        counts["fetch_invalid"] += forged
        counts["fetch_failures"] += not applied
        if applied:
            self._bad_peers.discard(peer)
        else:
            self._bad_peers.add(peer)
        return applied


def check_certified(block: Block, cert: Certificate, head: ChainHead, genesis: Genesis) -> None:
    """A fetched block is trusted only if it extends our head and carries a valid certificate."""
    header = block.header
    if header.height != head.height + 1 or header.prev_hash != head.hash:
        raise InvalidBlock("fetched block does not extend the head")
    if header.history_root != head.history.root():
        raise InvalidBlock("fetched block has a wrong history root")
    check_body(block)
    verify_certificate(cert, block, genesis)

"""What an operator watches on a running node: peers up and down, quorum, view changes,
catch-up, refused blocks, and the readiness they add up to.

`Watch` owns when each peer was last heard (a peer message that decoded), and the state of each
transition it reports. It learns from three calls: `heard(peer)` from the peer endpoint,
`after_event()` from the shell after every event the replica handled, and `tick()` from a timer
(a silent peer is noticed only by time passing). Each transition is logged once at INFO, as a
structured line whose `event` field names it, and counted once (node/metrics.py); nothing else
logs or counts these events. It reads the replica and never changes it.

A peer is up while it has been heard within `PEER_SILENCE_TICKS` retransmit intervals (every
replica broadcasts its status at each interval, so a live peer is never silent that long), or
`PEER_UNREACHABLE_SILENCE_TICKS` once a message to it could not be delivered. A
quorum is reachable while this node and the peers up make a commit quorum. The node is ready
(`/readyz`) when it is a validator of the set in force (not `following` the chain), in a view
(no view change under way), a quorum is reachable, and it is not catching up.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from consensus.replica import Replica
from node.metrics import Metrics

log = logging.getLogger("cityledger.node.health")

# Retransmit intervals without a message before a peer is down: long enough that a loaded
# machine's pauses do not make peers flap, short enough that /readyz says so within seconds.
PEER_SILENCE_TICKS: Final = 6
# A peer that cannot be reached at all (a send failed) is down after this much silence already.
PEER_UNREACHABLE_SILENCE_TICKS: Final = 2
REFUSED_BLOCK_COUNTERS: Final = {  # replica counters that mean a block was refused, and why
    "invalid_message:invalid_block": "invalid_block",
    "invalid_message:block_mismatch": "block_mismatch",
    "invalid_message:stamp": "stamp",
    "fetch_invalid": "fetched_block_invalid",
    "equivocation": "equivocation",  # a second, conflicting proposal for a height
}

# Reasons `/readyz` gives (stable codes)
NOT_STARTED: Final = "not_started"
STOPPED: Final = "stopped"
VIEW_CHANGE: Final = "view_change"
NO_QUORUM: Final = "no_quorum"
CATCHING_UP: Final = "catching_up"
FOLLOWING: Final = "following"  # not a validator of the set in force: it follows the chain


@dataclass(frozen=True)
class Readiness:
    ready: bool
    reason: str | None
    detail: str


@dataclass
class _CatchUp:
    from_height: int
    target: int
    since_ms: int


class Watch:
    def __init__(self, replica: Replica, metrics: Metrics, clock: Callable[[], int]) -> None:
        self._metrics = metrics
        self._clock = clock
        self._silence_ms = PEER_SILENCE_TICKS * replica.config.retransmit_ms
        self._unreachable_ms = PEER_UNREACHABLE_SILENCE_TICKS * replica.config.retransmit_ms
        self._heard_ms: dict[str, int] = {}  # by validator id
        self._up: dict[str, bool] = {}  # the other validators of the set the replica is in
        self.started = False
        self.use(replica)
        for reason in REFUSED_BLOCK_COUNTERS.values():
            metrics.blocks_refused.labels(reason)

    def use(self, replica: Replica) -> None:
        """Watch `replica` (the node's new one, once a set seats it again)."""
        self._replica = replica
        self._members = replica.epoch.members
        self._has_quorum: bool | None = None  # None: not yet known (the node just started)
        self._view = replica.view
        self._in_view_change = replica.in_view_change
        self._view_change_since_ms = self._clock() if replica.in_view_change else 0
        self._catch_up: _CatchUp | None = None
        self._refused = {name: replica.counters.get(name, 0) for name in REFUSED_BLOCK_COUNTERS}
        self._follow_set()

    # --- peers and quorum --------------------------------------------------------------------

    def _follow_set(self) -> None:
        """Watch the other validators of the set the replica is in now: one that joined is
        down until heard, one that left is no longer watched (and its series reads 0)."""
        self._members = members = self._replica.epoch.members
        own = None if self._replica.retired else self._replica.validator_id
        ids = [v.id for v in members.validators if v.id != own]
        for gone in [p for p in self._up if p not in ids]:
            del self._up[gone]
            self._metrics.peer_up.labels(gone).set(0)
        for peer in ids:
            if peer not in self._up:
                self._up[peer] = False  # every series a dashboard shows exists from the start
                self._metrics.peer_up.labels(peer).set(0)
                self._metrics.peer_downs.labels(peer)

    @property
    def _quorum(self) -> int:
        return self._members.quorums.commit

    def heard(self, peer: int) -> None:
        """A message from the validator at index `peer` of the replica's set decoded: it is up."""
        if self._replica.epoch.members is not self._members:
            self._follow_set()
        validators = self._members.validators
        peer_id = validators[peer].id if 0 <= peer < len(validators) else None
        if peer_id is None or peer_id not in self._up:
            return
        self._heard_ms[peer_id] = self._clock()
        if not self._up[peer_id]:
            self._set_peer(peer_id, up=True)
            self._check_quorum()

    def unreachable(self, peer_id: str) -> None:
        """A message to `peer_id` could not be delivered: down, if it has been silent a while."""
        if (
            self._up.get(peer_id)
            and self._clock() - self._heard_ms.get(peer_id, 0) > self._unreachable_ms
        ):
            self._set_peer(peer_id, up=False)
            self._check_quorum()

    def tick(self) -> None:
        """Time passed: peers silent for too long are down."""
        if self._replica.epoch.members is not self._members:
            self._follow_set()
        now = self._clock()
        for peer, up in list(self._up.items()):
            if up and now - self._heard_ms.get(peer, 0) > self._silence_ms:
                self._set_peer(peer, up=False)
        self._check_quorum()

    def peers_up(self) -> dict[str, bool]:
        return dict(self._up)

    def reachable(self) -> int:
        """Validators reachable from here, this one included."""
        return 1 + sum(self._up.values())

    def _set_peer(self, peer_id: str, *, up: bool) -> None:
        self._up[peer_id] = up
        self._metrics.peer_up.labels(peer_id).set(int(up))
        if up:
            log.info("peer up", extra={"event": "peer_up", "peer": peer_id})
        else:
            self._metrics.peer_downs.labels(peer_id).inc()
            silent = self._clock() - self._heard_ms.get(peer_id, 0)
            log.info("peer down", extra={"event": "peer_down", "peer": peer_id,
                                         "silent_ms": silent})  # fmt: skip

    def _check_quorum(self) -> None:
        reachable = self.reachable()
        has = reachable >= self._quorum
        self._metrics.quorum_reachable.set(int(has))
        if has == self._has_quorum or (self._has_quorum is None and not has):
            return
        self._has_quorum = has
        extra = {"reachable": reachable, "quorum": self._quorum}
        if has:
            log.info("quorum reachable", extra={"event": "quorum_reachable", **extra})
        else:
            self._metrics.quorum_losses.inc()
            log.info("quorum lost", extra={"event": "quorum_lost", **extra})

    # --- what the replica went through ---------------------------------------------------------

    def after_event(self) -> None:
        """The replica handled an event: report its view change, catch-up and refused blocks."""
        self._check_view()
        self._check_catch_up()
        self._check_refused()

    def _check_view(self) -> None:
        r = self._replica
        if (r.view, r.in_view_change) == (self._view, self._in_view_change):
            return
        if r.in_view_change and (r.view != self._view or not self._in_view_change):
            if not self._in_view_change:
                self._view_change_since_ms = self._clock()
            self._metrics.view_changes.inc()
            log.info("view change started", extra={
                "event": "view_change_started", "view": r.view, "from_view": self._view,
                "height": r.committed_height,
            })  # fmt: skip
        elif not r.in_view_change:
            self._metrics.new_views.inc()
            log.info("view change finished", extra={
                "event": "view_change_finished", "view": r.view,
                "primary": r.epoch.members.validators[r.primary].id,
                "height": r.committed_height,
                "duration_ms": self._clock() - self._view_change_since_ms if self._in_view_change
                else 0,
            })  # fmt: skip
        self._view, self._in_view_change = r.view, r.in_view_change

    def _check_catch_up(self) -> None:
        r = self._replica
        fetching = r.catchup.fetching is not None
        height = r.committed_height
        if self._catch_up is None:
            if not fetching:
                return
            target = max(r.catchup.peers_ahead(), height + 1)
            self._catch_up = _CatchUp(height, target, self._clock())
            self._metrics.catch_ups.inc()
            log.info("catch-up started", extra={"event": "catch_up_started", "height": height,
                                                "target": target})  # fmt: skip
            return
        if fetching:
            self._catch_up.target = max(self._catch_up.target, r.catchup.peers_ahead())
        elif height >= self._catch_up.target:
            done = self._catch_up
            self._catch_up = None
            log.info("catch-up finished", extra={
                "event": "catch_up_finished", "height": height,
                "blocks": height - done.from_height, "duration_ms": self._clock() - done.since_ms,
            })  # fmt: skip

    def _check_refused(self) -> None:
        counters = self._replica.counters
        for name, reason in REFUSED_BLOCK_COUNTERS.items():
            now = counters.get(name, 0)
            for _ in range(now - self._refused[name]):
                self._metrics.blocks_refused.labels(reason).inc()
                height = self._replica.committed_height
                log.info("block refused", extra={"event": "block_refused", "reason": reason,
                                                 "height": height})  # fmt: skip
            self._refused[name] = now

    # --- readiness -----------------------------------------------------------------------------

    @property
    def catching_up(self) -> bool:
        return self._catch_up is not None

    def readiness(self, *, closed: bool) -> Readiness:
        """Ready, or the first reason not to be (in the order a node recovers them)."""
        reason, detail = self._not_ready(closed=closed)
        if reason is not None:
            return Readiness(ready=False, reason=reason, detail=detail)
        return Readiness(ready=True, reason=None, detail=detail)

    def _not_ready(self, *, closed: bool) -> tuple[str | None, str]:
        r = self._replica
        reachable, n = self.reachable(), len(self._members.validators)
        if closed:
            return STOPPED, "the node is shutting down or has failed"
        if not self.started:
            return NOT_STARTED, "the node is starting"
        if r.retired:  # it votes nothing: no quorum of its own to count
            return FOLLOWING, "not a validator of the set in force: following the chain"
        if reachable < self._quorum:  # first: without a quorum no view change can end
            return NO_QUORUM, f"{reachable} of {n} validators reachable, a quorum is {self._quorum}"
        if r.in_view_change:
            return VIEW_CHANGE, f"a view change to view {r.view} is under way"
        if self._catch_up is not None:
            target = self._catch_up.target
            return CATCHING_UP, f"catching up from height {r.committed_height} to {target}"
        return None, f"in view {r.view} with {reachable} of {n} validators reachable"

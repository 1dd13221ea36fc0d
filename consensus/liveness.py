"""When this replica is late: the state its liveness deadlines are derived from.

Owns the moment of the last progress (a commit, a new view, or an event with nothing pending:
nothing waits, so nothing is late), the retransmit tick (when it last ran, and whether the head
moved between the last two ticks) and the censorship watch (consensus/censorship.py). From them
it derives the PROGRESS, CENSORSHIP and RETRANSMIT deadlines, so no field mirrors an armed
timer. It never decides what a deadline that came means, and emits nothing: the replica does.
"""

from ledger.block import Block
from ledger.genesis import ConsensusParams

from consensus.censorship import CensorshipWatch
from consensus.events import Timer
from consensus.pool import TxPool


class Ticker:
    """The retransmit tick: when it last ran (its next deadline follows), and whether the
    committed head moved between the last two ticks (if not, the replica is stalled)."""

    def __init__(self, period_ms: int) -> None:
        self._period_ms = period_ms
        self._last_ms: int | None = None  # None before Start
        self._height = -1  # the committed height at the last tick

    def start(self, now_ms: int) -> None:
        self._last_ms = now_ms

    def tick(self, now_ms: int, height: int) -> bool:
        """A tick at `now_ms` with the head at `height`: True if it did not move since."""
        stalled = height == self._height
        self._last_ms, self._height = now_ms, height
        return stalled

    def deadline_ms(self) -> int | None:
        return None if self._last_ms is None else self._last_ms + self._period_ms


class Liveness:
    def __init__(self, params: ConsensusParams, retransmit_ms: int) -> None:
        self._timeout_ms = params.view_change_timeout_ms
        self._progress_ms = 0
        self._ticker = Ticker(retransmit_ms)
        self._censorship = CensorshipWatch(params)

    def new_params(self, params: ConsensusParams) -> None:
        """The consensus parameters of a new epoch."""
        self._timeout_ms = params.view_change_timeout_ms
        self._censorship.params = params

    def start(self, now_ms: int) -> None:
        self._progress_ms = now_ms
        self._censorship.new_view(now_ms)
        self._ticker.start(now_ms)

    def progressed(self, now_ms: int) -> None:
        """A commit, or nothing waits: pending work is measured from here."""
        self._progress_ms = now_ms

    def new_view(self, now_ms: int) -> None:
        self._progress_ms = now_ms
        self._censorship.new_view(now_ms)

    def committed(self, block: Block, now_ms: int) -> None:
        """`block` committed through consensus (never call it for state transfer)."""
        self._censorship.committed(block, now_ms)

    def tick(self, now_ms: int, height: int) -> bool:
        """The retransmit tick ran with the head at `height`: True if the head is stalled."""
        return self._ticker.tick(now_ms, height)

    def passed_over(self, pool: TxPool, now_ms: int) -> bool:
        return self._censorship.passed_over(pool, now_ms)

    def deadlines(self, pool: TxPool, *, busy: bool, normal: bool) -> dict[Timer, int | None]:
        """The deadlines owned here: PROGRESS while work waits in the normal case, CENSORSHIP
        in the normal case, RETRANSMIT once started."""
        return {
            Timer.PROGRESS: self._progress_ms + self._timeout_ms if normal and busy else None,
            Timer.CENSORSHIP: self._censorship.deadline_ms(pool) if normal else None,
            Timer.RETRANSMIT: self._ticker.deadline_ms(),
        }

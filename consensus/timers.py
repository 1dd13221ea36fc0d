"""The deadlines the shell has been told, the timer actions that keep it up to date, and the
retransmit tick.

The replica derives every deadline from its state after each event; this records what the
shell was last told (one entry per timer, nothing else) so that only changes go out: a
`SetTimer` when a deadline appears or moves, a `CancelTimer` when it goes away. A `Timeout`
means the last deadline given for that timer has come, and the shell no longer holds it.
"""

from collections.abc import Mapping

from consensus.events import Action, CancelTimer, SetTimer, Timer


class Timers:
    def __init__(self) -> None:
        self._armed: dict[Timer, int] = {}

    def fired(self, timer: Timer) -> None:
        self._armed.pop(timer, None)

    def update(self, wanted: Mapping[Timer, int | None]) -> list[Action]:
        actions: list[Action] = []
        for timer, at_ms in wanted.items():
            if at_ms == self._armed.get(timer):
                continue
            if at_ms is None:
                del self._armed[timer]
                actions.append(CancelTimer(timer))
            else:
                self._armed[timer] = at_ms
                actions.append(SetTimer(timer, at_ms))
        return actions


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

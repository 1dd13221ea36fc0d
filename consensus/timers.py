"""The deadlines the shell has been told, and the timer actions that keep it up to date.

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
        """The actions that bring the shell to `wanted`, in the order the timers are declared
        (the order of two deadlines at the same moment does not depend on who derived them)."""
        actions: list[Action] = []
        for timer in Timer:
            if timer not in wanted:
                continue
            at_ms = wanted[timer]
            if at_ms == self._armed.get(timer):
                continue
            if at_ms is None:
                del self._armed[timer]
                actions.append(CancelTimer(timer))
            else:
                self._armed[timer] = at_ms
                actions.append(SetTimer(timer, at_ms))
        return actions

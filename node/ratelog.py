"""One log line per cause per interval: a logging filter for warnings and errors.

An attacker who can make a node fail the same way a thousand times a second must not be able
to make it write a thousand lines (or tracebacks) a second. `RateLimit` lets the first record
of each cause (logger, level and message template, before its arguments are filled in) through,
drops the others for `interval_s`, and adds to the next one it lets through how many it dropped
(`suppressed`). Records below WARNING pass untouched: they are the node's story (view changes,
peers up and down), already one per event. It keeps at most `CAUSES_MAX` causes.
"""

import logging
import time
from collections.abc import Callable
from typing import Final

LOG_INTERVAL_S: Final = 10.0
CAUSES_MAX: Final = 1024


class RateLimit(logging.Filter):
    def __init__(
        self, interval_s: float = LOG_INTERVAL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self._interval_s = interval_s
        self._clock = clock
        self._causes: dict[tuple[str, int, str], tuple[float, int]] = {}  # -> (until, dropped)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        cause = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        until, dropped = self._causes.get(cause, (0.0, 0))
        if now < until:
            self._causes[cause] = (until, dropped + 1)
            return False
        if len(self._causes) >= CAUSES_MAX:
            self._causes = {c: v for c, v in self._causes.items() if v[0] > now}
            if len(self._causes) >= CAUSES_MAX:  # every slot busy: one more line is fine
                return True
        self._causes[cause] = (now + self._interval_s, 0)
        if dropped:
            record.suppressed = dropped
        return True

"""Heavy reads off the event loop: a small pool of reader threads with a bounded queue and a
bounded share of the node's time.

The event loop carries consensus: a vote that waits behind a 10,000-version history page waits
with every other replica. So the routes that read the store at length (history pages, tx and
block lookups, proofs) hand their work to `ReadPool.run`, which
- runs it on `READ_THREADS` threads of its own (plyvel lets go of the GIL while LevelDB reads;
  the Python part shares the GIL with the loop, which gets it back at every switch interval);
- keeps each thread's busy share at most `share`: after a job that took t seconds of the
  thread's CPU, the thread rests t * (1 - share) / share before its next one, so a stream of
  heavy reads gets its share of the machine and never all of it;
- admits at most `queue_max` jobs waiting or running; one more is refused at once (`ReadsBusy`,
  a 503 with a reason and Retry-After) instead of queueing without bound.
It must never run anything that changes the store or the replica: reads only.
"""

import asyncio
import functools
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Final, TypeVar

READ_THREADS: Final = 1
READ_SHARE_DEFAULT: Final = 0.25  # of one core, for reads in all
READ_REST_S_MAX: Final = 2.0  # the longest rest after one job (a job is bounded by its page)

T = TypeVar("T")


class ReadsBusy(Exception):
    """The read queue is full: the caller answers 503 with this reason."""


class ReadPool:
    """`run(fn, *args)`: `fn(*args)` on a reader thread, awaited; `close()` when done."""

    def __init__(self, *, queue_max: int, share: float = READ_SHARE_DEFAULT) -> None:
        assert 0 < share <= 1
        assert queue_max >= 1
        self._executor = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="reader")
        self._queue_max = queue_max
        self._share = share
        self._admitted = 0
        self._rest_until = threading.local()

    @property
    def admitted(self) -> int:
        """Jobs waiting or running now."""
        return self._admitted

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        if self._admitted >= self._queue_max:
            raise ReadsBusy(f"{self._admitted} reads are queued or running: retry later")
        self._admitted += 1
        try:
            job = functools.partial(self._job, fn, *args)
            return await asyncio.get_running_loop().run_in_executor(self._executor, job)
        finally:
            self._admitted -= 1

    def _job(self, fn: Callable[..., T], *args: object) -> T:
        """On the reader thread: rest off the last job's excess, then run this one."""
        rest_s = getattr(self._rest_until, "value", 0.0) - time.monotonic()
        if rest_s > 0:
            time.sleep(rest_s)
        started = time.thread_time()
        try:
            return fn(*args)
        finally:
            used = time.thread_time() - started
            rest = min(used * (1 - self._share) / self._share, READ_REST_S_MAX)
            self._rest_until.value = time.monotonic() + rest

    def close(self) -> None:
        """Wait for the job under way (the store closes after this), drop the queued ones."""
        self._executor.shutdown(wait=True, cancel_futures=True)

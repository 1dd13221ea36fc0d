"""Who follows the chain's events (`GET /v1/events`), and the committed blocks handed to each.

The shell calls `committed(block, alerts, governance)` on the event loop once a block is in the
store (with the risk alerts and governance events it gave); the hub appends it to every
subscriber's queue and wakes the subscriber. Each queue holds at most `queue_blocks_max` blocks
(shared objects: the blocks are not copied per subscriber): a subscriber that falls that far behind
is dropped with a reason, never buffered without limit, and resumes by reconnecting with its last
event id (node/events.py reads what it missed from the store). At most `subscribers_max`
subscribers follow at once. No I/O, no store.
"""

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Final

from ledger.block import Block
from ledger.kinds.risks import Alert
from node.govevents import GovEvent

SUBSCRIBERS_MAX: Final = 64
QUEUE_BLOCKS_MAX: Final = 256  # committed blocks one subscriber may have left unsent

SLOW: Final = "slow_subscriber"
SHUTTING_DOWN: Final = "shutting_down"


@dataclass(frozen=True)
class Committed:
    """A committed block, the risk alerts it raised (in the order the store keeps them) and
    its governance events (node/govevents.py)."""

    block: Block
    alerts: tuple[Alert, ...] = ()
    governance: tuple[GovEvent, ...] = ()

    @property
    def height(self) -> int:
        return self.block.height


@dataclass(eq=False)  # each subscriber is itself (hashed by identity)
class Subscriber:
    queue: deque[Committed] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    dropped: str | None = None  # the reason code once dropped
    detail: str = ""

    def drop(self, reason: str, detail: str) -> None:
        if self.dropped is None:
            self.dropped, self.detail = reason, detail
            self.queue.clear()
        self.wake.set()


class EventHub:
    def __init__(
        self, *, subscribers_max: int = SUBSCRIBERS_MAX, queue_blocks_max: int = QUEUE_BLOCKS_MAX
    ) -> None:
        self._subscribers: set[Subscriber] = set()
        self._subscribers_max = subscribers_max
        self._queue_blocks_max = queue_blocks_max
        self.closed = False

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    @property
    def capacity(self) -> int:
        return self._subscribers_max

    def subscribe(self) -> Subscriber | None:
        """A new subscriber, or None when `subscribers_max` follow already (or closed)."""
        if self.closed or len(self._subscribers) >= self._subscribers_max:
            return None
        subscriber = Subscriber()
        self._subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)

    def committed(
        self, block: Block, alerts: tuple[Alert, ...] = (), governance: tuple[GovEvent, ...] = ()
    ) -> None:
        item = Committed(block, alerts, governance)
        for subscriber in self._subscribers:
            if subscriber.dropped is not None:
                continue
            if len(subscriber.queue) >= self._queue_blocks_max:
                subscriber.drop(SLOW, f"{len(subscriber.queue)} committed blocks unsent: "
                                "reconnect with the last event id")  # fmt: skip
                continue
            subscriber.queue.append(item)
            subscriber.wake.set()

    def close(self) -> None:
        """End every subscription (the node is stopping)."""
        self.closed = True
        for subscriber in self._subscribers:
            subscriber.drop(SHUTTING_DOWN, "the node is shutting down")

"""Following a node's event stream (`GET /v1/events`, docs/protocol.md "Events"): the parser of
Server-Sent Events and the rule of a resuming subscription, shared by `Client.events` and
`AsyncClient.events`. No I/O here.

A subscription is resumable: every event with an id moves `last_id`; when a stream ends (the
node dropped a slow subscriber with a `dropped` event, restarted, or the connection broke) the
client reconnects with `Last-Event-ID: last_id`, so it misses nothing and sees nothing twice.
After `RECONNECTS_MAX` ends in a row with no event between them it gives up and raises
`EventStreamEnded`, which names the last id to resume from later.
"""

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final

from cli.client.core import query
from cli.client.errors import ClientError

EVENTS_PATH: Final = "/v1/events"
RECONNECTS_MAX: Final = 5
RECONNECT_PAUSE_S: Final = 1.0  # a pause before reconnecting, not a wait for a condition
DROPPED: Final = "dropped"  # the node's last event on a stream it ends (a slow subscriber)


class EventStreamEnded(ClientError):
    """The stream ended `RECONNECTS_MAX` times in a row without an event; `last_id` is where a
    later subscription resumes (None: nothing was seen)."""

    def __init__(self, url: str, last_id: str | None) -> None:
        super().__init__(f"the event stream of {url} ended {RECONNECTS_MAX} times in a row; "
                         f"resume from the last id {last_id}")  # fmt: skip
        self.last_id = last_id


@dataclass(frozen=True)
class Event:
    """One event: `id` (the resume point, "height" or "height:position"), `event` (tx, alert,
    block, ...), `data` (its JSON, decoded; the raw text if it is not JSON)."""

    id: str | None
    event: str
    data: Any


class EventParser:
    """Server-Sent Events, a line at a time: `line()` returns an event when one is complete."""

    def __init__(self) -> None:
        self._id: str | None = None
        self._event = "message"
        self._data: list[str] = []

    def line(self, text: str) -> Event | None:
        if text == "":
            if not self._data:
                self._event = "message"
                return None
            raw = "\n".join(self._data)
            try:
                data = json.loads(raw)
            except ValueError:
                data = raw
            done = Event(self._id, self._event, data)
            self._event, self._data = "message", []
            return done
        if text.startswith(":"):
            return None  # a comment: the node's keep-alive
        name, _, value = text.partition(":")
        value = value.removeprefix(" ")
        if name == "id":
            self._id = value
        elif name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        return None


def parse(lines: Iterable[str]) -> Iterator[Event]:
    parser = EventParser()
    for text in lines:
        event = parser.line(text)
        if event is not None:
            yield event


class Subscription:
    """Where a resuming subscription stands: what to ask for next and when to give up."""

    def __init__(
        self, url: str, *, from_height: int | None, prefix: str, last_id: str | None
    ) -> None:
        if from_height is not None and from_height < 1:
            raise ValueError("events start at block 1 or later")
        self.url = url
        self.from_height = from_height
        self.prefix = prefix
        self.last_id = last_id
        self._ends = 0

    def path(self) -> str:
        """The request path: `from` only until an id is known (the id then says where)."""
        start = None if self.last_id else self.from_height
        return EVENTS_PATH + query(**{"from": start, "prefix": self.prefix or None})

    def headers(self) -> dict[str, str]:
        return {"Last-Event-ID": self.last_id} if self.last_id else {}

    def take(self, event: Event) -> bool:
        """Record `event`; False when it ends this stream (the node dropped the subscriber)."""
        self._ends = 0
        if event.event == DROPPED:
            return False
        if event.id is not None:
            self.last_id = event.id
        return True

    def ended(self) -> None:
        """A stream ended; raise `EventStreamEnded` if too many did in a row."""
        self._ends += 1
        if self._ends > RECONNECTS_MAX:
            raise EventStreamEnded(self.url, self.last_id)

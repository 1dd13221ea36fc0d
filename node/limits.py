"""What a connection may cost the node before anyone knows who is on the other end.

This module owns the limits an unauthenticated peer meets and the rules that apply them, as
sans-I/O code: `Framing` follows one connection's HTTP/1.1 request framing from the bytes it
is fed (with `now` as an input), and `Admission` decides which connections a listener takes.
`node.listener` feeds them from the sockets; nothing here touches a socket, a clock or aiohttp.

Framing is deliberately shallow: it finds where each request's header block ends (CR LF CR
LF), reads Content-Length and Transfer-Encoding from it, and counts the body bytes; aiohttp
still parses every request. What it adds is what aiohttp has no bound for:
- a header block must be complete `header_timeout_ms` after its first byte (or after the
  connection opened, for the first request) and hold at most `header_bytes_max` bytes: a
  slowloris client or a header stuffer is answered 408 / 431 and closed;
- a body must arrive within `body_timeout_ms` plus its length at `body_rate_min` bytes/s: a
  half-sent body is answered 408 and closed; a body without a Content-Length (chunked) is 411;
- between requests, while the node works on one, no timer runs (aiohttp's keep-alive timeout,
  set to `idle_timeout_ms`, closes a connection idle after its answer).
"""

from dataclasses import dataclass
from typing import Final

_HEADER_END: Final = b"\r\n\r\n"


@dataclass(frozen=True)
class Limits:
    """Every limit of a listener, each configurable in node.toml (`node.config`)."""

    connections_max: int = 1024
    connections_per_source_max: int = 256
    header_timeout_ms: int = 10_000
    idle_timeout_ms: int = 60_000
    body_timeout_ms: int = 10_000
    body_rate_min: int = 4 * 1024 * 1024  # bytes/s a body must at least arrive at, after the above
    handshake_timeout_ms: int = 10_000  # TLS listeners: the handshake's own deadline
    header_bytes_max: int = 32 * 1024  # a request's whole header block
    header_line_bytes_max: int = 8190  # the request line, and each header field
    headers_max: int = 64  # header fields in one request
    wait_requests_max: int = 256  # `?wait=true` requests waiting at once
    bodies_bytes_max: int = 128 * 1024 * 1024  # request bodies being read, all requests together
    fd_reserve: int = 256  # descriptors kept for the store, peers, logs: not for connections


@dataclass(frozen=True)
class Refusal:
    """Why a connection is closed: the status, error code and reason of the answer it gets."""

    status: int
    code: str
    reason: str


HEADER_TIMEOUT: Final = Refusal(408, "timeout", "the request headers did not arrive in time")
BODY_TIMEOUT: Final = Refusal(408, "timeout", "the request body did not arrive in time")
HEADERS_TOO_LARGE: Final = Refusal(431, "too_large", "the request headers are too large")
LENGTH_REQUIRED: Final = Refusal(411, "length_required", "send the body with a Content-Length")
TOO_MANY: Final = Refusal(503, "busy", "too many connections: retry later")
TOO_MANY_FROM_SOURCE: Final = Refusal(503, "busy", "too many connections from this address")


class Framing:
    """One connection's request framing; `feed` and `expired` say when to close it."""

    def __init__(self, limits: Limits, now_ms: int) -> None:
        self._limits = limits
        self._head = bytearray()  # the header block seen so far (bounded by header_bytes_max)
        self._body_left = 0
        self.requests = 0  # header blocks completed on this connection
        # The first request must start and end in time; later ones once their first byte came.
        self.deadline_ms: int | None = now_ms + limits.header_timeout_ms
        self.opened_ms = now_ms

    @property
    def in_headers(self) -> bool:
        """Inside a header block (or waiting for the first): the state a stalled client holds."""
        return self._body_left == 0 and (self.requests == 0 or bool(self._head))

    def feed(self, data: bytes, now_ms: int) -> Refusal | None:
        """Account for bytes received; a `Refusal` if the connection must be closed."""
        view = memoryview(data)
        while view:
            if self._body_left:
                taken = min(self._body_left, len(view))
                self._body_left -= taken
                view = view[taken:]
                if not self._body_left:
                    self.deadline_ms = None  # the request is with the node now
                continue
            if not self._head and self.requests:
                self.deadline_ms = now_ms + self._limits.header_timeout_ms
            searched = max(0, len(self._head) - len(_HEADER_END) + 1)
            self._head += view
            end = self._head.find(_HEADER_END, searched)
            if end < 0:
                if len(self._head) > self._limits.header_bytes_max:
                    return HEADERS_TOO_LARGE
                return None
            if end + len(_HEADER_END) > self._limits.header_bytes_max:
                return HEADERS_TOO_LARGE
            rest = self._head[end + len(_HEADER_END) :]
            refusal = self._headers_done(bytes(self._head[:end]), now_ms)
            if refusal is not None:
                return refusal
            view = memoryview(bytes(rest))
        return None

    def _headers_done(self, head: bytes, now_ms: int) -> Refusal | None:
        self._head.clear()
        self.requests += 1
        length, chunked = _framing_fields(head)
        if chunked:
            return LENGTH_REQUIRED
        self._body_left = length
        if length:
            allowance_ms = (
                self._limits.body_timeout_ms + length * 1000 // self._limits.body_rate_min
            )
            self.deadline_ms = now_ms + allowance_ms
        else:
            self.deadline_ms = None
        return None

    def expired(self, now_ms: int) -> Refusal | None:
        if self.deadline_ms is None or now_ms < self.deadline_ms:
            return None
        return BODY_TIMEOUT if self._body_left else HEADER_TIMEOUT


def _framing_fields(head: bytes) -> tuple[int, bool]:
    """Content-Length (0 if absent or unreadable: aiohttp refuses those requests itself) and
    whether a Transfer-Encoding is given."""
    length, chunked = 0, False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            text = value.strip()
            length = int(text) if text.isdigit() and len(text) <= 18 else 0
        elif name == b"transfer-encoding":
            chunked = True
    return length, chunked


class Admission:
    """Which connections a listener takes: at most `cap` in all, `per_source` from one address.

    At the cap, a new connection takes the place of the connection that has been stalled in
    its headers the longest (idle since it opened, or trickling a header block): those are
    what an attacker holds, while a validator's or client's connection that has sent whole
    requests is never the one closed. With none such, the new connection is refused."""

    def __init__(self, cap: int, per_source: int) -> None:
        self.cap = cap
        self._per_source = per_source
        self._open: dict[object, tuple[str, Framing]] = {}
        self._by_source: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._open)

    def admit(self, conn: object, source: str, framing: Framing) -> tuple[Refusal | None, object]:
        """(None, victim or None) if `conn` is taken (closing `victim` first, if any), else
        (why not, None)."""
        if self._by_source.get(source, 0) >= self._per_source:
            return TOO_MANY_FROM_SOURCE, None
        victim = None
        if len(self._open) >= self.cap:
            # `_open` is in the order the connections came: the first stalled one is the oldest.
            victim = next((c for c, (_, f) in self._open.items() if f.in_headers), None)
            if victim is None:
                return TOO_MANY, None
            self.remove(victim)
        self._open[conn] = (source, framing)
        self._by_source[source] = self._by_source.get(source, 0) + 1
        return None, victim

    def remove(self, conn: object) -> None:
        entry = self._open.pop(conn, None)
        if entry is None:
            return
        source = entry[0]
        left = self._by_source[source] - 1
        if left:
            self._by_source[source] = left
        else:
            del self._by_source[source]

    def expired(self, now_ms: int) -> list[tuple[object, Refusal]]:
        out = []
        for conn, (_, framing) in self._open.items():
            refusal = framing.expired(now_ms)
            if refusal is not None:
                out.append((conn, refusal))
        return out


class Slots:
    """A count of things under way with a ceiling (e.g. `?wait=true` requests waiting)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.taken = 0

    def take(self) -> bool:
        if self.taken >= self.capacity:
            return False
        self.taken += 1
        return True

    def give(self) -> None:
        assert self.taken > 0
        self.taken -= 1


class ByteBudget:
    """Bytes reserved by the request bodies being read, with a ceiling in all: half-sent bodies
    hold at most `capacity` bytes of memory together, however many connections send them."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.reserved = 0

    def reserve(self, size: int) -> bool:
        if self.reserved + size > self.capacity:
            return False
        self.reserved += size
        return True

    def release(self, size: int) -> None:
        assert 0 <= size <= self.reserved
        self.reserved -= size

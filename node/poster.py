"""A minimal HTTP/1.1 client for the one request peers send each other all the time: POST a
body, read the answer's status.

The peer transport posts a batch of consensus messages to every peer for every vote; with
aiohttp's client each POST cost ~150 µs of CPU (request and response objects, headers,
tracing hooks), three quarters of a block's cost at low load. This client writes the request
bytes itself on a kept-alive connection and reads only the status line and headers (and a
body, if the answer has one, which it drops), ~10 µs. The bytes on the wire are ordinary
HTTP/1.1, the same request as before (docs/protocol.md); the peer's server is unchanged.

It owns its connections to one peer (at most `connections_max` open, each carrying one
request at a time) and never retries: a failure closes that connection and raises `PostFailed`.
Answers are bounded: a head longer than the stream limit or a body over `BODY_BYTES_MAX` closes
the connection.
"""

import asyncio
import contextlib
import ssl
from typing import Final
from urllib.parse import urlsplit

HEAD_END: Final = b"\r\n\r\n"
BODY_BYTES_MAX: Final = 1024 * 1024  # an error answer's body: read and dropped
NO_BODY_STATUSES: Final = frozenset({204, 304})
INTERIM_ANSWERS_MAX: Final = 8  # 1xx answers skipped before the final one
# A connection idle this long is closed rather than reused: well inside the keep-alive time of
# the peer's server (aiohttp: 75 s), so that a POST seldom meets a connection closed under it.
IDLE_S_MAX: Final = 15.0


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class PostFailed(Exception):
    """The POST got no HTTP answer (refused, reset, timed out, not HTTP)."""


class Poster:
    """POSTs to one `http://` or `https://` origin; `close` ends its connections."""

    def __init__(
        self, url: str, *, timeout_s: float, connections_max: int,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:  # fmt: skip
        """`ssl_context`: what an https:// origin is checked with (the peer transport passes
        one that accepts only that validator's certificate and presents the node's own)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self._https = parts.scheme == "https"
        self._context = ssl_context
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/")
        self._authority = parts.netloc.rpartition("@")[2].encode()  # never credentials
        self._timeout_s = timeout_s
        self._idle: list[tuple[Connection, float]] = []  # (connection, idle since)
        self._slots = asyncio.Semaphore(connections_max)

    async def post(self, path: str, body: bytes, content_type: str) -> int:
        """The status of the answer to POST `path`; raise `PostFailed` if there is none."""
        head = (
            b"POST " + (self._prefix + path).encode() + b" HTTP/1.1\r\nHost: " + self._authority
            + b"\r\nContent-Type: " + content_type.encode()
            + b"\r\nContent-Length: " + str(len(body)).encode() + HEAD_END
        )  # fmt: skip
        async with self._slots:
            conn = self._take_idle()
            try:
                async with asyncio.timeout(self._timeout_s):
                    if conn is None:
                        conn = await self._connect()
                    status, keep = await _exchange(conn, head + body)
            except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as exc:
                if conn is not None:
                    self._discard(conn)
                raise PostFailed(f"{type(exc).__name__}: {exc}") from None
            except BaseException:  # cancelled mid-request: the connection is in an unknown state
                if conn is not None:
                    self._discard(conn)
                raise
            if keep:
                self._idle.append((conn, asyncio.get_running_loop().time()))
            else:
                self._discard(conn)
            return status

    def _take_idle(self) -> Connection | None:
        """The most recently used idle connection that is still open and not idle too long (the
        peer may have closed one when its keep-alive time ran out); those passed over on the way
        are closed and dropped."""
        now = asyncio.get_running_loop().time()
        while self._idle:
            conn, since = self._idle.pop()
            if now - since < IDLE_S_MAX and not conn[0].at_eof() and not conn[1].is_closing():
                return conn
            self._discard(conn)
        return None

    async def _connect(self) -> Connection:
        context = (self._context or ssl.create_default_context()) if self._https else None
        return await asyncio.open_connection(
            self._host, self._port, ssl=context, server_hostname=self._host if context else None
        )

    @staticmethod
    def _discard(conn: Connection) -> None:
        conn[1].close()

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for (_, writer), _since in idle:
            writer.close()
        for (_, writer), _since in idle:
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()


async def _exchange(conn: Connection, request: bytes) -> tuple[int, bool]:
    """Send one request; read its answer. (status, whether the connection can be reused)."""
    reader, writer = conn
    writer.write(request)
    await writer.drain()
    for _ in range(INTERIM_ANSWERS_MAX + 1):
        version, status, headers = await _read_head(reader)
        if status == 101:  # the connection now speaks another protocol
            raise ValueError("the peer switched protocols")
        if not 100 <= status < 200:  # 1xx: interim, the final answer follows
            break
    else:
        raise ValueError(f"more than {INTERIM_ANSWERS_MAX} interim answers")
    keep = headers.get(b"connection") != b"close" and version == b"HTTP/1.1"
    if status in NO_BODY_STATUSES:
        return status, keep
    length = headers.get(b"content-length")
    if length is None or not length.isdigit() or b"transfer-encoding" in headers:
        return status, False  # the end of the body is not known: do not reuse the connection
    if int(length) > BODY_BYTES_MAX:
        return status, False
    await reader.readexactly(int(length))
    return status, keep


async def _read_head(reader: asyncio.StreamReader) -> tuple[bytes, int, dict[bytes, bytes]]:
    """An answer's status line and headers: (version, status, headers by lower-case name)."""
    try:
        head = await reader.readuntil(HEAD_END)  # bounded by the stream's limit (64 KiB)
    except asyncio.LimitOverrunError:
        raise ValueError("answer head too long") from None
    lines = head[: -len(HEAD_END)].split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    code = rest[:3]
    if not version.startswith(b"HTTP/1.") or not code.isdigit():
        raise ValueError(f"not an HTTP answer: {lines[0][:60]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip().lower()
    return version, int(code), headers

"""node.poster against real loopback peers: what it sends, which answers it returns, when it
keeps a connection, and that every failure is `PostFailed` and costs only that connection.

`Peer` is a scripted HTTP server: it records each connection and request, and answers the
requests with its script in order of arrival. Every test is bounded by `WAIT_S`; nothing sleeps.
"""

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import pytest

from node import poster as poster_module
from node.poster import BODY_BYTES_MAX, Poster, PostFailed

WAIT_S: Final = 10.0
PATH: Final = "/peer/v1/messages"
BODY: Final = b"\x92\xa3one\xa3two"
CONTENT_TYPE: Final = "application/msgpack"
OK: Final = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


def answer(status: int, body: bytes = b"") -> bytes:
    return b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%s" % (status, len(body), body)


@dataclass(frozen=True)
class Held:
    """Answer with `answer` once the test sets `Peer.release`."""

    answer: bytes


CLOSE: Final = "close"  # close the connection without answering
SILENT: Final = "silent"  # never answer; wait for the client to hang up
Answer = bytes | Held | Literal["close", "silent"]


@dataclass
class Connection:
    writer: asyncio.StreamWriter
    requests: list[bytes] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)  # set once the peer is done


class Peer:
    """A loopback HTTP peer; `async with` starts it and closes it with all its connections."""

    def __init__(self, *script: Answer, sock: socket.socket | None = None) -> None:
        self._script = list(script)
        self._sock = sock
        self._server: asyncio.Server | None = None
        self._arrived = asyncio.Condition()
        self.connections: list[Connection] = []
        self.requests: list[bytes] = []  # in order of arrival, over all connections
        self.open_max = 0  # connections open at once
        self.release = asyncio.Event()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aenter__(self) -> "Peer":
        if self._sock is None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        else:
            self._server = await asyncio.start_server(self._serve, sock=self._sock)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._server is not None
        self.release.set()
        self._server.close()
        for conn in self.connections:
            conn.writer.close()
        await self._server.wait_closed()
        for conn in self.connections:
            await conn.closed.wait()

    async def wait_requests(self, count: int) -> None:
        async with self._arrived:
            await self._arrived.wait_for(lambda: len(self.requests) >= count)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(writer)
        self.connections.append(conn)
        open_now = sum(not c.closed.is_set() for c in self.connections)
        self.open_max = max(self.open_max, open_now)
        try:
            while (request := await read_request(reader)) is not None:
                async with self._arrived:
                    conn.requests.append(request)
                    self.requests.append(request)
                    self._arrived.notify_all()
                reply = self._script.pop(0)
                if reply == CLOSE:
                    break
                if reply == SILENT:
                    await reader.read()
                    break
                if isinstance(reply, Held):
                    await self.release.wait()
                    reply = reply.answer
                assert isinstance(reply, bytes)
                writer.write(reply)
                await writer.drain()
        except ConnectionError:
            pass  # the client reset the connection
        finally:
            writer.close()
            conn.closed.set()


async def read_request(reader: asyncio.StreamReader) -> bytes | None:
    """One request's bytes, head and body; None once the client has hung up."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.lower().split(b"\r\n")
    length = next(int(line[15:]) for line in lines if line.startswith(b"content-length:"))
    return head + await reader.readexactly(length)


@contextlib.asynccontextmanager
async def posting(url: str, **options: Any) -> AsyncIterator[Poster]:
    poster = Poster(url, **{"timeout_s": WAIT_S, "connections_max": 4} | options)
    try:
        yield poster
    finally:
        await poster.close()


@contextlib.asynccontextmanager
async def serving(*script: Answer, prefix: str = "", **options: Any) -> AsyncIterator[Any]:
    """A `Peer` with `script` and a `Poster` to it; all of it, teardown too, within `WAIT_S`."""
    async with (
        asyncio.timeout(WAIT_S),
        Peer(*script) as peer,
        posting(peer.url + prefix, **options) as poster,
    ):
        yield peer, poster


async def post(poster: Poster) -> int:
    return await poster.post(PATH, BODY, CONTENT_TYPE)


async def test_the_request_bytes_and_a_kept_alive_connection() -> None:
    script = (answer(200, b"accepted, thanks"), answer(202))
    async with serving(*script, prefix="/city/") as (peer, poster):
        assert await poster.post(PATH, BODY, CONTENT_TYPE) == 200
        # The second answer parses only if the first one's body was read to its end.
        assert await poster.post("/other", b"", "text/plain") == 202
        host = peer.url.removeprefix("http://").encode()
    assert len(peer.connections) == 1
    assert peer.connections[0].requests == [
        b"POST /city/peer/v1/messages HTTP/1.1\r\nHost: " + host + b"\r\n"
        b"Content-Type: application/msgpack\r\nContent-Length: 9\r\n\r\n" + BODY,
        b"POST /city/other HTTP/1.1\r\nHost: " + host + b"\r\n"
        b"Content-Type: text/plain\r\nContent-Length: 0\r\n\r\n",
    ]


@pytest.mark.parametrize(
    ("prefix", "target"),
    [("", PATH), ("/", PATH), ("/prefix/", "/prefix" + PATH), ("/a/b", "/a/b" + PATH)],
)
async def test_the_url_path_prefixes_the_request_path(prefix: str, target: str) -> None:
    async with serving(OK, prefix=prefix) as (peer, poster):
        assert await post(poster) == 200
    assert peer.requests[0].startswith(b"POST " + target.encode() + b" HTTP/1.1\r\n")


async def test_error_statuses_are_returned_on_the_same_connection() -> None:
    script = (answer(400, b"bad batch"), answer(503, b"busy"), answer(500))
    async with serving(*script) as (peer, poster):
        assert [await post(poster) for _ in script] == [400, 503, 500]
    assert len(peer.connections) == 1


@pytest.mark.parametrize(
    ("reply", "status"),
    [
        (b"HTTP/1.1 204 No Content\r\n\r\n", 204),
        (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 12\r\n\r\n", 304),  # no body even so
        (b"HTTP/1.1 201 Created\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", 201),
    ],
    ids=["204", "304", "keep-alive"],
)
async def test_an_answer_of_known_end_keeps_the_connection(reply: bytes, status: int) -> None:
    async with serving(reply, reply, OK) as (peer, poster):
        assert [await post(poster) for _ in range(3)] == [status, status, 200]
    assert len(peer.connections) == 1


@pytest.mark.parametrize(
    ("reply", "status"),
    [
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", 200),
        (b"HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 3\r\n\r\nbye", 200),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", 200),
        (b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n\r\n", 400),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", 200),
        (b"HTTP/1.1 413 X\r\nContent-Length: %d\r\n\r\n" % (BODY_BYTES_MAX + 1), 413),
    ],
    ids=["connection-close", "close-with-body", "http-1.0", "no-length", "chunked", "over-max"],
)
async def test_an_answer_that_ends_the_connection_is_returned_then_a_new_one_opens(
    reply: bytes, status: int
) -> None:
    async with serving(reply, OK) as (peer, poster):
        assert await post(poster) == status
        await peer.connections[0].closed.wait()  # the client hung up
        assert await post(poster) == 200
    assert [len(c.requests) for c in peer.connections] == [1, 1]


@pytest.mark.parametrize(
    ("failure", "timeout_s", "error"),
    [
        (b"hello\r\n\r\n", WAIT_S, "ValueError: not an HTTP answer"),
        (b"HTTP/1.1 OK\r\n\r\n", WAIT_S, "ValueError: not an HTTP answer"),
        (CLOSE, WAIT_S, "IncompleteReadError"),
        # Over asyncio's 64 KiB stream limit.
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70_000 + b"\r\n\r\n", WAIT_S, "head too long"),
        (SILENT, 0.2, "TimeoutError"),
    ],
    ids=["garbage", "no-status", "closed", "head-too-long", "silent"],
)
async def test_no_http_answer_raises_and_the_next_post_uses_a_new_connection(
    failure: Answer, timeout_s: float, error: str
) -> None:
    async with serving(failure, OK, timeout_s=timeout_s) as (peer, poster):
        with pytest.raises(PostFailed, match=error):
            await post(poster)
        await peer.connections[0].closed.wait()  # the client hung up
        assert await post(poster) == 200
    assert [len(c.requests) for c in peer.connections] == [1, 1]


async def test_a_refused_connection_raises_and_a_later_listener_is_reached() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound but not listening: connections are refused
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        async with asyncio.timeout(WAIT_S), posting(url) as poster:
            with pytest.raises(PostFailed, match="ConnectionRefusedError"):
                await post(poster)
            async with Peer(OK, sock=sock) as peer:  # now it listens
                assert await post(poster) == 200
    assert len(peer.connections) == 1


async def test_at_most_connections_max_are_open_and_the_others_wait() -> None:
    async with serving(*[Held(OK)] * 3, connections_max=2) as (peer, poster):
        posts = [asyncio.create_task(post(poster)) for _ in range(3)]
        await peer.wait_requests(2)
        assert len(peer.connections) == 2
        assert not any(p.done() for p in posts)
        peer.release.set()
        assert await asyncio.gather(*posts) == [200, 200, 200]
    assert peer.open_max == 2
    assert sorted(len(c.requests) for c in peer.connections) == [1, 2]  # the third waited


async def test_a_post_cancelled_mid_request_discards_its_connection() -> None:
    async with serving(SILENT, OK) as (peer, poster):
        cancelled = asyncio.create_task(post(poster))
        await peer.wait_requests(1)
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        await peer.connections[0].closed.wait()  # the client hung up
        assert await post(poster) == 200
    assert [len(c.requests) for c in peer.connections] == [1, 1]


async def test_close_closes_the_idle_connections() -> None:
    async with serving(Held(OK), OK, connections_max=2) as (peer, poster):
        held = asyncio.create_task(post(poster))
        await peer.wait_requests(1)
        assert await post(poster) == 200  # on a second connection: the first one is busy
        peer.release.set()
        assert await held == 200
        await poster.close()
        await asyncio.gather(*(c.closed.wait() for c in peer.connections))  # EOF on both
    assert [len(c.requests) for c in peer.connections] == [1, 1]


@pytest.mark.parametrize("url", ["ftp://x", "http://", "https://", "127.0.0.1:8080", ""])
def test_a_url_that_is_not_http_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="not an http"):
        Poster(url, timeout_s=1.0, connections_max=1)


async def test_interim_1xx_answers_are_skipped_for_the_final_one() -> None:
    # RFC 9110 15.2: a client parses 1xx answers it did not ask for before the final one.
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n"
    async with serving(interim + answer(200), answer(503)) as (peer, poster):
        assert [await post(poster), await post(poster)] == [200, 503]
    assert len(peer.connections) == 1


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n", "switched protocols"),
        (b"HTTP/1.1 100 Continue\r\n\r\n" * 9 + OK, "more than 8 interim answers"),
    ],
    ids=["switching-protocols", "endless-interim"],
)
async def test_a_protocol_switch_or_endless_interim_answers_fail(reply: bytes, error: str) -> None:
    async with serving(reply, OK) as (peer, poster):
        with pytest.raises(PostFailed, match=error):
            await post(poster)
        await peer.connections[0].closed.wait()
        assert await post(poster) == 200
    assert [len(c.requests) for c in peer.connections] == [1, 1]


async def test_an_idle_connection_the_peer_closed_is_not_reused() -> None:
    async with serving(OK, OK) as (peer, poster):
        assert await post(poster) == 200
        peer.connections[0].writer.close()  # the peer's keep-alive time runs out
        await peer.connections[0].closed.wait()
        assert await post(poster) == 200
    assert [len(c.requests) for c in peer.connections] == [1, 1]


async def test_a_connection_idle_too_long_is_closed_not_reused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(poster_module, "IDLE_S_MAX", 0.0)  # every idle connection is too old
    async with serving(OK, OK) as (peer, poster):
        assert await post(poster) == 200
        assert await post(poster) == 200
        await peer.connections[0].closed.wait()  # the client closed the old one
    assert [len(c.requests) for c in peer.connections] == [1, 1]


async def test_the_host_header_carries_no_credentials() -> None:
    async with Peer(OK) as peer, asyncio.timeout(WAIT_S):
        url = peer.url.replace("http://", "http://clerk:secret@")
        async with posting(url) as poster:
            assert await post(poster) == 200
        host = peer.url.removeprefix("http://").encode()
    assert b"\r\nHost: " + host + b"\r\n" in peer.requests[0]
    assert b"secret" not in peer.requests[0]

"""The node's listening socket with the limits of `node.limits` in front of aiohttp.

`GuardedSite` is an aiohttp site whose server wraps each of aiohttp's connection handlers in a
`Guard` protocol: the guard counts the connection in (`limits.Admission`), feeds every byte it
receives through that connection's `limits.Framing` before aiohttp sees it, and closes the
connection with a short JSON answer (`{"error", "reason"}`) when a limit is met. One sweep task
per site closes connections whose deadline passed. It is a layer of its own: a TLS listener
passes its `ssl` context to the site, and the guard then sees the decrypted bytes (the TLS
handshake has its own deadline, `handshake_timeout_ms`).

Descriptors: the connection cap is lowered to what the process's descriptor limit
(RLIMIT_NOFILE) leaves after `fd_reserve` (store files, peer connections, logs), so the node
never runs out of descriptors for its peers because of its clients; if `accept()` fails anyway,
asyncio pauses accepting for a second and the rate-limited log says so once per interval.
Memory: aiohttp frees a closed connection's buffers; after many closes the sweep asks the C
allocator to hand free memory back to the system (`malloc_trim`), so the node's RSS returns
once an attack ends.
"""

import asyncio
import contextlib
import ctypes
import json
import logging
import resource
import socket
import time
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import urlsplit

from aiohttp import web

from node.limits import Admission, Framing, Limits, Refusal

SWEEP_INTERVAL_S: Final = 0.25
TRIM_AFTER_CLOSES: Final = 64  # closed connections between two malloc_trim calls
CAP_MIN: Final = 16  # connections allowed however low the descriptor limit

log = logging.getLogger("cityledger.node.listener")


def _now_ms() -> int:
    return time.monotonic_ns() // 1_000_000


def _refusal_bytes(refusal: Refusal) -> bytes:
    body = json.dumps({"error": refusal.code, "reason": refusal.reason}).encode()
    head = (
        f"HTTP/1.1 {refusal.status} {refusal.code}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def connection_cap(limits: Limits) -> int:
    """`connections_max`, lowered to fit the descriptor limit less the reserve."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return limits.connections_max
    return max(CAP_MIN, min(limits.connections_max, soft - limits.fd_reserve))


class Guard(asyncio.Protocol):
    """One connection: `inner` is aiohttp's handler, which gets the bytes the limits let by."""

    def __init__(self, inner: asyncio.Protocol, site: "GuardedSite") -> None:
        self._inner = inner
        self._site = site
        self._transport: asyncio.Transport | None = None
        self.framing = Framing(site.limits, _now_ms())

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        source = str(peer[0]) if isinstance(peer, tuple) else "local"
        refusal = self._site.admit(self, source)
        self._inner.connection_made(transport)
        if refusal is not None:
            self.refuse(refusal)

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        refusal = self.framing.feed(data, _now_ms())
        if refusal is not None:
            self.refuse(refusal)
            return
        self._inner.data_received(data)

    def refuse(self, refusal: Refusal) -> None:
        """Answer `refusal` and close (what aiohttp holds for the connection goes with it)."""
        self._site.refused(refusal)
        transport = self._transport
        if transport is not None and not transport.is_closing():
            with contextlib.suppress(OSError, RuntimeError):
                transport.write(_refusal_bytes(refusal))
            transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._site.forget(self)
        self._inner.connection_lost(exc)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class GuardedSite(web.BaseSite):
    """A TCP site (or one on a bound socket) with `limits` on every connection."""

    def __init__(
        self, runner: web.BaseRunner, limits: Limits, *, host: str = "", port: int = 0,
        sock: Any = None, ssl_context: Any = None, shutdown_timeout: float = 60.0,
        on_refused: Callable[[Refusal], None] = lambda _: None,
    ) -> None:  # fmt: skip
        super().__init__(runner, shutdown_timeout=shutdown_timeout, ssl_context=ssl_context)
        self.limits = limits
        self._host, self._port, self._sock = host, port, sock
        self._admission = Admission(connection_cap(limits), limits.connections_per_source_max)
        self._on_refused = on_refused
        self._sweeper: asyncio.Task[None] | None = None
        self._closed_since_trim = 0
        self.refusals: dict[str, int] = {}  # by error code, for tests and metrics

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{self._host}:{self._port}"

    @property
    def open_connections(self) -> int:
        return len(self._admission)

    @property
    def cap(self) -> int:
        return self._admission.cap

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        handshake = self.limits.handshake_timeout_ms / 1000 if self._ssl_context else None
        where: dict[str, Any] = (
            {"sock": self._sock} if self._sock is not None
            else {"host": self._host, "port": self._port, "reuse_address": True}
        )  # fmt: skip
        self._server = await loop.create_server(
            lambda: Guard(server(), self), ssl=self._ssl_context,
            ssl_handshake_timeout=handshake, backlog=self._backlog, **where,
        )  # fmt: skip
        self._sweeper = loop.create_task(self._sweep(), name="listener-sweep")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        await super().stop()

    def admit(self, guard: Guard, source: str) -> Refusal | None:
        refusal, victim = self._admission.admit(guard, source, guard.framing)
        if victim is not None:
            assert isinstance(victim, Guard)
            log.warning("connection limit reached: closing the longest-stalled connection",
                        extra={"cap": self._admission.cap})  # fmt: skip
            victim.refuse(Refusal(503, "busy", "closed for a newer connection: the node is full"))
        if refusal is not None:
            log.warning("connection refused: %s", refusal.reason, extra={"source": source})
        return refusal

    def refused(self, refusal: Refusal) -> None:
        self.refusals[refusal.code] = self.refusals.get(refusal.code, 0) + 1
        self._on_refused(refusal)

    def forget(self, guard: Guard) -> None:
        self._admission.remove(guard)
        self._closed_since_trim += 1

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            for conn, refusal in self._admission.expired(_now_ms()):
                assert isinstance(conn, Guard)
                self._admission.remove(conn)
                conn.refuse(refusal)
            if self._closed_since_trim >= TRIM_AFTER_CLOSES:
                self._closed_since_trim = 0
                _trim_heap()


def _trim_heap() -> None:
    """Hand the C heap's free memory back to the system (glibc); elsewhere, nothing."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def validator_addresses(urls: list[str]) -> frozenset[str]:
    """The IP addresses the other validators' URLs name (numeric hosts as they are, names as
    the resolver answers at start; a name it cannot resolve gives none)."""
    out: set[str] = set()
    for url in urls:
        host = urlsplit(url).hostname
        if not host:
            continue
        try:
            infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
        except (OSError, UnicodeError):
            continue
        out.update(str(info[4][0]) for info in infos)
    return frozenset(out)

"""`Node`: one node's HTTP server and runtime, started and stopped inside a running event loop.

`node.main.run` drives one `Node` for `cityledger node run`; tests start several in one loop.
Stopping is graceful: the listener closes, `?wait=true` requests are answered, in-flight
requests finish (bounded by `SHUTDOWN_TIMEOUT_S`), then the runtime closes the store cleanly.
"""

import asyncio
import logging
import socket
from typing import Final

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from consensus.replica import ReplicaConfig
from node import tls_sites
from node.app import create_app
from node.appkeys import RUNTIME
from node.auth import PRINCIPAL
from node.config import Config, Identity, load_identity
from node.listener import GuardedSite
from node.peertrust import PeerTrust
from node.runtime import Runtime, wall_clock_ms
from node.shell import Clock

SHUTDOWN_TIMEOUT_S: Final = 5.0
ACCESS_LOGGER: Final = "cityledger.access"


class AccessLog(AbstractAccessLogger):
    """One structured INFO line per request (`access_log = true` in node.toml): method, path
    (no query), status, answer bytes, duration, remote address and the signed identity."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        principal = request.get(PRINCIPAL)
        self.logger.info("request", extra={
            "method": request.method, "path": request.path, "status": response.status,
            "bytes": response.body_length, "duration_ms": round(time * 1000, 3),
            "remote": request.remote, "identity": None if principal is None else principal.id,
        })  # fmt: skip


class Node:
    def __init__(
        self, config: Config, identity: Identity | None = None, *,
        sock: socket.socket | None = None, clock: Clock = wall_clock_ms,
        replica_config: ReplicaConfig | None = None,
    ) -> None:  # fmt: skip
        """`sock`: an already bound listening socket to serve on instead of `config`'s address
        (tests bind port 0 first, so every peer's URL is known before any node starts)."""
        self.config = config
        self._identity = identity
        self._sock = sock
        self._clock = clock
        self._replica_config = replica_config
        self._runner: web.AppRunner | None = None
        self._app: web.Application | None = None
        self.failed = asyncio.Event()  # set when the replica or the store failed: stop the node
        self.failure: BaseException | None = None
        self.site: GuardedSite | None = None  # the listener, with its limits

    def _on_failure(self, exc: BaseException) -> None:
        self.failure = exc
        self.failed.set()

    async def start(self) -> None:
        identity = self._identity or load_identity(self.config)
        contexts = tls_sites.contexts(self.config, identity)
        self._app = create_app(
            self.config, identity, clock=self._clock, replica_config=self._replica_config,
            on_failure=self._on_failure,
        )  # fmt: skip
        if contexts.trusting:  # the peer endpoints accept the validators of the set in force
            self._app[tls_sites.PEER_TRUST] = PeerTrust(identity.genesis, contexts.trusting)
        limits = self.config.limits()
        runner = web.AppRunner(
            self._app, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT_S,
            access_log=logging.getLogger(ACCESS_LOGGER) if self.config.access_log else None,
            access_log_class=AccessLog,
            keepalive_timeout=limits.idle_timeout_ms / 1000,
            max_line_size=limits.header_line_bytes_max,
            max_field_size=limits.header_line_bytes_max, max_headers=limits.headers_max,
        )  # fmt: skip
        await runner.setup()  # opens the store and starts the replica (cleanup_ctx)
        self._runner = runner
        try:
            self.site = await tls_sites.start_sites(
                runner, self.config, contexts, self._sock, limits
            )
        except BaseException:
            await self.stop()
            raise

    @property
    def runtime(self) -> Runtime:
        assert self._app is not None, "the node is not started"
        return self._app[RUNTIME]

    @property
    def port(self) -> int:
        """The port of the client API listener."""
        return self.port_of(tls_sites.API)

    def port_of(self, listener: str) -> int:
        """The port of listener `listener` (`tls_sites.API`, `PEER` or `METRICS`)."""
        assert self._app is not None, "the node is not started"
        for port, kind in self._app[tls_sites.LISTENERS].items():
            if kind == listener:
                return int(port)
        raise AssertionError(f"the node has no {listener} listener")

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is None:
            return
        for site in list(runner.sites):
            await site.stop()
        # A peer connection accepted just before the listener closed has not started waiting
        # for its first request yet; aiohttp's own close pass would miss it and the drain would
        # wait its whole timeout for it. Let it start, then close every idle connection.
        await asyncio.sleep(0)
        if runner.server is not None:
            for connection in runner.server.connections:
                connection.close()
        await runner.cleanup()  # drains in-flight requests, then closes the runtime

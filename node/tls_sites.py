"""The node's listeners: client API, peer endpoints (with the API unless `peer_listen` is set)
and /metrics, each a site of the one aiohttp application, and which routes each one serves.

With TLS (the default) every listener speaks TLS 1.3 only. The client and peer listeners
present the node certificate issued by the validator's key (`node.tls`); the client listener
presents the operator's CA-issued certificate instead when one is configured, except to a
client that names `BOUND_SERVER_NAME` in its TLS server name indication (the CLI, the client
library and the peers always do). The peer endpoints ask for a client certificate: one that
does not chain to a validator of the genesis fails the handshake; a connection without one
(the client listener also serves browsers) is answered 403 on the peer routes before any body
is read. The metrics listener speaks TLS with the bound certificate as well, and serves
/metrics and the probes (/healthz, /readyz) only. `insecure = true` turns all of it off: plain
HTTP, and a warning at every start.
"""

import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Middleware

from ledger.genesis import Genesis
from node import codec, tls
from node.codec import render
from node.config import DATA_DIR_MODE, Config, ConfigError, Identity
from node.limits import Limits
from node.listener import GuardedSite
from node.peertrust import PeerTrust

log = logging.getLogger("cityledger.node")

PEER_PREFIX: Final = "/peer/"
METRICS_PATH: Final = "/metrics"
PROBE_PATHS: Final = frozenset({"/healthz", "/readyz"})  # served on the API and metrics listeners
API: Final = "api"
PEER: Final = "peer"
METRICS: Final = "metrics"
LISTENERS: Final = web.AppKey("listeners", dict)  # local port -> API | PEER | METRICS
PEER_TRUST: Final = web.AppKey("peer_trust", PeerTrust)  # the set whose certificates count
INSECURE_WARNING: Final = (
    "insecure = true: this node serves plain HTTP without TLS; anyone on the network can read "
    "and alter its traffic, and its peer endpoints authenticate no one"
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Contexts:
    """The TLS contexts of a node's listeners (all None: insecure)."""

    api: ssl.SSLContext | None
    peer: ssl.SSLContext | None
    metrics: ssl.SSLContext | None
    trusting: tuple[ssl.SSLContext, ...] = ()  # those that ask validators for a certificate


def cert_hosts(config: Config, genesis: Genesis) -> list[str]:
    """The names the node certificate is valid for: its URL's host and the listen hosts."""
    validator = genesis.validator(config.node_id)
    hosts = [urlsplit(validator.url).hostname or ""] if validator is not None else []
    hosts.append(config.host)
    if config.peer_listen is not None:
        hosts.append(config.peer_listen[0])
    return [h for h in hosts if h and h not in ("0.0.0.0", "::")]  # noqa: S104 (names, not binds)


def contexts(config: Config, identity: Identity) -> Contexts:
    """Issue the node certificate (TLS key created if missing) and build the listeners'
    contexts; all None when `insecure`. Raise `ConfigError` for an unusable TLS key or an
    operator certificate that does not load."""
    if config.insecure:
        return Contexts(None, None, None)
    config.data_dir.mkdir(mode=DATA_DIR_MODE, parents=True, exist_ok=True)  # owner only
    try:
        bound = tls.node_identity(
            identity.key, identity.genesis, config.node_id, config.data_dir,
            cert_hosts(config, identity.genesis),
        )  # fmt: skip
    except tls.TlsError as exc:
        raise ConfigError(config.path, [f"data_dir: {exc}"]) from None
    validators = tls.anchors_pem(identity.genesis)
    separate = config.peer_listen is not None
    peer = tls.server_context(bound, validators, require_peer=True)
    # One listener for both: a client certificate is asked for, not required.
    api = tls.server_context(bound, None if separate else validators, require_peer=False)
    if config.tls_cert_file is not None and config.tls_key_file is not None:
        operator = tls.ServerIdentity(config.tls_cert_file, config.tls_key_file)
        try:
            chosen = tls.server_context(
                operator, None if separate else validators, require_peer=False
            )
        except (ssl.SSLError, OSError) as exc:
            why = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
            raise ConfigError(
                config.path, [f"tls_cert_file, tls_key_file: cannot use them ({why})"]
            ) from None
        trusting: tuple[ssl.SSLContext, ...] = (chosen, api)
        api = tls.with_bound_name(chosen, api)
    else:
        trusting = (api,)
    metrics = tls.server_context(bound, None, require_peer=False)
    if separate:
        return Contexts(api, peer, metrics, (peer,))
    return Contexts(api, None, metrics, trusting)


def follow_epochs(
    app: web.Application, members: Genesis, on_epoch: list[Callable[[Genesis], None]]
) -> None:
    """Let the peer endpoints accept the validators of the set in force (`members` now, then
    of each epoch the node enters); nothing to follow without TLS."""
    trust = app.get(PEER_TRUST)
    if trust is not None:
        trust.enter(members)
        on_epoch.append(trust.enter)


def listener_of(request: web.Request) -> str:
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    port = sockname[1] if isinstance(sockname, tuple) else -1
    kind: str = request.app[LISTENERS].get(port, API)
    return kind


def is_validator_connection(request: web.Request) -> bool:
    """Whether the connection presented a certificate issued by a validator of the set in
    force (the handshake has checked the chain to a known validator key: a certificate is
    present only if it verified; `PeerTrust` whether that key is one the set holds now)."""
    transport = request.transport
    ssl_object = None if transport is None else transport.get_extra_info("ssl_object")
    der = None if ssl_object is None else ssl_object.getpeercert(binary_form=True)
    if not der:
        return False
    trust = request.app.get(PEER_TRUST)
    return trust is None or trust.admits(der)


def make_guard(insecure: bool) -> Middleware:
    """The first middleware: which listener serves which routes, and who may call the peer
    endpoints. It runs before any handler reads a body."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.match_info.http_exception is not None:
            return await handler(request)  # no such route or method: the router's 404 or 405
        kind = listener_of(request)
        path = request.path
        if path not in PROBE_PATHS and (kind == METRICS) != (path == METRICS_PATH):
            return _refuse(request, 404, "not_found", "no such route on this listener")
        if path.startswith(PEER_PREFIX):
            if kind == API and PEER in request.app[LISTENERS].values():
                return _refuse(request, 404, "not_found", "peer endpoints are on the peer listener")
            if not insecure and not is_validator_connection(request):
                return _refuse(
                    request, 403, "forbidden",
                    "the peer endpoints accept only validators (a TLS client certificate "
                    "issued by a validator of the set in force)",
                )  # fmt: skip
        elif kind == PEER:
            return _refuse(request, 404, "not_found", "the peer listener serves /peer/ only")
        return await handler(request)

    return guard


def _refuse(request: web.Request, status: int, code: str, reason: str) -> web.StreamResponse:
    response = render(request, codec.error_body(code, reason), status)
    if request.body_exists:
        response.force_close()  # the body is never read: the connection cannot be reused
    return response


async def start_sites(
    runner: web.AppRunner,
    config: Config,
    ctx: Contexts,
    sock: socket.socket | None,
    limits: Limits,
) -> GuardedSite:
    """Start the API, peer and metrics listeners, each with the connection `limits`
    (node.listener), record which port is which, and return the API listener."""
    api = GuardedSite(runner, limits, host=config.host, port=config.port, sock=sock,
                      ssl_context=ctx.api)  # fmt: skip
    sites: list[tuple[str, web.BaseSite]] = [(API, api)]
    if config.peer_listen is not None:
        sites.append((PEER, _tcp(runner, limits, config.peer_listen, ctx.peer)))
    sites.append((METRICS, _tcp(runner, limits, config.metrics_listen, ctx.metrics)))
    ports = runner.app[LISTENERS]
    for kind, site in sites:
        await site.start()
        server = getattr(site, "_server", None)
        for s in getattr(server, "sockets", None) or ():
            ports[s.getsockname()[1]] = kind
    if config.insecure:
        log.warning(INSECURE_WARNING, extra={"node_id": config.node_id})
    log.info(
        "listening",
        extra={"node_id": config.node_id, "tls": not config.insecure,
               "listeners": {str(p): k for p, k in ports.items()}},
    )  # fmt: skip
    return api


def _tcp(
    runner: web.AppRunner,
    limits: Limits,
    address: tuple[str, int],
    context: ssl.SSLContext | None,
) -> GuardedSite:
    return GuardedSite(runner, limits, host=address[0], port=address[1], ssl_context=context)

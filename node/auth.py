"""Who is asking: the authentication of every API request, and what each identity may read.

Every `/v1` request is authenticated before any work is done for it: the middleware runs the
cheap checks first (headers well formed, identity in the configuration, timestamp inside the
window, signature not seen before), then reads the bounded body, then checks one signature
(docs/protocol.md section 16). A browser session (node/auth_sessions.py) stands in for a
signature on reads. Routes are sorted into access classes when they are added; a route that is
not in the table needs an identity. This module never touches the store or the replica.
"""

import heapq
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Middleware
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ledger import crypto
from ledger.genesis import AUDITOR, Genesis
from ledger.gov.codes import REVOKED
from ledger.gov.config import Config as GovConfig
from node import auth_request as wire
from node import codec
from node.codec import ApiError

VALIDATOR: Final = "validator"  # the role of a validator signing with its node key
ADMIN: Final = "admin"  # an organisation's governance identity (ledger/gov)
REQUEST_SKEW_MS: Final = 30_000  # how far a request's timestamp may be from the node's clock
REPLAY_ENTRIES_MAX: Final = 200_000  # signatures remembered inside the window
RETRY_AFTER_S: Final = "1"

# Access classes of routes.
OPEN: Final = "open"  # anyone: health, the API document, kinds, the explorer's files, sign-in
KEYED: Final = "keyed"  # anyone passes the gate; the handler checks the record key it reads
MEMBER: Final = "member"  # any identity of the configuration in force
CHAIN: Final = "chain"  # validators and auditors: blocks and whole-chain reads
TRANSPORT: Final = "transport"  # peer endpoints: the peer transport authenticates them

# Error codes (stable: the API and docs use them).
UNAUTHENTICATED: Final = "unauthenticated"
BAD_AUTH: Final = "bad_authentication"
UNKNOWN_IDENTITY: Final = "unknown_identity"
STALE_REQUEST: Final = "stale_request"
REPLAYED: Final = "replayed_request"
BAD_SIGNATURE: Final = "bad_signature"
FORBIDDEN: Final = "forbidden"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Clock = Callable[[], int]


@dataclass(frozen=True)
class Principal:
    """An authenticated identity: a client (clerk or auditor) or a validator."""

    id: str
    organisation: str
    role: str

    @property
    def reads_all(self) -> bool:
        return self.role in (AUDITOR, VALIDATOR)


PRINCIPAL: Final = web.RequestKey("principal", Principal)  # absent: anonymous
SessionLookup = Callable[[web.Request], "Principal | None"]


def principal_of(genesis: Genesis, identity: str) -> Principal | None:
    """The identity named `identity` in the configuration in force, or None. `genesis`: the
    configuration in force in the genesis's shape (ledger/gov/config.py)."""
    client = genesis.clients.get(identity)
    if client is not None:
        return Principal(client.id, client.organisation, client.role)
    admin = genesis.admins.get(identity)
    if admin is not None:  # reads as a clerk of its organisation, and governance records
        return Principal(admin.id, admin.organisation, ADMIN)
    validator = genesis.validator(identity)
    if validator is not None:
        return Principal(validator.id, validator.organisation, VALIDATOR)
    return None


class ReplayCache:
    """The signatures accepted inside the replay window, each kept until its request's
    timestamp leaves the window: a captured request is accepted once. Bounded: when it is
    full of live entries, new requests wait (503) rather than old ones being forgotten."""

    def __init__(self, capacity: int = REPLAY_ENTRIES_MAX) -> None:
        self.capacity = capacity
        self._expiry: dict[bytes, int] = {}
        self._heap: list[tuple[int, bytes]] = []

    def __len__(self) -> int:
        return len(self._expiry)

    def seen(self, signature: bytes) -> bool:
        return signature in self._expiry

    def add(self, signature: bytes, expires_ms: int, now_ms: int) -> None:
        while self._heap and self._heap[0][0] < now_ms:
            _, old = heapq.heappop(self._heap)
            del self._expiry[old]
        if len(self._expiry) >= self.capacity:
            error = ApiError(503, "busy", "too many signed requests inside the replay window")
            error.headers["Retry-After"] = RETRY_AFTER_S
            raise error
        self._expiry[signature] = expires_ms
        heapq.heappush(self._heap, (expires_ms, signature))


class Gate:
    """Turns a request into its Principal (or None for anonymous), or refuses it with 401."""

    def __init__(self, genesis: Genesis, clock: Clock, body_bytes_max: int) -> None:
        self._genesis = genesis
        # The configuration in force once the node's store is open (set by the app then).
        self.configuration: Callable[[], GovConfig] | None = None
        self.clock = clock
        self.body_bytes_max = body_bytes_max
        self.replays = ReplayCache()
        self.sessions: SessionLookup | None = None  # set when browser sign-in is installed

    @property
    def genesis(self) -> Genesis:
        """Who may sign requests: the configuration in force, in the genesis's shape."""
        return self._genesis if self.configuration is None else self.configuration().members

    def retired(self, identity: str) -> bool:
        """Whether governance revoked (or removed) `identity`."""
        return self.configuration is not None and identity in self.configuration().retired

    async def principal(self, request: web.Request) -> Principal | None:
        present = [h for h in wire.HEADERS if h in request.headers]
        if not present:
            return None if self.sessions is None else self.sessions(request)
        if len(present) != len(wire.HEADERS):
            missing = ", ".join(h for h in wire.HEADERS if h not in present)
            raise _unauthorized(BAD_AUTH, f"a signed request carries all four headers: {missing}")
        genesis = self.genesis  # one configuration for the whole check
        principal, timestamp_ms, nonce, signature = self._check_headers(request, genesis)
        target = request.raw_path
        if len(target.encode()) > wire.TARGET_BYTES_MAX:
            raise ApiError(414, "target_too_long", f"at most {wire.TARGET_BYTES_MAX} bytes")
        body = await codec.read_body(request, self.body_bytes_max)
        signed = wire.payload(
            genesis.chain_id, principal.id, timestamp_ms, nonce, request.method, target, body
        )
        key = public_key(genesis, principal)
        if not crypto.verify(key, crypto.Domain.REQUEST, signed, signature):
            raise _unauthorized(
                BAD_SIGNATURE,
                f"the request signature does not verify with {principal.id!r}'s key "
                "(docs/protocol.md section 16: method, target, body, timestamp, chain id)",
            )
        self.replays.add(signature, timestamp_ms + REQUEST_SKEW_MS, self.clock())
        request[codec.BODY] = body
        return principal

    def _check_headers(
        self, request: web.Request, genesis: Genesis
    ) -> tuple[Principal, int, bytes, bytes]:
        """Every check that costs no signature: form, identity, time window, replay."""
        headers = request.headers
        identity = headers[wire.IDENTITY_HEADER]
        principal = principal_of(genesis, identity) if len(identity) <= 64 else None
        if principal is None and self.retired(identity):
            raise _unauthorized(REVOKED, f"{identity[:64]!r} was revoked by governance")
        if principal is None:
            raise _unauthorized(UNKNOWN_IDENTITY, f"{identity[:64]!r} is no identity of this chain")
        text = headers[wire.TIMESTAMP_HEADER]
        if not text.isdigit() or not text.isascii() or len(text) > wire.TIMESTAMP_DIGITS_MAX:
            raise _unauthorized(BAD_AUTH, f"{wire.TIMESTAMP_HEADER}: expected ms since 1970")
        timestamp_ms = int(text)
        if abs(timestamp_ms - self.clock()) > REQUEST_SKEW_MS:
            raise _unauthorized(
                STALE_REQUEST,
                f"the request's timestamp is more than {REQUEST_SKEW_MS} ms from the node's "
                "clock (is the client's clock right?)",
            )
        nonce = _hex(headers[wire.NONCE_HEADER], wire.NONCE_BYTES, wire.NONCE_HEADER)
        signature = _hex(headers[wire.SIGNATURE_HEADER], 64, wire.SIGNATURE_HEADER)
        if self.replays.seen(signature):
            raise _unauthorized(REPLAYED, "this signed request was already received")
        return principal, timestamp_ms, nonce, signature


def public_key(genesis: Genesis, principal: Principal) -> Ed25519PublicKey:
    if principal.role == VALIDATOR:
        validator = genesis.validator(principal.id)
        assert validator is not None
        return validator.key
    if principal.role == ADMIN:
        return genesis.admins[principal.id].key
    return genesis.clients[principal.id].key


def _hex(text: str, size: int, header: str) -> bytes:
    if len(text) != 2 * size or not text.isascii() or not text.isalnum():
        raise _unauthorized(BAD_AUTH, f"{header}: expected {2 * size} hex digits")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise _unauthorized(BAD_AUTH, f"{header}: expected {2 * size} hex digits") from None


def _unauthorized(code: str, reason: str) -> ApiError:
    error = ApiError(401, code, reason)
    error.headers["WWW-Authenticate"] = 'CityLedger realm="api"'
    return error


# --- Access ----------------------------------------------------------------------------------


def middleware(gate: Gate, access: Mapping[tuple[str, str], str]) -> Middleware:
    """The authentication middleware; `access` maps (method, path pattern) to a class."""

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route
        if request.match_info.http_exception is not None:  # 404 or 405: nothing to protect
            return await handler(request)
        pattern = route.resource.canonical if route.resource else ""
        rule = access.get((request.method, pattern), MEMBER)
        if rule in (OPEN, TRANSPORT):
            return await handler(request)
        principal = await gate.principal(request)
        if principal is not None:
            request[PRINCIPAL] = principal
        if principal is None and rule != KEYED:
            raise _unauthorized(
                UNAUTHENTICATED,
                "this request needs an identity: sign it (docs/protocol.md section 16) or sign "
                "in at /explorer/",
            )
        if rule == CHAIN and not (principal is not None and principal.reads_all):
            raise ApiError(403, FORBIDDEN, "blocks and whole-chain reads are for validators "
                           "and auditors")  # fmt: skip
        return await handler(request)

    return authenticate


def require_read(request: web.Request, genesis: Genesis, record_key: str) -> None:
    """Refuse (401 anonymous, 403 signed) unless the request's identity may read `record_key`."""
    principal = request.get(PRINCIPAL)
    if principal is not None and principal.reads_all:
        return
    if genesis.may_read(None if principal is None else principal.organisation, record_key):
        return
    if principal is None:
        raise _unauthorized(UNAUTHENTICATED, f"{record_key!r} is not public: sign the request")
    raise ApiError(
        403, FORBIDDEN, f"{principal.organisation} may not read {record_key!r} (read policy)"
    )

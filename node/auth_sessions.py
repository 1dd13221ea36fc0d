"""Browser sign-in: challenges, sessions bound to an identity, and the sign-in page's files.

A browser does not sign every request the way the CLI does; it proves once that it holds an
identity's key. The page asks for a challenge, signs `Domain.SESSION || encode([chain_id,
identity, challenge])` with WebCrypto (the key never leaves the page) and receives a session
cookie: HttpOnly, SameSite=Strict, Secure over TLS, with a bounded lifetime (docs/protocol.md
section 16.4). Challenges are stateless (a MAC under a secret of this process), so anonymous
callers cannot fill any table here; only a valid signature by a member creates a session, and
the session table is bounded. A session authorises reads (GET) only.
"""

import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from ledger import crypto
from ledger.genesis import Genesis
from ledger.primitives import SIGNATURE_BYTES
from node import auth_request as wire
from node import codec
from node.auth import (
    BAD_AUTH,
    BAD_SIGNATURE,
    MEMBER,
    OPEN,
    PRINCIPAL,
    REPLAYED,
    RETRY_AFTER_S,
    STALE_REQUEST,
    UNKNOWN_IDENTITY,
    Clock,
    Gate,
    Principal,
    principal_of,
    public_key,
)
from node.codec import ApiError

CHALLENGE_TTL_MS: Final = 60_000
SESSION_TTL_MS: Final = 3_600_000
SESSIONS_MAX: Final = 4096
SESSIONS_PER_IDENTITY_MAX: Final = 8  # a new sign-in beyond this ends the identity's oldest
USED_CHALLENGES_MAX: Final = 4096
SIGNIN_BODY_BYTES_MAX: Final = 4096
COOKIE: Final = "cityledger_session"
_STAMP_BYTES: Final = 8
_RANDOM_BYTES: Final = 16
_MAC_BYTES: Final = 32
CHALLENGE_BYTES: Final = _STAMP_BYTES + _RANDOM_BYTES + _MAC_BYTES
_TOKEN_BYTES: Final = 32
PAGES: Final = Path(__file__).parent / "explorer"
_CONTENT_TYPES: Final = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
_PAGE_HEADERS: Final = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True)
class Session:
    principal: Principal
    expires_ms: int


class Sessions:
    """Owns the challenge secret, the used challenges and the session table."""

    def __init__(self, gate: Gate, clock: Clock) -> None:
        self._gate = gate
        self.clock = clock
        self._secret = os.urandom(32)
        self._table: dict[bytes, Session] = {}  # SHA-256 of the token -> session
        self._used: dict[bytes, int] = {}  # challenge -> when it expires

    @property
    def genesis(self) -> Genesis:
        """The configuration in force (the gate's), in the genesis's shape."""
        return self._gate.genesis

    def __len__(self) -> int:
        return len(self._table)

    def challenge(self) -> bytes:
        head = self.clock().to_bytes(_STAMP_BYTES, "big") + os.urandom(_RANDOM_BYTES)
        return head + hmac.new(self._secret, head, hashlib.sha256).digest()

    def open(self, identity: str, challenge: bytes, signature: bytes) -> tuple[bytes, Session]:
        """A new session for `identity`, or ApiError 401/503. Cheap checks come first."""
        now = self.clock()
        expires = self._check_challenge(challenge, now)
        genesis = self.genesis  # one configuration for the whole check
        principal = principal_of(genesis, identity) if len(identity) <= 64 else None
        if principal is None:
            raise ApiError(401, UNKNOWN_IDENTITY, f"{identity[:64]!r} is no identity here")
        key = public_key(genesis, principal)
        payload = wire.session_payload(genesis.chain_id, identity, challenge)
        if not crypto.verify(key, crypto.Domain.SESSION, payload, signature):
            raise ApiError(
                401, BAD_SIGNATURE, f"the signature does not verify with {identity!r}'s key"
            )
        self._prune(now)
        if len(self._used) >= USED_CHALLENGES_MAX or len(self._table) >= SESSIONS_MAX:
            error = ApiError(503, "busy", "too many sessions: retry later")
            error.headers["Retry-After"] = RETRY_AFTER_S
            raise error
        self._used[challenge] = expires
        mine = [t for t, s in self._table.items() if s.principal.id == identity]
        for token_hash in mine[: max(0, len(mine) - SESSIONS_PER_IDENTITY_MAX + 1)]:
            del self._table[token_hash]  # the oldest first: dicts keep insertion order
        token = os.urandom(_TOKEN_BYTES)
        session = Session(principal, now + SESSION_TTL_MS)
        self._table[crypto.sha256(token)] = session
        return token, session

    def _check_challenge(self, challenge: bytes, now: int) -> int:
        if len(challenge) != CHALLENGE_BYTES:
            raise ApiError(401, BAD_AUTH, f"a challenge is {CHALLENGE_BYTES} bytes")
        head, mac = challenge[:-_MAC_BYTES], challenge[-_MAC_BYTES:]
        if not hmac.compare_digest(mac, hmac.new(self._secret, head, hashlib.sha256).digest()):
            raise ApiError(401, BAD_AUTH, "this challenge was not issued by this node")
        expires = int.from_bytes(head[:_STAMP_BYTES], "big") + CHALLENGE_TTL_MS
        if now > expires:
            raise ApiError(401, STALE_REQUEST, "the challenge expired: ask for a new one")
        if challenge in self._used:
            raise ApiError(401, REPLAYED, "this challenge was already used")
        return expires

    def _prune(self, now: int) -> None:
        for challenge in [c for c, t in self._used.items() if t < now]:
            del self._used[challenge]
        for token_hash in [t for t, s in self._table.items() if s.expires_ms < now]:
            del self._table[token_hash]

    def lookup(self, request: web.Request) -> Principal | None:
        """The principal of the request's session cookie; None if it has none that is live.
        Only reads use sessions: a write always carries its own signatures."""
        if request.method not in ("GET", "HEAD"):
            return None
        session = self._table.get(_token_hash(request))
        if session is None or session.expires_ms < self.clock():
            return None
        return session.principal

    def close(self, request: web.Request) -> None:
        self._table.pop(_token_hash(request), None)


def _token_hash(request: web.Request) -> bytes:
    text = request.cookies.get(COOKIE, "")
    if len(text) != 2 * _TOKEN_BYTES or not text.isascii() or not text.isalnum():
        return b""
    try:
        return crypto.sha256(bytes.fromhex(text))
    except ValueError:
        return b""


SESSIONS: Final = web.AppKey("sessions", Sessions)


# --- Routes ----------------------------------------------------------------------------------


async def get_challenge(request: web.Request) -> web.StreamResponse:
    sessions = request.app[SESSIONS]
    return codec.render(request, {
        "challenge": sessions.challenge(), "chain_id": sessions.genesis.chain_id,
        "ttl_ms": CHALLENGE_TTL_MS,
    })  # fmt: skip


async def post_session(request: web.Request) -> web.StreamResponse:
    sessions = request.app[SESSIONS]
    if request.content_type != codec.JSON:  # a cross-site form cannot send JSON unasked
        raise ApiError(415, "unsupported_media_type", "sign-in takes a JSON body")
    raw = await codec.read_body(request, SIGNIN_BODY_BYTES_MAX)
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        doc = None
    fields = ("identity", "challenge", "signature")
    if (
        not isinstance(doc, dict)
        or set(doc) != set(fields)
        or not all(isinstance(doc[f], str) for f in fields)
    ):
        raise ApiError(400, "malformed", "expected {identity, challenge, signature} (hex)")
    challenge = _unhex(doc["challenge"], CHALLENGE_BYTES)
    signature = _unhex(doc["signature"], SIGNATURE_BYTES)
    token, session = sessions.open(doc["identity"], challenge, signature)
    response = codec.render(request, whoami(sessions, session.principal, session.expires_ms))
    response.set_cookie(
        COOKIE, token.hex(), max_age=SESSION_TTL_MS // 1000, path="/", httponly=True,
        secure=request.secure, samesite="Strict",
    )  # fmt: skip
    return response


def _unhex(text: str, size: int) -> bytes:
    """`text` as bytes when it is hex of at most `size` bytes; the checks that follow say what
    is wrong with a value of the wrong length."""
    try:
        return bytes.fromhex(text) if len(text) <= 2 * size and text.isascii() else b""
    except ValueError:
        raise ApiError(400, "malformed", "challenge and signature are hex") from None


def whoami(sessions: Sessions, principal: Principal, expires_ms: int | None) -> dict[str, Any]:
    genesis = sessions.genesis
    reads = ["*"] if principal.reads_all else list(genesis.readable(principal.organisation))
    return {
        "identity": principal.id, "organisation": principal.organisation,
        "role": principal.role, "reads": reads,
        "public_namespaces": list(genesis.public_namespaces), "expires_ms": expires_ms,
    }  # fmt: skip


async def get_session(request: web.Request) -> web.StreamResponse:
    principal = request[PRINCIPAL]
    return codec.render(request, whoami(request.app[SESSIONS], principal, None))


async def delete_session(request: web.Request) -> web.StreamResponse:
    request.app[SESSIONS].close(request)
    response = web.Response(status=204)
    response.del_cookie(COOKIE, path="/")
    return response


def _load_pages() -> dict[str, tuple[bytes, str]]:
    return {
        p.name: (p.read_bytes(), _CONTENT_TYPES[p.suffix])
        for p in PAGES.iterdir()
        if p.suffix in _CONTENT_TYPES
    }


async def get_page(request: web.Request) -> web.StreamResponse:
    name = request.match_info.get("name") or "index.html"
    found = request.app[PAGE_FILES].get(name)
    if found is None:
        raise ApiError(404, "not_found", f"no explorer file {name[:64]!r}")
    body, content_type = found
    return web.Response(body=body, content_type=content_type, headers=_PAGE_HEADERS)


PAGE_FILES: Final = web.AppKey("page_files", dict[str, tuple[bytes, str]])

ROUTES: Final = (
    ("GET", "/v1/auth/challenge", get_challenge, OPEN),
    ("POST", "/v1/auth/session", post_session, OPEN),
    ("GET", "/v1/auth/session", get_session, MEMBER),
    ("DELETE", "/v1/auth/session", delete_session, OPEN),
    ("GET", "/explorer/", get_page, OPEN),
    ("GET", "/explorer/{name}", get_page, OPEN),
)


def install(app: web.Application, gate: Gate, clock: Clock) -> None:
    """Browser sign-in on `app`: its state; the routes come with `ROUTES`."""
    sessions = Sessions(gate, clock)
    app[SESSIONS] = sessions
    app[PAGE_FILES] = _load_pages()
    gate.sessions = sessions.lookup

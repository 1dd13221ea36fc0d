"""Signing for aiohttp clients: a client middleware that signs every request it sends.

The bench's load process and the tests talk to nodes with aiohttp; this signs each request
with an identity's key the way docs/protocol.md section 16 says (the CLI's synchronous client
signs in cli/client/http.py with the same `node.auth_request`).
"""

import time
from collections.abc import Callable

from aiohttp import ClientHandlerType, ClientMiddlewareType, ClientRequest, ClientResponse
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from node import auth_request as wire


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def signer(
    key: Ed25519PrivateKey, *, chain_id: str, identity: str,
    clock: Callable[[], int] = wall_clock_ms,
) -> ClientMiddlewareType:  # fmt: skip
    """A client middleware that signs each request as `identity` on chain `chain_id`."""

    async def sign(request: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        body = request.body
        raw = body if isinstance(body, bytes) else await body.as_bytes()
        request.headers.update(
            wire.sign_headers(
                key,
                chain_id=chain_id,
                identity=identity,
                method=request.method,
                target=request.url.raw_path_qs,
                body=raw,
                now_ms=clock(),
            )
        )
        return await handler(request)

    return sign

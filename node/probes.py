"""`/healthz` and `/readyz`: what a supervisor or a load balancer asks, without an identity.

`/healthz` answers 200 while the process serves requests at all. `/readyz` answers 200 only
while the node is in a view, a quorum of validators is reachable and it is not catching up
(node/health.py decides), else 503 with the reason's stable code. Neither reads the store nor
says more than readiness: they are anonymous.
"""

from typing import Final

from aiohttp import web

from node import codec
from node.appkeys import RUNTIME

READY_RETRY_AFTER_S: Final = 1


async def get_healthz(_request: web.Request) -> web.StreamResponse:
    return web.json_response({"status": "alive"})


async def get_readyz(request: web.Request) -> web.StreamResponse:
    rt = request.app[RUNTIME]
    readiness = rt.watch.readiness(closed=rt.shell.closed)
    if readiness.ready:
        return web.json_response({"ready": True, "detail": readiness.detail})
    assert readiness.reason is not None
    body = codec.error_body(readiness.reason, readiness.detail, {"ready": False})
    headers = {"Retry-After": str(READY_RETRY_AFTER_S)}
    return web.json_response(body, status=503, headers=headers)

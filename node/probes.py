"""`/healthz` and `/readyz`: what a supervisor or a load balancer asks, without an identity;
and `/v1/status`, what an operator asks (a member's identity).

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


async def get_status(request: web.Request) -> web.StreamResponse:
    """A follower (not a validator of the set in force) has no index; its view and primary
    are those its replica last knew."""
    rt = request.app[RUNTIME]
    r, genesis, members = rt.replica, rt.identity.genesis, rt.replica.epoch.members
    up = rt.watch.peers_up()
    own = rt.identity.validator_id
    peers = [
        {"index": v.index, "id": v.id, "url": v.url, "queued": rt.transport.queued(v.id),
         "up": up.get(v.id, False)}
        for v in members.validators
        if v.id != own
    ]  # fmt: skip
    readiness = rt.watch.readiness(closed=rt.shell.closed)
    follower = rt.follower
    return codec.render(request, {
        "node_id": rt.config.node_id, "index": None if rt.following else r.index,
        "chain_id": genesis.chain_id, "genesis_hash": genesis.hash, "view": r.view,
        "primary": r.primary, "in_view_change": r.in_view_change, "height": rt.store.height,
        "head_hash": rt.store.head.hash, "mempool": r.pending, "mempool_free": r.pool_free,
        "peers": peers, "running": not rt.shell.closed,
        "quorum": {"reachable": rt.watch.reachable(), "needed": members.quorums.commit},
        "catching_up": rt.watch.catching_up, "ready": readiness.ready,
        "not_ready": readiness.reason, "epoch": rt.configuration().epoch,
        "validator": not rt.following,
        "not_validator_since": None if follower is None else follower.since,
    })  # fmt: skip

"""The typed app keys that every route module reads, and the helpers they share.

node/app.py builds the application and sets these keys; route modules (node/app.py,
node/probes.py, node/queries.py, node/events.py) read them, so none imports another.
"""

from collections.abc import Callable
from typing import Any, Final

from aiohttp import web

from ledger import tx as txs
from node.codec import ApiError, render
from node.reads import ReadPool
from node.runtime import Runtime

RUNTIME: Final = web.AppKey("runtime", Runtime)
READS: Final = web.AppKey("reads", ReadPool)


def runtime(request: web.Request) -> Runtime:
    """The node's runtime, or 503 once it is shutting down or has failed."""
    rt = request.app[RUNTIME]
    if rt.shell.closed:
        raise ApiError(503, "unavailable", "the node is shutting down or has failed")
    return rt


async def off_loop(request: web.Request, work: Callable[[], Any]) -> web.StreamResponse:
    """`work()` (a read of the store, returning the answer's value) and its rendering, on the
    read pool: never on the event loop that carries consensus."""
    return await request.app[READS].run(lambda: render(request, work()))


def int_param(request: web.Request, name: str, default: int | None, low: int, high: int) -> int:
    text = request.query.get(name)
    if text is None:
        if default is None:
            raise ApiError(400, txs.MALFORMED, f"?{name}= is required")
        return default
    if not text.isdigit() or not low <= int(text) <= high:
        raise ApiError(400, txs.MALFORMED, f"?{name}= expects an integer in [{low}, {high}]")
    return int(text)

"""The node's HTTP routes: client API under /v1, peer endpoints under /peer/v1, /metrics.

Routes decode, check and hand on: admission decides on txs, the shell feeds the replica, the
store answers reads. Each route has an access class (node/auth.py): every request is
authenticated before its handler runs, and reads check the record key against the read policy.
Every refusal is `{"error": CODE, "reason": TEXT}` with a 4xx status, and
a refused request changes nothing. State lives in typed app keys; the runtime (store, replica,
transport) is opened and closed by the app's `cleanup_ctx`.
"""

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any, Final

from aiohttp import web

from consensus.events import FETCH_BLOCKS_MAX
from consensus.replica import ReplicaConfig
from ledger import tx as txs
from ledger.block import HEIGHT_MAX
from ledger.errors import InvalidTransaction, StoreError
from ledger.genesis import Admin, Client
from ledger.kinds.base import REASONS
from ledger.kinds.execute import settled_refusal
from ledger.records import RECORD_VERSIONS_MAX
from node import (
    appkeys,
    auth,
    auth_sessions,
    blockview,
    codec,
    events,
    fiscal,
    governance,
    openapi,
    probes,
    proofs,
    queries,
    tls_sites,
    votes,
)
from node.admission import Rejection, Verdict
from node.appkeys import READS, RUNTIME
from node.codec import ApiError, render
from node.config import Config, Identity
from node.limits import ByteBudget, Slots
from node.listener import validator_addresses
from node.metrics import CONTENT_TYPE
from node.peers import (
    BLOCKS_PATH,
    FETCH_BYTES_MAX,
    MESSAGES_PATH,
    decode_batch,
    encode_blocks,
)
from node.reads import ReadPool, ReadsBusy
from node.runtime import Runtime, open_runtime, wall_clock_ms
from node.shell import Clock

WAITERS: Final = web.AppKey("waiters", Slots)
BODIES: Final = web.AppKey("bodies", ByteBudget)
# The other validators' addresses, and the body budgets of peer requests from them and from
# anywhere else: a flood of large bodies from elsewhere (before TLS tells who is who) takes
# neither the memory the validators' own messages need nor that of the clients' requests.
VALIDATOR_ADDRESSES: Final = web.AppKey("validator_addresses", frozenset[str])
PEER_BODIES: Final = web.AppKey("peer_bodies", ByteBudget)
STRANGER_BODIES: Final = web.AppKey("stranger_bodies", ByteBudget)
POOL_FULL: Final = "pool_full"
UNCHECKED: Final = "unchecked"
SIGNATURE_PROBE_TXS: Final = 16  # a request's txs checked before the rest
BAD_SIGNATURES_MAX: Final = 4  # bad signatures among those beyond which the rest go unchecked
HISTORY_LIMIT_DEFAULT: Final = 1000
CURSOR_HEX_DIGITS: Final = 24  # a history cursor: height (8 bytes) and index (4), in hex
VERSION_BYTES_OVERHEAD: Final = 256  # a version's JSON beyond twice its tx bytes (hex)
STATUS_OF: Final = {
    txs.MALFORMED: 400,
    txs.TOO_LARGE: 413,
    txs.WRONG_CHAIN: 422,
    txs.UNKNOWN_CLIENT: 403,
    txs.FORBIDDEN_NAMESPACE: 403,
    txs.STALE_TIMESTAMP: 422,
    txs.FUTURE_TIMESTAMP: 422,
    txs.BAD_SIGNATURE: 401,
    txs.DUPLICATE: 409,
    POOL_FULL: 429,
    UNCHECKED: 401,
    **dict.fromkeys(REASONS, 422),  # a record rule's certain refusal
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# --- Errors ----------------------------------------------------------------------------------


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        body = codec.error_body(exc.code, exc.reason, exc.extra)
        return render(request, body, exc.status, exc.headers)
    except web.HTTPException as exc:  # the router's 404 and 405, aiohttp's own 413
        if exc.status < 400:
            raise
        code = exc.reason.lower().replace(" ", "_")
        headers = {k: v for k, v in exc.headers.items() if k == "Allow"}
        return render(request, codec.error_body(code, exc.reason), exc.status, headers)
    except ReadsBusy as exc:
        headers = {"Retry-After": str(codec.RETRY_AFTER_S)}
        return render(request, codec.error_body("busy", str(exc)), 503, headers)
    except StoreError as exc:
        request.app.logger.error("store error on %s: %s", request.path, exc)
        return render(request, codec.error_body("store_error", str(exc)), 500)


_off_loop = appkeys.off_loop
_runtime = appkeys.runtime
_int_param = appkeys.int_param


def _hex_id(text: str, what: str) -> bytes:
    try:
        value = bytes.fromhex(text) if len(text) == 64 and text.isalnum() else b""
    except ValueError:
        value = b""
    if len(value) != 32:
        raise ApiError(400, txs.MALFORMED, f"{what}: expected 64 hex digits")
    return value


# --- Transactions ----------------------------------------------------------------------------


def _rejection_view(r: Rejection) -> dict[str, Any]:
    return {"index": r.index, "tx_id": r.tx_id, "error": r.reason, "reason": r.detail}


async def post_transactions(request: web.Request) -> web.StreamResponse:
    rt = _runtime(request)
    if rt.following:  # nothing would propose its txs: a client should ask a validator
        raise ApiError(503, "not_validator", "this node follows the chain; it is no validator")
    async with codec.body(request, rt.config.body_bytes_max, request.app[BODIES]) as raw:
        items, is_batch = codec.parse_transactions(codec.parse_body(request, raw))
    wait = request.query.get("wait", "false").lower() in ("1", "true", "yes")
    waiters = request.app[WAITERS]
    if wait and not waiters.take():  # refused before admission: nothing changes
        busy = f"{waiters.capacity} requests wait already: retry later"
        raise ApiError(503, "busy", busy).with_retry()
    try:
        return await _submit(request, rt, items, is_batch, wait=wait)
    finally:
        if wait:
            waiters.give()


async def _submit(
    request: web.Request, rt: Runtime, items: list[bytes | InvalidTransaction], is_batch: bool,
    *, wait: bool,
) -> web.StreamResponse:  # fmt: skip
    accepted, rejected = await _admit_probed(rt, items)
    for r in rejected:
        rt.metrics.txs_rejected.labels(r.reason).inc()
    if not accepted:
        first = rejected[0]
        extra: dict[str, Any] = {} if is_batch else {"tx_id": first.tx_id}
        error = ApiError(
            STATUS_OF.get(first.reason, 400), first.reason, first.detail,
            extra | {"rejected": [_rejection_view(r) for r in rejected]},
        )  # fmt: skip
        if first.reason == POOL_FULL:
            error.with_retry()
        raise error
    located: dict[bytes, tuple[int, int] | None] = {}
    if wait:
        located = await rt.shell.wait_committed(
            [t.tx_id for t in accepted], rt.config.wait_timeout_ms / 1000
        )
    statuses = [_submitted_status(rt, t.tx_id, located) for t in accepted]
    body: dict[str, Any] = {} if is_batch else dict(statuses[0])
    body |= {"accepted": statuses, "rejected": [_rejection_view(r) for r in rejected]}
    all_committed = wait and all(located.get(t.tx_id) is not None for t in accepted)
    return render(request, body, 200 if all_committed else 202)


async def _admit_probed(
    rt: Runtime, items: list[bytes | InvalidTransaction]
) -> tuple[list[txs.Transaction], list[Rejection]]:
    """Admit a request's txs and hand them to the shell: the first `SIGNATURE_PROBE_TXS` first;
    if more than `BAD_SIGNATURES_MAX` of those carry bad signatures, the rest are refused
    unchecked (a flood of garbage-signed txs costs a few dozen checks a request, not one per
    tx). The accepted txs in pool order, and every refusal, by request index."""
    accepted: list[txs.Transaction] = []
    rejected: list[Rejection] = []
    probe = SIGNATURE_PROBE_TXS
    for start, part in ((0, items[:probe]), (probe, items[probe:])):
        if not part:
            break
        if sum(r.reason == txs.BAD_SIGNATURE for r in rejected) > BAD_SIGNATURES_MAX:
            detail = f"not checked: the request carried over {BAD_SIGNATURES_MAX} bad signatures"
            rejected += [Rejection(start + i, None, UNCHECKED, detail) for i in range(len(part))]
            break
        verdict = await rt.admission.admit(part, rt.clock(), functools.partial(_precheck, rt))
        taken = rt.shell.submit(verdict.admitted, relayed=False)
        accepted += verdict.accepted[:taken]
        rejected += [replace(r, index=start + r.index) for r in _with_overflow(verdict, taken)]
    return accepted, rejected


def _submitted_status(
    rt: Runtime, tx_id: bytes, located: dict[bytes, tuple[int, int] | None]
) -> dict[str, Any]:
    where = located.get(tx_id)
    code = "" if where is None else rt.store.tx_outcome(tx_id)
    return _tx_status(tx_id, where, expired=tx_id in located, code=code)


def _precheck(
    rt: Runtime, tx: txs.Transaction, client: Client | Admin
) -> InvalidTransaction | None:
    """A client tx's refusal by a record rule, when the committed state already settles it."""
    head_ms = rt.store.head.timestamp_ms
    refused = settled_refusal(rt.store.rule_state, tx, client.organisation, head_ms)
    return None if refused is None else InvalidTransaction(refused.code, refused.why)


def _with_overflow(verdict: Verdict, taken: int) -> list[Rejection]:
    """The admission rejections plus the admitted txs that did not fit in the pool."""
    overflow = [
        Rejection(index, t.tx_id, POOL_FULL, "the mempool is full: retry later")
        for index, t in zip(verdict.accepted_at[taken:], verdict.accepted[taken:], strict=True)
    ]
    return sorted([*verdict.rejected, *overflow], key=lambda r: r.index)


def _tx_status(
    tx_id: bytes, location: tuple[int, int] | None, *, expired: bool = False, code: str = ""
) -> dict[str, Any]:
    """`expired`: it left the pool at its time-to-live, unproposed (if not committed); `code`:
    a committed tx's outcome code ("" accepted, else the reason code that refused it)."""
    if location is None:
        status = "expired" if expired else "pending"
        return {"tx_id": tx_id, "status": status, "height": None, "index": None,
                "outcome": None, "reason": None}  # fmt: skip
    return {
        "tx_id": tx_id, "status": "committed", "height": location[0], "index": location[1],
        "outcome": "refused" if code else "accepted", "reason": code or None,
    }  # fmt: skip


async def get_transaction(request: web.Request) -> web.StreamResponse:
    rt = _runtime(request)
    tx_id = _hex_id(request.match_info["tx_id"], "tx_id")
    if rt.store.has_tx(tx_id):

        def committed() -> dict[str, Any]:
            location, tx = rt.store.tx_location(tx_id), rt.store.tx(tx_id)
            assert location is not None
            assert tx is not None
            auth.require_read(request, rt.members(), tx.key)
            code = rt.store.tx_outcome(tx_id)
            return {**_tx_status(tx_id, location, code=code), "tx": codec.tx_view(tx)}

        return await _off_loop(request, committed)
    if rt.replica.has_pending(tx_id) or rt.shell.outbox.is_unwritten(tx_id):  # not durable yet
        return render(request, _tx_status(tx_id, None))
    if tx_id in rt.shell.expired:
        return render(request, _tx_status(tx_id, None, expired=True))
    raise ApiError(404, "not_found", f"no tx {tx_id.hex()} is pending or committed here")


async def get_proof(request: web.Request) -> web.StreamResponse:
    rt = _runtime(request)
    tx_id = _hex_id(request.match_info["tx_id"], "tx_id")

    def bundle() -> dict[str, Any]:
        tx = rt.store.tx(tx_id)
        if tx is not None:  # a proof shows the tx: only for those who may read its record
            auth.require_read(request, rt.members(), tx.key)
        try:
            found = proofs.bundle(rt.store, tx_id)
        except proofs.TooMuchGovernance as exc:
            raise ApiError(422, txs.TOO_LARGE, str(exc)) from None
        if found is None:
            raise ApiError(404, "not_found", f"no tx {tx_id.hex()} is committed here")
        return found

    return await _off_loop(request, bundle)


# --- Blocks, records, proofs -----------------------------------------------------------------


async def get_block(request: web.Request) -> web.StreamResponse:
    rt = _runtime(request)
    which = request.match_info["height"]
    block_hash: bytes | None = None  # a block hash: the store's index names its height
    if which == "latest":
        asked = rt.store.height
        if asked == 0:
            raise ApiError(404, "not_found", "no block is committed yet")
    elif which.isdigit() and len(which) <= 19:
        asked = int(which)
    elif len(which) == 64:
        asked, block_hash = 0, _hex_id(which, "block hash")
    else:
        raise ApiError(400, txs.MALFORMED, "height: expected an integer, 'latest' or a hash")

    def view() -> dict[str, Any]:
        height = asked if block_hash is None else rt.store.height_of(block_hash)
        if height is None:
            raise ApiError(404, "not_found", f"no block with hash {which} is committed here")
        shown = blockview.block_view(rt.store, height)  # named by the set of its epoch
        if shown is None:
            head = rt.store.height
            raise ApiError(404, "not_found", f"no block at height {height} (head {head})")
        return shown

    return await _off_loop(request, view)


def _record_key(request: web.Request) -> str:
    """The route's record key, once the request's identity may read it."""
    key = request.match_info["key"]
    problem = txs.key_problem(key)
    if problem is not None:  # no tx can have this key: say so rather than 404
        raise ApiError(400, txs.MALFORMED, problem)
    auth.require_read(request, request.app[RUNTIME].members(), key)
    return key


async def get_record(request: web.Request) -> web.StreamResponse:
    rt = _runtime(request)
    key = _record_key(request)

    def latest() -> dict[str, Any]:
        found = rt.store.latest_record(key)
        if found is None:
            raise ApiError(404, "not_found", f"no record {key!r}")
        height, index, tx = found
        return {"key": key, **_version(tx, height, index)}

    return await _off_loop(request, latest)


def _version(tx: txs.Transaction, height: int, index: int) -> dict[str, Any]:
    return {
        "type": tx.type, "value": tx.body, "tx_id": tx.tx_id, "height": height, "index": index,
        "client_id": tx.client_id, "timestamp_ms": tx.timestamp_ms,
    }  # fmt: skip


async def get_history(request: web.Request) -> web.StreamResponse:
    """One page of a record's versions, oldest first: at most `limit` of them and about
    `answer_bytes_max` bytes, after the version `cursor` names; `next_cursor` names the last
    one when more follow. The versions come from the record and tx indexes, no block decoded."""
    rt = _runtime(request)
    key = _record_key(request)
    limit = _int_param(request, "limit", HISTORY_LIMIT_DEFAULT, 1, RECORD_VERSIONS_MAX)
    after = _cursor(request.query.get("cursor"))
    budget = rt.config.answer_bytes_max

    def page() -> dict[str, Any]:
        versions: list[dict[str, Any]] = []
        size = 0
        for height, index, tx in rt.store.record_version_txs(key, limit, after):
            size += 2 * len(tx.raw) + VERSION_BYTES_OVERHEAD
            if versions and size > budget:
                break
            versions.append(_version(tx, height, index))
        if not versions and after is None:
            raise ApiError(404, "not_found", f"no record {key!r}")
        last = (versions[-1]["height"], versions[-1]["index"]) if versions else None
        more = last is not None and bool(rt.store.record_versions(key, 1, last))
        cursor = _cursor_text(*last) if more and last is not None else None
        return {"key": key, "versions": versions, "next_cursor": cursor, "truncated": more}

    return await _off_loop(request, page)


def _cursor(text: str | None) -> tuple[int, int] | None:
    if text is None or text == "":
        return None
    try:
        raw = bytes.fromhex(text) if len(text) == CURSOR_HEX_DIGITS else b""
    except ValueError:
        raw = b""
    height, index = int.from_bytes(raw[:8], "big"), int.from_bytes(raw[8:], "big")
    if not raw or height > HEIGHT_MAX:
        raise ApiError(400, txs.MALFORMED, "cursor: expected a next_cursor this node answered")
    return height, index


def _cursor_text(height: int, index: int) -> str:
    return (height.to_bytes(8, "big") + index.to_bytes(4, "big")).hex()


async def get_checkpoint(request: web.Request) -> web.StreamResponse:
    rt = _runtime(request)
    height = rt.store.height
    if height == 0:
        raise ApiError(404, "not_found", "no block is committed yet")
    return await _off_loop(request, lambda: proofs.checkpoint(rt.store, height))


async def get_consistency(request: web.Request) -> web.StreamResponse:
    rt = _runtime(request)
    head = rt.store.height
    if head == 0:
        raise ApiError(404, "not_found", "no block is committed yet")
    new = _int_param(request, "to", head, 1, head)
    old = _int_param(request, "from", None, 1, new)
    return await _off_loop(request, lambda: proofs.consistency(rt.store, old, new))


async def get_chain(request: web.Request) -> web.StreamResponse:
    rt = _runtime(request)
    low, high = _height_range(request, rt.store.height, to_required=False)
    return await _off_loop(request, lambda: proofs.chain_page(rt.store, low, high, FETCH_BYTES_MAX))


async def get_stable_checkpoint(request: web.Request) -> web.StreamResponse:
    rt = _runtime(request)
    proof = rt.replica.checkpoints.proof
    if proof is None:
        raise ApiError(404, "not_found", "no checkpoint is stable on this node yet")
    return await _off_loop(request, lambda: proofs.stable_checkpoint(rt.store, proof))


# --- Operations ------------------------------------------------------------------------------


async def get_metrics(request: web.Request) -> web.StreamResponse:
    rt = request.app[RUNTIME]
    return web.Response(body=rt.metrics.render(), headers={"Content-Type": CONTENT_TYPE})


async def get_openapi(_request: web.Request) -> web.StreamResponse:
    return web.json_response(openapi.document())


# --- Peers -----------------------------------------------------------------------------------


async def post_peer_messages(request: web.Request) -> web.StreamResponse:
    rt = _runtime(request)
    app = request.app
    # Under TLS the guard let only validators' connections this far; in insecure mode the
    # validators' addresses are all there is to tell them from strangers.
    from_validator = (
        tls_sites.is_validator_connection(request) or request.remote in app[VALIDATOR_ADDRESSES]
    )
    budget = app[PEER_BODIES] if from_validator else app[STRANGER_BODIES]
    async with codec.body(request, rt.config.peer_body_bytes_max, budget) as raw:
        try:
            envelopes = decode_batch(raw)
        except ValueError as exc:
            raise ApiError(400, txs.MALFORMED, f"peer batch: {exc}") from None
        await rt.receive(envelopes)
    return web.Response(status=204)


async def get_peer_blocks(request: web.Request) -> web.StreamResponse:
    rt = _runtime(request)
    low, high = _height_range(request, rt.store.height, to_required=True)
    pairs = proofs.raw_pairs(rt.store, low, high, FETCH_BYTES_MAX)
    return web.Response(body=encode_blocks(pairs), content_type=codec.MSGPACK)


def _height_range(request: web.Request, head: int, *, to_required: bool) -> tuple[int, int]:
    """`?from=A&to=B`, cut to the head and to `FETCH_BLOCKS_MAX` blocks."""
    low = _int_param(request, "from", None, 1, HEIGHT_MAX)
    to = _int_param(request, "to", None if to_required else HEIGHT_MAX, low, HEIGHT_MAX)
    return low, min(to, head, low + FETCH_BLOCKS_MAX - 1)


# --- The application -------------------------------------------------------------------------


# method, path, handler, access class (node/auth.py); anything not listed needs an identity
ROUTES: Final = (
    ("POST", "/v1/transactions", post_transactions, auth.MEMBER),
    ("GET", "/v1/transactions/{tx_id}", get_transaction, auth.MEMBER),
    ("GET", "/v1/transactions/{tx_id}/proof", get_proof, auth.MEMBER),
    ("GET", "/v1/blocks/{height}", get_block, auth.CHAIN),
    ("GET", "/v1/records", queries.get_records, auth.KEYED),
    ("GET", "/v1/records/{key:.+}", get_record, auth.KEYED),
    ("GET", "/v1/history/{key:.+}", get_history, auth.KEYED),
    ("GET", "/v1/chain", get_chain, auth.CHAIN),
    ("GET", "/v1/checkpoint", get_checkpoint, auth.MEMBER),
    ("GET", "/v1/checkpoint/stable", get_stable_checkpoint, auth.MEMBER),
    ("GET", "/v1/consistency", get_consistency, auth.MEMBER),
    ("GET", "/v1/status", probes.get_status, auth.MEMBER),
    ("GET", "/v1/events", events.get_events, auth.KEYED),
    ("GET", "/v1/openapi.json", get_openapi, auth.OPEN),
    ("GET", "/metrics", get_metrics, auth.OPEN),  # loopback operators' scrape target
    ("GET", "/healthz", probes.get_healthz, auth.OPEN),
    ("GET", "/readyz", probes.get_readyz, auth.OPEN),
    *fiscal.routes(_runtime, _off_loop),  # kinds, budget lines, risk alerts
    *governance.routes(_runtime, _off_loop),  # the configuration in force, proposals
    *votes.routes(_runtime, _off_loop, _int_param),  # the votes and view changes this node saw
    ("POST", MESSAGES_PATH, post_peer_messages, auth.TRANSPORT),
    ("GET", BLOCKS_PATH, get_peer_blocks, auth.TRANSPORT),
    *auth_sessions.ROUTES,
)


def add_routes(app: web.Application) -> dict[tuple[str, str], str]:
    """Add every route; return each one's access class by (method, path pattern)."""
    access: dict[tuple[str, str], str] = {}
    for method, path, handler, rule in ROUTES:
        if method == "GET":
            route = app.router.add_get(path, handler)
            access["HEAD", route.resource.canonical if route.resource else path] = rule
        else:
            route = app.router.add_route(method, path, handler)
        access[method, route.resource.canonical if route.resource else path] = rule
    return access


def create_app(
    config: Config, identity: Identity, *, clock: Clock = wall_clock_ms,
    replica_config: ReplicaConfig | None = None,
    on_failure: Callable[[BaseException], None] = lambda _: None,
) -> web.Application:  # fmt: skip
    """The node as an aiohttp application; its runtime opens on startup, closes on cleanup."""
    # aiohttp's own limit is a backstop: `codec.body` enforces the per-route limits.
    limit = max(config.body_bytes_max, config.peer_body_bytes_max)
    gate = auth.Gate(identity.genesis, clock, config.body_bytes_max)
    app = web.Application(client_max_size=limit)
    app[WAITERS] = Slots(config.wait_requests_max)
    app[BODIES] = ByteBudget(config.bodies_bytes_max)
    app[PEER_BODIES] = ByteBudget(config.bodies_bytes_max)
    app[STRANGER_BODIES] = ByteBudget(config.peer_body_bytes_max)  # one such body at a time
    others = [v.url for v in identity.genesis.validators if v.id != identity.validator_id]
    app[VALIDATOR_ADDRESSES] = validator_addresses(others)
    app[tls_sites.LISTENERS] = {}
    guard = tls_sites.make_guard(config.insecure)
    app.middlewares.extend([guard, errors, auth.middleware(gate, add_routes(app))])
    auth_sessions.install(app, gate, clock)

    async def runtime_ctx(app: web.Application) -> AsyncIterator[None]:
        async with open_runtime(
            config, identity, clock=clock, replica_config=replica_config, on_failure=on_failure
        ) as runtime:
            app[RUNTIME] = runtime
            gate.configuration = runtime.configuration  # signers: the configuration in force
            tls_sites.follow_epochs(app, runtime.members(), runtime.on_epoch)
            reads = ReadPool(queue_max=config.reads_queue_max, share=config.read_share_pct / 100)
            app[READS] = reads
            try:
                yield
            finally:
                reads.close()  # before the runtime closes the store

    async def on_shutdown(app: web.Application) -> None:
        if RUNTIME in app:  # answer `?wait=true` requests now instead of at their timeout
            app[RUNTIME].shell.wake_waiters()
            app[RUNTIME].events.close()  # and end the event streams

    app.cleanup_ctx.append(runtime_ctx)
    app.on_shutdown.append(on_shutdown)
    return app

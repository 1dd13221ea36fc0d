"""The HTTP API's views of ledger objects, in JSON (hex for bytes) and msgpack.

Views are built once as plain values whose byte strings are `bytes`; `render` sends them as
msgpack (bytes as bin) when the client asks for `application/msgpack`, else as JSON with every
byte string hex-encoded. Request bodies are parsed by `parse_body` and `parse_transactions`,
which return a value or raise `ApiError` (a 4xx with a machine-readable code), nothing else.
This module never touches the store or the replica.
"""

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Final

import msgpack
from aiohttp import web

from ledger import tx as txs
from ledger.block import Block, BlockHeader, Certificate
from ledger.encoding import encode
from ledger.errors import InvalidEncoding, InvalidTransaction
from node.limits import ByteBudget

MSGPACK: Final = "application/msgpack"
JSON: Final = "application/json"
BATCH_TXS_MAX: Final = 10_000  # txs in one POST: the block ceiling, not more
_TX_FIELDS: Final = (
    "chain_id", "client_id", "nonce", "timestamp_ms", "key", "type", "body", "signature",
)  # fmt: skip
_READ_CHUNK_BYTES: Final = 64 * 1024
BODY: Final = web.RequestKey("body", bytes)  # the body authentication already read
RETRY_AFTER_S: Final = 1
_HEX_RE: Final = re.compile(r"^(?:[0-9a-fA-F]{2})*$")


class ApiError(Exception):
    """A request the node refuses: `status` (4xx/5xx), a stable `code` and a human `reason`."""

    def __init__(
        self, status: int, code: str, reason: str, extra: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {reason}")
        self.status = status
        self.code = code
        self.reason = reason
        self.extra = dict(extra or {})
        self.headers: dict[str, str] = {}

    def with_retry(self, seconds: int = RETRY_AFTER_S) -> "ApiError":
        """This error, telling the client when to try again (a 429 or 503)."""
        self.headers["Retry-After"] = str(seconds)
        return self


# --- Rendering -------------------------------------------------------------------------------


def wants_msgpack(request: web.Request) -> bool:
    return MSGPACK in request.headers.get("Accept", "")


def to_json_value(value: Any) -> Any:
    """`value` with every byte string as lowercase hex (JSON has no bytes)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, Mapping):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json_value(v) for v in value]
    return value


def render(
    request: web.Request, value: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    if wants_msgpack(request):
        body = msgpack.packb(value, use_bin_type=True)
        return web.Response(body=body, status=status, content_type=MSGPACK, headers=headers)
    text = json.dumps(to_json_value(value), separators=(",", ":"))
    return web.Response(text=text, status=status, content_type=JSON, headers=headers)


def error_body(code: str, reason: str, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {"error": code, "reason": reason, **(extra or {})}


# --- Views -----------------------------------------------------------------------------------


def tx_view(tx: txs.Transaction) -> dict[str, Any]:
    return {
        "tx_id": tx.tx_id,
        "chain_id": tx.chain_id,
        "client_id": tx.client_id,
        "nonce": tx.nonce,
        "timestamp_ms": tx.timestamp_ms,
        "key": tx.key,
        "type": tx.type,
        "body": tx.body,
        "signature": tx.signature,
        "raw": tx.raw,
    }


def header_view(header: BlockHeader) -> dict[str, Any]:
    return {
        "height": header.height,
        "prev_hash": header.prev_hash,
        "tx_root": header.tx_root,
        "tx_count": header.tx_count,
        "history_root": header.history_root,
        "timestamp_ms": header.timestamp_ms,
        "view": header.view,
        "proposer": header.proposer,
        "outcome_root": header.outcome_root,
        "raw": encode(header.to_list()),
    }


def certificate_view(cert: Certificate, ids: Sequence[str]) -> dict[str, Any]:
    """`ids`: the validator ids of the set that certified the block, in index order."""
    named = [(i, ids[i] if i < len(ids) else None, s) for i, s in cert.votes]
    return {
        "height": cert.height,
        "block_hash": cert.block_hash,
        "view": cert.view,
        "signers": [validator_id for _, validator_id, _ in named],
        "votes": [{"validator": i, "validator_id": v, "signature": s} for i, v, s in named],
        "raw": cert.encode(),
    }


def outcome_view(code: str) -> dict[str, Any]:
    """A committed tx's outcome as the API shows it (`code`: "" accepted, else a reason)."""
    return {"outcome": "refused" if code else "accepted", "reason": code or None}


def block_view(block: Block, cert: Certificate, ids: Sequence[str]) -> dict[str, Any]:
    return {
        "height": block.height,
        "hash": block.hash,
        "header": header_view(block.header),
        "txs": [tx_view(t) for t in block.txs],
        "outcomes": [outcome_view(code) for code in block.outcomes],
        "certificate": certificate_view(cert, ids),
    }


# --- Requests --------------------------------------------------------------------------------


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, refused (413) as soon as it is known to exceed `limit` bytes: from its
    Content-Length before reading anything, else once `limit` + 1 bytes have arrived."""
    if BODY in request:  # read (within the client limit) to check the request's signature
        cached: bytes = request[BODY]
        if len(cached) > limit:
            raise ApiError(413, txs.TOO_LARGE, f"the body exceeds the limit of {limit} bytes")
        return cached
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, txs.TOO_LARGE, f"the body exceeds the limit of {limit} bytes")
    body = bytearray()
    while chunk := await request.content.read(_READ_CHUNK_BYTES):
        body.extend(chunk)
        if len(body) > limit:
            raise ApiError(413, txs.TOO_LARGE, f"the body exceeds the limit of {limit} bytes")
    return bytes(body)


@contextlib.asynccontextmanager
async def body(request: web.Request, limit: int, budget: ByteBudget) -> AsyncIterator[bytes]:
    """The whole body, for as long as the caller works on it: refused (413) when its
    Content-Length exceeds `limit` bytes, and (503) when `budget` (the bytes that the bodies
    being read or handled may hold together) cannot reserve it, both before reading anything.
    A body without a Content-Length never gets here (`node.limits` answers it 411). A body
    that authentication read already (a signed request's) is the one used."""
    if BODY in request:
        yield await read_body(request, limit)
        return
    size = request.content_length or 0
    if size > limit:
        raise ApiError(413, txs.TOO_LARGE, f"the body exceeds the limit of {limit} bytes")
    if not budget.reserve(size):
        busy = f"request bodies being read hold {budget.reserved} bytes: retry later"
        raise ApiError(503, "busy", busy).with_retry()
    try:
        try:
            raw = await request.content.readexactly(size) if size else b""
        except (asyncio.IncompleteReadError, ConnectionError):  # the client went away
            raise ApiError(400, txs.MALFORMED, "the body ended before its length") from None
        yield raw
    finally:
        budget.release(size)


def parse_body(request: web.Request, raw: bytes) -> Any:
    """Decode a JSON or (by Content-Type) msgpack body; 400 `malformed` if it is neither."""
    if request.content_type == MSGPACK:
        try:
            return msgpack.unpackb(raw, raw=False, strict_map_key=False)
        except (ValueError, TypeError, msgpack.UnpackException, OverflowError) as exc:
            raise ApiError(400, txs.MALFORMED, f"the body is not msgpack: {exc}") from None
    if request.content_type not in (JSON, "application/octet-stream", "text/plain") and raw:
        raise ApiError(415, "unsupported_media_type", f"send {JSON} or {MSGPACK}")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, txs.MALFORMED, f"the body is not JSON: {exc}") from None


def parse_transactions(value: Any) -> tuple[list[bytes | InvalidTransaction], bool]:
    """The raw tx bytes of a submission (one tx, or `{"transactions": [...]}`), each either
    bytes to admit or the reason it cannot even be encoded; and whether it was a batch."""
    is_batch = isinstance(value, Mapping) and "transactions" in value
    if is_batch:
        items = value["transactions"]
        if not isinstance(items, list) or not items:
            raise ApiError(400, txs.MALFORMED, "transactions: expected a non-empty array")
        if len(items) > BATCH_TXS_MAX:
            raise ApiError(
                413, txs.TOO_LARGE, f"transactions: at most {BATCH_TXS_MAX} in one request"
            )
        if len(value) != 1:
            raise ApiError(400, txs.MALFORMED, "a batch has only the field 'transactions'")
    else:
        items = [value]
    return [_tx_bytes(item) for item in items], is_batch


def _tx_bytes(item: Any) -> bytes | InvalidTransaction:
    """A tx given as canonical bytes (msgpack bin), `{"raw": hex}` or its fields by name."""
    if isinstance(item, bytes):
        return item
    if not isinstance(item, Mapping):
        return InvalidTransaction(txs.MALFORMED, "a transaction is an object")
    if set(item) == {"raw"}:
        raw = item["raw"]
        if isinstance(raw, bytes):
            return raw
        return _hex(raw, "raw")
    missing = [f for f in _TX_FIELDS if f not in item]
    extra = sorted(set(item) - set(_TX_FIELDS) - {"tx_id"})
    if missing or extra:
        what = f"missing {', '.join(missing)}" if missing else f"unknown {', '.join(extra)}"
        return InvalidTransaction(txs.MALFORMED, f"transaction fields: {what}")
    signature = item["signature"]
    if not isinstance(signature, bytes):
        signature = _hex(signature, "signature")
        if isinstance(signature, InvalidTransaction):
            return signature
    fields = [item[f] for f in _TX_FIELDS[:-1]]
    try:
        return encode([txs.TX_VERSION, *fields, signature])
    except (ValueError, TypeError, OverflowError) as exc:
        return InvalidTransaction(txs.MALFORMED, f"cannot encode: {exc}")
    except InvalidEncoding as exc:
        return InvalidTransaction(txs.MALFORMED, str(exc))


def _hex(value: Any, what: str) -> bytes | InvalidTransaction:
    if not isinstance(value, str) or not _HEX_RE.fullmatch(value):
        return InvalidTransaction(txs.MALFORMED, f"{what}: expected an even-length hex string")
    return bytes.fromhex(value)

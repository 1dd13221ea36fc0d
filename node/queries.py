"""`GET /v1/records?prefix=&type=&cursor=&limit=`: the current records under a prefix, a page
at a time, in key order.

A page holds at most `limit` records and about `answer_bytes_max` bytes, and the scan behind
it visits at most `RECORDS_SCANNED_MAX` records (a type filter that matches few of them ends
the page early, with a cursor): every answer is bounded, whatever the store holds. The scan
covers only what the request's identity may read: the key ranges where the query's prefix
meets the namespaces its read policy grants (public ones for anyone, its organisation's and
those granted to it, everything for auditors and validators), so another organisation's
records are never even read. `next_cursor` is opaque to clients (the last key visited, hex);
null when nothing follows.
"""

import re
from collections.abc import Iterator
from typing import Any, Final

from aiohttp import web

from ledger import tx as txs
from ledger.genesis import GOV_NAMESPACE, Genesis
from ledger.primitives import RECORD_KEY_BYTES_MAX, RECORD_TYPE_BYTES_MAX
from ledger.store import BlockStore
from node import auth
from node.appkeys import int_param, off_loop, runtime
from node.codec import ApiError

RECORDS_LIMIT_DEFAULT: Final = 100
RECORDS_LIMIT_MAX: Final = 1000
RECORDS_SCANNED_MAX: Final = 10_000  # records one page's scan visits at most
SCAN_STEP: Final = 256  # record keys read from the index at a time
RECORD_BYTES_OVERHEAD: Final = 256  # a record's JSON beyond twice its tx bytes (hex)
_PREFIX_RE: Final = re.compile(r"^[A-Za-z0-9._:/-]*$")
_TYPE_RE: Final = re.compile(r"^[A-Za-z][A-Za-z0-9._-]*$")

Range = tuple[str, str | None]  # [low, high) of record keys; high None: no end


def _past(prefix: str) -> str | None:
    """The least key above every key that starts with `prefix` (None: no such bound)."""
    if not prefix:
        return None
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def readable_ranges(genesis: Genesis, principal: auth.Principal | None, prefix: str) -> list[Range]:
    """The key ranges under `prefix` that `principal` may read (None: anonymous), in order and
    disjoint."""
    if principal is not None and principal.reads_all:
        return [(prefix, _past(prefix))]
    namespaces = list(genesis.public_namespaces)
    if principal is not None:
        namespaces += [*genesis.readable(principal.organisation), GOV_NAMESPACE]
    starts = set()
    for ns in namespaces:
        if ns.startswith(prefix):
            starts.add(ns)
        elif prefix.startswith(ns):
            starts.add(prefix)
    ranges: list[Range] = []
    for low in sorted(starts):
        if ranges and low.startswith(ranges[-1][0]):
            continue  # inside the range before it
        ranges.append((low, _past(low)))
    return ranges


def _keys_after(store: BlockStore, ranges: list[Range], after: str | None) -> Iterator[str]:
    """Record keys in `ranges`, in order, after the key `after`."""
    for low, high in ranges:
        if after is not None and high is not None and after >= high:
            continue
        start = low if after is None or after < low else after + "\x01"
        while True:
            keys = store.record_keys(start, high, SCAN_STEP)
            yield from keys
            if len(keys) < SCAN_STEP:
                break
            start = keys[-1] + "\x01"


def _record_view(key: str, height: int, index: int, tx: txs.Transaction) -> dict[str, Any]:
    return {
        "key": key, "type": tx.type, "value": tx.body, "tx_id": tx.tx_id, "height": height,
        "index": index, "client_id": tx.client_id, "timestamp_ms": tx.timestamp_ms,
    }  # fmt: skip


def page(
    store: BlockStore, ranges: list[Range], *, type_: str | None, after: str | None, limit: int,
    bytes_max: int,
) -> dict[str, Any]:  # fmt: skip
    """One page: `{"records", "next_cursor"}`."""
    records: list[dict[str, Any]] = []
    size = 0
    last: str | None = None
    more = False
    for scanned, key in enumerate(_keys_after(store, ranges, after)):
        if len(records) >= limit or scanned >= RECORDS_SCANNED_MAX:
            more = True
            break
        found = store.latest_record(key)
        if found is None:
            raise AssertionError(f"record {key!r} is listed but has no version")
        height, index, tx = found
        if type_ is None or tx.type == type_:
            size += 2 * len(tx.raw) + RECORD_BYTES_OVERHEAD
            if records and size > bytes_max:
                more = True
                break
            records.append(_record_view(key, height, index, tx))
        last = key
    cursor = last.encode().hex() if more and last is not None else None
    return {"records": records, "next_cursor": cursor}


def valid_prefix(prefix: str) -> str:
    """`prefix` if it can start a record key, else a 400."""
    if len(prefix.encode()) > RECORD_KEY_BYTES_MAX or not _PREFIX_RE.fullmatch(prefix):
        what = f"A-Z a-z 0-9 . _ : - /, at most {RECORD_KEY_BYTES_MAX} bytes"
        raise ApiError(400, txs.MALFORMED, f"prefix: the start of a record key ({what})")
    return prefix


def _query(request: web.Request) -> tuple[str, str | None, str | None]:
    prefix = valid_prefix(request.query.get("prefix", ""))
    type_ = request.query.get("type") or None
    if type_ is not None and (
        len(type_.encode()) > RECORD_TYPE_BYTES_MAX or not _TYPE_RE.fullmatch(type_)
    ):
        raise ApiError(400, txs.MALFORMED, "type: a record type (a letter, then letters, "
                       "digits, '.', '_' or '-')")  # fmt: skip
    return prefix, type_, _cursor(request.query.get("cursor"))


def _cursor(text: str | None) -> str | None:
    if not text:
        return None
    try:
        key = bytes.fromhex(text).decode() if len(text) <= 2 * RECORD_KEY_BYTES_MAX else ""
    except (ValueError, UnicodeDecodeError):
        key = ""
    if not key or txs.key_problem(key) is not None:
        raise ApiError(400, txs.MALFORMED, "cursor: expected a next_cursor this node answered")
    return key


async def get_records(request: web.Request) -> web.StreamResponse:
    rt = runtime(request)
    prefix, type_, after = _query(request)
    limit = int_param(request, "limit", RECORDS_LIMIT_DEFAULT, 1, RECORDS_LIMIT_MAX)
    principal = request.get(auth.PRINCIPAL)
    members = rt.members()
    ranges = readable_ranges(members, principal, prefix)
    if not ranges:  # nothing under the prefix is readable: say so, as a record read would
        auth.require_read(request, members, prefix or "/")
    budget = rt.config.answer_bytes_max
    return await off_loop(request, lambda: page(
        rt.store, ranges, type_=type_, after=after, limit=limit, bytes_max=budget,
    ))  # fmt: skip

"""Routes of the records with rules: the published kinds, budget lines and risk alerts.

`GET /v1/risks?kind=&from=H&cursor=C&limit=N` pages through the alerts in (height, index in
block) order: `next_cursor` names the last alert of a page, and the next page starts after it,
in the same block if its alerts go on; an alert's evidence is tx ids, each provable.

`GET /v1/kinds[/{type}]` is anonymous (a clerk's system learns there how to write records);
a budget line (the state of a `budget.allocation`, its record key the line key) is read under
the read policy of its key. Reads come from the store's rule state, off the event loop.
"""

from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web

from ledger import tx as txs
from ledger.block import HEIGHT_MAX
from ledger.kinds import allocation, appropriation
from ledger.kinds.base import state_key
from ledger.kinds.risks import ALERT_KINDS, Alert
from ledger.kinds.schema import kind_view, kinds_view
from ledger.kinds.table import KINDS
from ledger.rulestore import ALERT_INDEX_BYTES, ALERTS_MAX
from ledger.store import BlockStore
from ledger.storelayout import HEIGHT_BYTES
from node import auth
from node.codec import ApiError, render
from node.runtime import Runtime

BUDGET_LINES_MAX: Final = 1000  # lines in one answer to ?prefix= (`truncated` says if more)
RISKS_LIMIT_DEFAULT: Final = 100
RISKS_CURSOR_BYTES: Final = HEIGHT_BYTES + ALERT_INDEX_BYTES  # an alert's height and index

RuntimeOf = Callable[[web.Request], Runtime]
OffLoop = Callable[[web.Request, Callable[[], Any]], Awaitable[web.StreamResponse]]


def budget_line(store: BlockStore, key: str) -> dict[str, Any] | None:
    """A line's `appropriated`, `allocated`, `spent` and `remaining` (integer cents)."""
    line = store.rule_state(state_key(allocation.TABLE, key))
    return None if line is None else _line_view(store, key, line)


def _line_view(store: BlockStore, key: str, line: dict[str, Any]) -> dict[str, Any]:
    source = store.rule_state(state_key(appropriation.TABLE, line["appropriation"])) or {}
    return {
        "line": key, "appropriation": line["appropriation"],
        "department": source.get("department"), "fiscal_year": source.get("fiscal_year"),
        "appropriated": source.get("amount", 0), "allocated": line["amount"],
        "spent": line["spent"], "remaining": line["amount"] - line["spent"],
    }  # fmt: skip


def alert_view(alert: Alert) -> dict[str, Any]:
    return {"kind": alert.kind, "evidence": [e.hex() for e in alert.evidence],
            "height": alert.height, "detail": alert.detail}  # fmt: skip


def _int(request: web.Request, name: str, default: int, high: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    if not text.isdigit() or not 1 <= int(text) <= high:
        raise ApiError(400, txs.MALFORMED, f"?{name}= expects an integer in [1, {high}]")
    return int(text)


def _risks_cursor(text: str | None) -> tuple[int, int] | None:
    """(height, index) of the alert a `next_cursor` names; None without one."""
    if text is None:
        return None
    try:
        raw = bytes.fromhex(text) if len(text) == 2 * RISKS_CURSOR_BYTES else b""
    except ValueError:
        raw = b""
    height = int.from_bytes(raw[:HEIGHT_BYTES], "big")
    if not raw or not 1 <= height <= HEIGHT_MAX:
        raise ApiError(400, txs.MALFORMED, "cursor: expected a next_cursor this node answered")
    return height, int.from_bytes(raw[HEIGHT_BYTES:], "big")


def _risks_cursor_text(height: int, index: int) -> str:
    return (height.to_bytes(HEIGHT_BYTES, "big") + index.to_bytes(ALERT_INDEX_BYTES, "big")).hex()


def routes(runtime_of: RuntimeOf, off_loop: OffLoop) -> tuple[tuple[str, str, Any, str], ...]:
    async def get_kinds(request: web.Request) -> web.StreamResponse:
        return render(request, kinds_view())

    async def get_kind(request: web.Request) -> web.StreamResponse:
        kind = KINDS.get(request.match_info["type"])
        if kind is None:
            known = ", ".join(KINDS)
            raise ApiError(
                404, "not_found", f"no record kind {request.match_info['type']!r}: {known}"
            )
        return render(request, kind_view(kind))

    async def get_budget_line(request: web.Request) -> web.StreamResponse:
        rt = runtime_of(request)
        key = request.match_info["key"]
        problem = txs.key_problem(key)
        if problem is not None:
            raise ApiError(400, txs.MALFORMED, problem)
        auth.require_read(request, rt.members(), key)

        def read() -> dict[str, Any]:
            found = budget_line(rt.store, key)
            if found is None:
                raise ApiError(404, "not_found", f"no budget line {key!r} (a budget.allocation)")
            return found

        return await off_loop(request, read)

    async def get_budget(request: web.Request) -> web.StreamResponse:
        rt = runtime_of(request)
        prefix = request.query.get("prefix", "")
        if len(prefix.encode()) > 256 or "\x00" in prefix:
            raise ApiError(400, txs.MALFORMED, "prefix: at most 256 bytes, no NUL")
        auth.require_read(request, rt.members(), prefix)

        def read() -> dict[str, Any]:
            table = allocation.TABLE
            found = rt.store.rule_states(state_key(table, prefix), BUDGET_LINES_MAX + 1)
            lines = [_line_view(rt.store, k[len(table) :].decode(), v) for k, v in found]
            return {"lines": lines[:BUDGET_LINES_MAX], "truncated": len(lines) > BUDGET_LINES_MAX}

        return await off_loop(request, read)

    async def get_risks(request: web.Request) -> web.StreamResponse:
        rt = runtime_of(request)
        kind = request.query.get("kind")
        if kind is not None and kind not in ALERT_KINDS:
            raise ApiError(400, txs.MALFORMED, f"kind: one of {', '.join(ALERT_KINDS)}")
        first = _int(request, "from", 1, HEIGHT_MAX)
        limit = _int(request, "limit", RISKS_LIMIT_DEFAULT, ALERTS_MAX)
        after = _risks_cursor(request.query.get("cursor"))

        def read() -> dict[str, Any]:
            page = rt.store.alerts(first, limit, kind, after)
            cursor = None
            if len(page) == limit:  # a full page: is there one more after its last alert?
                last = (page[-1][1].height, page[-1][0])
                if rt.store.alerts(first, 1, kind, last):
                    cursor = _risks_cursor_text(*last)
            return {"alerts": [alert_view(a) for _, a in page], "next_cursor": cursor}

        return await off_loop(request, read)

    return (
        ("GET", "/v1/risks", get_risks, auth.MEMBER),
        ("GET", "/v1/kinds", get_kinds, auth.OPEN),
        ("GET", "/v1/kinds/{type}", get_kind, auth.OPEN),
        ("GET", "/v1/budget", get_budget, auth.KEYED),
        ("GET", "/v1/budget/{key:.+}", get_budget_line, auth.KEYED),
    )

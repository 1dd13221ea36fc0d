"""`GET /v1/events?from=H&prefix=P`: the chain's events as Server-Sent Events.

Each committed block gives one `tx` event per tx the caller may read (and whose key starts with
`prefix`), with its outcome; then one `alert` event per risk alert the block raised whose tx (the
last of its evidence, a tx of this block) the caller may see the same way; then one `governance`
event per proposal, approval and effect of the block (node/govevents.py; every identity sees them,
under the same prefix); then one `block` event. Ids name positions: `H:I` is tx I of block H,
`H:(m+J)` alert J of a block of m txs, `H:(m+a+K)` governance event K of a block with a alerts, `H`
the end of block H. A client resumes exactly where it stopped by sending its last id as
`Last-Event-ID` (or `?from=H` to start at block H): nothing is missed and nothing comes twice.
Without either, the stream starts with the next block committed.

Blocks older than the live queue come from the store (through the read pool, a block at a time);
newer ones from the subscriber's queue (node/eventhub.py). A subscriber whose queue fills, or whose
connection takes more than `WRITE_TIMEOUT_S` to take an event, is dropped: the stream ends with a
`dropped` event naming the reason (when the connection still takes it). A comment line every
`HEARTBEAT_S` keeps idle connections open through proxies.
"""

import asyncio
import json
import re
from typing import Any, Final

from aiohttp import web

from ledger import tx as txs
from ledger.block import HEIGHT_MAX
from node import auth, codec, govevents
from node.appkeys import READS, runtime
from node.codec import ApiError
from node.eventhub import SLOW, Committed, Subscriber
from node.fiscal import alert_view
from node.queries import valid_prefix
from node.reads import ReadsBusy
from node.runtime import Runtime

HEARTBEAT_S: Final = 15.0
BUSY: Final = "busy"
WRITE_TIMEOUT_S: Final = 10.0  # one event's write; a connection slower than that is dropped
EVENT_STREAM: Final = "text/event-stream"
_ID_RE: Final = re.compile(r"^([0-9]{1,19})(?::([0-9]{1,10}))?$")

Position = tuple[int, int]  # (height, index of the next tx) of the next event to send


def start_position(request: web.Request, head: int) -> Position:
    """Where the stream starts: after the `Last-Event-ID`, at `?from=H`, or after the head."""
    last = request.headers.get("Last-Event-ID")
    if last:
        match = _ID_RE.fullmatch(last.strip())
        if match is None or int(match[1]) > HEIGHT_MAX:
            raise ApiError(400, txs.MALFORMED, "Last-Event-ID: expected an id of this stream")
        height = int(match[1])
        return (height, int(match[2]) + 1) if match[2] is not None else (height + 1, 0)
    text = request.query.get("from")
    if text is None:
        return head + 1, 0
    if not text.isdigit() or not 1 <= int(text) <= HEIGHT_MAX:
        raise ApiError(400, txs.MALFORMED, f"?from= expects a height in [1, {HEIGHT_MAX}]")
    return int(text), 0


def _frame(event: str, event_id: str, data: dict[str, Any]) -> bytes:
    text = json.dumps(codec.to_json_value(data), separators=(",", ":"))
    return f"id: {event_id}\nevent: {event}\ndata: {text}\n\n".encode()


class _Stream:
    """One subscriber's stream: what it may see, and where it is."""

    def __init__(self, request: web.Request, rt: Runtime, response: web.StreamResponse) -> None:
        self._rt = rt
        self._response = response
        self._principal = request.get(auth.PRINCIPAL)
        self._prefix = valid_prefix(request.query.get("prefix", ""))
        self._reads = request.app[READS]

    def _wants(self, key: str) -> bool:
        """Whether this stream shows an event about a tx of record `key`."""
        if not key.startswith(self._prefix):
            return False
        p = self._principal
        if p is not None and p.reads_all:
            return True
        return self._rt.members().may_read(None if p is None else p.organisation, key)

    def frames(self, item: Committed, first: int) -> bytes:
        """The events of a committed block from position `first` on (txs, alerts, the end)."""
        out = bytearray()
        block, height, count = item.block, item.height, len(item.block.txs)
        for index in range(first, count):
            tx = block.txs[index]
            if self._wants(tx.key):
                out += _frame("tx", f"{height}:{index}", {
                    "tx_id": tx.tx_id, "height": height, "index": index, "key": tx.key,
                    "type": tx.type, "client_id": tx.client_id, "status": "committed",
                    **codec.outcome_view(block.outcomes[index]),
                })  # fmt: skip
        keys = {t.tx_id: t.key for t in block.txs} if item.alerts else {}
        for number in range(max(first - count, 0), len(item.alerts)):
            alert = item.alerts[number]
            if self._shows(keys.get(alert.evidence[-1])):
                out += _frame("alert", f"{height}:{count + number}", alert_view(alert))
        start = count + len(item.alerts)  # governance events come after the alerts
        for number in range(max(first - start, 0), len(item.governance)):
            event = item.governance[number]
            if self._principal is not None and event.key.startswith(self._prefix):
                out += _frame("governance", f"{height}:{start + number}", event.view(height))
        summary: dict[str, Any] = {"height": height}
        if self._principal is not None and self._principal.reads_all:
            summary |= {"hash": block.hash, "timestamp_ms": block.header.timestamp_ms,
                        "tx_count": len(block.txs)}  # fmt: skip
        out += _frame("block", str(height), summary)
        return bytes(out)

    def _shows(self, key: str | None) -> bool:
        """An alert is seen by whoever sees the tx that raised it (`key`: its record key); one
        whose tx is not in its block (never so) only by those who read everything."""
        if key is not None:
            return self._wants(key)
        return self._principal is not None and self._principal.reads_all and not self._prefix

    async def write(self, data: bytes) -> None:
        await asyncio.wait_for(self._response.write(data), WRITE_TIMEOUT_S)

    async def next_block(self, sub: Subscriber, height: int) -> Committed | None:
        """Block `height` (with its alerts) from the queue or the store; None if it is not
        committed yet."""
        while sub.queue and sub.queue[0].height < height:
            sub.queue.popleft()
        if sub.queue and sub.queue[0].height == height:
            return sub.queue.popleft()
        if height <= self._rt.store.height:
            return await self._reads.run(self._stored, height)
        return None

    def _stored(self, height: int) -> Committed | None:
        block = self._rt.store.block(height)
        if block is None:
            return None
        store = self._rt.store
        alerts = tuple(store.alerts_at(height))
        return Committed(block, alerts, govevents.of_block(block, store.rule_state))


async def get_events(request: web.Request) -> web.StreamResponse:
    rt = runtime(request)
    position = start_position(request, rt.store.height)
    valid_prefix(request.query.get("prefix", ""))  # a bad prefix is a 400, before streaming
    sub = rt.events.subscribe()
    if sub is None:
        busy = f"{rt.events.capacity} subscribers follow already: retry later"
        raise ApiError(503, "busy", busy).with_retry()
    try:
        response = web.StreamResponse(headers={
            "Content-Type": EVENT_STREAM, "Cache-Control": "no-cache", "X-Accel-Buffering": "no",
        })  # fmt: skip
        await response.prepare(request)
        await _follow(_Stream(request, rt, response), sub, position)
        return response
    finally:
        rt.events.unsubscribe(sub)


async def _follow(stream: _Stream, sub: Subscriber, position: Position) -> None:
    height, index = position
    try:
        while sub.dropped is None:
            block = await stream.next_block(sub, height)
            if block is None:
                sub.wake.clear()
                try:
                    await asyncio.wait_for(sub.wake.wait(), HEARTBEAT_S)
                except TimeoutError:
                    await stream.write(b": keep-alive\n\n")
                continue
            await stream.write(stream.frames(block, index))
            height, index = height + 1, 0
    except TimeoutError:
        sub.drop(SLOW, f"an event took over {WRITE_TIMEOUT_S:g} s to send")
    except ReadsBusy as exc:  # the store's readers are all taken: come back later
        sub.drop(BUSY, str(exc))
    except ConnectionError:
        return
    reason = {"error": sub.dropped, "reason": sub.detail}
    try:
        data = f"event: dropped\ndata: {json.dumps(reason)}\n\n".encode()
        await stream.write(data)
    except (TimeoutError, ConnectionError):
        return

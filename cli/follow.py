"""`cityledger events` (follow the chain's event stream) and `cityledger query` (records by
prefix and type, a page at a time).

`events` reads the node's Server-Sent Events (docs/protocol.md, "Events") and prints one line
per event (`--json`: one JSON object per line). When the stream ends (the node dropped a slow
subscriber, restarted, or the connection broke) it reconnects with the last event id it saw, so
nothing is missed and nothing printed twice, up to `RECONNECTS_MAX` times in a row without an
event in between. `--until HEIGHT` ends it after that block's events.
"""

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode

import click

from cli.api import NodeClient, NodeUnreachable, Refused
from cli.errors import Failed
from cli.options import identity_options, json_option, node_option, signer_of, trust_option
from cli.output import compact, echo_json, table
from cli.records import refused
from ledger.genesis import Genesis

RECONNECTS_MAX: Final = 5
RECONNECT_PAUSE_S: Final = 1.0
QUERY_LIMIT_MAX: Final = 1000


@dataclass(frozen=True)
class Event:
    id: str | None
    event: str
    data: Any


class EventParser:
    """Server-Sent Events, a line at a time: `line()` returns an event when one is complete."""

    def __init__(self) -> None:
        self._id: str | None = None
        self._event = "message"
        self._data: list[str] = []

    def line(self, text: str) -> Event | None:
        if text == "":
            if not self._data:
                self._event = "message"
                return None
            raw = "\n".join(self._data)
            try:
                data = json.loads(raw)
            except ValueError:
                data = raw
            done = Event(self._id, self._event, data)
            self._event, self._data = "message", []
            return done
        if text.startswith(":"):
            return None  # a comment: the node's keep-alive
        name, _, value = text.partition(":")
        value = value.removeprefix(" ")
        if name == "id":
            self._id = value
        elif name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        return None


def parse(lines: Iterable[str]) -> Iterator[Event]:
    parser = EventParser()
    for text in lines:
        event = parser.line(text)
        if event is not None:
            yield event


def follow(client: NodeClient, query: dict[str, str], last_id: str | None) -> Iterator[Event]:
    """Every event from the node, reconnecting with the last id after a stream ends."""
    failures = 0
    while True:
        headers = {"Last-Event-ID": last_id} if last_id else {}
        params = {k: v for k, v in query.items() if not (last_id and k == "from")}
        path = "/v1/events" + (f"?{urlencode(params)}" if params else "")
        try:
            for event in parse(client.stream_lines(path, headers)):
                failures = 0
                if event.event == "dropped":
                    break
                if event.id is not None:
                    last_id = event.id
                yield event
        except NodeUnreachable:
            pass
        failures += 1
        if failures > RECONNECTS_MAX:
            raise Failed(f"the event stream of {client.url} ended {RECONNECTS_MAX} times in a "
                         f"row; resume with --from or the last id {last_id}")  # fmt: skip
        time.sleep(RECONNECT_PAUSE_S)  # a pause before reconnecting, not a wait for a condition


def _line(event: Event) -> str:
    d = event.data if isinstance(event.data, dict) else {}
    if event.event == "tx":
        return (f"tx     {d.get('height')}:{d.get('index')}  {d.get('key')}  {d.get('type')}  "
                f"{d.get('tx_id')}")  # fmt: skip
    if event.event == "block":
        more = f"  {d['tx_count']} txs  {d['hash']}" if "tx_count" in d else ""
        return f"block  {d.get('height')}{more}"
    return f"{event.event}  {compact(event.data)}"


@click.command()
@node_option
@identity_options
@click.option("--from", "from_height", type=click.IntRange(1), metavar="HEIGHT",
              help="Start at this block (default: the next block committed).")  # fmt: skip
@click.option("--prefix", default="", metavar="P", help="Only txs whose record key starts so.")
@click.option("--until", type=click.IntRange(1), metavar="HEIGHT",
              help="Stop after this block's events (default: follow until stopped).")  # fmt: skip
@trust_option
@json_option
def events(
    node_url: str, client_id: str | None, key_path: Path | None, from_height: int | None,
    prefix: str, until: int | None, genesis: Genesis | None, as_json: bool,
) -> None:  # fmt: skip
    """Follow the chain: committed blocks and the txs you may read, as they commit."""
    query = {"prefix": prefix} if prefix else {}
    if from_height is not None:
        query["from"] = str(from_height)
    signer = signer_of(client_id, key_path, genesis)
    with NodeClient(node_url, signer=signer, genesis=genesis) as client:
        try:
            for event in follow(client, query, None):
                if as_json:
                    click.echo(json.dumps({"id": event.id, "event": event.event,
                                           "data": event.data}))  # fmt: skip
                else:
                    click.echo(_line(event))
                if until is not None and event.event == "block" and event.data["height"] >= until:
                    return
        except Refused as exc:
            raise refused(exc, "the event stream") from None


@click.command()
@node_option
@identity_options
@click.option("--prefix", default="", metavar="P", help="Records whose key starts so.")
@click.option("--type", "type_", metavar="T", help="Only records of this type.")
@click.option("--limit", type=click.IntRange(1, QUERY_LIMIT_MAX), default=100, show_default=True,
              help="Records on one page.")  # fmt: skip
@click.option("--cursor", metavar="C", help="The next_cursor of the page before.")
@trust_option
@json_option
def query(
    node_url: str, client_id: str | None, key_path: Path | None, prefix: str,
    type_: str | None, limit: int, cursor: str | None, genesis: Genesis | None, as_json: bool,
) -> None:  # fmt: skip
    """List current records by key prefix and type, one page (follow next_cursor)."""
    params = {"prefix": prefix, "limit": str(limit)}
    params |= {"type": type_} if type_ else {}
    params |= {"cursor": cursor} if cursor else {}
    signer = signer_of(client_id, key_path, genesis)
    with NodeClient(node_url, signer=signer, genesis=genesis) as client:
        try:
            page = client.get("/v1/records?" + urlencode(params),
                              expect=("records", "next_cursor"))  # fmt: skip
        except Refused as exc:
            raise refused(exc, "the query") from None
    if as_json:
        echo_json(page)
        return
    rows = [(r["key"], r["type"], r["height"], compact(r["value"], chars=60))
            for r in page["records"]]  # fmt: skip
    click.echo(table(["key", "type", "height", "value"], rows) if rows else "(no records)")
    if page["next_cursor"]:
        click.echo(f"\nmore: --cursor {page['next_cursor']}")

"""`cityledger events` (follow the chain's event stream) and `cityledger query` (records by
prefix and type, a page at a time): the client library's `Client.events` and
`Client.query_page` on the command line.

`events` prints one line per event (`--json`: one JSON object per line). When the stream ends
(the node dropped a slow subscriber, restarted, or the connection broke) the library reconnects
with the last event id it saw (cli/client/events.py), so nothing is missed and nothing printed
twice. `--until HEIGHT` ends it after that block's events.
"""

import json
from pathlib import Path
from typing import Any, Final

import click

from cli.client import Client, Refused
from cli.client.events import Event, EventStreamEnded
from cli.errors import Failed
from cli.options import identity_options, json_option, node_option, signer_of, trust_option
from cli.output import compact, echo_json, table
from cli.records import refused
from ledger.genesis import Genesis

QUERY_LIMIT_MAX: Final = 1000


def _line(event: Event) -> str:
    d = event.data if isinstance(event.data, dict) else {}
    if event.event == "tx":
        outcome = d.get("reason") or d.get("outcome")  # a refused tx shows its reason code
        return (f"tx     {d.get('height')}:{d.get('index')}  {d.get('key')}  {d.get('type')}  "
                f"{outcome}  {d.get('tx_id')}")  # fmt: skip
    if event.event == "alert":
        evidence = " ".join(str(e)[:12] for e in d.get("evidence", []))
        return f"alert  {d.get('height')}  {d.get('kind')}  {d.get('detail')}  evidence: {evidence}"
    if event.event == "governance":
        body = d.get("change")
        change: dict[str, Any] = body if isinstance(body, dict) else {}
        what = f"{change.get('change')} {change.get('id') or change.get('organisation') or ''}"
        return (f"gov    {d.get('height')}  {d.get('kind')}  {d.get('proposal')}  {what.strip()}"
                f"  by {d.get('admin')}")  # fmt: skip
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
    signer = signer_of(client_id, key_path, genesis)
    with Client(node_url, signer=signer, genesis=genesis) as client:
        try:
            for event in client.events(from_height=from_height, prefix=prefix):
                if as_json:
                    click.echo(json.dumps({"id": event.id, "event": event.event,
                                           "data": event.data}))  # fmt: skip
                else:
                    click.echo(_line(event))
                if until is not None and event.event == "block" and event.data["height"] >= until:
                    return
        except Refused as exc:
            raise refused(exc, "the event stream") from None
        except EventStreamEnded as exc:
            raise Failed(f"{exc} (--from its height)") from None


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
    signer = signer_of(client_id, key_path, genesis)
    with Client(node_url, signer=signer, genesis=genesis) as client:
        try:
            page = client.query_page(prefix, type_, cursor=cursor, limit=limit)
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

"""`cityledger kinds` and `cityledger budget`: the published record kinds and budget lines
(and `cityledger risks`, the risk alerts), read from a node."""

import urllib.parse
from pathlib import Path
from typing import Any

import click

from cli.api import path_of
from cli.options import identity_options, json_option, node_option, signer_of, trust_option
from cli.output import echo_json, fields, table
from cli.records import fetch
from ledger.genesis import Genesis
from ledger.kinds.risks import ALERT_KINDS


def money(cents: Any) -> str:
    """Integer cents as units with two decimals and thousands separators."""
    if not isinstance(cents, int) or isinstance(cents, bool):
        return "-"
    sign = "-" if cents < 0 else ""
    return f"{sign}{abs(cents) // 100:,}.{abs(cents) % 100:02d}"


@click.command()
@node_option
@identity_options
@click.argument("kind", required=False)
@trust_option
@json_option
def kinds(
    node_url: str, client_id: str | None, key_path: Path | None, kind: str | None,
    genesis: Genesis | None, as_json: bool,
) -> None:  # fmt: skip
    """The record kinds: each one's schema (JSON Schema) and rules, or KIND's alone."""
    signer = signer_of(client_id, key_path, genesis)
    path = "/v1/kinds" + ("" if kind is None else "/" + path_of(kind))
    value = fetch(node_url, path, f"kind {kind}" if kind else "kinds", (), signer, genesis)
    if as_json:
        echo_json(value)
        return
    if kind is None:
        rows = [[k["type"], k["namespace"], "yes" if k["final"] else "no",
                 " ".join(r["code"] for r in k["rules"])] for k in value["kinds"]]  # fmt: skip
        click.echo(table(["KIND", "NAMESPACE", "FINAL", "RULES (REASON CODES)"], rows))
        return
    schema = value["schema"]
    required = set(schema["required"])
    rows = [
        [name, _type_of(prop), "yes" if name in required else "no", prop.get("description", "")]
        for name, prop in schema["properties"].items()
    ]
    click.echo(fields([("kind", value["type"]), ("namespace", value["namespace"]),
                       ("final", value["final"]), ("about", value["description"])]))  # fmt: skip
    click.echo("\n" + table(["FIELD", "TYPE", "REQUIRED", "MEANING"], rows))
    click.echo("\n" + table(["REASON CODE", "REFUSES"],
                            [[r["code"], r["description"]] for r in value["rules"]]))  # fmt: skip


def _type_of(prop: dict[str, Any]) -> str:
    if prop["type"] == "integer":
        return f"integer {prop['minimum']}..{prop['maximum']}"
    if prop["type"] == "array":
        return "list of text"
    if "x-references" in prop:
        return f"key of a {prop['x-references']}"
    if "enum" in prop:
        return " | ".join(prop["enum"])
    return "text"


@click.command()
@node_option
@identity_options
@click.argument("line_key", required=False)
@click.option("--prefix", default="", help="Lines whose keys start with this (without LINE_KEY).")
@trust_option
@json_option
def budget(
    node_url: str, client_id: str | None, key_path: Path | None, line_key: str | None,
    prefix: str, genesis: Genesis | None, as_json: bool,
) -> None:  # fmt: skip
    """Budget lines: appropriated, allocated, spent, remaining (a line is the record of its
    budget.allocation; LINE_KEY is that record's key)."""
    signer = signer_of(client_id, key_path, genesis)
    if line_key is not None:
        path, what = "/v1/budget/" + path_of(line_key), f"budget line {line_key}"
        lines = [fetch(node_url, path, what, ("line", "remaining"), signer, genesis)]
        value: Any = lines[0]
    else:
        query = "/v1/budget?prefix=" + path_of(prefix or "fiscal/")
        value = fetch(node_url, query, "budget lines", ("lines",), signer, genesis)
        lines = value["lines"]
    if as_json:
        echo_json(value)
        return
    rows = [
        [ln["line"], ln.get("department") or "-", money(ln["appropriated"]),
         money(ln["allocated"]), money(ln["spent"]), money(ln["remaining"])]
        for ln in lines
    ]  # fmt: skip
    click.echo(
        table(["LINE", "DEPARTMENT", "APPROPRIATED", "ALLOCATED", "SPENT", "REMAINING"], rows)
    )
    if line_key is None and value.get("truncated"):
        click.echo("(more lines follow: narrow --prefix)")


@click.command()
@node_option
@identity_options
@click.option("--kind", type=click.Choice(ALERT_KINDS), help="Only alerts of this kind.")
@click.option("--from", "first", type=click.IntRange(1), default=1, show_default=True,
              help="The first height to look at.")  # fmt: skip
@click.option("--cursor", default="", help="Go on after the last alert of a page (its cursor).")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@trust_option
@json_option
def risks(
    node_url: str, client_id: str | None, key_path: Path | None, kind: str | None, first: int,
    cursor: str, limit: int, genesis: Genesis | None, as_json: bool,
) -> None:  # fmt: skip
    """Risk alerts (flags for a person, never refusals) with their evidence tx ids."""
    query = f"/v1/risks?from={first}&limit={limit}" + (f"&kind={kind}" if kind else "")
    query += f"&cursor={urllib.parse.quote(cursor)}" if cursor else ""
    signer = signer_of(client_id, key_path, genesis)
    value = fetch(node_url, query, "risk alerts", ("alerts",), signer, genesis)
    if as_json:
        echo_json(value)
        return
    rows = [[a["height"], a["kind"], a.get("detail", ""), " ".join(e[:16] for e in a["evidence"])]
            for a in value["alerts"]]  # fmt: skip
    click.echo(table(["BLOCK", "ALERT", "DETAIL", "EVIDENCE (TX IDS)"], rows))
    if value.get("next_cursor") is not None:
        click.echo(f"(more follow: --cursor {value['next_cursor']})")

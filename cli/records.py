"""`cityledger submit | get | history | tx | block`: a clerk's and a reader's commands."""

import json
import secrets
import sys
import time
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode

import click
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cli import keyfile
from cli.client import Client, NotCommitted, Refused, Signer
from cli.client.core import BLOCK_FIELDS, RECORD_FIELDS, STATUS_FIELDS, WAIT_TIMEOUT_S
from cli.client.http import CLIENT_ENV, KEY_ENV, path_of
from cli.errors import Failed
from cli.options import (
    genesis_option,
    identity_options,
    json_option,
    node_option,
    signer_of,
    trust_option,
)
from cli.output import compact, echo_json, fields, table, timestamp
from ledger import tx as txs
from ledger.encoding import check_plain
from ledger.errors import InvalidEncoding, InvalidTransaction
from ledger.genesis import Genesis
from ledger.primitives import BODY_BYTES_MAX

HISTORY_LIMIT_MAX: Final = 10_000  # the node's bound on one history page
BODY_TEXT_BYTES_MAX: Final = 4 * BODY_BYTES_MAX  # JSON text is larger than its msgpack
_HINTS: Final = {
    txs.UNKNOWN_CLIENT: "is --client a client in force (`cityledger members`)?",
    txs.BAD_SIGNATURE: "is --key the private key of --client?",
    txs.WRONG_CHAIN: "is --genesis the genesis of this node's chain?",
    txs.STALE_TIMESTAMP: "is this machine's clock right?",
    txs.FUTURE_TIMESTAMP: "is this machine's clock right?",
    "unknown_identity": "is --client an identity in force (`cityledger members`)?",
    "revoked": "see `cityledger members`",
    "stale_request": "is this machine's clock right?",
    "unauthenticated": "pass --client and --key, or set CITYLEDGER_CLIENT and CITYLEDGER_KEY",
    "forbidden": "does --client's organisation (or role) read this?",
}


def refused(exc: Refused, what: str) -> Failed:
    """One sentence for a refusal: the node's reason, and a hint when the cause is likely ours."""
    hint = _HINTS.get(exc.code)
    text = f"{what}: {exc.code}: {exc.reason}" + (f" ({hint})" if hint else "")
    return Failed(text)


# --- submit ----------------------------------------------------------------------------------


class _FloatInBody(ValueError):
    pass


def _no_float(text: str) -> Any:
    raise _FloatInBody(text)


def parse_body(text: str) -> dict[str, Any]:
    """A record body from JSON text: an object of plain values, floats refused (the ledger
    forbids them: one number, one encoding)."""
    try:
        value = json.loads(text, parse_float=_no_float, parse_constant=_no_float)
    except _FloatInBody as exc:
        raise click.BadParameter(
            f"the body holds the number {exc}, but records take no floats: "
            "write it as an integer (e.g. in cents) or a string",
            param_hint="BODY_JSON",
        ) from None
    except (ValueError, RecursionError) as exc:
        raise click.BadParameter(
            f"the body is not valid JSON: {exc}", param_hint="BODY_JSON"
        ) from None
    if not isinstance(value, dict):
        raise click.BadParameter("the body must be a JSON object {...}", param_hint="BODY_JSON")
    try:
        check_plain(value, "body")
    except InvalidEncoding as exc:
        raise click.BadParameter(str(exc), param_hint="BODY_JSON") from None
    return value


def _read_body(body_json: str) -> str:
    if body_json != "-":
        return body_json
    data = sys.stdin.buffer.read(BODY_TEXT_BYTES_MAX + 1)
    if len(data) > BODY_TEXT_BYTES_MAX:
        raise click.BadParameter("the body on stdin is too large", param_hint="BODY_JSON")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise click.BadParameter("the body on stdin is not UTF-8", param_hint="BODY_JSON") from None


def load_key(path: Path, passphrase_file: Path | None = None) -> Ed25519PrivateKey:
    """The key of `--key` (encrypted ones too); a mistake is one line and exit 2."""
    return keyfile.load_key(path, passphrase_file)


def check_locally(tx: txs.Transaction, genesis: Genesis) -> None:
    """What the node would refuse whatever the configuration in force, said before anything
    is sent: a tx for another chain. Signer, key and namespace may have changed by governance
    since the genesis (ledger/gov): the node judges those, and its answer names the reason."""
    try:
        txs.check_stateless(tx, genesis)
    except InvalidTransaction as exc:
        if exc.reason != txs.WRONG_CHAIN:
            return
        hint = _HINTS.get(exc.reason)
        raise Failed(
            f"the record would be refused: {exc.detail}" + (f" ({hint})" if hint else "")
        ) from None


def make_tx(
    key: Ed25519PrivateKey,
    *,
    chain_id: str,
    client_id: str,
    record_key: str,
    record_type: str,
    body: dict[str, Any],
) -> txs.Transaction:
    """Sign a record; nonce random 64-bit, timestamp from this machine's clock."""
    try:
        return txs.create(
            key,
            chain_id=chain_id,
            client_id=client_id,
            nonce=secrets.randbits(64),
            timestamp_ms=time.time_ns() // 1_000_000,
            key=record_key,
            type_=record_type,
            body=body,
        )
    except InvalidTransaction as exc:
        detail = exc.detail or str(exc)
        hint = {"key": "RECORD_KEY", "type": "TYPE", "body": "BODY_JSON"}.get(
            detail.partition(":")[0]
        )
        raise click.BadParameter(detail, param_hint=hint) from None


def send(client: Client, tx: txs.Transaction, *, wait: bool, timeout_s: float) -> dict[str, Any]:
    """Submit `tx` under the library's retry rule; with `wait`, return once it is committed.
    The six fields of `submit --json` (DESIGN.md: a tx status, with its outcome and reason)."""
    try:
        return client.submit(tx, wait=wait, timeout_s=timeout_s).as_dict()
    except Refused as exc:
        raise refused(exc, "the node refused the record") from None
    except NotCommitted as exc:
        raise Failed(f"{exc} (follow it with `cityledger tx {exc.tx_id}`)") from None


@click.command()
@node_option
@click.option(
    "--client", "client_id", required=True, envvar=CLIENT_ENV, metavar="ID",
    help=f"Client id in the genesis (default: ${CLIENT_ENV}).",
)  # fmt: skip
@click.option(
    "--key",
    "key_path",
    required=True,
    envvar=KEY_ENV,
    metavar="PEM",
    type=click.Path(path_type=Path),  # checked when read: a mistake is one line
    help="The client's private key (PKCS#8 PEM, mode 0600; encrypted or not).",
)
@keyfile.passphrase_file_option(keyfile.KEY_PASSPHRASE_HELP)
@click.argument("record_key")
@click.argument("record_type", metavar="TYPE")
@click.argument("body_json")
@click.option("--wait", is_flag=True, help="Wait until the record is committed; print its height.")
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(1, 3600),
    default=WAIT_TIMEOUT_S,
    show_default=True,
    help="Seconds --wait waits for the commit.",
)
@genesis_option(
    required=False,
    help_text="Take the chain id from this genesis and trust only the validators in force "
    "on its chain, learnt from it (default: $CITYLEDGER_GENESIS).",
)
@json_option
def submit(
    node_url: str,
    client_id: str,
    key_path: Path,
    passphrase_file: Path | None,
    record_key: str,
    record_type: str,
    body_json: str,
    wait: bool,
    timeout_s: float,
    genesis: Genesis | None,
    as_json: bool,
) -> None:
    """Sign a record with a client key and send it to a node.

    RECORD_KEY is the record's path, e.g. fiscal/budget/2025/roads; TYPE names its kind, e.g.
    budget.allocation; BODY_JSON is a JSON object of plain values (no floats), or - for stdin.
    """
    key = load_key(key_path, passphrase_file)
    body = parse_body(_read_body(body_json))
    # The ledger's own rules on key, type and body size, before anything goes on the wire.
    fields_ = {"client_id": client_id, "record_key": record_key, "record_type": record_type}
    make_tx(key, chain_id=genesis.chain_id if genesis else "check", body=body, **fields_)
    signer = Signer(client_id, key, None if genesis is None else genesis.chain_id)
    with Client(node_url, signer=signer, genesis=genesis) as client:
        tx = client.build(record_key, record_type, body)
        if genesis is not None:
            check_locally(tx, genesis)
        status = send(client, tx, wait=wait, timeout_s=timeout_s)
    if as_json:
        echo_json(status)
    else:
        pairs: list[tuple[str, object]] = [("tx_id", status["tx_id"]), ("status", status["status"])]
        if status["status"] == "committed":
            pairs += [("height", status["height"]), ("index", status["index"])]
            pairs += [("outcome", status["outcome"])]
            if status["reason"]:
                pairs += [("reason", status["reason"])]
        click.echo(fields(pairs))
    if status.get("outcome") == "refused":  # recorded in its block, refused by a rule there
        raise Failed(f"a rule refused the record in its block: {status['reason']}")


# --- reading ---------------------------------------------------------------------------------


def fetch(
    node_url: str,
    path: str,
    what: str,
    expect: tuple[str, ...],
    signer: Signer | None,
    genesis: Genesis | None,
) -> Any:
    with Client(node_url, signer=signer, genesis=genesis) as client:
        try:
            return client.get(path, expect=expect)
        except Refused as exc:
            if exc.status == 404:
                raise Failed(f"{exc.reason} (asked {node_url})") from None
            raise refused(exc, what) from None


@click.command()
@node_option
@identity_options
@click.argument("record_key")
@trust_option
@json_option
def get(
    node_url: str, client_id: str | None, key_path: Path | None, record_key: str,
    genesis: Genesis | None, as_json: bool,
) -> None:  # fmt: skip
    """Show the current value of a record."""
    value = fetch(
        node_url,
        "/v1/records/" + path_of(record_key),
        f"record {record_key}",
        RECORD_FIELDS,
        signer_of(client_id, key_path, genesis),
        genesis,
    )
    if as_json:
        echo_json(value)
        return
    click.echo(
        fields(
            [
                ("key", value["key"]),
                ("type", value["type"]),
                ("value", json.dumps(value["value"], ensure_ascii=False, sort_keys=True)),
                ("tx_id", value["tx_id"]),
                ("height", value["height"]),
                ("index", value["index"]),
                ("client", value.get("client_id")),
                ("signed at", timestamp(value.get("timestamp_ms"))),
            ]
        )
    )


@click.command()
@node_option
@identity_options
@click.argument("record_key")
@click.option("--limit", type=click.IntRange(1, HISTORY_LIMIT_MAX), help="Versions on one page.")
@click.option("--cursor", metavar="C", help="The next_cursor of the page before.")
@trust_option
@json_option
def history(
    node_url: str, client_id: str | None, key_path: Path | None, record_key: str,
    limit: int | None, cursor: str | None, genesis: Genesis | None, as_json: bool,
) -> None:  # fmt: skip
    """Show the versions of a record, oldest first (a page at a time: follow --cursor)."""
    params = ({"limit": str(limit)} if limit else {}) | ({"cursor": cursor} if cursor else {})
    value = fetch(
        node_url,
        "/v1/history/" + path_of(record_key) + (f"?{urlencode(params)}" if params else ""),
        f"record {record_key}",
        ("key", "versions"),
        signer_of(client_id, key_path, genesis),
        genesis,
    )
    if as_json:
        echo_json(value)
        return
    versions = value["versions"]
    click.echo(
        f"{value['key']}: {len(versions)} version{'s' if len(versions) != 1 else ''}, oldest first"
    )
    for n, v in enumerate(versions, 1):
        click.echo(
            f"\n#{n}  height {v['height']}, index {v['index']}  {timestamp(v.get('timestamp_ms'))}"
            f"  by {v.get('client_id')}  type {v['type']}"
        )
        click.echo(f"    tx     {v['tx_id']}")
        click.echo(f"    value  {compact(v['value'], chars=200)}")
    if value.get("next_cursor"):
        click.echo(f"\nmore: --cursor {value['next_cursor']}")


def _tx_id(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    text = value.lower()
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise click.BadParameter("expected 64 hex digits (a tx id as `submit` prints it)")
    return text


TX_ID_ARG = click.argument("tx_id", callback=_tx_id)


@click.command("tx")
@node_option
@identity_options
@TX_ID_ARG
@trust_option
@json_option
def tx_command(
    node_url: str, client_id: str | None, key_path: Path | None, tx_id: str,
    genesis: Genesis | None, as_json: bool,
) -> None:  # fmt: skip
    """Show a transaction: its status and, once committed, where and what."""
    signer = signer_of(client_id, key_path, genesis)
    value = fetch(
        node_url, f"/v1/transactions/{tx_id}", f"tx {tx_id}", STATUS_FIELDS, signer, genesis
    )
    if as_json:
        echo_json(value)
        return
    pairs: list[tuple[str, object]] = [("tx_id", value["tx_id"]), ("status", value["status"])]
    tx = value.get("tx")
    if value["status"] == "committed" and isinstance(tx, dict):
        pairs += [
            ("height", value["height"]),
            ("index", value["index"]),
            ("outcome", value.get("outcome")),
            *([("reason", value["reason"])] if value.get("reason") else []),
            ("key", tx["key"]),
            ("type", tx["type"]),
            ("client", tx["client_id"]),
            ("signed at", timestamp(tx["timestamp_ms"])),
            ("nonce", tx["nonce"]),
            ("chain", tx["chain_id"]),
            ("body", json.dumps(tx["body"], ensure_ascii=False, sort_keys=True)),
            ("signature", tx["signature"]),
        ]
    click.echo(fields(pairs))


def _height(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    if value != "latest" and not (value.isdigit() and 1 <= int(value) < 2**63):
        raise click.BadParameter("expected a block height (1, 2, ...) or 'latest'")
    return value


def block_lines(value: dict[str, Any], names: dict[int, str], n_validators: int) -> list[str]:
    """A block for people: header, who certified it, its transactions."""
    header, cert = value["header"], value["certificate"]
    signers = [v.get("validator_id") or f"#{v['validator']}" for v in cert["votes"]]
    lines = [
        f"block {value['height']}  {value['hash']}",
        fields(
            [
                ("  time", timestamp(header["timestamp_ms"])),
                ("  view", header["view"]),
                ("  proposer", names.get(header["proposer"], f"#{header['proposer']}")),
                ("  prev_hash", header["prev_hash"]),
                ("  tx_root", header["tx_root"]),
                ("  history_root", header["history_root"]),
                (
                    "  certified by",
                    f"{', '.join(signers)} ({len(signers)} of {n_validators} validators)",
                ),
            ]
        ),
    ]
    txs_ = value["txs"]
    if txs_:
        rows = [
            [i, t["tx_id"][:16], t["client_id"], t["key"], t["type"]] for i, t in enumerate(txs_)
        ]
        lines += ["", table(["#", "TX", "CLIENT", "KEY", "TYPE"], rows)]
    else:
        lines.append("  (no transactions)")
    return lines


@click.command()
@node_option
@identity_options
@click.argument("height", metavar="HEIGHT|latest", callback=_height)
@genesis_option(
    required=False,
    help_text="Name the signers from this genesis; trust only the validators in force "
    "on its chain, learnt from it (default: $CITYLEDGER_GENESIS).",
)
@json_option
def block(
    node_url: str, client_id: str | None, key_path: Path | None, height: str,
    genesis: Genesis | None, as_json: bool,
) -> None:  # fmt: skip
    """Show a committed block: header, certificate signers, transactions (validators and
    auditors only)."""
    signer = signer_of(client_id, key_path, genesis)
    value = fetch(
        node_url, f"/v1/blocks/{height}", f"block {height}", BLOCK_FIELDS, signer, genesis
    )
    if as_json:
        echo_json(value)
        return
    # The validators of the block's epoch: the configuration in force after the block below.
    epoch = fetch(node_url, f"/v1/config?height={int(value['height']) - 1}", "configuration",
                  ("validators",), signer, genesis)  # fmt: skip
    names = {i: str(v["id"]) for i, v in enumerate(epoch["validators"])}
    click.echo("\n".join(block_lines(value, names, len(names))))

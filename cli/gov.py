"""`cityledger members` and `cityledger gov propose|approve|list|show`: the configuration in
force and the governance txs that change it (docs/protocol.md section 20).

A proposal or approval is a tx signed by an admin (`--admin ID --key PEM`), sent like any
record and waited for: the command prints the proposal's id and its outcome, and exits 1 when
the node or a rule in block order refuses it (the reason code is printed).
"""

import hashlib
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import click

from cli import keyfile
from cli.api import path_of
from cli.client import Client, Signer
from cli.client.core import WAIT_TIMEOUT_S
from cli.errors import Failed
from cli.options import identity_options, json_option, node_option, signer_of, trust_option
from cli.output import echo_json, fields, table
from cli.records import fetch, send
from ledger import crypto
from ledger.genesis import Genesis
from ledger.gov import changes, epochs, machine

CHANGE_OPTIONS: Final = {  # the CLI option of each field of a change's body
    "id": "--id", "organisation": "--organisation", "role": "--role", "kind": "--kind",
    "url": "--url", "public_key": "--public-key / --public-key-file", "namespaces": "--namespaces",
    "params": "--param", "proof": "--proof / --public-key-file",
}  # fmt: skip
POSSESSED: Final = (changes.ADD_VALIDATOR, changes.ROTATE_VALIDATOR_KEY)  # carry a proof


def _admin_options(f: Any) -> Any:
    f = keyfile.passphrase_file_option(keyfile.KEY_PASSPHRASE_HELP)(f)
    key = click.option(
        "--key",
        "key_path",
        required=True,
        metavar="PEM",
        type=click.Path(path_type=Path),
        help="The admin's private key.",
    )
    admin = click.option(
        "--admin",
        "admin_id",
        required=True,
        metavar="ID",
        help="An admin identity of the configuration in force.",
    )
    return admin(key(f))


def _public_key(hex_key: str | None, key_file: Path | None) -> str | None:
    if hex_key is not None and key_file is not None:
        raise click.UsageError("--public-key and --public-key-file exclude each other")
    if key_file is not None:  # a private key file (`cityledger keys new`): its public half
        return crypto.public_key_bytes(keyfile.load_key(key_file, None)).hex()
    return hex_key


def _proof(
    change: str, proof: str | None, key_file: Path | None, validator_id: str | None,
    chain_id: Callable[[], str],
) -> str | None:  # fmt: skip
    """A validator key's proof of possession: given (`--proof`, as `cluster add-node` prints
    it), or signed here with the key file the new key is read from."""
    if change not in POSSESSED or proof is not None or key_file is None or not validator_id:
        return proof
    key = keyfile.load_key(key_file, None)
    return epochs.sign_possession(key, chain_id(), validator_id)


def _params(pairs: tuple[str, ...]) -> dict[str, int]:
    out: dict[str, int] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name or not value.lstrip("-").isdigit():
            raise click.BadParameter(f"{pair!r}: NAME=INTEGER", param_hint="--param")
        out[name] = int(value)
    return out


def change_body(change: str, given: dict[str, Any]) -> dict[str, Any]:
    """The body of a proposal of `change` from the options given; usage errors name the
    missing or extra options."""
    names = changes.FIELDS[change]
    present = {k: v for k, v in given.items() if v not in (None, (), {})}
    if change in (changes.SET_WRITE_POLICY, changes.SET_READ_POLICY) and "namespaces" in given:
        present.setdefault("namespaces", given["namespaces"])
    if change == changes.ADD_CLIENT:
        present.setdefault("role", "clerk")
    missing = [CHANGE_OPTIONS[n] for n in names if n not in present]
    extra = [CHANGE_OPTIONS[n] for n in present if n not in names]
    if missing or extra:
        raise click.UsageError(
            f"{change} takes {', '.join(CHANGE_OPTIONS[n] for n in names)}"
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; not {', '.join(extra)}" if extra else "")
        )
    return {"change": change, **{n: present[n] for n in names}}


def send_governance(
    node_url: str, genesis: Genesis | None, admin_id: str, key_path: Path,
    passphrase_file: Path | None, proposal_id: str, record_type: str, body: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """Send a proposal or approval of `proposal_id` and wait for it; its tx status, and the
    proposal's status once the tx is accepted (`proposal_status`, `effective_height`)."""
    key = keyfile.load_key(key_path, passphrase_file)
    signer = Signer(admin_id, key, None if genesis is None else genesis.chain_id)
    prefix = machine.PROPOSALS if record_type == machine.PROPOSAL_TYPE else machine.APPROVALS
    with Client(node_url, signer=signer, genesis=genesis) as client:
        tx = client.build(prefix + proposal_id, record_type, body)
        status = send(client, tx, wait=True, timeout_s=WAIT_TIMEOUT_S)
        if status.get("outcome") == "accepted":
            path = "/v1/governance/proposals/" + path_of(proposal_id)
            proposal = client.get(path, expect=("status", "effective_height"))
            status["proposal_status"] = proposal["status"]
            status["effective_height"] = proposal["effective_height"]
    return status


def _report(proposal_id: str, status: dict[str, Any], as_json: bool) -> None:
    if as_json:
        echo_json({"id": proposal_id, **status})
    else:
        pairs: list[tuple[str, object]] = [("proposal", proposal_id)]
        pairs += [(k, status[k]) for k in ("tx_id", "height", "outcome") if status.get(k)]
        if status.get("reason"):
            pairs.append(("reason", status["reason"]))
        if "proposal_status" in status:
            effective = status["effective_height"]
            pairs.append(("status", status["proposal_status"] + (
                f" (in force from block {effective + 1})" if effective else "")))  # fmt: skip
        click.echo(fields(pairs))
    if status.get("outcome") == "refused":
        raise Failed(f"governance refused it in its block: {status['reason']}")


@click.group()
def gov() -> None:
    """Governance: propose and approve changes of the configuration in force."""


@gov.command()
@node_option
@_admin_options
@click.argument("change", type=click.Choice(changes.KINDS))
@click.option("--id", "id_", metavar="ID", help="The client, admin or validator id.")
@click.option("--organisation", help="Its organisation.")
@click.option("--role", type=click.Choice(("clerk", "auditor")), help="add-client: the role.")
@click.option("--kind", type=click.Choice(("municipal", "insurer")), help="A validator's kind.")
@click.option("--url", help="A validator's URL.")
@click.option("--public-key", "public_key", metavar="HEX", help="64 hex digits.")
@click.option("--public-key-file", type=click.Path(path_type=Path), metavar="PEM",
              help="A private key file whose public key is meant.")  # fmt: skip
@click.option("--namespaces", help="Comma-separated prefixes (empty: none), e.g. fiscal/,claims/")
@click.option("--param", "param", multiple=True, metavar="NAME=VALUE",
              help="set-params: governance.*, consensus.*.")  # fmt: skip
@click.option(
    "--proof",
    metavar="HEX",
    help="A new validator key's proof of possession "
    "(`cluster add-node` prints it; signed here when --public-key-file is given).",
)
@click.option("--proposal-id", metavar="ID", help="The new proposal's id (default: made up).")
@trust_option
@json_option
def propose(
    node_url: str, admin_id: str, key_path: Path, passphrase_file: Path | None, change: str,
    id_: str | None, organisation: str | None, role: str | None, kind: str | None,
    url: str | None, public_key: str | None, public_key_file: Path | None,
    namespaces: str | None, param: tuple[str, ...], proof: str | None,
    proposal_id: str | None, genesis: Genesis | None, as_json: bool,
) -> None:  # fmt: skip
    """Propose CHANGE; print the proposal's id (others approve it with `gov approve`)."""
    given = {
        "id": id_, "organisation": organisation, "role": role, "kind": kind, "url": url,
        "public_key": _public_key(public_key, public_key_file), "params": _params(param),
        "namespaces": None if namespaces is None else [n for n in namespaces.split(",") if n],
        "proof": _proof(change, proof, public_key_file, id_,
                        lambda: chain_id_of(node_url, genesis)),
    }  # fmt: skip
    body = change_body(change, given)
    pid = proposal_id or _made_up_id(body)
    status = send_governance(node_url, genesis, admin_id, key_path, passphrase_file, pid,
                     machine.PROPOSAL_TYPE, body)  # fmt: skip
    _report(pid, status, as_json)


def chain_id_of(node_url: str, genesis: Genesis | None) -> str:
    if genesis is not None:
        return genesis.chain_id
    with Client(node_url) as client:
        return client.chain_id


def _made_up_id(body: dict[str, Any]) -> str:
    """A new proposal id: the change's kind and a few random hex digits."""
    salt = secrets.token_bytes(8)
    digest = hashlib.sha256(salt + repr(sorted(body.items())).encode()).hexdigest()
    return f"{body['change']}-{digest[:12]}"


@gov.command()
@node_option
@_admin_options
@click.argument("proposal_id")
@trust_option
@json_option
def approve(
    node_url: str, admin_id: str, key_path: Path, passphrase_file: Path | None,
    proposal_id: str, genesis: Genesis | None, as_json: bool,
) -> None:  # fmt: skip
    """Approve PROPOSAL_ID for the admin's organisation."""
    status = send_governance(node_url, genesis, admin_id, key_path, passphrase_file, proposal_id,
                     machine.APPROVAL_TYPE, {})  # fmt: skip
    _report(proposal_id, status, as_json)


@gov.command(name="list")
@node_option
@identity_options
@click.option("--all", "every", is_flag=True, help="Effective and expired ones too.")
@trust_option
@json_option
def list_(
    node_url: str, client_id: str | None, key_path: Path | None, every: bool,
    genesis: Genesis | None, as_json: bool,
) -> None:  # fmt: skip
    """The pending proposals (--all: every one)."""
    signer = signer_of(client_id, key_path, genesis)
    path = "/v1/governance/proposals" + ("?all=true" if every else "")
    value = fetch(node_url, path, "proposals", ("proposals",), signer, genesis)
    if as_json:
        echo_json(value)
        return
    rows = [[p["id"], p["change"].get("change", "?"), p["status"], len(p["approvals"]),
             p["quorum"], p["effective_height"] or "-"] for p in value["proposals"]]  # fmt: skip
    click.echo(table(["PROPOSAL", "CHANGE", "STATUS", "APPROVALS", "QUORUM", "EFFECTIVE"], rows))


@gov.command()
@node_option
@identity_options
@click.argument("proposal_id")
@trust_option
@json_option
def show(
    node_url: str, client_id: str | None, key_path: Path | None, proposal_id: str,
    genesis: Genesis | None, as_json: bool,
) -> None:  # fmt: skip
    """One proposal: its change, status, approvals and effect height."""
    signer = signer_of(client_id, key_path, genesis)
    path = "/v1/governance/proposals/" + path_of(proposal_id)
    value = fetch(node_url, path, f"proposal {proposal_id}", ("id", "status"), signer, genesis)
    if as_json:
        echo_json(value)
        return
    click.echo(
        fields(
            [
                (k, value[k])
                for k in (
                    "id",
                    "status",
                    "proposer",
                    "organisation",
                    "height",
                    "expires_after",
                    "effective_height",
                )
            ]
        )
    )
    click.echo(fields([("approvals", ", ".join(value["approvals"])), ("quorum", value["quorum"])]))
    click.echo(fields([(k, v) for k, v in value["change"].items()]))


@click.command()
@node_option
@identity_options
@click.option("--at", "height", type=click.IntRange(0), help="After this block (default: head).")
@trust_option
@json_option
def members(
    node_url: str, client_id: str | None, key_path: Path | None, height: int | None,
    genesis: Genesis | None, as_json: bool,
) -> None:  # fmt: skip
    """The configuration in force: validators, clients, admins, policies, parameters."""
    signer = signer_of(client_id, key_path, genesis)
    path = "/v1/config" + ("" if height is None else f"?height={height}")
    value = fetch(node_url, path, "the configuration", ("height", "epoch"), signer, genesis)
    if as_json:
        echo_json(value)
        return
    click.echo(fields([("height", value["height"]), ("epoch", value["epoch"]),
                       ("version", value["version"]), ("since", value["since"])]))  # fmt: skip
    click.echo("\n" + table(["VALIDATOR", "ORGANISATION", "KIND", "URL"],
                            [[v["id"], v["organisation"], v["kind"], v["url"]]
                             for v in value["validators"]]))  # fmt: skip
    click.echo("\n" + table(["CLIENT", "ORGANISATION", "ROLE", "PUBLIC KEY"],
                            [[c["id"], c["organisation"], c["role"], c["public_key"][:16]]
                             for c in value["clients"]]))  # fmt: skip
    click.echo("\n" + table(["ADMIN", "ORGANISATION", "PUBLIC KEY"],
                            [[a["id"], a["organisation"], a["public_key"][:16]]
                             for a in value["admins"]]))  # fmt: skip
    writes = value["policies"]["write"]
    click.echo("\n" + table(["ORGANISATION", "MAY WRITE"],
                            [[org, " ".join(ns)] for org, ns in writes.items()]))  # fmt: skip
    if value["retired"]:
        click.echo(f"\nretired (revoked or removed): {', '.join(value['retired'])}")

"""`cityledger genesis member|assemble|hash`: a network's genesis without a single key holder.

Each organisation makes its keys on its own machine (`cityledger keys new`) and hands over
only a public **member file** (`genesis member`): its validator (id, organisation, kind,
public key, URL), the namespaces it writes, the public keys of its clerks and admins, and a
signature by its validator key over all of that, which proves the file comes from the key's
holder and that nothing in it was changed on the way. `genesis assemble` checks every member
file and writes the genesis: validators ordered by id, so that every member who assembles the
same files gets the same genesis, whatever the order they were given in. `genesis hash`
prints the hash that every member compares before starting its node (docs/protocol.md 10.8).
"""

import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import click

from cli import keyfile
from cli.errors import Failed
from cli.options import json_option
from cli.output import echo_json
from ledger import crypto
from ledger import genesis as genesis_mod
from ledger.encoding import encode
from ledger.errors import InvalidGenesis
from ledger.genesis import _toml_value as toml_value
from ledger.primitives import PUBLIC_KEY_BYTES

MEMBER_FORMAT: Final = "cityledger-member/1"
MEMBER_BYTES_MAX: Final = 64 * 1024
MEMBERS_MAX: Final = 64  # one validator each
MEMBER_IDENTITIES_MAX: Final = 100  # clients or admins one member file lists
MEMBER_FIELDS: Final = frozenset(
    {"format", "id", "organisation", "kind", "public_key", "url", "namespaces", "clients",
     "admins", "signature"}
)  # fmt: skip
CLIENT_FIELDS: Final = frozenset({"id", "role", "public_key"})
ADMIN_FIELDS: Final = frozenset({"id", "public_key"})


@click.group("genesis")
def genesis_group() -> None:
    """Assemble a genesis from the public member files of every organisation."""


def member_payload(doc: dict[str, Any]) -> bytes:
    """The bytes a member's validator key signs (MEMBER domain): every field but the
    signature, in a fixed order, keys as raw bytes."""
    return encode([
        doc["format"], doc["id"], doc["organisation"], doc["kind"],
        bytes.fromhex(doc["public_key"]), doc["url"], list(doc["namespaces"]),
        [[c["id"], c["role"], bytes.fromhex(c["public_key"])] for c in doc["clients"]],
        [[a["id"], bytes.fromhex(a["public_key"])] for a in doc["admins"]],
    ])  # fmt: skip


def _identity(text: str, option: str) -> tuple[str, str]:
    """`ID=PEM` (a private key file of this machine) or `ID=HEX` (a public key) -> (id, hex)."""
    signer_id, sep, where = text.partition("=")
    if not sep or not genesis_mod.is_identifier(signer_id):
        raise click.BadParameter(f"{text!r}: expected ID=KEY.pem or ID=PUBLIC_KEY_HEX", None, None,
                                 option)  # fmt: skip
    if len(where) == PUBLIC_KEY_BYTES * 2 and all(c in "0123456789abcdefABCDEF" for c in where):
        return signer_id, where.lower()
    key = keyfile.load_key(Path(where))
    return signer_id, crypto.public_key_bytes(key).hex()


@genesis_group.command("member")
@click.option("--id", "member_id", required=True, help="The validator's id (e.g. finance).")
@click.option("--organisation", required=True, help="The organisation that runs it.")
@click.option("--kind", required=True, type=click.Choice(["municipal", "insurer"]))
@click.option("--url", required=True, help="Where its peers reach the node (https://HOST:PORT).")
@click.option(
    "--key",
    "key_path",
    required=True,
    metavar="PEM",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The validator's private key (from `cityledger keys new`); it signs the file.",
)
@click.option(
    "--namespace",
    "namespaces",
    multiple=True,
    metavar="NS",
    help="A namespace the organisation writes, e.g. fiscal/ (repeatable).",
)
@click.option(
    "--client",
    "clients",
    multiple=True,
    metavar="ID=KEY",
    help="A clerk: ID=PEM (its key file) or ID=PUBLIC_KEY_HEX (repeatable).",
)
@click.option(
    "--auditor",
    "auditors",
    multiple=True,
    metavar="ID=KEY",
    help="An auditor (reads everything, writes nothing), as --client.",
)
@click.option(
    "--admin",
    "admins",
    multiple=True,
    metavar="ID=KEY",
    help="A governance admin of the organisation, as --client.",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The member file to write (public: no private key).",
)
@keyfile.passphrase_file_option("The passphrase file of an encrypted --key.")
@json_option
def member(
    member_id: str, organisation: str, kind: str, url: str, key_path: Path,
    namespaces: Sequence[str], clients: Sequence[str], auditors: Sequence[str],
    admins: Sequence[str], output: Path, passphrase_file: Path | None, as_json: bool,
) -> None:  # fmt: skip
    """Write this organisation's public member file, signed by its validator key."""
    key = keyfile.load_key(key_path, passphrase_file)
    doc: dict[str, Any] = {
        "format": MEMBER_FORMAT, "id": member_id, "organisation": organisation, "kind": kind,
        "public_key": crypto.public_key_bytes(key).hex(), "url": url,
        "namespaces": list(namespaces),
        "clients": [{"id": i, "role": role, "public_key": k}
                    for role, given, hint in (("clerk", clients, "--client"),
                                              ("auditor", auditors, "--auditor"))
                    for i, k in (_identity(t, hint) for t in given)],
        "admins": [{"id": i, "public_key": k}
                   for i, k in (_identity(t, "--admin") for t in admins)],
    }  # fmt: skip
    problems = _check_member(doc)  # the same checks `assemble` runs, before anything is written
    if problems:
        raise click.UsageError("; ".join(problems))
    doc["signature"] = crypto.sign(key, crypto.Domain.MEMBER, member_payload(doc)).hex()
    with open(output, "x", encoding="utf-8") as handle:  # never overwrite
        handle.write(render_member(doc))
    if as_json:
        echo_json({"file": str(output), "id": member_id, "public_key": doc["public_key"]})
    else:
        click.echo(f"wrote {output}: member {member_id} ({organisation}), public key "
                   f"{doc['public_key']}; hand it to the genesis assembler")  # fmt: skip


def render_member(doc: dict[str, Any]) -> str:
    value = toml_value
    lines = [
        "# A CityLedger member file: public, no private key. `cityledger genesis assemble`",
        "# checks its signature (by the validator key) before it enters a genesis.",
        *(f"{k} = {value(doc[k])}" for k in
          ("format", "id", "organisation", "kind", "public_key", "url", "namespaces", "signature")),
    ]  # fmt: skip
    for table in ("clients", "admins"):
        for entry in doc[table]:
            lines += ["", f"[[{table}]]", *(f"{k} = {value(v)}" for k, v in entry.items())]
    return "\n".join(lines) + "\n"


def _check_member(doc: dict[str, Any]) -> list[str]:
    """What is wrong with a member's content as a genesis would hold it ([] if nothing)."""
    problems = []
    if len(doc["clients"]) + len(doc["admins"]) > MEMBER_IDENTITIES_MAX:
        problems.append(f"more than {MEMBER_IDENTITIES_MAX} clients and admins")
    try:
        genesis_mod.from_dict(_genesis_doc("check", [doc]))
    except InvalidGenesis as exc:
        problems += exc.problems
    return problems


def read_member(path: Path) -> dict[str, Any]:
    """A member file, checked: its fields, its content and its signature; `Failed` if not."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MEMBER_BYTES_MAX + 1)
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc.strerror}") from None
    try:
        if len(data) > MEMBER_BYTES_MAX:
            raise ValueError(f"larger than {MEMBER_BYTES_MAX} bytes")
        doc = tomllib.loads(data.decode("utf-8"))
        _exactly(doc, MEMBER_FIELDS, "the file")
        if doc["format"] != MEMBER_FORMAT:
            raise ValueError(f"format is not {MEMBER_FORMAT!r}")
        for entry in doc["clients"]:
            _exactly(entry, CLIENT_FIELDS, "a client")
        for entry in doc["admins"]:
            _exactly(entry, ADMIN_FIELDS, "an admin")
        problems = _check_member(doc)
        if problems:
            raise ValueError("; ".join(problems))
        public = crypto.load_public_key(bytes.fromhex(doc["public_key"]))
        signature = bytes.fromhex(doc["signature"])
        if not crypto.verify(public, crypto.Domain.MEMBER, member_payload(doc), signature):
            raise ValueError("its signature does not verify under its validator key: altered?")
    except (ValueError, TypeError, KeyError, UnicodeDecodeError, crypto.WeakKey) as exc:
        raise Failed(f"{path} is not a valid member file: {exc}") from None
    return doc


def _exactly(doc: Any, names: frozenset[str], where: str) -> None:
    if not isinstance(doc, dict) or set(doc) != names:
        found = sorted(doc) if isinstance(doc, dict) else type(doc).__name__
        raise ValueError(f"{where} has fields {found}, expected {sorted(names)}")


def _genesis_doc(chain_id: str, members: Sequence[dict[str, Any]]) -> dict[str, Any]:
    ordered = sorted(members, key=lambda m: str(m["id"]))
    fields = ("id", "organisation", "kind", "public_key", "url")
    return {
        "chain_id": chain_id,
        "validators": [{k: m[k] for k in fields} for m in ordered],
        "clients": [{"id": c["id"], "organisation": m["organisation"], "role": c["role"],
                     "public_key": c["public_key"]} for m in ordered for c in m["clients"]],
        "admins": [{"id": a["id"], "organisation": m["organisation"],
                    "public_key": a["public_key"]} for m in ordered for a in m["admins"]],
        "write_policies": [{"organisation": m["organisation"], "namespaces": m["namespaces"]}
                           for m in ordered if m["namespaces"]],
    }  # fmt: skip


@genesis_group.command("assemble")
@click.option("--chain-id", required=True, help="The new chain's id.")
@click.argument("members", metavar="MEMBER.toml...", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))  # fmt: skip
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path))
@json_option
def assemble(chain_id: str, members: Sequence[Path], output: Path, as_json: bool) -> None:
    """Check every member file and write the genesis (validators in id order, so the same
    files give the same genesis in any order); print its hash."""
    if len(members) > MEMBERS_MAX:
        raise click.BadParameter(f"at most {MEMBERS_MAX} member files", param_hint="MEMBER.toml")
    docs = [read_member(path) for path in members]
    try:
        genesis = genesis_mod.from_dict(_genesis_doc(chain_id, docs))
    except InvalidGenesis as exc:
        raise Failed(f"the member files make no valid genesis: {'; '.join(exc.problems)}") from None
    with open(output, "x", encoding="utf-8") as handle:  # never overwrite
        handle.write(genesis_mod.dump_toml(genesis))
    _print_hash(genesis, as_json, f"wrote {output}: ")


@genesis_group.command("hash")
@click.argument("path", metavar="GENESIS.toml",
                type=click.Path(exists=True, dir_okay=False, path_type=Path))  # fmt: skip
@json_option
def hash_command(path: Path, as_json: bool) -> None:
    """Print the genesis hash: the chain's identity, for every member to compare."""
    try:
        genesis = genesis_mod.load(path)
    except InvalidGenesis as exc:
        raise Failed(f"{path} is not a valid genesis: {'; '.join(exc.problems)}") from None
    _print_hash(genesis, as_json, "")


def _print_hash(genesis: genesis_mod.Genesis, as_json: bool, prefix: str) -> None:
    if as_json:
        echo_json({"chain_id": genesis.chain_id, "genesis_hash": genesis.hash.hex(),
                   "validators": [v.id for v in genesis.validators]})  # fmt: skip
        return
    ids = ", ".join(v.id for v in genesis.validators)
    click.echo(f"{prefix}chain {genesis.chain_id!r}, validators {ids}")
    click.echo(f"genesis hash: {genesis.hash.hex()}")

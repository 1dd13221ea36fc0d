"""Options shared by several commands, each checked when it is parsed (bad values exit 2)."""

from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeVar

import click

from cli import keyfile
from cli.api import CLIENT_ENV, DEFAULT_NODE, GENESIS_ENV, KEY_ENV, NODE_ENV, Signer, check_url
from ledger import genesis as genesis_mod
from ledger.errors import InvalidGenesis

F = TypeVar("F", bound=Callable[..., Any])


def _node_url(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return check_url(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def node_option(f: F) -> F:
    return click.option(
        "--node",
        "node_url",
        envvar=NODE_ENV,
        default=DEFAULT_NODE,
        show_default=True,
        metavar="URL",
        callback=_node_url,
        help=f"Node to talk to (default: ${NODE_ENV}, else {DEFAULT_NODE}).",
    )(f)


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")(f)


def load_genesis(path: Path) -> genesis_mod.Genesis:
    """Load a genesis file or raise BadParameter with every problem it has."""
    try:
        return genesis_mod.load(path)
    except InvalidGenesis as exc:
        problems = "; ".join(exc.problems)
        raise click.BadParameter(f"{path} is not a valid genesis file: {problems}") from None


def _genesis(
    _ctx: click.Context, _param: click.Parameter, value: Path | None
) -> genesis_mod.Genesis | None:
    return None if value is None else load_genesis(value)


def genesis_option(*, required: bool, help_text: str) -> Callable[[F], F]:
    def decorate(f: F) -> F:
        return click.option(
            "--genesis",
            "genesis",
            envvar=GENESIS_ENV,
            required=required,
            metavar="GENESIS.toml",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            callback=_genesis,
            help=help_text,
        )(f)

    return decorate


_PASSPHRASE_FILE: Final = "cityledger.passphrase_file"  # noqa: S105 - a context key, no secret


def _remember_passphrase_file(
    ctx: click.Context, _param: click.Parameter, value: Path | None
) -> None:
    """Keep --passphrase-file for `signer_of`, so that commands need no parameter for it."""
    ctx.meta[_PASSPHRASE_FILE] = value


def identity_options(f: F) -> F:
    """`--client ID --key PEM` (else $CITYLEDGER_CLIENT, $CITYLEDGER_KEY): who signs the
    requests. Optional: without them the node answers only what it serves anonymously."""
    f = click.option(
        "--passphrase-file", metavar="FILE", type=click.Path(path_type=Path),
        expose_value=False, callback=_remember_passphrase_file,
        help=keyfile.KEY_PASSPHRASE_HELP,
    )(f)  # fmt: skip
    f = click.option(
        "--key", "key_path", envvar=KEY_ENV, metavar="PEM",
        type=click.Path(path_type=Path),  # checked when read: a mistake is one line
        help=f"The private key of --client, mode 0600, encrypted or not (default: ${KEY_ENV}).",
    )(f)  # fmt: skip
    return click.option(
        "--client", "client_id", envvar=CLIENT_ENV, metavar="ID",
        help=f"Your identity in the genesis, a client's or a validator's id (default: "
        f"${CLIENT_ENV}); every request is signed with it.",
    )(f)  # fmt: skip


def signer_of(
    client_id: str | None, key_path: Path | None, genesis: genesis_mod.Genesis | None = None
) -> Signer | None:
    """The request signer of `--client/--key`, None when neither is given."""
    if client_id is None and key_path is None:
        return None
    if client_id is None or key_path is None:
        raise click.UsageError("--client and --key go together (or $CITYLEDGER_CLIENT and "
                               "$CITYLEDGER_KEY)")  # fmt: skip
    passphrase_file = click.get_current_context().meta.get(_PASSPHRASE_FILE)
    key = keyfile.load_key(key_path, passphrase_file)  # a mistake: one line, exit 2
    return Signer(client_id, key, None if genesis is None else genesis.chain_id)


TRUST_HELP = (
    "The genesis of the node's chain: the node must present a TLS certificate issued by a "
    "validator in force on that chain (the genesis's, or one governance added or re-keyed, "
    f"learnt from the genesis alone) (default: ${GENESIS_ENV})."
)
trust_option = genesis_option(required=False, help_text=TRUST_HELP)

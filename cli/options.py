"""Options shared by several commands, each checked when it is parsed (bad values exit 2)."""

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from cli.api import DEFAULT_NODE, NODE_ENV, check_url
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
            required=required,
            metavar="GENESIS.toml",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            callback=_genesis,
            help=help_text,
        )(f)

    return decorate

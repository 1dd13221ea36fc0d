"""`cityledger keys new OUT.pem`: a new Ed25519 key for a validator or a client."""

from pathlib import Path

import click

from cli.options import json_option
from cli.output import echo_json
from ledger import crypto


@click.group()
def keys() -> None:
    """Manage Ed25519 keys."""


@keys.command()
@click.argument("out", metavar="OUT.pem", type=click.Path(dir_okay=False, path_type=Path))
@json_option
def new(out: Path, as_json: bool) -> None:
    """Write a new private key to OUT.pem (mode 0600) and print its public key.

    The public key (64 hex digits) is what a genesis file lists for a validator or client."""
    key = crypto.generate_key()
    try:
        crypto.write_private_key(out, key)
    except FileExistsError:
        raise click.BadParameter(
            f"{out} already exists; keys are never overwritten", param_hint="OUT.pem"
        ) from None
    except OSError as exc:
        raise click.BadParameter(
            f"cannot write {out}: {exc.strerror}", param_hint="OUT.pem"
        ) from None
    public = crypto.public_key_bytes(key).hex()
    if as_json:
        echo_json({"path": str(out), "public_key": public})
    else:
        click.echo(f"wrote {out}\npublic key: {public}")

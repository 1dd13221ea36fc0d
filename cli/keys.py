"""`cityledger keys new OUT.pem [--encrypt]`: a new Ed25519 key for a validator or a client."""

from pathlib import Path

import click

from cli import keyfile
from cli.options import json_option
from cli.output import echo_json
from ledger import crypto


@click.group()
def keys() -> None:
    """Manage Ed25519 keys."""


@keys.command()
@click.argument("out", metavar="OUT.pem", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--encrypt",
    is_flag=True,
    help="Encrypt the key with a passphrase (PKCS#8, PBKDF2-HMAC-SHA256 and AES-256-CBC).",
)
@keyfile.passphrase_file_option(
    "With --encrypt: a file of mode 0600 holding the passphrase (one trailing newline is "
    f"dropped). Default: ${keyfile.PASSPHRASE_ENV}, else a prompt at a terminal."
)
@json_option
def new(out: Path, encrypt: bool, passphrase_file: Path | None, as_json: bool) -> None:
    """Write a new private key to OUT.pem (mode 0600) and print its public key.

    The public key (64 hex digits) is what a genesis file lists for a validator or client.
    With --encrypt the key is stored encrypted; a node reads its passphrase from the file or
    environment variable its node.toml names (key_passphrase_file, key_passphrase_env), the CLI
    from --passphrase-file or $CITYLEDGER_KEY_PASSPHRASE."""
    if passphrase_file is not None and not encrypt:
        raise click.UsageError("--passphrase-file goes with --encrypt")
    exists = click.BadParameter(
        f"{out} already exists; keys are never overwritten", param_hint="OUT.pem"
    )
    if out.exists():  # said before a passphrase is asked for
        raise exists
    key = crypto.generate_key()
    pem = keyfile.encrypted_pem(key, keyfile.new_passphrase(passphrase_file)) if encrypt else None
    try:
        crypto.write_private_key(out, key, pem)
    except FileExistsError:
        raise exists from None
    except OSError as exc:
        raise click.BadParameter(
            f"cannot write {out}: {exc.strerror}", param_hint="OUT.pem"
        ) from None
    public = crypto.public_key_bytes(key).hex()
    if as_json:
        echo_json({"path": str(out), "public_key": public, "encrypted": encrypt})
    else:
        click.echo(f"wrote {out}{' (encrypted)' if encrypt else ''}\npublic key: {public}")

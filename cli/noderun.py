"""`cityledger node run CONFIG.toml`: run one node in this process until SIGTERM or SIGINT."""

from pathlib import Path

import click

from cli.errors import BadSetup, Failed
from ledger.errors import LedgerError


@click.group("node")
def node_group() -> None:
    """Run a node."""


@node_group.command()
@click.argument(
    "config", metavar="CONFIG.toml", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
def run(config: Path) -> None:
    """Run the node CONFIG.toml describes; logs JSON lines to stderr; stops on SIGTERM/Ctrl-C.

    An encrypted key_file is decrypted with the passphrase in the file key_passphrase_file or
    the environment variable key_passphrase_env that node.toml names. A config, key or
    passphrase that cannot be used stops it at once: one line on stderr, exit code 2."""
    from node.config import ConfigError  # noqa: PLC0415 - keep aiohttp out of other commands
    from node.main import run as run_node  # noqa: PLC0415

    try:
        run_node(config)
    except ConfigError as exc:  # its key, passphrase or any field: one line, exit 2
        raise BadSetup(str(exc)) from None
    except LedgerError as exc:  # e.g. the store is locked by another node or damaged
        raise Failed(str(exc)) from None
    except OSError as exc:  # e.g. the listen address is taken
        raise Failed(f"cannot run the node of {config}: {exc.strerror or exc}") from None
    except RuntimeError as exc:  # the node failed while running; its log has the details
        raise Failed(str(exc)) from None
    except KeyboardInterrupt:  # a second Ctrl-C while it was stopping
        raise Failed("interrupted while stopping") from None

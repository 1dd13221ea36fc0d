"""The CLI's two exit paths for the world's faults: `Failed` (exit 1) and click's usage errors
(exit 2). Our own bugs stay exceptions and crash loudly."""

from typing import IO, Any, Final

import click

EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2


class Failed(click.ClickException):
    """The command ran and the answer is no: refused, not found, unreachable, not verified."""

    exit_code = EXIT_FAILED

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"Error: {self.format_message()}", err=True, file=file)


class BadSetup(click.ClickException):
    """A file or setting the command needs cannot be used: a key file, its passphrase, a node
    config. Exit 2 like a usage error, in one line: the usage text would not help."""

    exit_code = EXIT_USAGE

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"Error: {self.format_message()}", err=True, file=file)

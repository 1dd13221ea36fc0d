"""The `cityledger` command: every subcommand, and the last line of defence against tracebacks.

Exit codes (DESIGN.md): 0 success; 1 a verification failed, a thing was not found, the node
refused or could not be reached; 2 bad usage. Commands raise `Failed` or click's usage errors
themselves; `CityLedgerGroup` turns what the world can still throw at a command (a ledger
error, a file that cannot be written) into the same one sentence, so only our own bugs show a
traceback.
"""

from typing import Any

import click

from cli import (
    anchors,
    audit,
    backup,
    bootstrap,
    cluster,
    demo,
    fiscal,
    follow,
    gov,
    keys,
    noderun,
    records,
)
from cli.client.errors import ClientError
from cli.errors import Failed
from ledger.errors import LedgerError


class CityLedgerGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (LedgerError, ClientError) as exc:  # a refusal, a node out of reach
            raise Failed(str(exc)) from None
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            raise Failed(f"{where}{exc.strerror or exc}") from None


@click.group(cls=CityLedgerGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cityledger", prog_name="cityledger")
def cli() -> None:
    """CityLedger: a permissioned BFT ledger for smart-city records.

    Operators run nodes (node run, cluster), clerks submit records (submit), auditors read and
    verify the trail (get, history, tx, block, verify, proof, verify-proof). `cityledger demo`
    shows all of it on a temporary 4-node network.
    """


cli.add_command(keys.keys)
cli.add_command(bootstrap.genesis_group)
cli.add_command(cluster.cluster)
cli.add_command(noderun.node_group)
cli.add_command(records.submit)
cli.add_command(records.get)
cli.add_command(records.history)
cli.add_command(records.tx_command)
cli.add_command(records.block)
cli.add_command(follow.query)
cli.add_command(follow.events)
cli.add_command(fiscal.kinds)
cli.add_command(fiscal.budget)
cli.add_command(fiscal.risks)
cli.add_command(gov.gov)
cli.add_command(gov.members)
cli.add_command(audit.verify)
cli.add_command(audit.proof)
cli.add_command(audit.verify_proof)
cli.add_command(backup.backup)
cli.add_command(backup.restore)
cli.add_command(demo.demo)
cli.add_command(anchors.tls_anchors)


def main() -> None:
    cli(prog_name="cityledger")


if __name__ == "__main__":
    main()

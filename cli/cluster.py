"""`cityledger cluster init|up|down|status`: a local multi-node network in one directory."""

import json
import signal
import subprocess
import time
from pathlib import Path
from types import FrameType
from typing import Any

import click

from cli import network, processes
from cli.client import trust
from cli.client.errors import ClientError
from cli.errors import Failed
from cli.options import json_option
from cli.output import echo_json, short, table
from ledger.errors import InvalidGenesis
from ledger.gov.config import Config
from ledger.primitives import VALIDATORS_MAX

DIR_ARG = click.argument(
    "directory", metavar="DIR", type=click.Path(file_okay=False, path_type=Path)
)


@click.group()
def cluster() -> None:
    """Create, start, stop and inspect a local test network (one process per node)."""


def load_network(directory: Path) -> network.Network:
    if not (directory / network.GENESIS_FILE).is_file():
        raise click.BadParameter(
            f"{directory} holds no network: create one with `cityledger cluster init {directory}`",
            param_hint="DIR",
        )
    try:
        return network.load(directory)
    except InvalidGenesis as exc:
        raise Failed(f"{directory / network.GENESIS_FILE} is not a valid genesis: {exc}") from None


# --- init ------------------------------------------------------------------------------------


@cluster.command()
@DIR_ARG
@click.option(
    "--validators",
    "-n",
    default=network.DEFAULT_VALIDATORS,
    show_default=True,
    type=click.IntRange(1, VALIDATORS_MAX),
    help="Number of validator nodes.",
)
@click.option(
    "--base-port",
    "-p",
    default=network.DEFAULT_BASE_PORT,
    show_default=True,
    type=click.IntRange(1, 65535),
    help="Node i listens on BASE_PORT + i.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the nodes use.")
@click.option(
    "--chain-id",
    default=network.DEFAULT_CHAIN_ID,
    show_default=True,
    help="Chain id (lowercase letters, digits, . _ -).",
)
@click.option(
    "--view-change-timeout-ms",
    type=click.IntRange(100, 600_000),
    default=None,
    help="How long backups wait for a slow primary before changing view.",
)
@click.option(
    "--insecure",
    is_flag=True,
    help="Plain HTTP instead of TLS (for measuring what TLS costs; never for real use).",
)
@json_option
def init(
    directory: Path,
    validators: int,
    base_port: int,
    host: str,
    chain_id: str,
    view_change_timeout_ms: int | None,
    insecure: bool,
    as_json: bool,
) -> None:
    """Write keys, genesis and node configs of a new network to DIR.

    By default 4 validators: the City Finance Bureau and the City Planning Office (municipal),
    Harbor Mutual Insurance and Civic Shield Assurance (insurers), and one clerk identity per
    organisation. Write policies: fiscal/ by finance, permits/ by planning, and each insurer
    its own claims/<insurer>/ and policies/<insurer>/.
    """
    if network.is_initialised(directory):
        raise click.BadParameter(f"{directory} already holds a network", param_hint="DIR")
    if base_port + validators - 1 > 65535:
        raise click.BadParameter(f"ports {base_port}..{base_port + validators - 1} exceed 65535")
    params = (
        {} if view_change_timeout_ms is None else {"view_change_timeout_ms": view_change_timeout_ms}
    )
    ports = [base_port + i for i in range(validators)]
    try:
        net = network.init(
            directory,
            nodes=network.addresses(host, ports, insecure=insecure),
            chain_id=chain_id,
            params=params,
            insecure=insecure,
        )
    except InvalidGenesis as exc:
        raise click.BadParameter("; ".join(exc.problems)) from None
    if as_json:
        echo_json(describe(net))
        return
    click.echo(
        f"Created network {net.genesis.chain_id!r} in {directory} "
        f"(genesis {short(net.genesis.hash.hex())})\n"
    )
    click.echo(
        table(
            ["NODE", "ORGANISATION", "KIND", "URL", "CONFIG"],
            [[n.id, n.organisation, n.kind, n.url, n.config] for n in net.nodes],
        )
    )
    click.echo()
    click.echo(
        table(
            ["CLIENT", "ORGANISATION", "MAY WRITE", "KEY"],
            [[c.id, c.organisation, " ".join(c.namespaces), c.key] for c in net.clients],
        )
    )
    admins = [[a.id, a.organisation, directory / network.ADMINS_DIR / f"{a.id}.pem"]
              for a in net.genesis.admins.values()]  # fmt: skip
    click.echo("\n" + table(["ADMIN (GOVERNANCE)", "ORGANISATION", "KEY"], admins))
    click.echo(f"\nStart it with: cityledger cluster up {directory}")
    click.echo(
        "The CLI checks every node against this genesis: "
        f"export CITYLEDGER_GENESIS={directory / network.GENESIS_FILE}"
    )


def describe(net: network.Network) -> dict[str, Any]:
    return {
        "dir": str(net.root),
        "chain_id": net.genesis.chain_id,
        "genesis_hash": net.genesis.hash.hex(),
        "genesis": str(net.root / network.GENESIS_FILE),
        "nodes": [
            {
                "id": n.id,
                "organisation": n.organisation,
                "kind": n.kind,
                "url": n.url,
                "config": str(n.config),
                "key": str(n.key),
            }
            for n in net.nodes
        ],
        "clients": [
            {
                "id": c.id,
                "organisation": c.organisation,
                "namespaces": list(c.namespaces),
                "key": str(c.key),
            }
            for c in net.clients
        ],
        "admins": [
            {
                "id": a.id,
                "organisation": a.organisation,
                "key": str(net.root / network.ADMINS_DIR / f"{a.id}.pem"),
            }
            for a in net.genesis.admins.values()
        ],
    }


# --- add-node --------------------------------------------------------------------------------


@cluster.command("add-node")
@DIR_ARG
@click.argument("node_id", metavar="ID")
@click.option("--organisation", required=True, help="The organisation that will run it.")
@click.option("--kind", required=True, type=click.Choice(["municipal", "insurer"]))
@click.option(
    "--port",
    type=click.IntRange(1, network.PORT_MAX),
    default=None,
    help="Its port (default: one above the highest port of DIR's nodes).",
)
@json_option
def add_node(
    directory: Path, node_id: str, organisation: str, kind: str, port: int | None, as_json: bool
) -> None:
    """Write a key and a node.toml for a new validator in DIR/nodes/ID; print what the
    add-validator proposal needs. The node counts only once governance adds it."""
    load_network(directory)
    try:
        made = network.add_node(directory, node_id, port)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    view = {"id": made.id, "url": made.url, "public_key": made.public_key,
            "proof": made.proof, "config": str(made.config)}  # fmt: skip
    if as_json:
        echo_json(view)
        return
    click.echo(f"wrote {made.config.parent / network.KEY_FILE} and {made.config}")
    click.echo(f"id: {made.id}\nurl: {made.url}\npublic key: {made.public_key}")
    click.echo(
        "Propose it with: cityledger gov propose --admin ID --key PEM add-validator "
        f"--id {made.id} --organisation {json.dumps(organisation)} --kind {kind} "
        f"--url {made.url} --public-key {made.public_key} --proof {made.proof}"
    )
    click.echo(f"then start it with: cityledger node run {made.config}")


# --- up --------------------------------------------------------------------------------------


class _Stop(Exception):
    """SIGTERM or SIGINT reached `cluster up` in the foreground."""


def _raise_stop(_signum: int, _frame: FrameType | None) -> None:
    raise _Stop


@cluster.command()
@DIR_ARG
@click.option("--detach", "-d", is_flag=True, help="Return once all nodes are healthy.")
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(1, 600),
    default=processes.START_TIMEOUT_S,
    show_default=True,
    help="Seconds to wait for every node to become healthy.",
)
@json_option
def up(directory: Path, detach: bool, timeout_s: float, as_json: bool) -> None:
    """Start every node of DIR, each as its own process logging to DIR/logs/.

    Waits until all answer their status. Without --detach it stays in the foreground until
    Ctrl-C, then stops them all; with --detach stop them with `cityledger cluster down DIR`.
    """
    net = load_network(directory)
    already = processes.running(net)
    if already:
        who = ", ".join(f"{r.node_id} (pid {r.pid})" for r in already)
        raise Failed(
            f"the network in {directory} is already running: {who}; "
            f"stop it with `cityledger cluster down {directory}`"
        )
    processes.check_ports_free(net)
    procs = processes.start(net)
    try:
        processes.wait_healthy(net, procs, timeout_s)
        _report_started(net, procs, detach=detach, as_json=as_json)
        if not detach:
            _foreground(net, procs, quiet=as_json)
    except BaseException:  # not healthy, the report could not be printed, an early Ctrl-C...
        processes.stop_children(net, procs)  # ...: stop them all (a no-op for stopped ones)
        raise


def _report_started(
    net: network.Network, procs: dict[str, subprocess.Popen[bytes]], *, detach: bool,
    as_json: bool,
) -> None:  # fmt: skip
    rows = [
        {"id": n.id, "organisation": n.organisation, "url": n.url, "pid": procs[n.id].pid,
         "log": str(net.log_file(n.id))}
        for n in net.nodes
    ]  # fmt: skip
    if as_json:
        echo_json({"chain_id": net.genesis.chain_id, "detached": detach, "nodes": rows})
        return
    click.echo(table(["NODE", "ORGANISATION", "LISTENS ON", "PID", "LOG"],
                     [list(r.values()) for r in rows]))  # fmt: skip
    click.echo(f"\nAll {len(rows)} nodes are healthy.")
    if detach:
        click.echo(f"Stop them with: cityledger cluster down {net.root}")
    else:
        click.echo("Press Ctrl-C to stop them all.")


def _foreground(
    net: network.Network, procs: dict[str, subprocess.Popen[bytes]], *, quiet: bool
) -> None:
    previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    exited: set[str] = set()
    try:
        while len(exited) < len(procs):
            for node_id, proc in procs.items():
                if node_id not in exited and proc.poll() is not None:
                    exited.add(node_id)
                    click.echo(
                        f"node {node_id} exited (code {proc.returncode}): "
                        f"{processes.last_log_line(net, node_id)}",
                        err=True,
                    )
            time.sleep(0.2)  # the foreground watch; signals interrupt it at once
    except _Stop:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        outcome = processes.stop_children(net, procs)  # first: printing may fail (a closed pipe)
        if not quiet:
            click.echo("\nStopped: " + ", ".join(f"{k} {v}" for k, v in outcome.items()), err=True)
    if len(exited) == len(procs):
        raise Failed("every node has exited; see the logs in " + str(net.root / network.LOGS_DIR))


# --- down ------------------------------------------------------------------------------------


@cluster.command()
@DIR_ARG
@json_option
def down(directory: Path, as_json: bool) -> None:
    """Stop every node of DIR (by the PIDs `cluster up` recorded)."""
    net = load_network(directory)
    records = {n.id: processes.read_pid(net, n.id) for n in net.nodes}
    pids = {node_id: r.pid if r is not None else None for node_id, r in records.items()}
    outcome = processes.stop_recorded(net, [n.id for n in net.nodes])
    rows = [
        {"node_id": node_id, "pid": pids[node_id], "result": result}
        for node_id, result in outcome.items()
    ]
    if as_json:
        echo_json({"nodes": rows})
    elif all(r["result"] == "was not running" for r in rows):
        click.echo(f"No node of {directory} was running.")
    else:
        click.echo(table(["NODE", "PID", "RESULT"], [list(r.values()) for r in rows]))


# --- status ----------------------------------------------------------------------------------


@cluster.command()
@DIR_ARG
@json_option
def status(directory: Path, as_json: bool) -> None:
    """Show every node of DIR and of the validator set in force: organisation, membership, role,
    view, height, head hash, healthy.

    The set in force is learnt from a running node and checked against the genesis alone (an
    added validator is listed, a removed one marked). Exits 1 if a validator in force is not
    healthy."""
    net = load_network(directory)
    rows = [
        status_row(net, n) | {"member": member}
        for n, member in network.every_node(net, config_in_force(net))
    ]
    if as_json:
        echo_json({"chain_id": net.genesis.chain_id, "nodes": rows})
    else:
        click.echo(status_table(rows))
    if not all(r["healthy"] for r in rows if r["member"] == network.IN_FORCE):
        click.get_current_context().exit(1)


def config_in_force(net: network.Network) -> Config | None:
    """The configuration in force, proven from the genesis (docs/protocol.md 14.6) by the
    first node of DIR that answers; None if none does."""
    for entry in [*net.nodes, *network.added_entries(net)]:
        try:
            return trust.learn(entry.url, net.genesis, processes.PROBE_TIMEOUT_S).current
        except ClientError:
            continue
    return None


def status_table(rows: list[dict[str, Any]]) -> str:
    return table(
        ["NODE", "ORGANISATION", "KIND", "MEMBER", "ROLE", "VIEW", "HEIGHT", "HEAD", "HEALTHY"],
        [
            [
                r["node_id"],
                r["organisation"],
                r["kind"],
                r.get("member", network.IN_FORCE),
                r["role"],
                r["view"],
                r["height"],
                short(r["head_hash"]) if r["head_hash"] else None,
                "yes" if r["healthy"] else f"no: {r['problem']}",
            ]
            for r in rows
        ],
    )


def status_row(net: network.Network, entry: network.NodeEntry) -> dict[str, Any]:
    health = processes.probe(entry, net.genesis)
    s = health.status or {}
    role = None
    if health.status is not None:
        index = s.get("index")
        role = (
            "view change"
            if s.get("in_view_change")
            else ("primary" if index is not None and index == s.get("primary") else "backup")
        )
    problem = health.problem
    if health.status is None:
        record = processes.read_pid(net, entry.id)
        problem = "not running" if record is None or not processes.is_running(record) else problem
    return {
        "node_id": entry.id,
        "organisation": entry.organisation,
        "kind": entry.kind,
        "url": entry.url,
        "role": role,
        "view": s.get("view"),
        "primary": s.get("primary"),
        "height": s.get("height"),
        "head_hash": s.get("head_hash"),
        "healthy": health.healthy,
        "problem": problem or None,
    }

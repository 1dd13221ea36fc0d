"""`cityledger demo`: CityLedger end to end on a temporary 4-node network, in about half a minute.

It runs what an evaluator would type by hand: `cluster init` (with a short view-change timeout),
`cluster up`, the seeds' story (cli/story.py: a budget and its payments, a permit, two
insurers' policies; an over-spend refused in block order, a duplicate invoice refused at once,
one typhoon claimed at both insurers with the second payout refused), the committed blocks and
who certified them, a leaked clerk key revoked on the chain by three organisations' admins (its
next record refused), a fifth validator joining the running chain (`cluster add-node`, added
by three admins, started, syncing, then signing certificates), a crash (SIGKILL) of the
primary while the others change view and keep committing, a full verification of the trail
(online, and offline on the crashed node's store: every outcome recomputed), proof bundles
checked offline (of a refusal too, and an altered copy rejected), and a clean stop. Every
process it starts is stopped by PID in a `finally`, whatever happens; the directory is deleted
unless `--keep`.
"""

import contextlib
import itertools
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import click

from cli import network, processes, story
from cli.audit import export_bundle, verify_store, verify_stream
from cli.client import Client, NodeClient, NodeUnreachable, Refused, Signer, trust
from cli.client.events import parse
from cli.cluster import config_in_force, status_row, status_table
from cli.errors import Failed
from cli.gov import send_governance
from cli.output import Progress, short, table
from cli.ports import free_ports
from cli.records import block_lines, make_tx, send
from ledger import crypto, proofs
from ledger.encoding import decode, encode
from ledger.genesis import Genesis
from ledger.gov import changes, machine
from ledger.primitives import TX_BYTES_MAX

VIEW_CHANGE_TIMEOUT_MS: Final = 1000  # a crashed primary is replaced within about a second
COMMIT_TIMEOUT_S: Final = 30.0
JOIN_TIMEOUT_S: Final = 60.0  # for the new validator's first signature, from its start
Record = story.Record


def heading(text: str) -> None:
    click.echo("\n" + click.style(f"== {text} ".ljust(78, "="), bold=True))


class Demo:
    def __init__(self, net: network.Network, procs: dict[str, subprocess.Popen[bytes]]) -> None:
        self.net = net
        self.procs = procs
        self.down: set[str] = set()
        self.keys = {c.id: crypto.load_private_key(c.key) for c in net.clients}
        self.signer = auditor(net)  # reads everything, blocks included; writes nothing

    def live_url(self, avoid: str | None = None) -> str:
        return next(n.url for n in self.net.nodes if n.id not in self.down and n.id != avoid)

    def submit(self, url: str, records: list[Record]) -> list[dict[str, Any]]:
        """Send records to the node at `url`, then wait until every one is committed."""
        rows, sent = [], []
        with Client(url, signer=self.signer, genesis=self.net.genesis) as client:
            for org, key, type_, body in records:
                clerk = f"{org}-clerk"
                tx = make_tx(
                    self.keys[clerk],
                    chain_id=self.net.genesis.chain_id,
                    client_id=clerk,
                    record_key=key,
                    record_type=type_,
                    body=body,
                )
                send(client, tx, wait=False, timeout_s=COMMIT_TIMEOUT_S)
                sent.append((clerk, key, type_, tx.tx_id.hex()))
            deadline = time.monotonic() + COMMIT_TIMEOUT_S
            for clerk_id, key, type_, tx_id in sent:
                status = client.wait(tx_id, max(0.0, deadline - time.monotonic()))
                rows.append(
                    {
                        "client": clerk_id,
                        "key": key,
                        "type": type_,
                        "tx_id": tx_id,
                        "height": status.height,
                        "index": status.index,
                        "outcome": status.reason or status.outcome,
                    }
                )
        return rows

    def refused_at_admission(self, url: str, record: Record) -> str:
        """Send `record`, which the node must refuse at once; return its reason code."""
        org, key, type_, body = record
        clerk = f"{org}-clerk"
        tx = make_tx(
            self.keys[clerk], chain_id=self.net.genesis.chain_id, client_id=clerk,
            record_key=key, record_type=type_, body=body,
        )  # fmt: skip
        with NodeClient(url, signer=self.signer, genesis=self.net.genesis) as client:
            try:
                client.post("/v1/transactions", {"raw": tx.raw.hex()})
            except Refused as exc:
                return exc.code
        raise Failed(f"the node accepted {key}, which it must refuse")

    def show_blocks(self, url: str, low: int, high: int) -> None:
        proven = trust.learn(url, self.net.genesis, COMMIT_TIMEOUT_S, force=True)
        with NodeClient(url, signer=self.signer, genesis=self.net.genesis) as client:
            for height in range(low, high + 1):
                value = client.get(f"/v1/blocks/{height}")
                members = proven.after(min(height - 1, proven.height)).members  # its epoch's
                names = {int(v.index): v.id for v in members.validators}
                click.echo("")
                click.echo("\n".join(block_lines(value, names, len(names))))

    def status(self) -> list[dict[str, Any]]:
        rows = [
            status_row(self.net, n) | {"member": member}
            for n, member in network.every_node(self.net, config_in_force(self.net))
        ]
        click.echo(status_table(rows))
        return rows

    def members(self, url: str) -> Genesis:
        """The validators in force, proven from the genesis alone (cli/client/trust.py)."""
        return trust.members(url, self.net.genesis, COMMIT_TIMEOUT_S, force=True)

    def height(self, url: str) -> int:
        with NodeClient(url, signer=self.signer, genesis=self.net.genesis) as client:
            return int(client.get("/v1/status")["height"])

    def crash_primary(self) -> str:
        with NodeClient(self.live_url(), signer=self.signer, genesis=self.net.genesis) as client:
            primary = int(client.get("/v1/status")["primary"])
        victim = self.members(self.live_url()).validators[primary]  # an index of the set in force
        proc = self.procs[victim.id]
        proc.kill()  # SIGKILL to the PID we started: no clean shutdown, like a power cut
        proc.wait()
        self.down.add(victim.id)
        click.echo(
            f"kill -9 {proc.pid}: {victim.id} ({victim.organisation}), the primary of "
            "the current view, is gone"
        )
        return victim.id


def submissions(rows: list[dict[str, Any]]) -> str:
    return table(
        ["CLIENT", "RECORD", "TYPE", "TX", "BLOCK", "OUTCOME"],
        [
            [r["client"], r["key"], r["type"], short(r["tx_id"], 12), r["height"], r["outcome"]]
            for r in rows
        ],
    )


def expect_outcome(rows: list[dict[str, Any]], key: str, outcome: str) -> None:
    found = [r["outcome"] for r in rows if r["key"] == key]
    if found != [outcome]:
        raise Failed(f"{key}: expected {outcome}, the ledger says {found}")


def run_demo(net: network.Network, demo: Demo) -> None:
    heading("1. Four organisations, one ledger")
    click.echo(
        table(
            ["NODE", "ORGANISATION", "KIND", "MAY WRITE", "URL"],
            [
                [
                    n.id,
                    n.organisation,
                    n.kind,
                    " ".join(net.genesis.policies[n.organisation]),
                    n.url,
                ]
                for n in net.nodes
            ],
        )
    )
    click.echo(
        f"chain {net.genesis.chain_id!r}, genesis {short(net.genesis.hash.hex())}, "
        f"f = {net.genesis.quorums.f}: any {net.genesis.quorums.commit} of "
        f"{len(net.nodes)} validators certify a block"
    )

    heading("2. Clerks of all four organisations submit records with rules")
    first = demo.live_url()
    now = int(time.time() * 1000)
    click.echo("an appropriation, a budget line, payees, payments, a permit, two policies:\n")
    rows = demo.submit(first, story.budget(now))
    for record in story.spending_and_permits(now):  # one by one: the permit moves in order
        rows += demo.submit(first, [record])
    click.echo(submissions(rows))
    refused_tx = tell_refusals(demo, first)

    heading("4. The committed blocks, and who certified them")
    demo.show_blocks(first, 1, demo.height(first))

    revoke_leaked_key(net, demo, first)
    join_validator(net, demo, first)

    heading("7. The primary crashes; the others change view and keep committing")
    victim = demo.crash_primary()
    survivor = demo.live_url(avoid=victim)
    before = demo.height(survivor)
    started = time.monotonic()
    name = next(n.id for n in net.nodes if n.url == survivor)
    click.echo(f"two more records, sent to {name} ({survivor}):")
    rows = demo.submit(survivor, story.after_crash())
    click.echo(submissions(rows))
    click.echo(f"committed {time.monotonic() - started:.1f} s after the crash")
    demo.show_blocks(survivor, before + 1, demo.height(survivor))
    click.echo("")
    statuses = demo.status()
    views = {r["view"] for r in statuses if r["healthy"]}
    if not views or min(views) == 0:
        raise Failed("the surviving nodes did not change view")
    show_operations(net, demo, survivor)
    verify_trail(net, survivor, victim, refused_tx)


def revoke_leaked_key(net: network.Network, demo: Demo, url: str) -> None:
    """A clerk's key leaks: admins of three organisations revoke it on the chain itself, and
    the next record signed with it is refused."""
    heading("5. A clerk's key leaks; the organisations' admins revoke it on the chain")
    clerk, pid = story.LEAKED_CLERK, f"revoke-{story.LEAKED_CLERK}"
    click.echo(f"civic-shield reports {clerk}'s key leaked; its admin proposes to revoke it and "
               "two more organisations approve (3 of 4 needed):\n")  # fmt: skip
    steps = [
        ("civic-shield-admin", machine.PROPOSAL_TYPE, {"change": changes.REVOKE_CLIENT,
                                                       "id": clerk}),
        ("finance-admin", machine.APPROVAL_TYPE, {}),
        ("harbor-mutual-admin", machine.APPROVAL_TYPE, {}),
    ]  # fmt: skip
    rows = enact(net, url, pid, steps)
    click.echo(table(["ADMIN", "TX", "BLOCK", "OUTCOME", "PROPOSAL"], rows))
    code = demo.refused_at_admission(url, story.leaked_key_use())
    click.echo(f"\nthe next record signed with {clerk}'s key: refused at once ({code})")
    if code != "revoked":
        raise Failed(f"a revoked clerk's record was refused with {code}, not revoked")


def enact(
    net: network.Network, url: str, pid: str, steps: list[tuple[str, str, dict[str, Any]]]
) -> list[list[str]]:
    """Send a proposal and its approvals, each by an organisation's admin; a row for each."""
    rows = []
    for admin, record_type, body in steps:
        key = net.root / network.ADMINS_DIR / f"{admin}.pem"
        status = send_governance(url, net.genesis, admin, key, None, pid, record_type, body)
        effective = status.get("effective_height")
        rows.append([
            admin, "propose" if record_type == machine.PROPOSAL_TYPE else "approve",
            str(status["height"]), status.get("reason") or status["outcome"],
            status.get("proposal_status", "") + (f" from block {effective + 1}" if effective
                                                  else ""),
        ])  # fmt: skip
    return rows


def join_validator(net: network.Network, demo: Demo, url: str) -> None:
    """The finance bureau runs one more validator: `cluster add-node` writes its key and
    config, three organisations' admins add it on the chain, it starts, syncs, and signs."""
    heading("6. A new validator joins the running chain")
    node_id, org = story.JOINING, story.JOINING_ORGANISATION
    made = network.add_node(net.root, node_id, free_ports(1)[0])
    click.echo(f"cityledger cluster add-node {node_id}: wrote its key and {made.config.name}, "
               f"URL {made.url}, public key {short(made.public_key)}\n")  # fmt: skip
    body = {"change": changes.ADD_VALIDATOR, "id": node_id, "organisation": org,
            "kind": "municipal", "url": made.url, "public_key": made.public_key,
            "proof": made.proof}  # fmt: skip
    steps = [("finance-admin", machine.PROPOSAL_TYPE, body),
             ("planning-admin", machine.APPROVAL_TYPE, {}),
             ("harbor-mutual-admin", machine.APPROVAL_TYPE, {})]  # fmt: skip
    click.echo(table(["ADMIN", "TX", "BLOCK", "OUTCOME", "PROPOSAL"],
                     enact(net, url, f"add-{node_id}", steps)))  # fmt: skip
    proc = processes.spawn(processes.node_command(made.config.resolve()),
                           net.log_file(node_id), banner=f"demo: starting {node_id}")  # fmt: skip
    demo.procs[node_id] = proc
    click.echo(f"\ncityledger node run {made.config.name}: {node_id} started (pid {proc.pid}); it "
               "fetches the certified blocks from the validators in force, then votes")  # fmt: skip
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    for n in itertools.count(1):
        height = demo.submit(url, [story.after_join(n)])[0]["height"]
        with NodeClient(url, signer=demo.signer, genesis=net.genesis) as client:
            signers = client.get(f"/v1/blocks/{height}")["certificate"]["signers"]
        if node_id in signers:
            break
        if time.monotonic() > deadline or proc.poll() is not None:
            raise Failed(f"{node_id} signed no certificate within {JOIN_TIMEOUT_S:g} s")
    click.echo(f"{n} records later, block {height} is certified with its signature:")
    demo.show_blocks(url, height, height)


def tell_refusals(demo: Demo, url: str) -> str:
    """The refusals of the story; returns the tx id of the refused second payout."""
    heading("3. What the rules refuse")
    rows = demo.submit(url, [story.over_spend()])
    click.echo(submissions(rows))
    expect_outcome(rows, story.over_spend()[1], "over_allocation")
    click.echo("a payment beyond what the line has left: recorded in its block, refused")
    code = demo.refused_at_admission(url, story.duplicate_invoice())
    if code != "duplicate_payment":
        raise Failed(f"the duplicate invoice was refused as {code}, not duplicate_payment")
    click.echo(f"invoice NR-2025-0412 paid again: refused at once by the node ({code})\n")
    tell_split(demo, url)
    click.echo(f"typhoon {story.TYPHOON} damages {story.PARCEL}, insured at both insurers:")
    rows = demo.submit(url, story.typhoon_claims(int(time.time() * 1000)))
    rows += demo.submit(url, [story.second_payout()])
    click.echo(submissions(rows))
    expect_outcome(rows, story.second_payout()[1], "over_loss")
    click.echo("the second insurer's payout would pay the same loss twice: refused (over_loss)")
    return str(next(r["tx_id"] for r in rows if r["key"] == story.second_payout()[1]))


def show_operations(net: network.Network, demo: Demo, survivor: str) -> None:
    """Readiness of every node, a query by prefix, and the event stream replayed from block 1."""
    heading("8. What an operator and an integrator see")
    for node in [n for n, member in network.every_node(net, config_in_force(net))
                 if member == network.IN_FORCE or n.id in demo.down]:  # fmt: skip
        try:
            with NodeClient(node.url, genesis=net.genesis, timeout_s=2) as client:
                ready = client.get("/readyz", expect=("ready",))
            state = f"200 ready ({ready['detail']})"
        except Refused as exc:
            state = f"{exc.status} {exc.code}: {exc.reason}"
        except NodeUnreachable:
            state = "no answer (crashed)"
        click.echo(f"GET {node.url}/readyz  {node.id}: {state}")
    with NodeClient(survivor, signer=demo.signer, genesis=net.genesis) as client:
        page = client.get("/v1/records?prefix=fiscal/&limit=10", expect=("records",))
        click.echo(f"\ncityledger query --prefix fiscal/: {len(page['records'])} records")
        rows = [[r["key"], r["type"], r["height"]] for r in page["records"]]
        click.echo(table(["KEY", "TYPE", "BLOCK"], rows))
        head = int(client.get("/v1/status")["height"])
        click.echo(f"\ncityledger events --from 1 (replayed up to block {head}):")
        for event in parse(client.stream_lines("/v1/events?from=1")):
            if event.event == "tx":
                click.echo(f"  tx    {event.id:<6} {event.data['key']}")
            elif event.event == "block":
                click.echo(f"  block {event.id:<6} {event.data['tx_count']} txs")
                if event.data["height"] >= head:
                    break


def tell_split(demo: Demo, url: str) -> None:
    rows = demo.submit(url, story.split_payments())
    click.echo(submissions(rows))
    with NodeClient(url, signer=demo.signer, genesis=demo.net.genesis) as client:
        alerts = client.get("/v1/risks?kind=split_payment", expect=("alerts",))["alerts"]
    paid = {r["tx_id"] for r in rows}
    flagged = [a for a in alerts if paid <= set(a["evidence"])]
    if not flagged:
        raise Failed("the three split payments were not flagged")
    click.echo(
        f"risk alert at block {flagged[0]['height']}: split_payment ({flagged[0]['detail']}): "
        f"evidence {', '.join(short(e, 12) for e in flagged[0]['evidence'])}; accepted, flagged "
        "for a person\n"
    )


def auditor(net: network.Network) -> Signer:
    """The network's auditor identity, which signs the demo's requests."""
    key = crypto.load_private_key(net.auditor_key)
    return Signer(network.AUDITOR_ID, key, net.genesis.chain_id)


def verify_trail(net: network.Network, survivor: str, victim: str, refused_tx: str) -> None:
    heading("9. Auditing the trail against nothing but the genesis")
    signer = auditor(net)
    with (
        Progress("verifying") as progress,
        NodeClient(survivor, signer=signer, genesis=net.genesis) as client,
    ):
        report, head = verify_stream(client, net.genesis, progress)
    if not report.ok or head is None:
        raise Failed(
            f"verify --node {survivor}: FAILED at height {report.first_bad_height}: {report.reason}"
        )
    click.echo(
        f"verify --node {survivor}: OK, {report.blocks_checked} blocks and "
        f"{report.txs_checked} txs from genesis to head {head[0]} ({short(head[1].hex())})"
    )
    data_dir = net.node(victim).config.parent / "data"
    with Progress("verifying") as progress:
        report, head = verify_store(data_dir, net.genesis, progress)
    if not report.ok or head is None:
        where = f"at height {report.first_bad_height}"
        raise Failed(f"verify --data-dir {data_dir}: FAILED {where}: {report.reason}")
    click.echo(
        f"verify --data-dir of the crashed {victim}'s store (offline): OK, "
        f"{report.blocks_checked} blocks, every one it acknowledged survived kill -9"
    )
    claim = story.CS_CLAIM
    with NodeClient(survivor, signer=signer, genesis=net.genesis) as client:
        tx_id = client.get(f"/v1/records/{claim}")["tx_id"]
        doc = export_bundle(client, tx_id)
        refusal = export_bundle(client, refused_tx)
        permit = client.get(f"/v1/history/{story.PERMIT}")
    path = net.root / "claim-proof.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    proven = proofs.verify_bundle(proofs.parse(path.read_bytes()), net.genesis)
    signers = ", ".join(
        proven.block.members.validators[i].id for i, _ in proven.block.certificate.votes
    )
    click.echo(
        f"proof of the claim {claim} (tx {short(tx_id, 12)}): VALID offline, block "
        f"{proven.block.header.height} certified by {signers}, outcome accepted"
    )
    refused = proofs.verify_bundle(refusal, net.genesis)
    if refused.outcome != "over_loss":
        raise Failed(f"the refused payout's bundle proves {refused.outcome!r}, not over_loss")
    click.echo(
        f"proof of the refused second payout (tx {short(refused_tx, 12)}): VALID offline, "
        f"block {refused.block.header.height}, outcome refused ({refused.outcome})"
    )
    tampered = _raise_claimed_amount(doc)
    try:
        proofs.verify_bundle(tampered, net.genesis)
    except proofs.InvalidProof as exc:
        click.echo(f"the same proof with the claimed amount raised tenfold: REJECTED ({exc})")
    else:
        raise Failed("an altered proof bundle verified")
    click.echo(
        f"history of {story.PERMIT}: "
        + " -> ".join(f"{v['value']['status']} (block {v['height']})" for v in permit["versions"])
    )


def _raise_claimed_amount(doc: dict[str, Any]) -> dict[str, Any]:
    """The bundle as a forger would alter it: a bigger claim, its tx id recomputed to match."""
    fields = decode(bytes.fromhex(doc["tx"]), TX_BYTES_MAX)
    fields[7]["claimed_cents"] *= 10  # [version, chain, client, nonce, time, key, type, body, sig]
    raw = encode(fields)
    return dict(doc, tx=raw.hex(), tx_id=crypto.sha256(raw).hex())


@contextlib.contextmanager
def temporary_network(keep: bool) -> Iterator[network.Network]:
    root = Path(tempfile.mkdtemp(prefix="cityledger-demo-"))
    try:
        yield network.init(
            root / "net",
            nodes=network.addresses("127.0.0.1", free_ports(4)),
            chain_id="demo-city",
            params={"view_change_timeout_ms": VIEW_CHANGE_TIMEOUT_MS, "checkpoint_interval": 8},
        )
    finally:
        if keep:
            click.echo(f"\nThe network's files are kept in {root / 'net'}")
        else:
            shutil.rmtree(root, ignore_errors=True)


@click.command()
@click.option("--keep", is_flag=True, help="Keep the temporary network's directory.")
def demo(keep: bool) -> None:
    """Start a temporary 4-node network, submit records, crash the primary, verify, stop."""
    started = time.monotonic()
    with temporary_network(keep) as net:
        procs = processes.start(net)
        try:
            processes.wait_healthy(net, procs)
            click.echo(
                f"4 nodes started in {time.monotonic() - started:.1f} s "
                f"(logs in {net.root / network.LOGS_DIR})"
            )
            run_demo(net, Demo(net, procs))
        finally:
            # Stop first: printing may fail (a closed pipe) and must not leave nodes running.
            outcome = processes.stop_children(net, procs)
            heading("10. Stopping every node")
            click.echo(
                ", ".join(
                    f"{k} {'had crashed' if v == 'was not running' else v}"
                    for k, v in outcome.items()
                )
            )
    click.echo(f"\nDemo complete in {time.monotonic() - started:.1f} s.")

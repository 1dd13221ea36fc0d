"""The audit explorer in a real headless Chromium against a real cluster (`cluster init` and
`cluster up` as processes, TLS with the nodes' own certificates pinned in the browser).

Each page renders the live cluster's data; a new block appears without a reload; the proof
page says VALID for a real bundle with the real genesis and INVALID for one altered byte and
for another chain's genesis; an anonymous visitor sees only the public namespaces; and the
page's verifier agrees with `cityledger verify-proof` on 200 random bundles, valid and altered,
half of them carrying governance (a clerk added by governance during the test, its key then
rotated), and on the bundles of a chain of four epochs built in this process; a clerk added by
governance during the test shows on the members and governance pages.
The run writes a screenshot of each page to $CITYLEDGER_SCREENSHOTS, by default to a git-ignored
build/ directory (`make screenshots` writes the tracked copies in docs/explorer/).
"""

import asyncio
import base64
import json
import os
import random
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from cli import story
from cli.client import Client, load_genesis, load_key
from ledger import genesis as genesis_mod
from tests.browser import Browser, chromium_path, node_certificates, trust_certificates
from tests.cli.conftest import RunningCluster, invoke, no_traceback, run, running_cluster
from tests.ledger.epoch_chain import NET, build, epoch_chain
from tests.ledger.test_proofs import hexed

pytestmark = pytest.mark.skipif(
    chromium_path() is None, reason="chromium is not installed (make test installs it as root)"
)

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = Path(os.environ.get("CITYLEDGER_SCREENSHOTS") or ROOT / "build" / "screenshots")
BROWSER_CLOSE_S = 30.0
AGREEMENT_CASES = 200
AGREEMENT_SEED = 18
EPOCH_CASES = 100
REFUSAL_STEP = 4  # blocks per step of the refusal counts, in the step-by-step test
RECORDS = {  # clerk -> the record key it writes twice (two versions)
    "finance-clerk": "fiscal/explorer/line-1",
    "planning-clerk": "permits/explorer/site-1",
    "harbor-mutual-clerk": "claims/harbor-mutual/explorer-1",
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    with running_cluster(tmp_path_factory.mktemp("explorer") / "net") as running:
        yield running


def submit(cluster: RunningCluster, clerk: str, key: str, body: dict[str, Any]) -> dict[str, Any]:
    return submit_env(cluster.env(clerk), key, body)


def submit_env(env: dict[str, str], key: str, body: dict[str, Any]) -> dict[str, Any]:
    done = run("submit", key, "record", json.dumps(body), "--wait", "--json", **env)
    no_traceback(done.stderr)
    assert done.returncode == 0, done.stderr
    status: dict[str, Any] = json.loads(done.stdout)
    assert status["status"] == "committed", status
    return status


@pytest.fixture(scope="module")
def written(cluster: RunningCluster) -> dict[str, list[dict[str, Any]]]:
    """Two versions of each record of `RECORDS`, committed."""
    return {
        key: [submit(cluster, clerk, key, {"version": v}) for v in (1, 2)]
        for clerk, key in RECORDS.items()
    }


@pytest.fixture
async def browser(cluster: RunningCluster) -> AsyncIterator[Browser]:
    started = await Browser.start(trust_certificates(node_certificates(cluster.root)))
    try:
        await started.call("Emulation.setDeviceMetricsOverride", width=1280, height=900,
                           deviceScaleFactor=1, mobile=False)  # fmt: skip
        yield started
    finally:
        await asyncio.wait_for(started.close(), BROWSER_CLOSE_S)


async def open_page(browser: Browser, cluster: RunningCluster, route: str) -> None:
    """Load the explorer afresh at `route` and wait until the page has read what it shows."""
    await browser.goto(f"{cluster.url}/explorer/{route}",
                       "document.body.dataset.ready === 'true'")  # fmt: skip
    await loaded(browser, route)


async def show(browser: Browser, route: str) -> None:
    """Go to `route` inside the page (no reload) and wait until it has read what it shows."""
    await browser.evaluate(
        f"document.body.dataset.loaded = ''; location.hash === {route!r}"
        f" ? window.dispatchEvent(new HashChangeEvent('hashchange')) : location.hash = {route!r}"
    )
    await loaded(browser, route)


async def loaded(browser: Browser, route: str) -> None:
    page = route.split("/")[1]
    await browser.wait_for(
        f"document.body.dataset.loaded === 'true' && location.hash === {route!r}"
        f" && document.body.dataset.page === {page!r}"
    )


async def text(browser: Browser, element_id: str) -> str:
    value: str = await browser.evaluate(f"document.getElementById({element_id!r}).textContent")
    return value


async def sign_in(browser: Browser, cluster: RunningCluster, who: str) -> None:
    await open_page(browser, cluster, "#/signin")
    await browser.evaluate(f"document.getElementById('identity').value = {who!r}")
    await browser.set_files("#keyfile", cluster.root / "clients" / f"{who}.pem")
    await browser.evaluate("document.getElementById('signin-button').click()")
    status = await browser.wait_for(
        "(t => (t === 'signed in' || t.startsWith('sign-in failed')) && t)"
        "(document.getElementById('signin-status').textContent)"
    )
    assert status == "signed in"


async def screenshot(browser: Browser, name: str) -> None:
    shot = await browser.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    (SCREENSHOTS / f"{name}.png").write_bytes(base64.b64decode(shot["data"]))


# --- The pages ---------------------------------------------------------------------------------


async def test_the_overview_shows_the_live_chain_and_its_validators(
    cluster: RunningCluster, written: dict[str, Any], browser: Browser
) -> None:
    last = max(v["height"] for versions in written.values() for v in versions)
    await sign_in(browser, cluster, "auditor")
    await open_page(browser, cluster, "#/overview")
    genesis = genesis_mod.load(cluster.genesis)
    assert await text(browser, "ov-genesis") == genesis.hash.hex()
    assert await text(browser, "ov-chain") == genesis.chain_id
    head = int(await text(browser, "ov-height"))
    assert head >= last
    assert await text(browser, "ov-epoch") == "0"  # no validator-set change on this chain
    rows = await browser.evaluate(
        "[...document.querySelectorAll('#validators tbody tr')].map(r => [...r.cells]"
        ".map(c => c.textContent))"
    )
    assert sorted(r[1] for r in rows) == sorted(p.name for p in (cluster.root / "nodes").iterdir())
    # The votes the node saw (GET /v1/votes): each validator voted, missed "m of n" heights it
    # saw live; the counts of votes no certificate kept and of view changes are numbers.
    assert max(int(r[5]) for r in rows if r[5].isdigit()) >= last
    for r in rows:
        missed, seen = (int(n) for n in r[6].split(" of "))
        assert 0 <= missed <= seen <= 64, r
        assert int(r[7]) >= 0
        assert int(r[8].split()[0]) >= 0
    assert "saw them" in await text(browser, "health-window")
    await screenshot(browser, "overview")


async def test_blocks_list_search_and_detail_with_signers_and_txs(
    cluster: RunningCluster, written: dict[str, Any], browser: Browser
) -> None:
    first = written["fiscal/explorer/line-1"][0]
    await sign_in(browser, cluster, "auditor")
    await open_page(browser, cluster, "#/blocks")
    heights = await browser.evaluate(
        "[...document.querySelectorAll('#blocks-body tr')].map(r => Number(r.dataset.height))"
    )
    assert heights
    assert heights == sorted(heights, reverse=True)
    await screenshot(browser, "blocks")
    # By tx id: the tx's page, which links to its block.
    await search(browser, first["tx_id"], f"#/tx/{first['tx_id']}")
    assert f"{first['height']}, position {first['index']}" in await text(browser, "tx-detail")
    await screenshot(browser, "tx")
    # By height, then by that block's hash: the block's page.
    await search(browser, str(first["height"]), f"#/block/{first['height']}")
    block_hash = await text(browser, "block-hash")
    await show(browser, "#/blocks")
    await search(browser, block_hash, f"#/block/{first['height']}")
    signers = await browser.evaluate(
        "[...document.querySelectorAll('#signers tbody tr')].map(r => r.cells[0].textContent)"
    )
    assert len(signers) >= 3  # a quorum of the 4 validators, named by id
    assert set(signers) <= {p.name for p in (cluster.root / "nodes").iterdir()}
    txs = await text(browser, "block-txs")
    assert "fiscal/explorer/line-1" in txs
    assert "finance-clerk" in txs
    await screenshot(browser, "block")


async def search(browser: Browser, query: str, route: str) -> None:
    await browser.evaluate(
        f"document.body.dataset.loaded = ''; document.getElementById('search').value = {query!r};"
        "document.getElementById('search-form').requestSubmit()"
    )
    await loaded(browser, route)


async def test_a_new_block_appears_without_a_reload(
    cluster: RunningCluster, written: dict[str, Any], browser: Browser
) -> None:
    assert written
    await sign_in(browser, cluster, "auditor")
    await open_page(browser, cluster, "#/blocks")
    await browser.evaluate("window.sameDocument = true")  # gone if the page reloaded
    await browser.wait_for("document.body.dataset.live === 'open'")  # the stream is subscribed
    status = submit(cluster, "finance-clerk", "fiscal/explorer/live", {"live": True})
    await browser.wait_for(
        f"document.querySelector('#blocks-body tr[data-height=\"{status['height']}\"]') !== null"
    )
    assert await browser.evaluate("window.sameDocument === true")


async def test_a_record_history_lists_every_version(
    cluster: RunningCluster, written: dict[str, Any], browser: Browser
) -> None:
    await sign_in(browser, cluster, "finance-clerk")
    await open_page(browser, cluster, "#/record/fiscal/explorer/line-1")
    status = await text(browser, "history-status")
    assert status == "2 versions of fiscal/explorer/line-1, oldest first"
    ids = await browser.evaluate(
        "[...document.querySelectorAll('#history tbody tr')].map(r => r.cells[2].textContent)"
    )
    assert [i[:12] for i in ids] == [v["tx_id"][:12] for v in written["fiscal/explorer/line-1"]]
    await screenshot(browser, "history")


async def test_an_anonymous_visitor_sees_only_the_public_namespaces(
    cluster: RunningCluster, written: dict[str, Any], browser: Browser
) -> None:
    assert written
    await open_page(browser, cluster, "#/record/permits/explorer/site-1")
    status = await text(browser, "history-status")
    assert status == "2 versions of permits/explorer/site-1, oldest first"
    await show(browser, "#/record/fiscal/explorer/line-1")
    assert "401 unauthenticated" in await text(browser, "history-status")
    await show(browser, "#/overview")
    assert "sign in to read this" in await text(browser, "overview-status")
    await show(browser, "#/blocks")
    assert "401" in await text(browser, "blocks-status")
    assert await browser.evaluate("document.querySelectorAll('#blocks-body tr').length") == 0
    for page in ("members", "governance"):  # the configuration is for identities of it
        await show(browser, f"#/{page}")
        assert "sign in to read this" in await text(browser, f"{page}-status")
    # A clerk of the insurer reads its claims, not the finance bureau's records or blocks.
    await sign_in(browser, cluster, "harbor-mutual-clerk")
    await screenshot(browser, "signin")
    await show(browser, "#/record/fiscal/explorer/line-1")
    assert "403 forbidden" in await text(browser, "history-status")
    await show(browser, "#/blocks")
    assert "403" in await text(browser, "blocks-status")


# --- Members and governance ------------------------------------------------------------------


def gov(cluster: RunningCluster, slug: str, *args: str) -> dict[str, Any]:
    """`cityledger gov ARGS --json` as organisation `slug`'s admin; its accepted answer."""
    key = cluster.root / "admins" / f"{slug}-admin.pem"
    done = run("gov", *args[:1], "--admin", f"{slug}-admin", "--key", str(key), *args[1:],
               "--json", **cluster.env("auditor"))  # fmt: skip
    no_traceback(done.stderr)
    assert done.returncode == 0, done.stderr
    answer: dict[str, Any] = json.loads(done.stdout)
    assert answer["outcome"] == "accepted", answer
    return answer


def enact(cluster: RunningCluster, *change: str) -> dict[str, Any]:
    """A change made by governance: the finance bureau proposes, two more organisations
    approve (3 of 4: the default quorum); the last approval's answer."""
    proposal = gov(cluster, "finance", "propose", *change)
    gov(cluster, "planning", "approve", proposal["id"])
    last = gov(cluster, "harbor-mutual", "approve", proposal["id"])
    assert last["proposal_status"] == "effective"
    return last


@pytest.fixture(scope="module")
def clerk_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    key = tmp_path_factory.mktemp("gov") / "explorer-clerk.pem"
    assert run("keys", "new", str(key)).returncode == 0
    return key


@pytest.fixture(scope="module")
def clerk_added(cluster: RunningCluster, clerk_key: Path) -> Any:
    """A clerk added by governance; the answer of the approval that made it effective."""
    return enact(cluster, "add-client", "--id", "explorer-clerk", "--organisation",
                 "City Finance Bureau", "--public-key-file", str(clerk_key))  # fmt: skip


@pytest.fixture(scope="module")
def governed(cluster: RunningCluster, clerk_added: Any, clerk_key: Path) -> list[str]:
    """Txs whose proof bundles carry governance (version 3): one of the clerk added by
    governance, then, its key rotated by governance, one of its new key."""
    assert clerk_added["proposal_status"] == "effective"
    env = cluster.env("auditor") | {"CITYLEDGER_CLIENT": "explorer-clerk",
                                    "CITYLEDGER_KEY": str(clerk_key)}  # fmt: skip
    first = submit_env(env, "fiscal/explorer/by-added", {"by": "added"})
    rotated = clerk_key.with_name("explorer-clerk-rotated.pem")
    assert run("keys", "new", str(rotated)).returncode == 0
    enact(cluster, "rotate-client-key", "--id", "explorer-clerk", "--public-key-file",
          str(rotated))  # fmt: skip
    second = submit_env(env | {"CITYLEDGER_KEY": str(rotated)}, "fiscal/explorer/by-rotated",
                        {"by": "rotated"})  # fmt: skip
    return [first["tx_id"], second["tx_id"]]


async def test_members_and_governance_history_show_a_change_made_now(
    cluster: RunningCluster, clerk_added: dict[str, Any], browser: Browser
) -> None:
    effective = clerk_added["effective_height"]
    await sign_in(browser, cluster, "auditor")
    await open_page(browser, cluster, "#/members")
    clients = await text(browser, "members-clients")
    assert "explorer-clerk" in clients
    assert "auditor" in clients
    assert int(await text(browser, "members-at")) >= effective
    validators = await browser.evaluate(
        "[...document.querySelectorAll('#members-validators tbody tr')].map(r =>"
        " r.cells[1].textContent)"
    )
    assert sorted(validators) == sorted(p.name for p in (cluster.root / "nodes").iterdir())
    assert "finance-admin" in await text(browser, "members-admins")
    await screenshot(browser, "members")
    # Before the block that made it effective, the clerk was not a member.
    await show(browser, f"#/members/{effective - 1}")
    assert await text(browser, "members-at") == str(effective - 1)
    assert "explorer-clerk" not in await text(browser, "members-clients")

    await show(browser, "#/governance")
    pid = clerk_added["id"]
    section = f"#governance section[data-id={pid!r}]"
    assert await browser.evaluate(f"document.querySelector({section!r}).dataset.status") == (
        "effective"
    )
    shown = await browser.evaluate(f"document.querySelector({section!r}).textContent")
    assert "add-client explorer-clerk" in shown
    assert f"in force after block {effective}" in shown
    assert "finance-admin (City Finance Bureau)" in shown  # the proposer
    approvers = await browser.evaluate(
        f"[...document.querySelectorAll({section + ' table.approvals tbody tr'!r})]"
        ".map(r => [r.cells[0].textContent, Number(r.cells[1].textContent)])"
    )
    assert [a for a, _ in approvers] == ["planning-admin", "harbor-mutual-admin"]
    assert approvers[-1][1] == effective  # the approval that reached the quorum
    await screenshot(browser, "governance")


# --- Proofs verified in the browser --------------------------------------------------------------


def proof_file(cluster: RunningCluster, tx_id: str, out: Path) -> Path:
    done = run("proof", tx_id, "-o", str(out), **cluster.env("auditor"))
    assert done.returncode == 0, done.stderr
    return out


async def verify_files(browser: Browser, genesis: Path, bundle: Path) -> str:
    await browser.set_files("#genesis-file", genesis)
    await browser.set_files("#bundle-file", bundle)
    await browser.evaluate("document.getElementById('verify-button').click()")
    verdict: str = await browser.wait_for(
        "(t => (t.startsWith('VALID') || t.startsWith('INVALID') || t.startsWith('cannot')) && t)"
        "(document.getElementById('verdict').textContent)"
    )
    return verdict


async def test_the_proof_page_says_valid_and_invalid_with_the_reason(
    cluster: RunningCluster,
    written: dict[str, Any],
    governed: list[str],
    browser: Browser,
    tmp_path: Path,
) -> None:
    tx_id = written["claims/harbor-mutual/explorer-1"][0]["tx_id"]
    bundle = proof_file(cluster, tx_id, tmp_path / "bundle.json")
    await open_page(browser, cluster, "#/verify")
    assert await verify_files(browser, cluster.genesis, bundle) == "VALID"
    assert tx_id in await text(browser, "proven")
    # A tx of a key that governance rotated in: its bundle carries both changes, replayed here.
    rotated = proof_file(cluster, governed[1], tmp_path / "rotated.json")
    assert await verify_files(browser, cluster.genesis, rotated) == "VALID"
    assert "2 changes replayed from the genesis" in await text(browser, "proven")
    await screenshot(browser, "verify")
    # One altered byte of the tx (its hex in the JSON file): INVALID, with the reason.
    doc = json.loads(bundle.read_text())
    raw = bytearray.fromhex(doc["tx"])
    raw[len(raw) // 2] ^= 0x01
    doc["tx"] = raw.hex()
    altered = tmp_path / "altered.json"
    altered.write_text(json.dumps(doc))
    assert (await verify_files(browser, cluster.genesis, altered)).startswith("INVALID: tx")
    # Another chain's genesis (a network of its own, never started).
    assert invoke("cluster", "init", str(tmp_path / "other"), "--validators", "4").exit_code == 0
    other = await verify_files(browser, tmp_path / "other" / "genesis.toml", bundle)
    assert other == "INVALID: the bundle's genesis_hash is not this genesis's hash"


def alter(doc: dict[str, Any], rng: random.Random) -> tuple[str, bytes]:
    """One random change to a bundle (or none), and the file bytes, as JSON or MessagePack.
    A bundle with governance may also lose a governance block or tx."""
    kinds = ["none", "byte", "byte", "int", "outcome", "text"]
    kind = rng.choice(kinds + (["governance", "byte"] if doc.get("governance") else []))
    if kind == "byte":
        holder, name = rng.choice(list(hex_fields(doc)))
        raw = bytearray.fromhex(holder[name])
        raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
        holder[name] = raw.hex()
    elif kind == "int":
        name = rng.choice(["height", "index", "tx_count"])
        doc[name] += rng.choice([-1, 1])
    elif kind == "outcome":  # another outcome than the block's, or none that exists
        doc["outcome"] = rng.choice(["", "over_allocation", "over_loss", "accepted"])
    elif kind == "governance":  # a governance tx or a whole governance block left out
        blocks = doc["governance"]
        at = rng.randrange(len(blocks))
        if len(blocks[at]["txs"]) > 1 and rng.random() < 0.5:
            blocks[at]["txs"].pop(rng.randrange(len(blocks[at]["txs"])))
        else:
            blocks.pop(at)
    if kind == "text":
        data = bytearray(json.dumps(doc).encode())
        data[rng.randrange(len(data))] = rng.randrange(32, 127)
        return kind, bytes(data)
    if rng.random() < 0.3:
        return kind + "/msgpack", msgpack.packb(as_bytes(doc))
    return kind, json.dumps(doc).encode()


def hex_fields(doc: Any) -> Iterator[tuple[Any, Any]]:
    items = doc.items() if isinstance(doc, dict) else enumerate(doc)
    for name, value in items:
        if isinstance(value, str) and name not in ("format", "chain_id", "outcome") and value:
            yield doc, name
        elif isinstance(value, dict | list):
            yield from hex_fields(value)


def as_bytes(value: Any) -> Any:
    """The bundle with its hex strings as bin, as a node's MessagePack answer has them."""
    if isinstance(value, dict):
        return {
            k: v if k in ("format", "chain_id", "outcome") else as_bytes(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [as_bytes(v) for v in value]
    return bytes.fromhex(value) if isinstance(value, str) else value


async def test_the_browser_verifier_agrees_with_verify_proof_on_200_bundles(
    cluster: RunningCluster,
    written: dict[str, Any],
    story_rows: dict[str, Any],
    governed: list[str],
    browser: Browser,
    tmp_path: Path,
) -> None:
    """Half the cases from bundles of genesis clerks (version 2), half from bundles that carry
    governance (version 3: the clerk added by governance, and its rotated key)."""
    refused = [story_rows[story.over_spend()[1]], story_rows[story.second_payout()[1]]]
    assert [r.reason for r in refused] == ["over_allocation", "over_loss"]
    tx_ids = [v["tx_id"] for versions in written.values() for v in versions]
    tx_ids += [r.tx_id for r in refused]  # bundles that prove a refusal
    pools = {
        version: [json.loads(proof_file(cluster, t, tmp_path / f"{t}.json").read_text())
                  for t in ids]
        for version, ids in ((2, tx_ids), (3, governed))
    }  # fmt: skip
    for version, bundles in pools.items():
        assert {b["format"] for b in bundles} == {f"cityledger-proof-bundle/{version}"}
    assert any(b["anchor"] is not None for b in pools[2])  # proven under a later head too
    await open_page(browser, cluster, "#/verify")
    verdicts = await agreement(browser, pools, cluster.genesis, AGREEMENT_CASES, AGREEMENT_SEED,
                               tmp_path)  # fmt: skip
    for version in (2, 3):
        assert verdicts[version, True] >= AGREEMENT_CASES // 20, verdicts
        assert verdicts[version, False] >= AGREEMENT_CASES // 4, verdicts


async def agreement(
    browser: Browser, pools: dict[int, list[Any]], genesis: Path, cases: int, seed: int,
    tmp_path: Path,
) -> dict[tuple[int, bool], int]:  # fmt: skip
    """`cases` bundles, drawn from each pool in turn and altered at random (or not), judged by
    the page and by `cityledger verify-proof`: they must agree on each. Verdicts by pool."""
    genesis_text = genesis.read_text()
    rng = random.Random(seed)
    verdicts = dict.fromkeys(((v, ok) for v in pools for ok in (True, False)), 0)
    for case in range(cases):
        version = list(pools)[case % len(pools)]
        kind, data = alter(json.loads(json.dumps(rng.choice(pools[version]))), rng)
        path = tmp_path / f"case-{case}.bin"
        path.write_bytes(data)
        reference = invoke("verify-proof", str(path), "--genesis", str(genesis))
        assert reference.exit_code in (0, 1), reference.output
        page = await browser.evaluate(
            f"window.cityledgerVerify({json.dumps(genesis_text)}, "
            f"{json.dumps(base64.b64encode(data).decode())})"
        )
        assert page["valid"] == (reference.exit_code == 0), (case, kind, page, reference.output)
        verdicts[version, page["valid"]] += 1
    return verdicts


async def test_the_browser_verifier_replays_epochs_as_verify_proof_does(
    cluster: RunningCluster, browser: Browser, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chain of four epochs built in this process (tests/ledger/epoch_chain.py: a validator
    added, a validator key rotated, one removed, the consensus parameters changed, a clerk
    added and its key rotated): the page's verdicts on its bundles, valid and altered, are
    verify-proof's, and a valid one shows the signers of its block's epoch."""
    with epoch_chain(tmp_path / "chain", monkeypatch) as chain:
        made = build(chain)
        bundles = {name: hexed(chain.bundle(tx)) for name, tx in made.items()}
    genesis = tmp_path / "genesis.toml"
    genesis.write_text(genesis_mod.dump_toml(NET.genesis))
    await open_page(browser, cluster, "#/verify")
    verdicts = await agreement(browser, {3: list(bundles.values())}, genesis, EPOCH_CASES,
                               AGREEMENT_SEED, tmp_path)  # fmt: skip
    assert verdicts[3, True] >= EPOCH_CASES // 20, verdicts
    assert verdicts[3, False] >= EPOCH_CASES // 2, verdicts
    bundle = tmp_path / "epoch3.json"
    bundle.write_text(json.dumps(bundles["epoch3"]))
    assert await verify_files(browser, genesis, bundle) == "VALID"
    proven = await text(browser, "proven")
    assert "node1, node3, node9 (the validators of epoch 3)" in proven  # node2 left, node3 moved
    assert "6 changes replayed" in proven


# --- Records with rules: fund flows, risk alerts, claims --------------------------------------


@pytest.fixture(scope="module")
def story_rows(cluster: RunningCluster) -> dict[str, Any]:
    """The demo's story (cli/story.py) submitted in order, each record committed before the
    next: a budget line and its payments, an over-spend refused in block order, three split
    payments, one typhoon claimed at both insurers and the second payout refused."""
    genesis = load_genesis(cluster.genesis)
    now = int(time.time() * 1000)
    records = [
        *story.budget(now), *story.spending_and_permits(now), story.over_spend(),
        *story.split_payments(), *story.typhoon_claims(now), story.second_payout(),
    ]  # fmt: skip
    rows: dict[str, Any] = {}
    for org, key, type_, body in records:
        clerk = f"{org}-clerk"
        signer = load_key(cluster.root / "clients" / f"{clerk}.pem")
        with Client(cluster.url, identity=clerk, key=signer, genesis=genesis) as client:
            status = client.submit(client.build(key, type_, body), wait=True)
        rows[key] = status
    return rows


async def test_fund_flows_risks_claims_and_outcomes_render_from_the_rules(
    cluster: RunningCluster, story_rows: dict[str, Any], browser: Browser
) -> None:
    over = story_rows[story.over_spend()[1]]
    assert over.reason == "over_allocation"
    await sign_in(browser, cluster, "auditor")
    await open_page(browser, cluster, "#/funds")
    lines = await browser.evaluate(
        "[...document.querySelectorAll('#budget-lines tbody tr')]"
        ".map(r => [...r.cells].map(c => c.textContent))"
    )
    # The line: 1,500,000.00 allocated, two payments and three split ones spent.
    spent = 80_000_000 + 45_500_000 + 3 * 400_000
    assert [story.LINE, "Public Works", "2025", "4,000,000.00", "1,500,000.00",
            cents(spent), cents(150_000_000 - spent)] in lines  # fmt: skip
    refusals = await text(browser, "refusals")
    assert "over_allocation1" in refusals
    assert "over_loss1" in refusals
    window = await text(browser, "refusals-window")  # a chain of fewer than 256 blocks: all
    assert window.startswith("Blocks 1 to ")
    assert "the whole chain as of block" in window
    await screenshot(browser, "funds")
    await refusals_step_by_step(browser, refusals)
    await show(browser, "#/risks")
    risks = await browser.evaluate(
        "Object.fromEntries([...document.querySelectorAll('.risk-page tbody tr')].map(r =>"
        " [r.cells[0].textContent, [...r.cells[3].querySelectorAll('a')].length]))"
    )
    assert risks["split_payment"] == 3  # its evidence: the three payments, each a link
    assert risks["cross_insurer_claim"] == 2
    await screenshot(browser, "risks")
    await show(browser, "#/claims")
    claims = await text(browser, "claims")
    assert f"{story.PARCEL} / {story.TYPHOON}: 2 claims, 2 insurers" in claims
    paid = await browser.evaluate(
        "Object.fromEntries([...document.querySelectorAll('#claims tbody tr')].map(r =>"
        " [r.cells[0].textContent, r.cells[5].textContent]))"
    )
    # Civic Shield paid the loss; Harbor Mutual's second payout was refused: nothing paid.
    assert paid == {story.CS_CLAIM: cents(story.LOSS_CENTS), story.HM_CLAIM: "0.00"}
    await screenshot(browser, "claims")
    # The refused payment is in its block, marked with its reason.
    await show(browser, f"#/block/{over.height}")
    assert "refused: over_allocation" in await text(browser, "block-txs")


async def refusals_step_by_step(browser: Browser, whole: str) -> None:
    """With a step of 4 blocks, the page says that its counts cover the latest 4 blocks only;
    each click adds 4 older ones, until the totals are the whole chain's again."""
    window = await browser.evaluate(
        "(async () => { const m = await import('/explorer/fiscal.js');"
        f" const span = await m.latestRefusals({REFUSAL_STEP});"
        " document.getElementById('refusals-box')"
        f".replaceWith(m.refusalTable(span, {REFUSAL_STEP}));"
        " return document.getElementById('refusals-window').textContent; })()"
    )
    assert f"the latest {REFUSAL_STEP} blocks only" in window
    while "whole chain" not in window:
        floor = int(window.split()[1])
        await browser.evaluate("document.getElementById('refusals-more').click()")
        window = await browser.wait_for(
            f"(t => !t.startsWith('Blocks {floor} ') && t)"
            "(document.getElementById('refusals-window').textContent)"
        )
        assert int(window.split()[1]) == max(1, floor - REFUSAL_STEP), window
    assert await text(browser, "refusals") == whole


def cents(value: int) -> str:
    return f"{value // 100:,}.{value % 100:02d}"

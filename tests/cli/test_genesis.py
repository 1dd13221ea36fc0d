"""`cityledger genesis member|assemble|hash`: a network bootstrapped without a single key
holder. Four organisations each make their keys in a directory of their own and hand over a
public member file; the assembled genesis is the same in any order of the files; an altered,
forged or conflicting member file is refused; and the network it makes, run as real
processes (one per member's directory), commits a clerk's tx."""

import json
import shutil
from pathlib import Path
from typing import Final

import pytest

from cli import network
from cli.ports import free_base_port
from tests.cli.conftest import invoke, kill_all, no_traceback, run

MEMBERS: Final = (
    ("finance", "City Finance Bureau", "municipal", "fiscal/"),
    ("planning", "City Planning Office", "municipal", "permits/"),
    ("harbor", "Harbor Mutual Insurance", "insurer", "claims/harbor/"),
    ("civic", "Civic Shield Assurance", "insurer", "claims/civic/"),
)


def ok(*args: str | Path) -> str:
    result = invoke(*map(str, args))
    assert result.exit_code == 0, result.output + result.stderr
    return str(result.stdout)


def make_member(machine: Path, index: int, base_port: int) -> Path:
    """What one organisation does on its own machine: its keys, then its member file."""
    member_id, organisation, kind, namespace = MEMBERS[index]
    machine.mkdir(parents=True)
    for name in ("key", "clerk", "admin"):
        ok("keys", "new", str(machine / f"{name}.pem"))
    ok("genesis", "member", "--id", member_id, "--organisation", organisation, "--kind", kind,
       "--url", f"https://127.0.0.1:{base_port + index}", "--key", str(machine / "key.pem"),
       "--namespace", namespace, "--client", f"{member_id}-clerk={machine / 'clerk.pem'}",
       "--admin", f"{member_id}-admin={machine / 'admin.pem'}",
       "-o", str(machine / "member.toml"))  # fmt: skip
    assert "PRIVATE" not in (machine / "member.toml").read_text()
    return machine / "member.toml"


@pytest.fixture
def members(tmp_path: Path) -> list[Path]:
    return [make_member(tmp_path / "machines" / m[0], i, 7101) for i, m in enumerate(MEMBERS)]


def test_the_same_member_files_make_the_same_genesis_in_any_order(
    members: list[Path], tmp_path: Path
) -> None:
    one = json.loads(ok("genesis", "assemble", "--chain-id", "town", *members,
                        "-o", str(tmp_path / "one.toml"), "--json"))  # fmt: skip
    two = json.loads(ok("genesis", "assemble", "--chain-id", "town", *reversed(members),
                        "-o", str(tmp_path / "two.toml"), "--json"))  # fmt: skip
    assert one == two
    assert one["validators"] == ["civic", "finance", "harbor", "planning"]
    assert (tmp_path / "one.toml").read_bytes() == (tmp_path / "two.toml").read_bytes()
    for copy in ("one.toml", "two.toml"):
        printed = ok("genesis", "hash", str(tmp_path / copy))
        assert printed.strip().endswith(one["genesis_hash"])


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (('url = "https://127.0.0.1:7101"', 'url = "https://127.0.0.1:7109"'), "signature"),
        (('role = "clerk"', 'role = "auditor"'), "signature"),
        (('format = "cityledger-member/1"', 'format = "x"'), "format"),
        (('namespaces = ["fiscal/"]', 'namespaces = ["_gov/"]'), "_gov/"),
        (("[[admins]]", "[[admins]]\nextra = 1"), "fields"),
    ],
)
def test_an_altered_member_file_is_refused(
    members: list[Path], tmp_path: Path, change: tuple[str, str], says: str
) -> None:
    text = members[0].read_text()
    assert change[0] in text
    members[0].write_text(text.replace(change[0], change[1], 1))
    result = invoke("genesis", "assemble", "--chain-id", "town", *map(str, members),
                    "-o", str(tmp_path / "g.toml"))  # fmt: skip
    assert result.exit_code == 1
    assert f"{members[0]} is not a valid member file" in result.stderr
    assert says in result.stderr
    no_traceback(result.output)
    assert not (tmp_path / "g.toml").exists()


def test_two_members_with_one_id_make_no_genesis(members: list[Path], tmp_path: Path) -> None:
    again = make_member(tmp_path / "machines" / "finance-again", 0, 7101)
    result = invoke("genesis", "assemble", "--chain-id", "town", *map(str, members), str(again),
                    "-o", str(tmp_path / "g.toml"))  # fmt: skip
    assert result.exit_code == 1
    assert "make no valid genesis" in result.stderr
    assert "finance" in result.stderr


def test_a_network_of_four_separately_made_members_starts_and_commits(tmp_path: Path) -> None:
    base = free_base_port(len(MEMBERS))
    machines = tmp_path / "machines"
    files = [make_member(machines / m[0], i, base) for i, m in enumerate(MEMBERS)]
    root = tmp_path / "net"  # laid out as `cluster up` reads it: one folder per member
    ok("genesis", "assemble", "--chain-id", "town", *files, "-o", str(tmp_path / "genesis.toml"))
    hashes = set()
    for member_id, *_ in MEMBERS:
        folder = root / network.NODES_DIR / member_id
        folder.mkdir(parents=True)
        shutil.copy(tmp_path / "genesis.toml", folder / "genesis.toml")  # each member's copy
        hashes.add(json.loads(ok("genesis", "hash", str(folder / "genesis.toml"), "--json"))[
            "genesis_hash"])  # fmt: skip
        shutil.copy(machines / member_id / "key.pem", folder / network.KEY_FILE)
        listen = f"127.0.0.1:{base + [m[0] for m in MEMBERS].index(member_id)}"
        config = network.node_config(member_id, listen, 1).replace("../../genesis.toml",
                                                                   "genesis.toml")  # fmt: skip
        (folder / network.NODE_CONFIG).write_text(config)
    assert len(hashes) == 1
    shutil.copy(tmp_path / "genesis.toml", root / network.GENESIS_FILE)
    try:
        up = run("cluster", "up", str(root), "--detach")
        assert up.returncode == 0, up.stdout + up.stderr
        clerk = machines / "planning" / "clerk.pem"
        done = run("submit", "--client", "planning-clerk", "--key", str(clerk), "permits/p-1",
                   "record", '{"street": "Quay 1"}', "--wait", "--json",
                   CITYLEDGER_NODE=f"https://127.0.0.1:{base}",
                   CITYLEDGER_GENESIS=str(root / network.GENESIS_FILE))  # fmt: skip
        assert done.returncode == 0, done.stderr
        status = json.loads(done.stdout)
        assert (status["status"], status["outcome"]) == ("committed", "accepted")
    finally:
        pids = [int(json.loads(p.read_text())["pid"]) for p in (root / "pids").glob("*.pid")]
        run("cluster", "down", str(root))
        kill_all(pids)

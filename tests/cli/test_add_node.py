"""`cityledger cluster add-node DIR ID --organisation ORG --kind KIND [--port P]`: a key and a
node.toml for a validator that governance will add, and what its add-validator proposal needs.
No process is started: the node counts only once governance adds it (tests of the consensus
side start it)."""

import json
from pathlib import Path

import pytest

from cli.network import IN_FORCE, NOT_IN_FORCE, REMOVED, every_node
from cli.network import load as load_network
from ledger import crypto
from ledger.gov import changes
from ledger.gov.config import Config
from node.config import load as load_config
from tests.cli.conftest import invoke, no_traceback


@pytest.fixture
def net(tmp_path: Path) -> Path:
    root = tmp_path / "net"
    done = invoke("cluster", "init", str(root), "--base-port", "7201")
    assert done.exit_code == 0, done.stderr
    return root


def add(root: Path, node_id: str, *more: str) -> dict[str, str]:
    done = invoke("cluster", "add-node", str(root), node_id, "--organisation",
                  "City Transport Authority", "--kind", "municipal", *more, "--json")  # fmt: skip
    assert done.exit_code == 0, done.stderr
    answer: dict[str, str] = json.loads(done.stdout)
    return answer


def test_a_new_node_gets_a_key_a_config_and_the_next_port(net: Path) -> None:
    made = add(net, "transport")
    assert made["url"] == "https://127.0.0.1:7205"  # 7201-7204: the genesis's four
    folder = net / "nodes" / "transport"
    assert made["config"] == str(folder / "node.toml")
    key = crypto.load_private_key(folder / "key.pem")
    assert crypto.public_key_bytes(key).hex() == made["public_key"]
    assert (folder / "key.pem").stat().st_mode & 0o777 == 0o600
    config = load_config(folder / "node.toml")
    assert (config.node_id, config.host, config.port) == ("transport", "127.0.0.1", 7205)
    assert config.genesis.resolve() == (net / "genesis.toml").resolve()
    # A second one takes the port after the first added node's.
    assert add(net, "water", "--port", "7300")["url"].endswith(":7300")
    assert add(net, "lakeside")["url"].endswith(":7301")


def test_the_text_output_names_the_proposal_to_make(net: Path) -> None:
    done = invoke("cluster", "add-node", str(net), "transport", "--organisation",
                  "City Transport Authority", "--kind", "municipal")  # fmt: skip
    assert done.exit_code == 0, done.stderr
    assert "gov propose --admin ID --key PEM add-validator --id transport" in done.stdout
    assert '--organisation "City Transport Authority" --kind municipal' in done.stdout


@pytest.mark.parametrize(
    ("node_id", "more", "says"),
    [
        ("finance", (), "already names a member"),
        ("finance-clerk", (), "already names a member"),
        ("Bad Id", (), "no id"),
        ("transport", ("--port", "7202"), "port 7202 is taken"),
    ],
)
def test_a_taken_id_or_port_is_refused_and_nothing_written(
    net: Path, node_id: str, more: tuple[str, ...], says: str
) -> None:
    before = sorted(p.name for p in (net / "nodes").iterdir())
    done = invoke("cluster", "add-node", str(net), node_id, "--organisation", "X",
                  "--kind", "insurer", *more)  # fmt: skip
    assert done.exit_code == 2
    assert says in done.stderr
    no_traceback(done.output)
    assert sorted(p.name for p in (net / "nodes").iterdir()) == before


def test_a_directory_without_a_network_is_refused(tmp_path: Path) -> None:
    done = invoke("cluster", "add-node", str(tmp_path), "transport", "--organisation", "X",
                  "--kind", "insurer")  # fmt: skip
    assert done.exit_code == 2
    assert "holds no network" in done.stderr


def test_status_lists_the_set_in_force_and_marks_the_others(net: Path) -> None:
    """`cluster status`'s rows (cli/network.every_node): the validators in force in index order,
    then the directory's other nodes, removed or not (yet) in force."""
    made = add(net, "transport")
    add(net, "water")
    loaded = load_network(net)
    before = [(n.id, member) for n, member in every_node(loaded, None)]
    assert before == [("finance", IN_FORCE), ("planning", IN_FORCE), ("harbor-mutual", IN_FORCE),
                      ("civic-shield", IN_FORCE), ("transport", NOT_IN_FORCE),
                      ("water", NOT_IN_FORCE)]  # fmt: skip
    config = Config(loaded.genesis)
    config = changes.apply(config, changes.parse({
        "change": "add-validator", "id": "transport", "organisation": "City Finance Bureau",
        "kind": "municipal", "url": made["url"], "public_key": made["public_key"],
        "proof": made["proof"],
    }), 3)  # fmt: skip
    config = changes.apply(
        config, changes.parse({"change": "remove-validator", "id": "planning"}), 6
    )
    rows = every_node(loaded, config)
    assert [(n.id, member) for n, member in rows] == [
        ("finance", IN_FORCE), ("harbor-mutual", IN_FORCE), ("civic-shield", IN_FORCE),
        ("transport", IN_FORCE), ("planning", REMOVED), ("water", NOT_IN_FORCE),
    ]  # fmt: skip
    transport = rows[3][0]
    assert (transport.organisation, transport.url) == ("City Finance Bureau", made["url"])
    assert transport.config == net / "nodes" / "transport" / "node.toml"

"""`keys new`, `cluster init` and the example network in configs/, through click's runner."""

import json
import stat
from pathlib import Path

import pytest

from cli import network
from cli.main import cli
from cli.network import ORGANISATIONS
from ledger import crypto
from ledger import genesis as genesis_mod
from node import config as node_config
from tests.cli.conftest import invoke, no_traceback

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = (
    "keys", "cluster", "node", "submit", "get", "history", "tx", "block", "verify", "proof",
    "verify-proof", "demo",
)  # fmt: skip


def test_help_lists_every_command_and_each_has_help() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for name in COMMANDS:
        assert name in result.output
    for name, command in cli.commands.items():
        assert invoke(name, "--help").exit_code == 0
        for sub in getattr(command, "commands", {}):
            assert invoke(name, sub, "--help").exit_code == 0


def test_keys_new_writes_a_private_key_and_prints_the_public_one(tmp_path: Path) -> None:
    out = tmp_path / "k.pem"
    result = invoke("keys", "new", str(out))
    assert result.exit_code == 0
    key = crypto.load_private_key(out)
    assert crypto.public_key_bytes(key).hex() in result.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    second = invoke("keys", "new", str(tmp_path / "j.pem"), "--json")
    doc = json.loads(second.stdout)
    assert set(doc) == {"path", "public_key", "encrypted"}
    assert len(doc["public_key"]) == 64


def test_keys_new_never_overwrites(tmp_path: Path) -> None:
    out = tmp_path / "k.pem"
    out.write_text("precious")
    result = invoke("keys", "new", str(out))
    assert result.exit_code == 2
    assert "already exists" in result.stderr
    assert out.read_text() == "precious"


def test_cluster_init_writes_a_network_of_two_municipal_and_two_insurer_nodes(
    tmp_path: Path,
) -> None:
    root = tmp_path / "net"
    result = invoke("cluster", "init", str(root), "--base-port", "9100")
    assert result.exit_code == 0, result.output
    assert "cityledger cluster up" in result.output
    genesis = genesis_mod.load(root / "genesis.toml")
    assert [v.kind for v in genesis.validators] == ["municipal", "municipal", "insurer", "insurer"]
    urls = [f"https://127.0.0.1:{9100 + i}" for i in range(4)]
    assert [v.url for v in genesis.validators] == urls
    by_org = {v.organisation: v for v in genesis.validators}
    assert genesis.policies["City Finance Bureau"] == ("fiscal/",)
    assert genesis.policies["City Planning Office"] == ("permits/",)
    for org in (o for o in by_org if by_org[o].kind == "insurer"):
        slug = by_org[org].id
        assert set(genesis.policies[org]) == {f"claims/{slug}/", f"policies/{slug}/"}
    for v in genesis.validators:
        config = node_config.load(root / "nodes" / v.id / "node.toml")
        identity = node_config.load_identity(config)  # the key file is this validator's key
        assert identity.index == v.index
        assert config.port == 9100 + v.index
        assert stat.S_IMODE(config.key_file.stat().st_mode) == 0o600
        # The four nodes share this machine's cores (and each gets at least one).
        assert config.cores == max(node_config.machine_cores() // 4, 1)
    for client in genesis.clients.values():
        key = crypto.load_private_key(root / "clients" / f"{client.id}.pem")
        assert crypto.public_key_bytes(key) == client.public_key
        if client.role == "clerk":
            assert genesis.may_write(client, genesis.policies[client.organisation][0] + "x")
    assert len(genesis.clients) == 5
    # One admin per organisation, `<node>-admin`, its key 0600 under admins/.
    assert sorted(genesis.admins) == sorted(f"{by_org[o].id}-admin" for o in by_org)
    for admin in genesis.admins.values():
        path = root / "admins" / f"{admin.id}.pem"
        assert crypto.public_key_bytes(crypto.load_private_key(path)) == admin.public_key
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert by_org[admin.organisation].id == admin.id.removesuffix("-admin")
    # One auditor, who reads everything and writes nothing; read policies that fit the network.
    auditor = genesis.clients["auditor"]
    assert (auditor.role, auditor.organisation) == ("auditor", "City Audit Office")
    assert not any(genesis.may_write(auditor, ns + "x") for ns in ("fiscal/", "claims/"))
    assert genesis.public_namespaces == ("permits/",)
    assert genesis.reads == {"City Finance Bureau": ("claims/",),
                             "City Planning Office": ("fiscal/",)}  # fmt: skip
    assert genesis.may_read("City Finance Bureau", "claims/harbor-mutual/1")
    assert not genesis.may_read("Harbor Mutual Insurance", "fiscal/budget")
    assert genesis.may_read(None, "permits/b/1")


def test_cluster_init_json_and_larger_networks(tmp_path: Path) -> None:
    result = invoke("cluster", "init", str(tmp_path / "n"), "-n", "9", "--json")
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert set(doc) == {
        "dir", "chain_id", "genesis_hash", "genesis", "nodes", "clients", "admins"
    }  # fmt: skip
    assert len(doc["admins"]) == len(ORGANISATIONS)
    ids = [n["id"] for n in doc["nodes"]]
    assert len(ids) == len(set(ids)) == 9
    assert {n["organisation"] for n in doc["nodes"]} == {o.name for o in ORGANISATIONS}
    assert genesis_mod.load(Path(doc["genesis"])).hash.hex() == doc["genesis_hash"]


def test_view_change_timeout_goes_to_the_genesis(tmp_path: Path) -> None:
    root = tmp_path / "n"
    assert invoke("cluster", "init", str(root), "--view-change-timeout-ms", "700").exit_code == 0
    assert genesis_mod.load(root / "genesis.toml").params.view_change_timeout_ms == 700


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--validators", "0"], "--validators"),
        (["--validators", "65"], "--validators"),
        (["--base-port", "65534"], "exceed 65535"),
        (["--chain-id", "Not Valid"], "chain_id"),
        (["--view-change-timeout-ms", "5"], "--view-change-timeout-ms"),
    ],
)
def test_cluster_init_usage_errors(tmp_path: Path, args: list[str], says: str) -> None:
    result = invoke("cluster", "init", str(tmp_path / "n"), *args)
    assert result.exit_code == 2
    assert says in result.stderr
    assert not (tmp_path / "n" / "genesis.toml").exists()


def test_cluster_init_refuses_an_existing_network(tmp_path: Path) -> None:
    assert invoke("cluster", "init", str(tmp_path)).exit_code == 0
    before = (tmp_path / "genesis.toml").read_bytes()
    result = invoke("cluster", "init", str(tmp_path))
    assert result.exit_code == 2
    assert "already holds a network" in result.stderr
    assert (tmp_path / "genesis.toml").read_bytes() == before


def test_cluster_commands_on_a_directory_without_a_network(tmp_path: Path) -> None:
    for command in ("up", "down", "status"):
        result = invoke("cluster", command, str(tmp_path))
        assert result.exit_code == 2
        assert "holds no network" in result.stderr
        no_traceback(result.output)


def test_cluster_down_and_status_of_a_network_that_never_ran(tmp_path: Path) -> None:
    invoke("cluster", "init", str(tmp_path), "--base-port", "9200")
    down = invoke("cluster", "down", str(tmp_path))
    assert down.exit_code == 0
    assert "No node" in down.output
    assert json.loads(invoke("cluster", "down", str(tmp_path), "--json").stdout)["nodes"]
    status = invoke("cluster", "status", str(tmp_path), "--json")
    assert status.exit_code == 1
    rows = json.loads(status.stdout)["nodes"]
    assert [r["healthy"] for r in rows] == [False] * 4
    assert {r["problem"] for r in rows} == {"not running"}


def test_node_run_with_a_bad_config_is_a_usage_error(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text('node_id = "x"\nlisten = "nowhere"\n')
    result = invoke("node", "run", str(config))
    assert result.exit_code == 2
    assert "listen" in result.stderr
    no_traceback(result.output)


def test_node_run_with_a_key_of_another_validator(tmp_path: Path) -> None:
    invoke("cluster", "init", str(tmp_path), "--base-port", "9300")
    config = tmp_path / "nodes" / "finance" / "node.toml"
    (tmp_path / "nodes" / "finance" / "key.pem").unlink()
    planning = (tmp_path / "nodes" / "planning" / "key.pem").read_bytes()
    (tmp_path / "nodes" / "finance" / "key.pem").write_bytes(planning)
    (tmp_path / "nodes" / "finance" / "key.pem").chmod(0o600)
    result = invoke("node", "run", str(config))
    assert result.exit_code == 2
    assert "is the key of validator 'planning', not of 'finance'" in result.stderr


# --- configs/: the example network -----------------------------------------------------------


def test_the_example_network_is_complete_and_holds_no_private_key() -> None:
    configs = ROOT / "configs"
    genesis = genesis_mod.load(configs / "genesis.toml")
    assert (configs / "README.md").is_file()
    assert [v.kind for v in genesis.validators] == ["municipal", "municipal", "insurer", "insurer"]
    for v in genesis.validators:
        config = node_config.load(configs / "nodes" / v.id / "node.toml")
        assert config.genesis.resolve() == (configs / "genesis.toml").resolve()
        assert config.node_id == v.id
    assert not list(configs.rglob("*.pem"))
    assert not [p for p in configs.rglob("*") if "PRIVATE KEY" in _text(p)]


def _text(path: Path) -> str:
    return path.read_text(errors="replace") if path.is_file() else ""


def test_init_takes_addresses_that_differ_from_where_peers_reach_a_node(tmp_path: Path) -> None:
    """The one way a network is written (`cluster init`, the demo, the tests, the benchmarks):
    a node may bind one address while its peers reach it at another (a relay, a namespace)."""
    where = [network.Address(f"10.77.{i}.2:7001", f"https://10.77.{i}.1:7001") for i in range(4)]
    net = network.init(
        tmp_path / "net", nodes=where, chain_id="addrcity", params={"block_interval_ms": 10},
        log_level="debug", cores=0, settings={"body_bytes_max": 65536},
    )  # fmt: skip
    assert [n.url for n in net.nodes] == [a.url for a in where]
    assert [v.url for v in net.genesis.validators] == [a.url for a in where]
    for entry, address in zip(net.nodes, where, strict=True):
        config = node_config.load(entry.config)
        assert f"{config.host}:{config.port}" == address.listen
        assert config.log_level == "debug"
        assert config.cores == 0
        assert config.body_bytes_max == 65536
    assert network.addresses("127.0.0.1", [7001, 7002]) == [
        network.Address("127.0.0.1:7001", "https://127.0.0.1:7001"),
        network.Address("127.0.0.1:7002", "https://127.0.0.1:7002"),
    ]
    assert network.addresses("127.0.0.1", [7001], insecure=True) == [
        network.Address("127.0.0.1:7001", "http://127.0.0.1:7001"),
    ]

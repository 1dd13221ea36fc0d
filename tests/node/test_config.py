"""node.toml: a good file loads into one frozen Config; every mistake names its field."""

import dataclasses
import os
from pathlib import Path

import pytest

from cli import keyfile
from ledger import crypto, genesis
from node.config import NOT_IN_GENESIS, Config, ConfigError, load, load_identity
from tests import factory

GOOD = """
node_id = "node1"
key_file = "key.pem"
data_dir = "data"
listen = "127.0.0.1:7002"
genesis = "../genesis.toml"
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    net = factory.network(4)
    doc = net.genesis.to_dict()
    for v in doc["validators"]:  # the nodes speak TLS
        v["url"] = v["url"].replace("http://", "https://")
    (tmp_path / "genesis.toml").write_text(genesis.dump_toml(genesis.from_dict(doc)))
    node = tmp_path / "node1"
    node.mkdir()
    crypto.write_private_key(node / "key.pem", net.validator_keys[1])
    crypto.write_private_key(node / "other.pem", net.validator_keys[2])
    return node


def write(folder: Path, text: str) -> Path:
    path = folder / "node.toml"
    path.write_text(text)
    return path


def test_a_good_config_loads_with_paths_beside_it(folder: Path) -> None:
    config = load(write(folder, GOOD + "wait_timeout_ms = 500\nlog_level = 'DEBUG'\n"))
    assert (config.node_id, config.host, config.port) == ("node1", "127.0.0.1", 7002)
    assert config.data_dir == folder / "data"
    assert config.genesis == folder / "../genesis.toml"
    assert (config.wait_timeout_ms, config.log_level) == (500, "debug")
    assert config.cores == 0  # all of the machine's
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.port = 1  # type: ignore[misc]
    identity = load_identity(config)
    assert identity.index == 1
    assert isinstance(config, Config)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (GOOD.replace('node_id = "node1"', ""), "node_id"),
        (GOOD.replace('"key.pem"', "7"), "key_file"),
        (GOOD.replace('data_dir = "data"', 'data_dir = ""'), "data_dir"),
        (GOOD.replace("127.0.0.1:7002", "localhost"), "listen"),
        (GOOD.replace("127.0.0.1:7002", "127.0.0.1:70000"), "listen"),
        (GOOD.replace('genesis = "../genesis.toml"', ""), "genesis"),
        (GOOD + 'log_level = "loud"\n', "log_level"),
        (GOOD + "body_bytes_max = 1\n", "body_bytes_max"),
        (GOOD + "wait_timeout_ms = true\n", "wait_timeout_ms"),
        (GOOD + "pool_capacity = 'many'\n", "pool_capacity"),
        (GOOD + "cores = -1\n", "cores"),
        (GOOD + "colour = 'blue'\n", "colour"),
        (GOOD + "key_passphrase_file = ''\n", "key_passphrase_file"),
        (GOOD + "key_passphrase_env = 'NOT A NAME'\n", "key_passphrase_env"),
        (GOOD + "key_passphrase_env = 7\n", "key_passphrase_env"),
        (GOOD + "key_passphrase_file = 'p'\nkey_passphrase_env = 'P'\n", "not both"),
        ("node_id = [", "TOML"),
    ],
)
def test_every_mistake_names_its_field(folder: Path, change: str, field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(write(folder, change))
    assert field in str(caught.value)


def test_all_mistakes_are_reported_at_once(folder: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(write(folder, 'listen = "x"\nlog_level = "loud"\n'))
    fields = {p.split(":")[0] for p in caught.value.problems}
    assert fields >= {"node_id", "key_file", "data_dir", "listen", "genesis", "log_level"}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (GOOD.replace('"key.pem"', '"other.pem"'), "key_file"),
        (GOOD.replace('"key.pem"', '"missing.pem"'), "key_file"),
        (GOOD.replace('"../genesis.toml"', '"nowhere.toml"'), "genesis"),
    ],
)
def test_files_that_do_not_fit_name_their_field(folder: Path, change: str, field: str) -> None:
    config = load(write(folder, change))
    with pytest.raises(ConfigError) as caught:
        load_identity(config)
    assert caught.value.problems[0].startswith(field)
    assert str(folder / "node.toml") in str(caught.value)


def test_a_key_other_than_the_genesis_key_may_be_a_rotated_one(folder: Path) -> None:
    crypto.write_private_key(folder / "new.pem", crypto.generate_key())
    config = load(write(folder, GOOD.replace('"key.pem"', '"new.pem"')))
    identity = load_identity(config)  # an empty store: it follows the chain until it is seated
    assert (identity.validator_id, identity.index) == ("node1", 1)


def test_an_id_outside_the_genesis_is_a_validator_governance_adds(folder: Path) -> None:
    identity = load_identity(load(write(folder, GOOD.replace('"node1"', '"node9"'))))
    assert identity.index == NOT_IN_GENESIS  # it follows the chain until a change seats it
    assert identity.validator_id == "node9"


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "absent.toml")


def test_transport_fields_load_with_their_defaults(folder: Path) -> None:
    config = load(write(folder, GOOD))
    assert (config.insecure, config.peer_listen, config.metrics_listen) == (
        False, None, ("127.0.0.1", 0),
    )  # fmt: skip
    assert config.tls_cert_file is None
    config = load(write(folder, GOOD + 'peer_listen = "127.0.0.1:8002"\n'
                        'metrics_listen = "127.0.0.1:9002"\n'
                        'tls_cert_file = "site.pem"\ntls_key_file = "site-key.pem"\n'))  # fmt: skip
    assert config.peer_listen == ("127.0.0.1", 8002)
    assert config.metrics_listen == ("127.0.0.1", 9002)
    assert (config.tls_cert_file, config.tls_key_file) == (
        folder / "site.pem",
        folder / "site-key.pem",
    )


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ('peer_listen = "nowhere"', "peer_listen"),
        ('metrics_listen = "127.0.0.1:70000"', "metrics_listen"),
        ("insecure = 1", "insecure"),
        ('tls_cert_file = "site.pem"', "tls_cert_file, tls_key_file"),
        ('insecure = true\ntls_cert_file = "a.pem"\ntls_key_file = "b.pem"', "tls_cert_file"),
    ],
)
def test_every_transport_mistake_names_its_field(folder: Path, extra: str, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(write(folder, GOOD + extra + "\n"))
    assert any(p.startswith(f"{field}:") for p in err.value.problems), err.value.problems


def test_the_genesis_url_scheme_must_match_insecure(folder: Path) -> None:
    with pytest.raises(ConfigError, match="must start with http://"):
        load_identity(load(write(folder, GOOD + "insecure = true\n")))


def test_an_encrypted_key_with_its_passphrase_from_a_file_or_the_environment(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = crypto.load_private_key(folder / "key.pem")
    (folder / "key.pem").unlink()
    crypto.write_private_key(folder / "key.pem", key, keyfile.encrypted_pem(key, b"port of call"))
    fd = os.open(folder / "pass", os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"port of call\n")
    os.close(fd)
    by_file = load(write(folder, GOOD + 'key_passphrase_file = "pass"\n'))
    assert by_file.key_passphrase_file == folder / "pass"
    assert load_identity(by_file).index == 1
    monkeypatch.setenv("NODE1_PASS", "port of call")
    by_env = load(write(folder, GOOD + 'key_passphrase_env = "NODE1_PASS"\n'))
    assert by_env.key_passphrase_env == "NODE1_PASS"
    assert load_identity(by_env).index == 1
    with pytest.raises(ConfigError, match=r"key_file: key file .* is encrypted and no passphrase"):
        load_identity(load(write(folder, GOOD)))
    monkeypatch.setenv("NODE1_PASS", "port of cal")
    with pytest.raises(ConfigError, match="wrong passphrase"):
        load_identity(by_env)

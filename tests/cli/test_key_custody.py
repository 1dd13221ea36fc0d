"""Encrypted keys for nodes and clients, and every key mistake, with real processes
(docs/protocol.md section 3.2).

`keys new --encrypt` writes an encrypted key the way users run it; a cluster made by `cluster
init` runs with two validators on encrypted keys (one reading its passphrase from a file, one
from an environment variable) and a clerk submits with an encrypted key (passphrase from the
environment and from a file). Then every mistake with a key or passphrase, for `submit` and for
`node run`: one line on stderr, exit code 2, no passphrase and no key material in it.
"""

import json
import os
import stat
import subprocess
import time
from pathlib import Path
from typing import Final

import pytest

from cli import keyfile
from cli.api import NodeClient, Refused, Signer
from ledger import crypto
from ledger import genesis as genesis_mod
from ledger import tx as txs
from tests import factory
from tests.cli.conftest import free_base_port, kill_all, no_traceback, run
from tests.faults.test_secrets import leak_forms
from tests.ledger.test_strict_ed25519 import BAD_SIGNATURE_KINDS, bad_tx_signatures, with_signature

PASSPHRASE: Final = "correct horse battery staple"
WRONG: Final = "incorrect horse battery staple"
ENV: Final = keyfile.PASSPHRASE_ENV
NODE_ENV_NAME: Final = "PLANNING_KEY_PASSPHRASE"


def private_file(path: Path, text: str, mode: int = 0o600) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)
    path.chmod(mode)
    return path


def encrypt_in_place(path: Path, passphrase: str) -> None:
    """Replace a plain key file by the same key, encrypted (what `keys new --encrypt` writes)."""
    key = crypto.load_private_key(path)
    path.unlink()
    crypto.write_private_key(path, key, keyfile.encrypted_pem(key, passphrase.encode()))


def one_line_error(
    result: subprocess.CompletedProcess[str], *, says: str, secrets: list[str]
) -> str:
    """The contract of every key mistake: exit 2, exactly one line on stderr, no secret."""
    code, out, err = result.returncode, result.stdout, result.stderr
    assert code == 2, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("Error: "), err
    assert says in lines[0], (says, lines[0])
    no_traceback(out + err)
    for secret in secrets:
        assert secret not in out + err
    return lines[0]


# --- keys new --encrypt ----------------------------------------------------------------------


def test_keys_new_encrypt_with_a_passphrase_file_or_the_environment(tmp_path: Path) -> None:
    pass_file = private_file(tmp_path / "pass", PASSPHRASE + "\n")
    by_file = run("keys", "new", str(tmp_path / "a.pem"), "--encrypt", "--passphrase-file",
                  str(pass_file), "--json")  # fmt: skip
    by_env = run("keys", "new", str(tmp_path / "b.pem"), "--encrypt", "--json", **{ENV: PASSPHRASE})
    for result, name in ((by_file, "a.pem"), (by_env, "b.pem")):
        assert result.returncode == 0, result.stderr
        doc = json.loads(result.stdout)
        assert doc["encrypted"] is True
        path = tmp_path / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.read_bytes().startswith(crypto.ENCRYPTED_PEM_LABEL)
        key = crypto.load_private_key(path, PASSPHRASE.encode())
        assert crypto.public_key_bytes(key).hex() == doc["public_key"]
        assert PASSPHRASE not in result.stdout + result.stderr


def test_keys_new_encrypt_mistakes(tmp_path: Path) -> None:
    out = str(tmp_path / "k.pem")
    loose = private_file(tmp_path / "loose", PASSPHRASE, 0o644)
    cases = [
        (run("keys", "new", out, "--encrypt", input_text=""), "--encrypt needs a passphrase"),
        (run("keys", "new", out, "--encrypt", **{ENV: "short"}), "shorter than 8 characters"),
        (run("keys", "new", out, "--encrypt", "--passphrase-file", str(loose)),
         "is open to group or others (mode 0644)"),
        (run("keys", "new", out, "--encrypt", "--passphrase-file", str(tmp_path / "none")),
         "cannot read passphrase file"),
    ]  # fmt: skip
    for result, says in cases:
        one_line_error(result, says=says, secrets=[PASSPHRASE])
    plain_with_file = run("keys", "new", out, "--passphrase-file", str(loose))
    assert plain_with_file.returncode == 2
    assert "--passphrase-file goes with --encrypt" in plain_with_file.stderr
    assert not (tmp_path / "k.pem").exists()


# --- a cluster on encrypted keys -------------------------------------------------------------


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`cluster init`; finance and planning run on encrypted keys, finance-clerk's is too."""
    root = tmp_path_factory.mktemp("custody") / "net"
    base = free_base_port(4)
    done = run("cluster", "init", str(root), "--base-port", str(base))
    assert done.returncode == 0, done.stderr
    for node in ("finance", "planning"):
        encrypt_in_place(root / "nodes" / node / "key.pem", PASSPHRASE)
    private_file(root / "nodes" / "finance" / "pass", PASSPHRASE + "\n")
    with (root / "nodes" / "finance" / "node.toml").open("a") as config:
        config.write('key_passphrase_file = "pass"\n')
    with (root / "nodes" / "planning" / "node.toml").open("a") as config:
        config.write(f'key_passphrase_env = "{NODE_ENV_NAME}"\n')
    encrypt_in_place(root / "clients" / "finance-clerk.pem", PASSPHRASE)
    return root


def test_nodes_and_clients_work_with_encrypted_keys(net: Path) -> None:
    pids: list[int] = []
    try:
        up = run("cluster", "up", str(net), "--detach", **{NODE_ENV_NAME: PASSPHRASE})
        pids = [json.loads(p.read_text())["pid"] for p in (net / "pids").glob("*.pid")]
        assert up.returncode == 0, up.stdout + up.stderr
        key = net / "clients" / "finance-clerk.pem"
        pass_file = private_file(net / "clerk-pass", PASSPHRASE)
        by_env = submit(
            net, key, "--wait", "--json", record="fiscal/custody/1", **{ENV: PASSPHRASE}
        )
        by_file = submit(net, key, "--passphrase-file", str(pass_file), "--wait", "--json",
                         record="fiscal/custody/2")  # fmt: skip
        for result in (by_env, by_file):
            assert result.returncode == 0, result.stderr
            assert json.loads(result.stdout)["status"] == "committed"
        reader = ["get", "--node", _first_url(net), "--client", "finance-clerk", "--key", str(key)]
        by_file_args = ["--passphrase-file", str(pass_file)]
        for args, read_env in (([], {ENV: PASSPHRASE}), (by_file_args, {})):
            trust = {"CITYLEDGER_GENESIS": str(net / "genesis.toml")}
            read = run(*reader, *args, "fiscal/custody/1", "--json", **trust, **read_env)
            assert read.returncode == 0, read.stderr
            assert json.loads(read.stdout)["value"] == {"amount": 1}
        wrong = run(
            *reader,
            "fiscal/custody/1",
            CITYLEDGER_GENESIS=str(net / "genesis.toml"),
            **{ENV: WRONG},
        )
        one_line_error(wrong, says="wrong passphrase", secrets=[PASSPHRASE, WRONG])
        refused = strict_admission(net)
        assert refused == dict.fromkeys(BAD_SIGNATURE_KINDS, (401, "bad_signature"))
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (net / "logs").iterdir()}
        assert set(modes.values()) == {0o600}, modes
        assert stat.S_IMODE((net / "logs").stat().st_mode) == 0o700
        assert stat.S_IMODE((net / "pids").stat().st_mode) == 0o700
        data_dirs = list(net.glob("nodes/*/data"))
        assert len(data_dirs) == 4
        assert {stat.S_IMODE(d.stat().st_mode) for d in data_dirs} == {0o700}
    finally:
        run("cluster", "down", str(net))
        kill_all(pids)
    logs = "".join(p.read_text(errors="replace") for p in (net / "logs").iterdir())
    assert PASSPHRASE not in logs


def strict_admission(net: Path) -> dict[str, tuple[int, str]]:
    """What the running node answers to txs whose signatures strict Ed25519 refuses (one that
    OpenSSL alone would accept among them), signed with the clerk's real (encrypted) key."""
    genesis = genesis_mod.load(net / "genesis.toml")
    key = crypto.load_private_key(net / "clients" / "finance-clerk.pem", PASSPHRASE.encode())
    now = int(time.time() * 1000)
    good = txs.create(key, chain_id=genesis.chain_id, client_id="finance-clerk", nonce=now,
                      timestamp_ms=now, key="fiscal/strict", type_="budget",
                      body={"n": 1})  # fmt: skip
    one = factory.Network(genesis, [], {"finance-clerk": key})
    answers: dict[str, tuple[int, str]] = {}
    signer = Signer("finance-clerk", key, genesis.chain_id)  # the request is signed correctly
    with NodeClient(_first_url(net), signer=signer, genesis=genesis) as client:
        for kind, signature in bad_tx_signatures(one, good).items():
            try:
                client.post("/v1/transactions", {"raw": with_signature(good, signature).raw.hex()})
            except Refused as exc:
                answers[kind] = (exc.status, exc.code)
    return answers


def _first_url(net: Path) -> str:
    config = (net / "nodes" / "finance" / "node.toml").read_text()
    listen = next(ln for ln in config.splitlines() if ln.startswith("listen"))
    return "https://" + listen.split('"')[1]


# --- every key mistake: one line, exit 2 -----------------------------------------------------


def submit(
    net: Path, key: Path, *extra: str, record: str = "fiscal/mistake", **env: str
) -> subprocess.CompletedProcess[str]:
    trust = {"CITYLEDGER_GENESIS": str(net / "genesis.toml")}  # the nodes' TLS identities
    return run("submit", "--node", _first_url(net), "--client", "finance-clerk", "--key",
               str(key), *extra, record, "budget", '{"amount": 1}', **trust, **env)  # fmt: skip


def test_every_client_key_mistake_is_one_line_and_exit_2(net: Path, tmp_path: Path) -> None:
    key = net / "clients" / "finance-clerk.pem"
    secrets = [PASSPHRASE, WRONG, *leak_forms_of(key)]
    loose_key = tmp_path / "loose.pem"
    loose_key.write_bytes(key.read_bytes())
    loose_key.chmod(0o644)
    loose_pass = private_file(tmp_path / "loose-pass", PASSPHRASE, 0o640)
    wrong_pass = private_file(tmp_path / "wrong-pass", WRONG)
    cases = [
        (submit(net, key, **{ENV: WRONG}), "wrong passphrase"),
        (submit(net, key, "--passphrase-file", str(wrong_pass)), "wrong passphrase"),
        (submit(net, key), "is encrypted and no passphrase was given"),
        (submit(net, key, **{ENV: ""}), f"${ENV} is set but empty"),
        (submit(net, key, "--passphrase-file", str(tmp_path / "missing")),
         "cannot read passphrase file"),
        (submit(net, key, "--passphrase-file", str(tmp_path)), "cannot read"),
        (submit(net, key, "--passphrase-file", str(loose_pass)),
         "is open to group or others (mode 0640)"),
        (submit(net, loose_key, **{ENV: PASSPHRASE}), "is open to group or others (mode 0644)"),
        (submit(net, tmp_path / "missing.pem"), "cannot read key file"),
    ]  # fmt: skip
    for result, says in cases:
        one_line_error(result, says=says, secrets=secrets)


def leak_forms_of(key: Path) -> list[str]:
    """The key's material in every printable form, and its encrypted PEM lines."""
    forms = list(leak_forms(key, PASSPHRASE.encode()))
    return forms + [ln for ln in key.read_text().splitlines() if not ln.startswith("-----")]


def node_with(net: Path, tmp_path: Path, name: str, extra: str, key_mode: int = 0o600) -> Path:
    """A copy of finance's node folder (encrypted key) at the same depth, with `extra` config."""
    folder = tmp_path / "nodes" / name
    folder.mkdir(parents=True)
    key = folder / "key.pem"
    key.write_bytes((net / "nodes" / "finance" / "key.pem").read_bytes())
    key.chmod(key_mode)
    config = (net / "nodes" / "finance" / "node.toml").read_text()
    config = config.replace('key_passphrase_file = "pass"\n', "")
    config = config.replace('genesis = "../../genesis.toml"', f'genesis = "{net / "genesis.toml"}"')
    (folder / "node.toml").write_text(config + extra)
    return folder / "node.toml"


def test_every_node_key_mistake_is_one_line_and_exit_2(net: Path, tmp_path: Path) -> None:
    key = net / "nodes" / "finance" / "key.pem"
    secrets = [PASSPHRASE, WRONG, *leak_forms_of(key)]
    private_file(tmp_path / "wrong-pass", WRONG)
    private_file(tmp_path / "good-pass", PASSPHRASE)
    private_file(tmp_path / "loose-pass", PASSPHRASE, 0o604)
    up = "../../"
    cases = [
        ("no-passphrase", "", {}, "is encrypted and no passphrase was given: name its passphrase"),
        ("wrong-file", f'key_passphrase_file = "{up}wrong-pass"\n', {}, "wrong passphrase"),
        ("wrong-env", 'key_passphrase_env = "NODE_PASS"\n', {"NODE_PASS": WRONG},
         "wrong passphrase"),
        ("unset-env", 'key_passphrase_env = "NODE_PASS_UNSET"\n', {},
         "the environment variable NODE_PASS_UNSET is not set or empty"),
        ("missing-file", 'key_passphrase_file = "nowhere"\n', {}, "cannot read passphrase file"),
        ("loose-file", f'key_passphrase_file = "{up}loose-pass"\n', {},
         "is open to group or others (mode 0604)"),
        ("both", f'key_passphrase_file = "{up}good-pass"\nkey_passphrase_env = "X"\n', {},
         "give one of them, not both"),
    ]  # fmt: skip
    for name, extra, env, says in cases:
        config = node_with(net, tmp_path, name, extra)
        one_line_error(run("node", "run", str(config), **env), says=says, secrets=secrets)
    config = node_with(net, tmp_path, "loose-key", f'key_passphrase_file = "{up}good-pass"\n',
                       key_mode=0o644)  # fmt: skip
    one_line_error(run("node", "run", str(config)), says="is open to group or others (mode 0644)",
                   secrets=secrets)  # fmt: skip

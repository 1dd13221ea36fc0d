"""configs/: the systemd unit and the container files say what they claim.

The unit is hardened (its own user, a read-only system, no privileges, a restart policy,
write access to the data directory only), passes `systemd-analyze verify` where systemd is
installed, and its ExecStart is a real `cityledger` command. The container image installs
every package pyproject.toml names and runs as a user of its own; the compose example runs
exactly the nodes `cluster init` writes, each with `node run` on its own config.
"""

import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.cli.conftest import BIN, cityledger_command, run

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "configs" / "systemd" / "cityledger-node@.service"
CONTAINERFILE = ROOT / "configs" / "container" / "Containerfile"
COMPOSE = ROOT / "configs" / "container" / "compose.yaml"
VERIFY_TIMEOUT_S = 60


def unit_entries(text: str) -> dict[str, dict[str, list[str]]]:
    """section -> key -> every value given (a key may repeat), comments left out."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_the_unit_is_hardened_and_restarts() -> None:
    service = unit_entries(UNIT.read_text())["Service"]
    expected = {
        "User": "cityledger", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
        "ProtectHome": "yes", "PrivateTmp": "yes", "PrivateDevices": "yes",
        "Restart": "on-failure", "CapabilityBoundingSet": "", "RestrictSUIDSGID": "yes",
        "UMask": "0077", "KillSignal": "SIGTERM",
    }  # fmt: skip
    for key, value in expected.items():
        assert service.get(key) == [value], key
    assert service["ReadWritePaths"] == ["/var/lib/cityledger/%i"]
    assert service["StateDirectory"] == ["cityledger/%i"]  # that same directory, created


def test_the_units_command_is_a_real_cityledger_command(tmp_path: Path) -> None:
    argv = shlex.split(unit_entries(UNIT.read_text())["Service"]["ExecStart"][0])
    assert Path(argv[0]).name == "cityledger"
    assert argv[1:3] == ["node", "run"]
    assert len(argv) == 4
    helped = run(*argv[1:3], "--help")
    assert helped.returncode == 0
    assert "Usage: cityledger node run" in helped.stdout
    # the config it names is what `cluster init` writes for a node, laid out under /etc
    init = run("cluster", "init", str(tmp_path / "net"))
    assert init.returncode == 0, init.stderr
    config = Path(argv[3].replace("/etc/cityledger", str(tmp_path / "net" / "nodes")).replace(
        "%i", "finance"))  # fmt: skip
    assert tomllib.loads(config.read_text())["node_id"] == "finance"


def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (systemd's own check of the unit)")
    # The installed path of the binary is the one thing that differs on this machine.
    binary = BIN if BIN.exists() else Path(shutil.which("cityledger") or "cityledger")
    text = UNIT.read_text().replace("/opt/cityledger/bin/cityledger", str(binary))
    (tmp_path / UNIT.name).write_text(text)
    done = subprocess.run(
        [analyze, "verify", str(tmp_path / "cityledger-node@finance.service")],
        capture_output=True, text=True, timeout=VERIFY_TIMEOUT_S, check=False, cwd=tmp_path,
    )  # fmt: skip
    ours = [line for line in (done.stdout + done.stderr).splitlines() if "cityledger" in line]
    assert done.returncode == 0, done.stdout + done.stderr
    assert ours == []  # no unknown key, no value systemd cannot parse


def test_the_image_installs_every_package_and_runs_unprivileged() -> None:
    lines = [line.strip() for line in CONTAINERFILE.read_text().splitlines()]
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"]["find"]["include"]  # fmt: skip
    copied = {line.split()[1] for line in lines if line.startswith("COPY")}
    assert {p.rstrip("*") for p in packages} <= copied
    assert "pyproject.toml" in copied
    users = [line.split()[1] for line in lines if line.startswith("USER")]
    assert users == ["cityledger"]
    assert 'ENTRYPOINT ["cityledger"]' in lines
    base = next(line for line in lines if line.startswith("FROM")).split()[1]
    assert base.startswith("python:3.1")


def test_compose_runs_the_nodes_cluster_init_writes(tmp_path: Path) -> None:
    doc = yaml.safe_load(COMPOSE.read_text())
    services = doc["services"]
    init = services["init"]["command"]
    assert init[:2] == ["cluster", "init"]
    net = tmp_path / "net"
    done = subprocess.run(
        [*cityledger_command(), *init[:2], str(net), *init[3:]],
        capture_output=True, text=True, timeout=VERIFY_TIMEOUT_S, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    nodes = {name: s for name, s in services.items() if s.get("command", [])[:2] == ["node", "run"]}
    assert len(nodes) == 4
    assert sorted(nodes) == sorted(p.name for p in (net / "nodes").iterdir())
    for name, service in nodes.items():
        config = Path(service["command"][2].replace("/net", str(net), 1))
        assert tomllib.loads(config.read_text())["node_id"] == name
        assert service["volumes"] == ["./net:/net"]
        assert "no-new-privileges:true" in service["security_opt"]
        assert service["restart"] == "on-failure"

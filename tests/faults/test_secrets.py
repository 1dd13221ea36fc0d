"""Keys on disk are 0600, and private keys never appear in logs, errors or API responses.

A network made by the real `cityledger cluster init`, run by `cluster up --detach` at log level
debug, is driven through the CLI and the HTTP API the way people do (records submitted and
refused, every read route, a node killed with -9, `cluster down`), and nodes are started on
wrong, damaged and truncated key files. Every byte the run produced (the node logs, every CLI
stdout and stderr, every API answer) is searched for every private key in every form it could
leak in: the PEM text's lines, the raw 32-byte seed and the DER in hex (both cases) and base64.
"""

import base64
import json
import os
import signal
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cli.ports import free_base_port
from ledger import crypto
from ledger import genesis as genesis_mod
from node import tls
from node.auth_client import signer
from tests.faults.figures import report
from tests.faults.harness import run_command

VALIDATORS: Final = 4


def leak_forms(pem_path: Path) -> Iterator[str]:
    """Every form in which the private key of `pem_path` could show up in text."""
    pem = pem_path.read_bytes()
    key = serialization.load_pem_private_key(pem, password=None)
    if isinstance(key, ec.EllipticCurvePrivateKey):  # a node's TLS key: its private scalar
        raw = key.private_numbers().private_value.to_bytes(32, "big")
    else:
        raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                serialization.NoEncryption())  # fmt: skip
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())  # fmt: skip
    for line in pem.decode().splitlines():
        if not line.startswith("-----"):
            yield line
    for blob in (raw, der):
        yield blob.hex()
        yield blob.hex().upper()
        yield base64.b64encode(blob).decode()
        yield base64.urlsafe_b64encode(blob).decode().rstrip("=")
    yield repr(raw)[2:-1]  # bytes as Python prints them


class Transcript:
    """Everything the run printed or answered, to be searched at the end."""

    def __init__(self) -> None:
        self.texts: list[tuple[str, str]] = []

    def add(self, where: str, text: str) -> None:
        self.texts.append((where, text))

    async def cli(self, *args: str) -> tuple[int, str, str]:
        code, out, err = await run_command(*args)
        self.add(f"cityledger {' '.join(args)}", out + err)
        return code, out, err


async def drive(net: Path, base: int, t: Transcript, http: aiohttp.ClientSession) -> None:
    url = f"https://127.0.0.1:{base}"
    clerk = ["--client", "finance-clerk", "--key", str(net / "clients" / "finance-clerk.pem")]
    wrong = ["--client", "finance-clerk", "--key", str(net / "clients" / "planning-clerk.pem")]
    auditor = ["--client", "auditor", "--key", str(net / "clients" / "auditor.pem")]
    code, out, _ = await t.cli("submit", "--node", url, *clerk, "fiscal/secrets/1", "budget",
                               '{"amount": 1}', "--wait", "--json")  # fmt: skip
    assert code == 0, out
    tx_id = json.loads(out)["tx_id"]
    for args in (
        ["submit", "--node", url, *wrong, "fiscal/secrets/2", "budget", '{"amount": 2}'],
        ["submit", "--node", url, *clerk, "permits/secrets/3", "budget", '{"amount": 3}'],
        ["submit", "--node", url, "--client", "finance-clerk", "--key",
         str(net / "nodes" / "finance" / "node.toml"), "fiscal/x", "budget", "{}"],
        ["keys", "new", str(net / "clients" / "finance-clerk.pem")],
        ["verify", "--node", url, *auditor, "--genesis", str(net / "genesis.toml")],
        ["proof", "--node", url, *auditor, tx_id],
        ["proof", "--node", url, tx_id],  # anonymous: refused
        ["cluster", "status", str(net)],
    ):  # fmt: skip
        await t.cli(*args)
    chain_id = genesis_mod.load(net / "genesis.toml").chain_id
    reader = (signer(crypto.load_private_key(net / "clients" / "auditor.pem"),
                     chain_id=chain_id, identity="auditor"),)  # fmt: skip
    for path in ("/v1/status", "/v1/blocks/latest", "/v1/blocks/1", f"/v1/transactions/{tx_id}",
                 f"/v1/transactions/{tx_id}/proof", "/v1/records/fiscal/secrets/1",
                 "/v1/history/fiscal/secrets/1", "/v1/checkpoint", "/v1/openapi.json",
                 "/metrics", "/v1/blocks/999", "/v1/transactions/zz"):  # fmt: skip
        for port in range(base, base + VALIDATORS):  # as the auditor, who may read it all
            async with http.get(f"https://127.0.0.1:{port}{path}", middlewares=reader) as r:
                t.add(f"GET {path} on {port}", await r.text())
    async with http.post(f"{url}/peer/v1/messages", data=b"\x91\xc4\x03abc",
                         headers={"Content-Type": "application/msgpack"}) as r:  # fmt: skip
        t.add("POST /peer/v1/messages", await r.text())


async def key_mistakes(net: Path, t: Transcript) -> None:
    """A node run on another validator's key, on a damaged key file, on a public key."""
    finance = net / "nodes" / "finance"
    other = net / "mistakes"
    other.mkdir()
    config = (finance / "node.toml").read_text()
    for name, key_text in (
        ("other-validator", (net / "nodes" / "planning" / "key.pem").read_text()),
        ("damaged", (finance / "key.pem").read_text().replace("A", "B", 3)),
        ("truncated", (finance / "key.pem").read_text()[:60]),
    ):
        folder = other / name
        folder.mkdir()
        fd = os.open(folder / "key.pem", os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(key_text)
        (folder / "node.toml").write_text(config)  # paths stay right: same depth as nodes/x
        code, _, err = await t.cli("node", "run", str(folder / "node.toml"))
        assert code != 0, err


async def test_keys_are_0600_and_never_leak(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    net = tmp_path / "net"
    base = free_base_port(VALIDATORS)
    t = Transcript()
    code, out, err = await t.cli("cluster", "init", str(net), "--base-port", str(base))
    assert code == 0, out + err
    monkeypatch.setenv("CITYLEDGER_GENESIS", str(net / "genesis.toml"))  # for the CLI commands
    pems = sorted([*net.glob("nodes/*/key.pem"), *net.glob("clients/*.pem")])
    code, _, _ = await t.cli("keys", "new", str(tmp_path / "extra.pem"))
    assert code == 0
    pems.append(tmp_path / "extra.pem")
    modes = {str(p.relative_to(tmp_path)): stat.S_IMODE(p.stat().st_mode) for p in pems}
    assert set(modes.values()) == {0o600}, modes
    for config in net.glob("nodes/*/node.toml"):
        config.write_text(config.read_text().replace('log_level = "info"', 'log_level = "debug"'))
    try:
        code, out, err = await t.cli("cluster", "up", str(net), "--detach")
        assert code == 0, out + err
        context = tls.genesis_client_context(genesis_mod.load(net / "genesis.toml"))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as http:
            await drive(net, base, t, http)
        tls_keys = sorted(net.glob("nodes/*/data/tls-key.pem"))  # written at the nodes' start
        assert len(tls_keys) == VALIDATORS
        pems += tls_keys
        modes |= {str(p.relative_to(tmp_path)): stat.S_IMODE(p.stat().st_mode) for p in tls_keys}
        assert set(modes.values()) == {0o600}, modes
        pid = json.loads((net / "pids" / "civic-shield.pid").read_text())["pid"]
        os.kill(pid, signal.SIGKILL)  # a crash: what gets logged around it is searched too
    finally:
        await t.cli("cluster", "down", str(net))
    await key_mistakes(net, t)
    for log in sorted(net.glob("logs/*.log")):
        t.add(str(log.relative_to(tmp_path)), log.read_text(errors="replace"))
    forms = {str(p.relative_to(tmp_path)): list(leak_forms(p)) for p in pems}
    for p in pems:  # the search finds a key where there is one
        assert any(needle in p.read_text() for needle in forms[str(p.relative_to(tmp_path))])
    leaks = [(where, key) for where, text in t.texts for key, needles in forms.items()
             if any(needle in text for needle in needles)]  # fmt: skip
    assert not leaks, f"private key material found: {leaks}"
    searched = sum(len(text) for _, text in t.texts)
    report(
        "secrets",
        f"{len(pems)} key files all mode 0600; {len(forms) * len(forms[next(iter(forms))])} "
        f"needles (PEM lines, raw/DER in hex, base64) searched in {len(t.texts)} outputs "
        f"({searched / 1e6:.1f} MB: node logs at debug, CLI output and errors, API answers, "
        f"key mistakes): no private key material",
    )

"""Transport security against a real node process: TLS 1.3 only, peer endpoints for validators
only (refused at the handshake or with 403 before any body is read), `insecure = true` as the
one way to plain HTTP, /metrics on its own listener, an operator's CA-issued certificate beside
the bound one."""

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ledger import crypto, genesis
from node import tls, tls_sites
from tests import factory
from tests.faults.harness import free_ports, run_command
from tests.node.conftest import Cluster, within
from tests.node.test_process import NodeProcess

BODY_ANNOUNCED = 1024 * 1024  # what a request head announces and the test never sends


@dataclass
class Running:
    cluster: Cluster
    child: NodeProcess
    ports: dict[str, int]  # listener kind -> port

    @property
    def api(self) -> int:
        return self.ports[tls_sites.API]


async def start_node(root: Path, *, scheme: str = "https", **extra: Any) -> Running:
    """One validator (f = 0) as a real process, with the given extra config fields."""
    port = free_ports(1)[0]
    net = factory.network(1)
    doc = net.genesis.to_dict()
    doc["validators"][0]["url"] = f"{scheme}://127.0.0.1:{port}"
    net.genesis = genesis.from_dict(doc)
    (root / "genesis.toml").write_text(genesis.dump_toml(net.genesis))
    cluster = Cluster(root, net, [port], [None])
    child = await NodeProcess.start(cluster.write_config(0, **extra))
    line = await child.wait_log(lambda e: e.get("msg") == "listening")
    ports = {kind: int(p) for p, kind in line["listeners"].items()}
    return Running(cluster, child, ports)


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Running]:
    running = await start_node(tmp_path)
    try:
        yield running
    finally:
        await stop(running)


async def stop(running: Running) -> None:
    if running.child.proc.returncode is None:
        running.child.proc.terminate()
    await running.child.exit_code()


def foreign_identity(folder: Path, validator_id: str = "node0") -> tls.ServerIdentity:
    """A certificate like a validator's, same name, issued by a key the genesis does not hold."""
    folder.mkdir(exist_ok=True)
    stranger = crypto.generate_key()
    doc = factory.network(1).genesis.to_dict()
    doc["validators"][0]["public_key"] = crypto.public_key_bytes(stranger).hex()
    return tls.node_identity(stranger, genesis.from_dict(doc), validator_id, folder, ["127.0.0.1"])


async def raw_exchange(port: int, request: bytes, context: ssl.SSLContext | None) -> bytes:
    """Send `request` (over TLS with `context`, else in the clear) and read what comes back
    until the node closes or answers a head."""
    reader, writer = await within(asyncio.open_connection("127.0.0.1", port, ssl=context))
    try:
        writer.write(request)
        await writer.drain()
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await within(reader.read(65536))
            if not chunk:
                break
            data += chunk
        return data
    finally:
        writer.close()


def head(path: str, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: node\r\nContent-Type: application/msgpack\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


async def test_plain_http_to_a_tls_node_gets_no_http_answer(node: Running) -> None:
    answer = await raw_exchange(
        node.api, b"GET /v1/openapi.json HTTP/1.1\r\nHost: node\r\n\r\n", None
    )
    assert not answer.startswith(b"HTTP/"), answer[:80]
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientError):
            await within(http.get(f"http://127.0.0.1:{node.api}/v1/openapi.json"))
    context = tls.genesis_client_context(node.cluster.genesis)
    older = tls.genesis_client_context(node.cluster.genesis)
    older.minimum_version = older.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises((ssl.SSLError, ConnectionResetError)):  # TLS 1.3 only
        await raw_exchange(node.api, b"GET /v1/openapi.json HTTP/1.1\r\n\r\n", older)
    answer = await raw_exchange(
        node.api, b"GET /v1/openapi.json HTTP/1.1\r\nHost: n\r\n\r\n", context
    )
    assert answer.startswith(b"HTTP/1.1 200"), answer[:80]


async def test_peer_endpoints_refuse_non_validators_before_reading_a_body(
    node: Running, tmp_path: Path
) -> None:
    genesis_ = node.cluster.genesis
    path = "/peer/v1/messages"
    # A certificate of the right name issued by another key: the handshake fails, no HTTP.
    stranger = tls.client_context(tls.anchors_pem(genesis_), foreign_identity(tmp_path / "x"))
    try:
        answer = await raw_exchange(node.api, head(path, BODY_ANNOUNCED), stranger)
    except (ssl.SSLError, ConnectionResetError) as exc:
        answer = str(exc).encode()
    assert not answer.startswith(b"HTTP/"), answer[:80]  # refused in the handshake
    # No certificate (a browser, the CLI): 403 although the announced body never came.
    anonymous = tls.genesis_client_context(genesis_)
    for request in (
        head(path, BODY_ANNOUNCED),
        b"GET /peer/v1/blocks?from=1 HTTP/1.1\r\nHost: n\r\n\r\n",
    ):
        answer = await raw_exchange(node.api, request, anonymous)
        assert answer.startswith(b"HTTP/1.1 403"), answer[:80]
    # The validator's own certificate: the endpoint reads and judges the body.
    own_files = tls.identity_files(tmp_path / "node0" / "data")
    own = tls.client_context(tls.anchors_pem(genesis_), own_files)
    answer = await raw_exchange(node.api, head(path, 1) + b"\xc1", own)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:80]


async def test_insecure_serves_plain_http_and_warns_at_every_start(tmp_path: Path) -> None:
    running = await start_node(tmp_path, scheme="http", insecure="true")
    for start in range(2):
        if start:  # the same config again
            running.child = await NodeProcess.start(running.cluster.config_path(0))
        try:
            warning = await running.child.wait_log(lambda e: e.get("level") == "warning")
            assert warning["msg"] == tls_sites.INSECURE_WARNING, start
            await running.child.wait_log(lambda e: e.get("msg") == "listening")
            url = f"http://127.0.0.1:{running.api}/v1/openapi.json"
            async with aiohttp.ClientSession() as http, http.get(url) as r:
                assert r.status == 200
        finally:
            await stop(running)
    # TLS on with an http:// genesis URL, or insecure with an https:// one: the node refuses.
    for scheme, extra in (("http", {}), ("https", {"insecure": "true"})):
        running = await start_node_expecting_failure(tmp_path / scheme, scheme, extra)
        assert "must start with" in running


async def start_node_expecting_failure(
    root: Path, scheme: str, extra: dict[str, str], *, exists_ok: bool = False
) -> str:
    """Start a node as `cityledger node run` does; it must exit non-zero: its output."""
    root.mkdir(exist_ok=exists_ok)
    net = factory.network(1)
    doc = net.genesis.to_dict()
    doc["validators"][0]["url"] = f"{scheme}://127.0.0.1:1"
    net.genesis = genesis.from_dict(doc)
    (root / "genesis.toml").write_text(genesis.dump_toml(net.genesis))
    cluster = Cluster(root, net, [1], [None])
    code, out, err = await run_command("node", "run", str(cluster.write_config(0, **extra)))
    assert code == 2, out + err
    return out + err


async def test_metrics_are_served_on_their_own_listener_only(node: Running) -> None:
    context = tls.genesis_client_context(node.cluster.genesis)
    metrics = node.ports[tls_sites.METRICS]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as http:
        async with http.get(f"https://127.0.0.1:{metrics}/metrics") as r:
            assert r.status == 200
            assert "cityledger_" in await r.text()
        for port, path in ((node.api, "/metrics"), (metrics, "/v1/status")):
            async with http.get(f"https://127.0.0.1:{port}{path}") as r:
                assert r.status == 404, (port, path)


def operator_certificate(folder: Path) -> tuple[Path, Path, bytes]:
    """A tiny CA and a certificate it issued for 127.0.0.1: (cert file, key file, CA PEM)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test City CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(1)
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = folder / "site.pem", folder / "site-key.pem"
    cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file, ca.public_bytes(serialization.Encoding.PEM)


async def test_a_ca_issued_certificate_for_browsers_and_the_bound_one_for_cityledger_clients(
    tmp_path: Path,
) -> None:
    cert_file, key_file, ca_pem = operator_certificate(tmp_path / "operator")
    running = await start_node(
        tmp_path, tls_cert_file=f'"{cert_file}"', tls_key_file=f'"{key_file}"'
    )
    try:
        ordinary = ssl.create_default_context(cadata=ca_pem.decode())  # checks the host, too
        request = b"GET /v1/openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        answer = await raw_exchange(running.api, request, ordinary)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:80]
        bound = tls.genesis_client_context(running.cluster.genesis)
        answer = await raw_exchange(running.api, request, bound)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:80]
        other = tls.genesis_client_context(factory.network(1, chain_id="elsewhere").genesis)
        with pytest.raises(ssl.SSLCertVerificationError):
            await raw_exchange(running.api, request, other)
    finally:
        await stop(running)


async def test_a_separate_peer_listener_requires_a_validator_certificate(tmp_path: Path) -> None:
    peer_port = free_ports(1)[0]
    running = await start_node(tmp_path, peer_listen=f'"127.0.0.1:{peer_port}"')
    try:
        assert running.ports[tls_sites.PEER] == peer_port
        genesis_ = running.cluster.genesis
        status = b"GET /v1/openapi.json HTTP/1.1\r\nHost: n\r\n\r\n"
        anonymous = tls.genesis_client_context(genesis_)
        try:  # no certificate: the handshake fails (TLS 1.3: seen at the first read)
            answer = await raw_exchange(
                peer_port, head("/peer/v1/messages", BODY_ANNOUNCED), anonymous
            )
        except (ssl.SSLError, ConnectionResetError) as exc:
            answer = str(exc).encode()
        assert not answer.startswith(b"HTTP/"), answer[:80]
        own = tls.client_context(
            tls.anchors_pem(genesis_), tls.identity_files(tmp_path / "node0" / "data")
        )
        answer = await raw_exchange(peer_port, head("/peer/v1/messages", 1) + b"\xc1", own)
        assert answer.startswith(b"HTTP/1.1 400"), answer[:80]
        answer = await raw_exchange(peer_port, status, own)
        assert answer.startswith(b"HTTP/1.1 404"), answer[:80]  # the peer listener: /peer/ only
        answer = await raw_exchange(running.api, head("/peer/v1/messages", 1) + b"\xc1", own)
        assert answer.startswith(b"HTTP/1.1 404"), answer[:80]  # not on the client listener
        answer = await raw_exchange(running.api, status, anonymous)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:80]
    finally:
        await stop(running)


async def test_unusable_tls_files_stop_the_node_with_one_sentence(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    text = await start_node_expecting_failure(
        tmp_path / "ca", "https", {"tls_cert_file": f'"{junk}"', "tls_key_file": f'"{junk}"'}
    )
    assert "tls_cert_file, tls_key_file: cannot use them" in text, text
    assert "Traceback" not in text
    (tmp_path / "key" / "node0" / "data").mkdir(parents=True)
    (tmp_path / "key" / "node0" / "data" / tls.TLS_KEY_FILE).write_text("damaged")
    text = await start_node_expecting_failure(tmp_path / "key", "https", {}, exists_ok=True)
    assert "not a readable unencrypted PEM key" in text, text
    assert "Traceback" not in text

"""Every failure a user can cause without a running node: one sentence, the right exit code,
never a traceback. Runs through click's runner; the network faults use loopback sockets."""

import contextlib
import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import Result

from cli import records
from ledger import crypto
from ledger import genesis as genesis_mod
from tests import factory
from tests.cli.conftest import closed_port, invoke, no_traceback

ONLINE = [
    ["get", "fiscal/x"],
    ["history", "fiscal/x"],
    ["tx", "ab" * 32],
    ["block", "latest"],
    ["proof", "ab" * 32],
]


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "k.pem"
    crypto.write_private_key(path, crypto.generate_key())
    return path


def submit(key: Path, body: str, *extra: str, record_key: str = "fiscal/x",
           input_text: str | None = None, **env: str) -> Result:  # fmt: skip
    return invoke("submit", "--client", "c", "--key", str(key), *extra, record_key, "t", body,
                  input_text=input_text, **env)  # fmt: skip


def one_sentence(stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.startswith("Error: ")]
    assert len(lines) == 1, stderr
    no_traceback(stderr)
    return lines[0]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ('{"amount": 12.5}', "records take no floats"),
        ('{"a": {"b": [1, 2e3]}}', "records take no floats"),
        ('{"a": NaN}', "records take no floats"),
        ('{"amount": ', "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('"text"', "must be a JSON object"),
        ('{"n": 100000000000000000000000}', "integer out of range"),
    ],
)
def test_bad_bodies_are_usage_errors(key: Path, body: str, says: str) -> None:
    result = submit(key, body, "--node", f"http://127.0.0.1:{closed_port()}")
    assert result.exit_code == 2
    assert says in one_sentence(result.stderr)


def test_a_body_on_stdin(key: Path) -> None:
    result = submit(key, "-", "--node", f"http://127.0.0.1:{closed_port()}",
                    input_text='{"amount": 1.5}')  # fmt: skip
    assert result.exit_code == 2
    assert "records take no floats" in result.stderr


@pytest.mark.parametrize(
    ("record_key", "says"),
    [("fiscal//x", "RECORD_KEY"), ("fiscal/a b", "RECORD_KEY"), ("/x", "RECORD_KEY")],
)
def test_bad_record_keys_are_usage_errors(key: Path, record_key: str, says: str) -> None:
    result = submit(key, "{}", "--node", "http://127.0.0.1:1", record_key=record_key)
    assert result.exit_code == 2
    assert says in one_sentence(result.stderr)


def test_bad_key_files_are_usage_errors(tmp_path: Path) -> None:
    not_a_key = tmp_path / "genesis.toml"
    not_a_key.write_text("chain_id = 'x'\n")
    for path in (not_a_key, tmp_path / "missing.pem"):
        result = submit(path, "{}")
        assert result.exit_code == 2
        assert "--key" in one_sentence(result.stderr)


def test_bad_node_urls_are_usage_errors(key: Path) -> None:
    for url in ("ftp://x", "localhost:7001", "http://:7001", "http://h:notaport"):
        result = submit(key, "{}", "--node", url)
        assert result.exit_code == 2, url
        assert "--node" in one_sentence(result.stderr)
    assert invoke("get", "k", CITYLEDGER_NODE="nope").exit_code == 2


def test_an_unreachable_node(key: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    result = submit(key, "{}", "--node", url)
    assert result.exit_code == 1
    assert "connection refused" in one_sentence(result.stderr)
    for args in ONLINE:
        result = invoke(*args, "--node", url)
        assert result.exit_code == 1, args
        assert f"cannot reach the node at {url}" in one_sentence(result.stderr)


def test_the_node_comes_from_the_environment() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    for args in ONLINE:
        result = invoke(*args, CITYLEDGER_NODE=url)
        assert url in one_sentence(result.stderr)
    result = invoke("verify", "--genesis", __file__, CITYLEDGER_NODE=url)
    assert result.exit_code == 2  # the file is no genesis: the check of --genesis comes first


def test_an_unknown_host(key: Path) -> None:
    result = submit(key, "{}", "--node", "http://no-such-host.invalid:7001")
    assert result.exit_code == 1
    assert "cannot reach the node" in one_sentence(result.stderr)


@contextlib.contextmanager
def serve(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


class NotJson(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(b"<html>hello</html>")

    def log_message(self, *_args: object) -> None:
        pass


class Refusing(NotJson):
    def do_GET(self) -> None:
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"error": "unavailable", "reason": "the node is shutting down"}')


class OtherJson(NotJson):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"hello": "world"}')

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.do_GET()


def test_a_json_server_that_is_not_a_node(key: Path, tmp_path: Path) -> None:
    net = factory.network()
    genesis = tmp_path / "genesis.toml"
    genesis.write_text(genesis_mod.dump_toml(net.genesis))
    clerk = tmp_path / "clerk.pem"
    crypto.write_private_key(clerk, net.client_keys["fiscal-clerk0"])
    signed = ["submit", "--client", "fiscal-clerk0", "--key", str(clerk), "--genesis", str(genesis)]
    with serve(OtherJson) as url:
        results = [invoke(*args, "--node", url) for args in ONLINE]
        results.append(submit(key, "{}", "--node", url))
        results.append(invoke(*signed, "--node", url, "fiscal/x", "t", "{}"))
        results.append(invoke("verify", "--node", url, "--genesis", str(genesis)))
    for result in results:
        assert result.exit_code == 1
        assert "is it a CityLedger node?" in one_sentence(result.stderr)


def test_a_server_that_is_not_a_node() -> None:
    with serve(NotJson) as url:
        result = invoke("get", "fiscal/x", "--node", url)
    assert result.exit_code == 1
    assert "neither JSON nor msgpack" in one_sentence(result.stderr)


def test_a_refusal_carries_the_nodes_reason() -> None:
    with serve(Refusing) as url:
        result = invoke("block", "1", "--node", url)
    assert result.exit_code == 1
    assert "the node is shutting down" in one_sentence(result.stderr)


def test_a_server_that_does_not_speak_http() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]

        def answer() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(1024)
                conn.sendall(b"SSH-2.0-OpenSSH\r\n")

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        result = invoke("tx", "ab" * 32, "--node", f"http://127.0.0.1:{port}")
        thread.join(timeout=10)
    assert result.exit_code == 1
    assert "did not answer in HTTP" in one_sentence(result.stderr)


def test_a_server_that_never_answers() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        from cli.api import NodeClient, NodeUnreachable

        with (
            NodeClient(url, timeout_s=0.2) as client,
            pytest.raises(NodeUnreachable, match="did not answer within"),
        ):
            client.get("/v1/status")


@pytest.mark.parametrize(
    "args",
    [
        ["tx", "abc"],
        ["tx", "zz" * 32],
        ["proof", "12"],
        ["block", "0"],
        ["block", "-1"],
        ["block", "first"],
        ["submit", "fiscal/x", "t", "{}"],  # no --client, no --key
        ["history"],
        ["nonsense"],
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    result = (
        invoke(*args, "--node", "http://127.0.0.1:1") if args[0] != "nonsense" else invoke(*args)
    )
    assert result.exit_code == 2
    no_traceback(result.output)


def test_parse_body_keeps_plain_values() -> None:
    body = records.parse_body('{"a": [1, "x", true, null, {"b": -5}]}')
    assert body == {"a": [1, "x", True, None, {"b": -5}]}

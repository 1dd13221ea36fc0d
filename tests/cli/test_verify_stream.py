"""`verify --node` against a stand-in node that serves a factory-built chain over HTTP exactly as
the node's API does (GET /v1/auth/challenge for the chain id, GET /v1/status, GET /v1/chain
pages of certified blocks' bytes in msgpack, `PAGE` blocks at most), honestly or not."""

import contextlib
import http.server
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgpack
import pytest

from ledger.block import decode_block
from ledger.encoding import decode, encode
from ledger.primitives import BLOCK_BYTES_MAX
from ledger.store import BlockStore
from tests.cli.conftest import Stored, build_store, invoke, no_traceback

Tamper = Callable[[int, dict[str, Any]], dict[str, Any]]
PAGE = 4  # blocks in one chain page: a 6-block chain takes two requests


def _items(stored: Stored) -> list[dict[str, Any]]:
    with BlockStore.open(stored.data, stored.genesis) as store:
        out = []
        for height in range(1, store.height + 1):
            block, cert = store.raw_block(height), store.raw_certificate(height)
            assert block is not None
            assert cert is not None
            out.append({"height": height, "block": block, "certificate": cert})
        return out


@contextlib.contextmanager
def fake_node(
    stored: Stored, tamper: Tamper | None = None, head: str | None = None
) -> Iterator[str]:
    items = _items(stored)
    head_hash = decode_block(items[-1]["block"]).hash.hex()
    status = {
        "node_id": "node0", "index": 0, "chain_id": stored.genesis.chain_id,
        "genesis_hash": stored.genesis.hash.hex(), "view": 0, "primary": 0,
        "height": len(items), "head_hash": head or head_hash, "running": True,
    }  # fmt: skip

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as aiohttp serves it
        disable_nagle_algorithm = True  # headers and body go out in two writes

        def do_GET(self) -> None:
            if self.path == "/v1/status":
                self._send(200, "application/json", json.dumps(status).encode())
                return
            if self.path == "/v1/auth/challenge":
                issued = {"challenge": "00" * 56, "chain_id": status["chain_id"], "ttl_ms": 60000}
                self._send(200, "application/json", json.dumps(issued).encode())
                return
            url = urlsplit(self.path)
            assert url.path == "/v1/chain", self.path
            query = parse_qs(url.query)
            low, high = int(query["from"][0]), int(query["to"][0])
            page = [
                item if tamper is None else tamper(item["height"], item)
                for item in items[low - 1 : min(high, low + PAGE - 1)]
            ]
            answer = {"head": len(items), "blocks": page}
            self._send(200, "application/msgpack", msgpack.packb(answer, use_bin_type=True))

        def _send(self, code: int, content_type: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def verify(stored: Stored, url: str, *extra: str) -> Any:
    return invoke("verify", "--node", url, "--genesis", str(stored.genesis_path), *extra)


def test_an_honest_node_verifies(stored: Stored) -> None:
    with fake_node(stored) as url:
        result = verify(stored, url)
        as_json = json.loads(verify(stored, url, "--json").stdout)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("OK: 6 blocks and 18 txs of chain 'testcity'")
    assert as_json["ok"] is True
    assert as_json["head_height"] == 6


def _flip_tx_byte(target: int) -> Tamper:
    def tamper(height: int, item: dict[str, Any]) -> dict[str, Any]:
        if height != target:
            return item
        header, txs, outcomes = decode(item["block"], BLOCK_BYTES_MAX)
        raw = bytearray(txs[1])
        raw[-70] ^= 0x01  # inside the body, before the signature
        txs[1] = bytes(raw)
        return dict(item, block=encode([header, txs, outcomes]))

    return tamper


@pytest.mark.parametrize("target", [1, 5])
def test_an_altered_tx_is_found_at_its_height(stored: Stored, target: int) -> None:
    with fake_node(stored, _flip_tx_byte(target)) as url:
        result = verify(stored, url)
        as_json = json.loads(verify(stored, url, "--json").stdout)
    assert result.exit_code == 1
    assert result.stdout.strip().startswith(f"FAILED at height {target}: ")
    assert as_json["first_bad_height"] == target
    assert as_json["blocks_checked"] == target - 1


def test_a_block_served_twice_is_found(stored: Stored) -> None:
    second = _items(stored)[1]

    def replay(height: int, item: dict[str, Any]) -> dict[str, Any]:
        return dict(second, height=3) if height == 3 else item  # block 2's bytes again

    with fake_node(stored, replay) as url:
        result = verify(stored, url)
    assert result.exit_code == 1
    assert result.stdout.startswith("FAILED at height 3: ")


def test_a_malformed_answer_is_a_failure_at_its_height(stored: Stored) -> None:
    def broken(height: int, item: dict[str, Any]) -> dict[str, Any]:
        return {"height": height} if height == 2 else item

    with fake_node(stored, broken) as url:
        result = verify(stored, url)
    assert result.exit_code == 1
    assert result.stdout.startswith(
        "FAILED at height 2: the node's answer for block 2 is malformed"
    )
    no_traceback(result.output)


def test_a_status_that_lies_about_the_head(stored: Stored) -> None:
    with fake_node(stored, head="00" * 32) as url:
        result = verify(stored, url)
    assert result.exit_code == 1
    assert result.stdout.startswith("FAILED at height 6: the node's status names head")


def test_a_long_chain_shows_progress(tmp_path: Path) -> None:
    long = build_store(tmp_path, 210, 1)
    with fake_node(long) as url:
        result = verify(long, url)
    assert result.exit_code == 0
    assert "verifying" in result.stderr

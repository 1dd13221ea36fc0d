"""`verify --data-dir` on stores built with tests/factory.py, and verify's usage errors."""

import json
import shutil
from pathlib import Path

import plyvel
import pytest

from cli.output import LONG_CHAIN_BLOCKS
from tests import factory
from tests.cli.conftest import Stored, build_store, invoke, no_traceback


def test_a_good_store_verifies(stored: Stored) -> None:
    result = invoke("verify", "--data-dir", str(stored.data), "--genesis", str(stored.genesis_path))
    assert result.exit_code == 0, result.output
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("OK: 6 blocks and 18 txs of chain 'testcity'")
    assert result.stderr == ""  # a short chain shows no progress bar


def test_json_verdict(stored: Stored) -> None:
    result = invoke(
        "verify", "--data-dir", str(stored.data), "--genesis", str(stored.genesis_path), "--json"
    )
    doc = json.loads(result.stdout)
    assert doc["ok"] is True
    assert (doc["blocks_checked"], doc["txs_checked"], doc["head_height"]) == (6, 18, 6)
    assert doc["first_bad_height"] is None
    assert doc["reason"] is None
    assert doc["genesis_hash"] == stored.genesis.hash.hex()


def test_a_node_directory_is_accepted_for_its_data(stored: Stored) -> None:
    result = invoke(
        "verify", "--data-dir", str(stored.data.parent), "--genesis", str(stored.genesis_path)
    )
    assert result.exit_code == 0


def test_a_long_chain_shows_a_progress_bar(tmp_path: Path) -> None:
    long = build_store(tmp_path, LONG_CHAIN_BLOCKS, 1)
    result = invoke("verify", "--data-dir", str(long.data), "--genesis", str(long.genesis_path))
    assert result.exit_code == 0
    assert "verifying" in result.stderr
    assert result.stdout.startswith(f"OK: {LONG_CHAIN_BLOCKS} blocks")


def _tamper(data: Path, height: int) -> None:
    """Flip one byte in the middle of the stored block at `height`."""
    db = plyvel.DB(str(data))
    try:
        key = b"B" + height.to_bytes(8, "big")
        value = bytearray(db.get(key))
        value[len(value) // 2] ^= 0x01
        db.put(key, bytes(value))
    finally:
        db.close()


@pytest.mark.parametrize("height", [1, 4, 6])
def test_an_altered_byte_is_found_at_its_height(
    stored: Stored, tmp_path: Path, height: int
) -> None:
    copy = tmp_path / "data"
    shutil.copytree(stored.data, copy)
    _tamper(copy, height)
    result = invoke("verify", "--data-dir", str(copy), "--genesis", str(stored.genesis_path))
    assert result.exit_code == 1
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith(f"FAILED at height {height}: ")
    as_json = invoke(
        "verify", "--data-dir", str(copy), "--genesis", str(stored.genesis_path), "--json"
    )
    doc = json.loads(as_json.stdout)
    assert as_json.exit_code == 1
    assert doc["ok"] is False
    assert doc["first_bad_height"] == height
    assert doc["reason"]
    assert doc["blocks_checked"] == height - 1


def test_a_store_of_another_chain(stored: Stored, tmp_path: Path) -> None:
    other = factory.network(chain_id="othercity")
    genesis = tmp_path / "other.toml"
    from ledger import genesis as genesis_mod

    genesis.write_text(genesis_mod.dump_toml(other.genesis))
    result = invoke("verify", "--data-dir", str(stored.data), "--genesis", str(genesis))
    assert result.exit_code == 1
    assert "belongs to chain 'testcity'" in result.stderr
    no_traceback(result.output)


def test_a_directory_that_is_no_store(tmp_path: Path, stored: Stored) -> None:
    result = invoke("verify", "--data-dir", str(tmp_path), "--genesis", str(stored.genesis_path))
    assert result.exit_code == 2
    assert "not a node's block store" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        [],  # neither --data-dir nor --node
        ["--data-dir", "{data}", "--node", "http://127.0.0.1:1"],  # both
        ["--node", "ftp://x"],
        ["--data-dir", "{data}"],  # no genesis
        ["--data-dir", "{data}", "--genesis", "{data}/nowhere.toml"],
        ["--data-dir", "{data}", "--genesis", "{bad}"],
    ],
)
def test_verify_usage_errors(stored: Stored, tmp_path: Path, args: list[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('chain_id = "x"\n[[validators]]\nid = 3\n')
    needs_genesis = "--genesis" not in args and args != ["--data-dir", "{data}"]
    full = [a.format(data=stored.data, bad=bad) for a in args]
    if needs_genesis:
        full += ["--genesis", str(stored.genesis_path)]
    result = invoke("verify", *full, CITYLEDGER_NODE="")
    assert result.exit_code == 2, result.output
    assert "Error" in result.stderr
    no_traceback(result.output)


def test_a_bad_genesis_names_its_problems(stored: Stored, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('chain_id = "x"\n')
    result = invoke("verify", "--data-dir", str(stored.data), "--genesis", str(bad))
    assert result.exit_code == 2
    assert "validators: expected between 1 and" in result.stderr

"""`cityledger verify-proof`: a bundle file (JSON or MessagePack) verifies against the genesis
alone and the command says what it proves; any altered file fails with one sentence and exit 1.

The verifier itself, `ledger.proofs`, is tested byte by byte in tests/ledger/test_proofs.py;
these tests hold the command to it."""

import json
from pathlib import Path

import msgpack
import pytest

from ledger import genesis as genesis_mod
from ledger.proofs import BUNDLE_BYTES_MAX
from ledger.store import BlockStore
from node import proofs
from tests import factory
from tests.cli.conftest import Stored, invoke, make_bundle, no_traceback


def test_verify_proof_prints_what_is_proven(stored: Stored, tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    path.write_text(json.dumps(make_bundle(stored, 2, 1), indent=2))
    result = invoke("verify-proof", str(path), "--genesis", str(stored.genesis_path))
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[-1].startswith("VALID: tx ")
    assert "block 2 of chain 'testcity'" in lines[-1]
    assert any(line.startswith("block:") and "index 1 of 3" in line for line in lines)
    assert any(line.startswith("certified by: node0, node1, node2 (3 of 4; 3 needed)")
               for line in lines)  # fmt: skip
    assert any(line.startswith("anchored at:  block 6") for line in lines)
    as_json = json.loads(
        invoke("verify-proof", str(path), "--genesis", str(stored.genesis_path), "--json").stdout
    )
    assert as_json["ok"] is True
    assert (as_json["outcome"], as_json["reason"]) == ("accepted", None)
    assert (as_json["height"], as_json["index"], as_json["tx_count"]) == (2, 1, 3)
    assert as_json["anchor_height"] == 6
    assert as_json["signers"] == ["node0", "node1", "node2"]
    stdin = invoke("verify-proof", "-", "--genesis", str(stored.genesis_path),
                   input_text=path.read_text())  # fmt: skip
    assert stdin.exit_code == 0


def test_a_bundle_of_the_head_has_no_anchor(stored: Stored, tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    path.write_text(json.dumps(make_bundle(stored, 6, 0)))
    result = invoke("verify-proof", str(path), "--genesis", str(stored.genesis_path), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["anchor_height"] is None


def test_a_msgpack_bundle_verifies_too(stored: Stored, tmp_path: Path) -> None:
    """docs/protocol.md 14.1: a bundle travels as JSON or MessagePack (bytes as bin)."""
    with BlockStore.open(stored.data, stored.genesis) as store:
        block = store.block(4)
        assert block is not None
        doc = proofs.bundle(store, block.txs[2].tx_id)
    path = tmp_path / "b.msgpack"
    path.write_bytes(msgpack.packb(doc, use_bin_type=True))
    result = invoke("verify-proof", str(path), "--genesis", str(stored.genesis_path), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["height"] == 4
    path.write_bytes(path.read_bytes()[:-3])
    result = invoke("verify-proof", str(path), "--genesis", str(stored.genesis_path))
    assert result.exit_code == 1
    assert "not MessagePack" in result.stderr


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"index": 0}, "tx_proof does not include the tx at index 0 of 3"),
        ({"index": 2}, "tx_proof does not include the tx at index 2 of 3"),
        ({"tx_count": 4}, "tx_count is not the header's tx count 3"),
        ({"index": 1, "tx_count": 2}, "tx_count is not the header's tx count 3"),
        ({"height": 2}, "height is not the header's height 3"),
        ({"block_tx_ids": []}, "the bundle has an unknown field 'block_tx_ids'"),
    ],
)
def test_an_altered_position_fails_with_its_reason(
    stored: Stored, tmp_path: Path, change: dict[str, object], says: str
) -> None:
    path = tmp_path / "b.json"
    path.write_text(json.dumps(dict(make_bundle(stored, 3, 1), **change)))
    result = invoke("verify-proof", str(path), "--genesis", str(stored.genesis_path))
    assert result.exit_code == 1
    assert result.stderr.strip() == f"Error: the proof does not verify: {says}"


def test_every_flipped_byte_of_the_file_exits_1(stored: Stored, tmp_path: Path) -> None:
    """A sample of the file's bytes (the verifier's own test flips every one)."""
    data = json.dumps(make_bundle(stored, 3, 1), indent=2).encode()
    path = tmp_path / "b.json"
    for i in range(0, len(data), 37):
        path.write_bytes(data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :])
        result = invoke("verify-proof", str(path), "--genesis", str(stored.genesis_path))
        assert result.exit_code == 1, (i, data[i - 20 : i + 20])
        assert result.stderr.startswith("Error: the proof does not verify: ")
        no_traceback(result.output)


def test_cli_failures_are_one_sentence_and_exit_1(stored: Stored, tmp_path: Path) -> None:
    doc = make_bundle(stored, 3, 1)
    cases = {
        "altered.json": json.dumps(dict(doc, index=0)),
        "not-json.json": "{ this is not json",
        "array.json": "[1, 2]",
        "float.json": json.dumps(doc).replace('"height": 3', '"height": 3.0'),
        "duplicate.json": json.dumps(doc)[:-1] + ', "height": 3}',
        "other-format.json": json.dumps(dict(doc, format="something/2")),
        "too-big.json": " " * BUNDLE_BYTES_MAX + json.dumps(doc),
    }
    for name, text in cases.items():
        path = tmp_path / name
        path.write_text(text)
        result = invoke("verify-proof", str(path), "--genesis", str(stored.genesis_path))
        assert result.exit_code == 1, name
        assert result.stderr.startswith("Error: the proof does not verify: "), result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        no_traceback(result.output)
        as_json = invoke("verify-proof", str(path), "--genesis", str(stored.genesis_path), "--json")
        assert json.loads(as_json.stdout)["ok"] is False


def test_another_chains_genesis_rejects_the_bundle(stored: Stored, tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    path.write_text(json.dumps(make_bundle(stored, 1, 0)))
    other = tmp_path / "other.toml"
    other.write_text(genesis_mod.dump_toml(factory.network(chain_id="elsewhere").genesis))
    result = invoke("verify-proof", str(path), "--genesis", str(other))
    assert result.exit_code == 1
    assert "is for chain 'testcity', not 'elsewhere'" in result.stderr


def test_a_missing_file_is_a_usage_error(stored: Stored, tmp_path: Path) -> None:
    result = invoke(
        "verify-proof", str(tmp_path / "none.json"), "--genesis", str(stored.genesis_path)
    )
    assert result.exit_code == 2
    assert "cannot read" in result.stderr
    assert invoke("verify-proof", str(tmp_path / "x.json")).exit_code == 2  # no --genesis

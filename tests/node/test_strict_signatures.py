"""Strict Ed25519 at a real node (docs/protocol.md section 3.1): admission refuses signatures that
OpenSSL alone would accept, and a node whose genesis lists a small-order key does not start."""

from pathlib import Path

import aiohttp
import pytest

from ledger import genesis as genesis_mod
from node import config as node_config
from tests import factory
from tests.ledger.test_strict_ed25519 import IDENTITY, bad_tx_signatures, with_signature
from tests.node.conftest import Cluster, tx_json


async def test_admission_refuses_strictly_bad_signatures_and_writes_nothing(
    single: Cluster, http: aiohttp.ClientSession
) -> None:
    good = single.tx("fiscal/", "strict", {"n": 1})
    url = single.url(0) + "/v1/transactions?wait=true"
    for name, signature in bad_tx_signatures(single.net, good).items():
        bad = with_signature(good, signature)
        for body in ({"raw": bad.raw.hex()}, tx_json(bad)):
            async with http.post(url, json=body) as r:
                answer = await r.json()
                assert (r.status, answer["error"]) == (401, "bad_signature"), (name, answer)
    assert single.node(0).runtime.store.height == 0
    async with http.post(url, json={"raw": good.raw.hex()}) as r:
        assert r.status == 200, await r.text()
        assert (await r.json())["status"] == "committed"


def test_a_node_whose_genesis_lists_a_small_order_key_does_not_start(tmp_path: Path) -> None:
    net = factory.network()
    weak_client = net.genesis.to_dict()["clients"][2]["public_key"]
    text = genesis_mod.dump_toml(net.genesis).replace(weak_client, IDENTITY.hex())
    (tmp_path / "genesis.toml").write_text(text)
    cluster = Cluster(tmp_path, net, [7001])
    config = node_config.load(cluster.write_config(0))
    with pytest.raises(node_config.ConfigError) as info:
        node_config.load_identity(config)
    assert "clients[2].public_key: refused Ed25519 public key: a point of small order" in str(
        info.value
    )

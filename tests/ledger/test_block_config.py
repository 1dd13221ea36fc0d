"""Block checks and execution run under the configuration they are handed (the one of the
block's own height, from the store's history), not one derived from whatever state or cache
the process read last."""

import pytest

from ledger import block as blocks
from ledger.block import ChainHead
from ledger.errors import InvalidBlock
from ledger.gov import changes
from ledger.gov.codes import REVOKED
from ledger.gov.config import Config
from ledger.kinds.execute import execute
from tests import factory

NOW = factory.BASE_TIME_MS


def _revoked(net: factory.Network, client_id: str) -> Config:
    """The genesis configuration after a block at height 1 revoked `client_id`."""
    change = changes.parse({"change": "revoke-client", "id": client_id})
    return changes.apply(Config(net.genesis), change, 1)


def test_execute_runs_under_the_handed_configuration() -> None:
    net = factory.network()
    client = net.client_for("permits/")
    tx = net.tx(client, "permits/1", {"n": 1}, NOW)
    # The empty state's own configuration is the genesis's: the client is in force.
    assert execute(lambda _k: None, (tx,), net.genesis, NOW, 1).outcomes == ("",)
    handed = _revoked(net, client)
    assert execute(lambda _k: None, (tx,), net.genesis, NOW, 1, config=handed).outcomes == (
        REVOKED,
    )


def test_check_block_executes_under_the_handed_configuration() -> None:
    net = factory.network()
    client = net.client_for("permits/")
    tx = net.tx(client, "permits/1", {"n": 1}, NOW)
    head = ChainHead.genesis(net.genesis)
    handed = _revoked(net, client)
    refused = blocks.make_block(head, (tx,), NOW + 1000, 0, 0, outcomes=(REVOKED,))
    executed = blocks.check_block(
        refused, head, net.genesis, is_committed=lambda _t: False, config=handed
    )
    assert executed.outcomes == (REVOKED,)
    # Without it, the configuration comes from the (empty) state, under which the tx is
    # accepted: the same block's outcomes are then wrong.
    with pytest.raises(InvalidBlock, match="outcome"):
        blocks.check_block(refused, head, net.genesis, is_committed=lambda _t: False)

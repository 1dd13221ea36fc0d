"""Outcomes in the store: a refused tx is recorded with its code and is no version of its
record, the rule state is written in the block's batch, a block whose outcomes are not the
rules' is refused, and `verify_chain` recomputes every outcome and names the first bad height."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import plyvel
import pytest

from ledger import block as blocks
from ledger import rulestore
from ledger import tx as txs
from ledger.encoding import encode
from ledger.errors import InvalidBlock
from ledger.kinds import base
from ledger.kinds.execute import execute
from ledger.rulestore import RuleStateReads
from ledger.store import BlockStore
from ledger.storelayout import BlockWrite
from ledger.verify import verify_chain
from tests import factory

NET: Final = factory.network()
T0: Final = factory.BASE_TIME_MS
CLERK: Final = "fiscal-clerk0"


def _tx(key: str, type_: str, body: dict[str, Any]) -> txs.Transaction:
    return NET.tx(CLERK, key, body, T0, type_)


APPROPRIATION: Final = _tx("fiscal/2027/parks", "budget.appropriation", {
    "fiscal_year": 2027, "fund": "general", "department": "parks", "amount_cents": 1000,
    "closes_at_ms": T0 + 10**9,
})  # fmt: skip
LINE: Final = _tx("fiscal/lines/trees", "budget.allocation",
                  {"appropriation": "fiscal/2027/parks", "amount_cents": 800})  # fmt: skip
TOO_MUCH: Final = _tx("fiscal/lines/paths", "budget.allocation",
                      {"appropriation": "fiscal/2027/parks", "amount_cents": 201})  # fmt: skip
NOTE: Final = _tx("fiscal/notes/1", "record", {"text": "plain records are as before"})
APPROPRIATION_STATE: Final = execute(lambda _k: None, (APPROPRIATION,), NET.genesis, T0, 1).writes


def _block(head: blocks.ChainHead, body: tuple[txs.Transaction, ...], state: Any) -> blocks.Block:
    time_ms, height = T0 + 1000 * (head.height + 1), head.height + 1
    outcomes = execute(state, body, NET.genesis, time_ms, height).outcomes
    return blocks.make_block(head, body, T0 + 1000 * (head.height + 1), 0, 0, outcomes)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[BlockStore]:
    with BlockStore.open(tmp_path / "data", NET.genesis) as opened:
        yield opened


def test_a_refused_tx_is_recorded_with_its_code_and_changes_nothing(store: BlockStore) -> None:
    block = _block(store.head, (APPROPRIATION, LINE, TOO_MUCH, NOTE), store.rule_state)
    assert block.outcomes == ("", "", base.OVER_APPROPRIATION, "")
    store.append(block, NET.certify(block))
    assert store.tx_location(TOO_MUCH.tx_id) == (1, 2)  # recorded: the attempt is evidence
    assert store.tx_outcome(TOO_MUCH.tx_id) == base.OVER_APPROPRIATION
    assert store.tx_outcome(LINE.tx_id) == ""
    assert store.latest_record("fiscal/lines/paths") is None  # no version of its record
    assert store.latest_record("fiscal/lines/trees") is not None
    assert store.rule_state(base.state_key(b"a", "fiscal/2027/parks"))["allocated"] == 800
    assert store.rule_state(base.state_key(b"l", "fiscal/lines/paths")) is None
    assert [k for k, _ in store.rule_states(b"l", 10)] == [
        base.state_key(b"l", "fiscal/lines/trees")
    ]


def test_a_block_with_a_wrong_outcome_is_refused_and_changes_nothing(store: BlockStore) -> None:
    body = (APPROPRIATION, LINE, TOO_MUCH)
    lying = blocks.make_block(store.head, body, T0 + 1000, 0, 0, ("", "", ""))
    with pytest.raises(InvalidBlock, match="outcome"):
        store.append(lying, NET.certify(lying))
    assert store.height == 0
    assert store.rule_state(base.state_key(b"a", "fiscal/2027/parks")) is None


def test_blocks_of_one_write_see_each_others_state(store: BlockStore) -> None:
    first = _block(store.head, (APPROPRIATION,), store.rule_state)
    second = _block(store.head.advance(first), (LINE, TOO_MUCH), lambda _k: None)
    assert second.outcomes == (base.UNKNOWN_REFERENCE,) * 2  # as if block 1 were not there
    steps = [BlockWrite(first, NET.certify(first)), BlockWrite(second, NET.certify(second))]
    with pytest.raises(InvalidBlock, match="outcome"):
        store.write(steps)  # block 2 executes against block 1's writes in the same batch
    assert store.height == 0
    right = _block(store.head.advance(first), (LINE, TOO_MUCH), APPROPRIATION_STATE.get)
    store.write([steps[0], BlockWrite(right, NET.certify(right))])
    assert store.height == 2
    assert store.tx_outcome(TOO_MUCH.tx_id) == base.OVER_APPROPRIATION


def test_verify_recomputes_outcomes_and_names_the_first_bad_height(tmp_path: Path) -> None:
    path = tmp_path / "data"
    with BlockStore.open(path, NET.genesis) as store:
        first = _block(store.head, (APPROPRIATION,), store.rule_state)
        store.append(first, NET.certify(first))
        second = _block(store.head, (LINE, NOTE), store.rule_state)
        store.append(second, NET.certify(second))
        third = _block(store.head, (TOO_MUCH,), store.rule_state)
        store.append(third, NET.certify(third))
        assert verify_chain(store, NET.genesis).ok
        # A quorum that certified a wrong outcome at height 3 (the store would never take it:
        # written behind its back, as a Byzantine quorum's chain would look).
        forged = blocks.make_block(
            _head_at(store, 2), (TOO_MUCH,), third.header.timestamp_ms, 0, 0, ("",)
        )
    db = plyvel.DB(str(path))
    try:
        db.put(b"B" + (3).to_bytes(8, "big"), forged.encode())
        db.put(b"C" + (3).to_bytes(8, "big"), NET.certify(forged).encode())
        db.put(b"H" + forged.hash, (3).to_bytes(8, "big"))
        db.put(b"head", (3).to_bytes(8, "big") + forged.hash)
    finally:
        db.close()
    with BlockStore.open_for_audit(path, NET.genesis) as audit:
        report = verify_chain(audit, NET.genesis)
    assert not report.ok
    assert report.first_bad_height == 3
    assert "outcome" in report.reason


def _head_at(store: BlockStore, height: int) -> blocks.ChainHead:
    head = blocks.ChainHead.genesis(NET.genesis)
    for h in range(1, height + 1):
        block = store.block(h)
        assert block is not None
        head = head.advance(block)
    return head


def test_the_rule_state_read_before_a_block_is_its_value_after(store: BlockStore) -> None:
    key = base.state_key(b"a", "fiscal/2027/parks")
    assert store.rule_state(key) is None  # read (and kept) before the block writes it
    block = _block(store.head, (APPROPRIATION,), store.rule_state)
    store.append(block, NET.certify(block))
    assert store.rule_state(key) == APPROPRIATION_STATE[key]
    path = store.path
    store.close()
    with BlockStore.open(path, NET.genesis) as reopened:
        assert reopened.rule_state(key) == APPROPRIATION_STATE[key]


def test_a_read_that_races_a_write_keeps_nothing(tmp_path: Path) -> None:
    """A read on another thread than the writer's that got the value from before a write
    taken in meanwhile must not keep it: the next read reads again."""

    class Racing:
        path = tmp_path
        old = encode({"v": 1})

        def __init__(self) -> None:
            self.rules: RuleStateReads | None = None
            self.reads = 0

        def get(self, _key: bytes) -> bytes | None:
            self.reads += 1
            if self.reads == 1 and self.rules is not None:  # the write lands mid-read
                self.rules.written({b"k": ({"v": 2}, 8)})
                return self.old
            return encode({"v": 2})

    racing = Racing()
    rules = RuleStateReads(racing)  # type: ignore[arg-type]
    racing.rules = rules
    assert rules.get(b"k") == {"v": 1}  # what this read saw
    assert rules.get(b"k") == {"v": 2}  # the write's value, not the raced read's
    assert racing.reads == 1  # ...kept from the write: no second read


def test_a_checked_block_comes_with_its_writes_and_is_not_executed_again(
    store: BlockStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    block = _block(store.head, (APPROPRIATION, LINE, TOO_MUCH), store.rule_state)
    executed = execute(store.rule_state, block.txs, NET.genesis, block.header.timestamp_ms, 1)

    def no_second_execution(*_args: Any) -> None:
        raise AssertionError("the store executed a block the replica handed over")

    monkeypatch.setattr("ledger.store.execute", no_second_execution)
    store.write([BlockWrite(block, NET.certify(block), txs_checked=True, writes=executed.writes)])
    assert store.height == 1
    for key, value in executed.writes.items():
        assert store.rule_state(key) == value
    assert store.tx_outcome(TOO_MUCH.tx_id) == base.OVER_APPROPRIATION


def test_the_decoded_rule_state_kept_stays_within_its_bound(tmp_path: Path) -> None:
    """Batches of writes larger than the bound in all: the oldest go first, the newest stay,
    and what is counted is what is kept."""

    class Empty:
        path = tmp_path

        def get(self, _key: bytes) -> bytes | None:
            return None

    rules = RuleStateReads(Empty())  # type: ignore[arg-type]
    size = rulestore.STATE_CACHE_BYTES_MAX // 1000
    for batch in range(30):
        rules.written({f"{batch}/{i}".encode(): (batch, size) for i in range(50)})
        counted = sum(c for _, c in rules._cache.values())
        assert rules._cached_bytes == counted <= rulestore.STATE_CACHE_BYTES_MAX
    assert rules.get(b"29/49") == 29
    assert b"0/0" not in rules._cache
    assert len(rules._cache) < 30 * 50

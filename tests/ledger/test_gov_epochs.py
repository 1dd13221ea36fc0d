"""Governance of the validator set and the consensus parameters: the changes that end an epoch.

Each is made by the ledger's state machine (ledger/gov) with the epoch switch on, as a chain
will once its replicas follow epochs; the configuration a block is certified under (its
validators, its quorum, its epoch) is read back from the chain the way a verifier does.
"""

from typing import Any, Final

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger import crypto
from ledger.gov import codes, epochs, history
from ledger.kinds.base import ACCEPTED, SCHEMA
from tests import factory
from tests.gov_book import CIVIC, FINANCE, HARBOR, NET, PLANNING, Book, approve, propose

FINANCE_ORG: Final = "City Finance Bureau"
HARBOR_ORG: Final = "Harbor Mutual Insurance"


def new_key(name: str) -> Ed25519PrivateKey:
    return factory.seeded_key(f"new-validator/{name}")


def add_validator(signer: str, proposal_id: str, validator_id: str, **over: Any) -> Any:
    key = new_key(validator_id)
    fields = {
        "id": validator_id, "organisation": HARBOR_ORG, "kind": "insurer",
        "public_key": crypto.public_key_bytes(key).hex(), "url": "https://node9.example:7009",
        "proof": epochs.sign_possession(key, NET.genesis.chain_id, validator_id),
    }  # fmt: skip
    return propose(signer, proposal_id, "add-validator", **(fields | over))


def rotate(signer: str, proposal_id: str, validator_id: str, key_name: str, **over: Any) -> Any:
    key = new_key(key_name)
    fields = {
        "id": validator_id, "public_key": crypto.public_key_bytes(key).hex(),
        "url": "https://rotated.example:7001",
        "proof": epochs.sign_possession(key, NET.genesis.chain_id, validator_id),
    }  # fmt: skip
    return propose(signer, proposal_id, "rotate-validator-key", **(fields | over))


def ids(book: Book, height: int) -> list[str]:
    """The validators that certify block `height`, in index order."""
    config = book.configs.of_block(book.state.get, height)
    assert [v.index for v in config.members.validators] == list(
        range(len(config.members.validators))
    )
    return [v.id for v in config.members.validators]


def test_an_added_validator_certifies_from_the_block_after_its_change() -> None:
    book = Book()
    book.enact(add_validator(FINANCE, "p1", "node9"), PLANNING, HARBOR)
    end = book.height  # the approval's block ends epoch 0
    assert ids(book, end) == ["node0", "node1", "node2", "node3"]
    assert ids(book, end + 1) == ["node0", "node1", "node2", "node3", "node9"]
    before, after = (book.configs.of_block(book.state.get, h) for h in (end, end + 1))
    assert (before.epoch, after.epoch, after.epoch_height) == (0, 1, end)
    assert (before.members.quorums.commit, after.members.quorums.commit) == (3, 4)
    assert after.members.validators[4].url == "https://node9.example:7009"
    assert book.configs.epoch_ends(book.state.get) == [end]
    assert book.config.to_json(end)["epoch_height"] == end


def test_a_removed_validator_leaves_and_its_id_is_retired() -> None:
    book = Book()
    book.enact(propose(FINANCE, "p1", "remove-validator", id="node1"), HARBOR, CIVIC)
    end = book.height
    assert ids(book, end + 1) == ["node0", "node2", "node3"]
    config = book.config
    assert config.members.quorums.commit == 2
    assert "City Planning Office" not in config.voters
    assert config.epoch == 1
    assert "node1" in config.to_json(end)["retired"]
    again = add_validator(FINANCE, "p2", "node1")
    assert book.one(again) == codes.CONFLICT, "a removed validator's id is never reused"


def test_a_rotated_validator_key_replaces_the_old_one_in_place() -> None:
    book = Book()
    old = NET.genesis.validators[2]
    book.enact(rotate(HARBOR, "p1", "node2", "k1"), FINANCE, PLANNING)
    new = book.config.members.validators[2]
    assert (new.id, new.index, new.organisation) == ("node2", 2, old.organisation)
    assert new.public_key == crypto.public_key_bytes(new_key("k1")) != old.public_key
    assert new.url == "https://rotated.example:7001"
    assert book.config.epoch == 1


def test_the_same_key_again_changes_only_the_url() -> None:
    book = Book()
    key = NET.validator_keys[3]
    same = {"public_key": crypto.public_key_bytes(key).hex(), "url": "https://moved.example:1",
            "proof": epochs.sign_possession(key, NET.genesis.chain_id, "node3")}  # fmt: skip
    book.enact(rotate(CIVIC, "p1", "node3", "unused", **same), FINANCE, PLANNING)
    moved = book.config.members.validators[3]
    assert (moved.public_key, moved.url) == (NET.genesis.validators[3].public_key, same["url"])


def test_consensus_parameters_change_at_an_epoch_boundary() -> None:
    book = Book()
    params = {"consensus.block_txs_max": 100, "governance.expiry_blocks": 50}
    book.enact(propose(FINANCE, "p1", "set-params", params=params), HARBOR, CIVIC)
    config = book.config
    assert (config.members.params.block_txs_max, config.members.governance.expiry_blocks) == (
        100, 50,
    )  # fmt: skip
    assert config.epoch == 1
    assert config.epoch_height == book.height
    book.enact(propose(FINANCE, "p2", "set-params", params={"governance.quorum": 2}), HARBOR, CIVIC)
    assert book.config.epoch == 1, "governance parameters alone end no epoch"


def test_one_block_ends_at_most_one_epoch() -> None:
    book = Book()
    two = book.block(add_validator(FINANCE, "p1", "node8"), add_validator(HARBOR, "p2", "node9"))
    assert two == [ACCEPTED, ACCEPTED]
    both = book.block(approve(PLANNING, "p1"), approve(CIVIC, "p1"), approve(PLANNING, "p2"),
                      approve(CIVIC, "p2"))  # fmt: skip
    assert both == [ACCEPTED, ACCEPTED, ACCEPTED, codes.CONFLICT]
    assert book.status("p1") == "effective"
    assert book.status("p2") == "pending"
    assert book.one(approve(CIVIC, "p2")) == ACCEPTED, "it takes effect in a later block"
    assert ids(book, book.height + 1)[-2:] == ["node8", "node9"]
    assert book.config.epoch == 2
    assert book.configs.epoch_ends(book.state.get) == [book.height - 1, book.height]


@pytest.mark.parametrize(
    "over",
    [
        {"proof": epochs.sign_possession(new_key("other"), NET.genesis.chain_id, "node9")},
        {"proof": epochs.sign_possession(new_key("node9"), "otherchain", "node9")},
        {"proof": epochs.sign_possession(new_key("node9"), NET.genesis.chain_id, "node8")},
    ],
)
def test_a_key_without_proof_of_possession_is_refused(over: dict[str, str]) -> None:
    book = Book()
    assert book.one(add_validator(FINANCE, "p1", "node9", **over)) == codes.BAD_PROOF
    assert book.one(rotate(FINANCE, "p2", "node0", "k", **over)) == codes.BAD_PROOF
    assert book.state == {}


@pytest.mark.parametrize(
    "over",
    [
        {"proof": "00" * 63},
        {"proof": "zz" * 64},
        {"kind": "bank"},
        {"url": "ftp://node9"},
        {"url": "https://" + "a" * 300},
        {"public_key": "00" * 31},
    ],
)
def test_malformed_validator_changes_are_schema(over: dict[str, str]) -> None:
    book = Book()
    assert book.one(add_validator(FINANCE, "p1", "node9", **over)) == SCHEMA
    bad_params = propose(FINANCE, "p2", "set-params", params={"consensus.block_txs_max": 0})
    assert book.one(bad_params) == SCHEMA
    unknown = propose(FINANCE, "p3", "set-params", params={"consensus.speed": 1})
    assert book.one(unknown) == SCHEMA
    assert book.state == {}


def test_validator_changes_that_do_not_fit_are_conflicts() -> None:
    book = Book()
    taken_key = NET.genesis.validators[1].public_key.hex()
    cases = [
        add_validator(FINANCE, "p1", "node2"),  # a validator's id
        add_validator(FINANCE, "p2", "fiscal-clerk0"),  # a client's id
        add_validator(FINANCE, "p3", "node9", organisation="Nobody"),
        propose(FINANCE, "p4", "remove-validator", id="node9"),
        rotate(FINANCE, "p5", "node9", "k"),
    ]
    assert [book.one(tx) for tx in cases] == [codes.CONFLICT] * len(cases)
    key = NET.validator_keys[1]
    stolen = {"public_key": taken_key,
              "proof": epochs.sign_possession(key, NET.genesis.chain_id, "node0")}  # fmt: skip
    assert book.one(rotate(FINANCE, "p6", "node0", "k", **stolen)) == codes.CONFLICT
    assert book.state == {}


def test_the_last_validator_cannot_be_removed() -> None:
    net = factory.network(validators=1, admins_per_org=1)
    book = Book(genesis=net.genesis)
    tx = propose("fiscal-admin0", "p1", "remove-validator", id="node0")
    assert book.one(tx) == codes.CONFLICT


def test_a_replay_from_genesis_gives_every_block_its_epoch() -> None:
    book = Book()
    book.enact(add_validator(FINANCE, "p1", "node9"), PLANNING, HARBOR)
    book.skip(2)
    book.enact(propose(FINANCE, "p2", "remove-validator", id="node0"), PLANNING, HARBOR)
    book.enact(rotate(HARBOR, "p3", "node9", "k9"), PLANNING)  # quorum 2 of 3 now
    fresh = history.Configs(NET.genesis)  # nothing cached: every configuration replayed
    ends = fresh.epoch_ends(book.state.get)
    assert len(ends) == 3
    for height in range(1, book.height + 1):
        config = fresh.of_block(book.state.get, height)
        assert config.epoch == sum(1 for end in ends if end < height)
        assert config.members.validators == book.after[height - 1].members.validators

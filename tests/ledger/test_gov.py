"""Governance rules: every kind of change accepted and made, every refusal with its code.

The test network has four organisations, each running one validator and holding two admins:
the default quorum is 3 of the 4 (more than half), so a proposal (which counts for its
proposer's organisation) takes effect with the second other organisation's approval.
"""

from pathlib import Path
from typing import Final

import pytest

from ledger import genesis
from ledger.errors import InvalidGenesis
from ledger.gov import changes, codes, machine
from ledger.gov.signers import execution_refusal
from ledger.kinds.base import ACCEPTED, SCHEMA
from tests import factory
from tests.gov_book import (
    CIVIC,
    CLERK,
    FINANCE,
    FINANCE_2,
    HARBOR,
    NET,
    PLANNING,
    Book,
    add_client,
    approve,
    client_tx,
    key_hex,
    propose,
)

FINANCE_ORG: Final = "City Finance Bureau"


# --- The genesis: admins and the governance policy -------------------------------------------


def test_admins_and_policy_are_hashed_only_when_present() -> None:
    plain = factory.network()
    with_admins = factory.network(admins_per_org=1)
    assert "admins" not in plain.genesis.to_dict()
    assert "governance" not in plain.genesis.to_dict()
    assert with_admins.genesis.hash != plain.genesis.hash
    doc = with_admins.genesis.to_dict()
    doc["governance"] = {"quorum": 2, "expiry_blocks": 10}
    changed = genesis.from_dict(doc)
    assert changed.governance == genesis.GovernancePolicy(quorum=2, expiry_blocks=10)
    assert changed.hash != with_admins.genesis.hash


def test_genesis_with_admins_round_trips_through_toml(tmp_path: Path) -> None:
    doc = NET.genesis.to_dict() | {"governance": {"quorum": 2, "expiry_blocks": 50}}
    original = genesis.from_dict(doc)
    path = tmp_path / "genesis.toml"
    path.write_text(genesis.dump_toml(original))
    loaded = genesis.load(path)
    assert loaded == original
    assert loaded.hash == original.hash


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"id": "fiscal-clerk0"}, "is also a client's or a validator's"),
        ({"id": "node0"}, "is also a client's or a validator's"),
        ({"organisation": "Nobody"}, "has no validator or client"),
        ({"public_key": "00" * 32}, "public_key"),
        ({"extra": "x"}, "unknown field"),
    ],
)
def test_bad_admin_entries_are_named(entry: dict[str, str], problem: str) -> None:
    doc = NET.genesis.to_dict()
    doc["admins"] = [doc["admins"][0] | entry, *doc["admins"][1:]]
    with pytest.raises(InvalidGenesis) as caught:
        genesis.from_dict(doc)
    assert any(problem in p for p in caught.value.problems), caught.value.problems


def test_bad_governance_policy_is_named() -> None:
    doc = NET.genesis.to_dict() | {"governance": {"quorum": -1, "expiry_blocks": 0, "x": 1}}
    with pytest.raises(InvalidGenesis) as caught:
        genesis.from_dict(doc)
    assert len(caught.value.problems) == 3


# --- Each kind of change, accepted and in force from the next block ---------------------------


def test_add_client_takes_effect_with_the_quorum_at_the_end_of_its_block() -> None:
    book = Book()
    assert book.config.quorum == 3
    assert book.one(add_client(FINANCE, "p1", "clerk-new")) == ACCEPTED
    assert book.status("p1") == machine.PENDING
    assert book.one(approve(PLANNING, "p1")) == ACCEPTED
    assert "clerk-new" not in book.config.members.clients, "2 of 3 organisations: no effect"
    assert book.one(approve(HARBOR, "p1")) == ACCEPTED
    assert book.status("p1") == machine.EFFECTIVE
    assert book.proposal("p1").effective_height == book.height == 3
    assert book.proposal("p1").approvals == (FINANCE_ORG, "City Planning Office",
                                             "Harbor Mutual Insurance")  # fmt: skip
    config = book.config
    assert config.members.clients["clerk-new"].organisation == FINANCE_ORG
    assert (config.version, config.since, config.epoch) == (1, 3, 0)
    assert "clerk-new" not in book.after[2].members.clients


def test_revoke_client_retires_its_id_for_good() -> None:
    book = Book()
    book.enact(propose(FINANCE, "p1", "revoke-client", id=CLERK), PLANNING, HARBOR)
    assert CLERK not in book.config.members.clients
    assert CLERK in book.config.retired
    assert execution_refusal(client_tx(CLERK), book.config) == codes.REVOKED
    assert execution_refusal(client_tx(CLERK), book.after[0]) is None
    again = add_client(FINANCE, "p2", CLERK)
    assert book.one(again) == codes.CONFLICT, "a retired id is never reused"


def test_rotate_client_key_replaces_the_key() -> None:
    book = Book()
    new_key = key_hex("rotated/clerk")
    book.enact(
        propose(FINANCE, "p1", "rotate-client-key", id=CLERK, public_key=new_key), CIVIC, HARBOR
    )
    assert book.config.members.clients[CLERK].public_key.hex() == new_key
    assert book.after[0].members.clients[CLERK].public_key.hex() != new_key


def test_add_and_remove_admin() -> None:
    book = Book()
    fields = {"id": "fiscal-admin9", "organisation": FINANCE_ORG, "public_key": key_hex("a9")}
    book.enact(propose(FINANCE, "p1", "add-admin", **fields), PLANNING, CIVIC)
    assert book.config.members.admins["fiscal-admin9"].organisation == FINANCE_ORG
    assert book.one(propose("fiscal-admin9", "p2", "remove-admin", id=FINANCE_2)) == ACCEPTED
    assert book.block(approve(PLANNING, "p2"), approve(CIVIC, "p2")) == [ACCEPTED, ACCEPTED]
    assert FINANCE_2 not in book.config.members.admins
    assert book.one(approve(FINANCE_2, "p2")) == codes.NOT_ADMIN


def test_an_admin_added_by_a_block_signs_only_from_the_next() -> None:
    book = Book()
    fields = {"id": "fiscal-admin9", "organisation": FINANCE_ORG, "public_key": key_hex("a9")}
    assert book.one(propose(FINANCE, "p1", "add-admin", **fields)) == ACCEPTED
    outcomes = book.block(
        approve(PLANNING, "p1"), approve(CIVIC, "p1"), add_client("fiscal-admin9", "p2", "c9")
    )
    assert outcomes == [ACCEPTED, ACCEPTED, codes.NOT_ADMIN]
    assert book.one(add_client("fiscal-admin9", "p2", "c9")) == ACCEPTED


@pytest.mark.parametrize("change", ["set-write-policy", "set-read-policy"])
def test_set_policies(change: str) -> None:
    book = Book()
    namespaces = ["fiscal/", "fiscal/archive/"]
    tx = propose(FINANCE, "p1", change, organisation=FINANCE_ORG, namespaces=namespaces)
    book.enact(tx, PLANNING, HARBOR)
    members = book.config.members
    table = members.policies if change == "set-write-policy" else members.reads
    assert table[FINANCE_ORG] == tuple(namespaces)
    emptied = propose(FINANCE, "p2", change, organisation=FINANCE_ORG, namespaces=[])
    book.enact(emptied, PLANNING, HARBOR)
    members = book.config.members
    table = members.policies if change == "set-write-policy" else members.reads
    assert FINANCE_ORG not in table


def test_set_params_changes_the_governance_policy() -> None:
    book = Book()
    params = {"governance.quorum": 2, "governance.expiry_blocks": 5}
    book.enact(propose(FINANCE, "p1", "set-params", params=params), PLANNING, HARBOR)
    assert book.config.quorum == 2
    assert book.config.members.governance.expiry_blocks == 5
    assert book.one(add_client(HARBOR, "p2", "c2")) == ACCEPTED
    assert book.one(approve(CIVIC, "p2")) == ACCEPTED
    assert "c2" in book.config.members.clients, "two organisations now make the quorum"


def test_a_quorum_of_one_makes_a_proposal_effective_at_once() -> None:
    book = Book()
    book.enact(propose(FINANCE, "p1", "set-params", params={"governance.quorum": 1}), CIVIC, HARBOR)
    assert book.one(add_client(PLANNING, "p2", "c2")) == ACCEPTED
    assert book.status("p2") == machine.EFFECTIVE


# --- Refusals: each with its code, each changing nothing -------------------------------------


def test_only_admins_of_voting_organisations_govern() -> None:
    book = Book()
    assert book.one(add_client(CLERK, "p1", "c1")) == codes.NOT_ADMIN
    assert book.one(add_client("node0", "p1", "c1")) == codes.NOT_ADMIN
    outsider = {"id": "ward-admin", "organisation": "Ward Council", "public_key": key_hex("w")}
    book.enact(propose(FINANCE, "p2", "add-admin", **outsider), PLANNING, HARBOR)
    assert book.one(add_client("ward-admin", "p3", "c3")) == codes.NOT_VOTER
    assert book.one(approve("ward-admin", "p2")) == codes.NOT_VOTER


@pytest.mark.parametrize(
    ("key", "type_", "body"),
    [
        ("_gov/other/p1", machine.PROPOSAL_TYPE, {"change": "revoke-client", "id": CLERK}),
        ("_gov/proposals/p1", "record", {"change": "revoke-client", "id": CLERK}),
        ("_gov/proposals/P1", machine.PROPOSAL_TYPE, {"change": "revoke-client", "id": CLERK}),
        ("_gov/proposals/a/b", machine.PROPOSAL_TYPE, {"change": "revoke-client", "id": CLERK}),
        ("_gov/approvals/p1", machine.PROPOSAL_TYPE, {"change": "revoke-client", "id": CLERK}),
        ("_gov/proposals/p1", machine.APPROVAL_TYPE, {}),
        ("_gov/approvals/p1", machine.APPROVAL_TYPE, {"note": "yes"}),
    ],
)
def test_malformed_forms_are_schema(key: str, type_: str, body: dict[str, object]) -> None:
    assert Book().one(machine.GovTx(FINANCE, key, type_, body)) == SCHEMA


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"change": "add-everyone"},
        {"change": "revoke-client"},
        {"change": "revoke-client", "id": "Not An Id"},
        {"change": "revoke-client", "id": CLERK, "extra": 1},
        {"change": "add-client", "id": "c1", "organisation": FINANCE_ORG, "role": "boss",
         "public_key": key_hex("c1")},
        {"change": "add-client", "id": "c1", "organisation": FINANCE_ORG, "role": "clerk",
         "public_key": "zz" * 32},
        {"change": "add-client", "id": "c1", "organisation": FINANCE_ORG, "role": "clerk",
         "public_key": "00" * 32},  # a small-order point: no strict Ed25519 key
        {"change": "add-client", "id": "c1", "organisation": "", "role": "clerk",
         "public_key": key_hex("c1")},
        {"change": "set-write-policy", "organisation": FINANCE_ORG, "namespaces": ["fiscal"]},
        {"change": "set-write-policy", "organisation": FINANCE_ORG, "namespaces": ["_gov/"]},
        {"change": "set-write-policy", "organisation": FINANCE_ORG, "namespaces": ["a/", "a/"]},
        {"change": "set-write-policy", "organisation": FINANCE_ORG, "namespaces": "fiscal/"},
        {"change": "set-params", "params": {}},
        {"change": "set-params", "params": {"governance.quorum": True}},
        {"change": "set-params", "params": {"governance.colour": 1}},
        {"change": "set-params", "params": {"governance.expiry_blocks": 0}},
        {"change": "set-params", "params": {"speed": 1}},
    ],
)  # fmt: skip
def test_malformed_changes_are_schema(body: dict[str, object]) -> None:
    book = Book()
    tx = machine.GovTx(FINANCE, "_gov/proposals/p1", machine.PROPOSAL_TYPE, body)
    assert book.one(tx) == SCHEMA
    assert book.state == {}


@pytest.mark.parametrize(
    "body",
    [
        {"change": "set-params", "params": {"rules.round_amount_cents": 100}},
        {
            "change": "set-params",
            "params": {"rules.round_amount_cents": 100, "consensus.block_txs_max": 100},
        },
    ],
)
def test_changes_not_carried_out_yet_are_refused_plainly(body: dict[str, object]) -> None:
    book = Book()
    tx = machine.GovTx(FINANCE, "_gov/proposals/p1", machine.PROPOSAL_TYPE, body)
    assert book.one(tx) == codes.NOT_IN_FORCE
    assert book.state == {}


def test_duplicate_proposal_id() -> None:
    book = Book()
    assert book.one(add_client(FINANCE, "p1", "c1")) == ACCEPTED
    assert book.one(add_client(HARBOR, "p1", "c2")) == codes.DUPLICATE_PROPOSAL


@pytest.mark.parametrize(
    ("change", "fields"),
    [
        ("add-client", {"id": CLERK}),  # taken by a client
        ("add-client", {"id": "node1"}),  # taken by a validator
        ("add-client", {"id": PLANNING}),  # taken by an admin
        ("add-client", {"organisation": "Nobody"}),
        ("add-client", {"public_key": NET.genesis.clients[CLERK].public_key.hex()}),
        ("add-client", {"public_key": NET.genesis.validators[0].public_key.hex()}),
    ],
)
def test_changes_that_do_not_fit_are_conflicts(change: str, fields: dict[str, str]) -> None:
    book = Book()
    base = {"id": "c1", "organisation": FINANCE_ORG, "role": "clerk", "public_key": key_hex("c")}
    assert book.one(propose(FINANCE, "p1", change, **(base | fields))) == codes.CONFLICT


@pytest.mark.parametrize(
    ("change", "fields"),
    [
        ("revoke-client", {"id": "nobody"}),
        ("rotate-client-key", {"id": "nobody", "public_key": key_hex("k")}),
        ("rotate-client-key", {"id": CLERK, "public_key": key_hex("permits-clerk0")}),
        ("remove-admin", {"id": "nobody"}),
        ("set-read-policy", {"organisation": "Nobody", "namespaces": ["fiscal/"]}),
        ("set-params", {"params": {"governance.quorum": 5}}),
    ],
)
def test_other_misfits_are_conflicts(change: str, fields: dict[str, object]) -> None:
    if fields.get("public_key") == key_hex("permits-clerk0"):  # another client's key
        fields = fields | {"public_key": NET.genesis.clients["permits-clerk0"].public_key.hex()}
    assert Book().one(propose(FINANCE, "p1", change, **fields)) == codes.CONFLICT


def test_the_last_admin_of_a_voting_organisation_stays() -> None:
    book = Book()
    book.enact(propose(FINANCE, "p1", "remove-admin", id=FINANCE_2), PLANNING, HARBOR)
    assert book.one(propose(PLANNING, "p2", "remove-admin", id=FINANCE)) == codes.CONFLICT


def test_one_pending_proposal_per_subject_until_it_expires() -> None:
    book = Book()
    book.enact(
        propose(FINANCE, "p0", "set-params", params={"governance.expiry_blocks": 3}), CIVIC, HARBOR
    )
    assert book.one(propose(FINANCE, "p1", "revoke-client", id=CLERK)) == ACCEPTED
    assert book.one(propose(HARBOR, "p2", "rotate-client-key", id=CLERK,
                            public_key=key_hex("x"))) == codes.CONFLICT  # fmt: skip
    book.skip(3)
    assert book.status("p1") == machine.EXPIRED_STATUS
    assert book.one(approve(HARBOR, "p1")) == codes.EXPIRED
    assert book.one(propose(HARBOR, "p2", "revoke-client", id=CLERK)) == ACCEPTED


def test_approval_refusals() -> None:
    book = Book()
    assert book.one(approve(PLANNING, "nothing")) == codes.UNKNOWN_PROPOSAL
    assert book.one(add_client(FINANCE, "p1", "c1")) == ACCEPTED
    assert book.one(approve(FINANCE_2, "p1")) == codes.ALREADY_APPROVED, "the proposer's org"
    assert book.block(approve(PLANNING, "p1"), approve(PLANNING, "p1")) == [
        ACCEPTED, codes.ALREADY_APPROVED,
    ]  # fmt: skip
    assert book.one(approve(CIVIC, "p1")) == ACCEPTED
    assert book.one(approve(HARBOR, "p1")) == codes.NOT_PENDING


def test_expiry_is_inclusive_of_its_last_block() -> None:
    book = Book()
    book.enact(
        propose(FINANCE, "p0", "set-params", params={"governance.expiry_blocks": 2}), CIVIC, HARBOR
    )
    assert book.one(add_client(FINANCE, "p1", "c1")) == ACCEPTED  # height 3: open to 5
    assert book.one(approve(PLANNING, "p1")) == ACCEPTED
    assert book.one(approve(CIVIC, "p1")) == ACCEPTED  # height 5
    assert book.status("p1") == machine.EFFECTIVE


def test_a_change_that_no_longer_fits_is_refused_at_its_effect() -> None:
    book = Book()
    shared_key = key_hex("shared")
    assert book.block(
        add_client(FINANCE, "p1", "c1", public_key=shared_key),
        propose(HARBOR, "p2", "add-admin", id="claims-admin9",
                organisation="Harbor Mutual Insurance", public_key=shared_key),
    ) == [ACCEPTED, ACCEPTED]  # fmt: skip
    assert book.block(
        approve(PLANNING, "p1"), approve(CIVIC, "p1"), approve(PLANNING, "p2"), approve(CIVIC, "p2")
    ) == [ACCEPTED, ACCEPTED, ACCEPTED, codes.CONFLICT]
    assert book.status("p2") == machine.PENDING, "the refused approval changed nothing"
    assert book.proposal("p2").approvals == ("Harbor Mutual Insurance", "City Planning Office")


# --- The configuration in force, by height, derived from the chain --------------------------


def test_configuration_at_every_height_is_a_replay_of_the_chain() -> None:
    book = Book()
    book.enact(add_client(FINANCE, "p1", "c1"), PLANNING, HARBOR)  # effective at 2
    book.skip(2)
    book.enact(propose(FINANCE, "p2", "revoke-client", id="c1"), PLANNING, HARBOR)  # at 6
    fresh = Book().configs  # an empty cache: everything replayed from the change log
    for height, config in book.after.items():
        replayed = fresh.at_height(book.state.get, height)
        assert replayed == config, height
    assert [book.after[h].version for h in range(7)] == [0, 0, 1, 1, 1, 1, 2]
    assert book.config.to_json(6)["clients"] == book.after[0].to_json(6)["clients"]


def test_configuration_json_view() -> None:
    view = Book().config.to_json(0)
    assert set(view) >= {"height", "epoch", "validators", "clients", "admins", "policies",
                         "params"}  # fmt: skip
    assert [v["id"] for v in view["validators"]] == ["node0", "node1", "node2", "node3"]
    assert view["policies"]["governance"] == {
        "voters": sorted({v.organisation for v in NET.genesis.validators}),
        "quorum": 3,
        "expiry_blocks": 1000,
    }
    assert {c["id"] for c in view["clients"]} == set(NET.genesis.clients)


def test_change_bodies_are_canonical() -> None:
    tx = add_client(FINANCE, "p1", "c1")
    parsed = changes.parse(tx.body)
    assert list(parsed.body()) == sorted(parsed.body())
    assert changes.parse(parsed.body()) == parsed

"""Property tests of governance over random blocks of proposals and approvals.

Whatever admins propose and approve, in whatever order: no change takes effect without the
quorum of voting organisations; the configuration changes exactly in the blocks where a
change took effect, one version per change; a revoked id stays refused for good; every voting
organisation keeps an admin and no two identities in force share a key; and the configuration
of every height, replayed from the chain's change log with nothing cached, is the one the
blocks produced (so is a second run of the same blocks).
"""

from typing import Final

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.gov import codes, machine
from ledger.gov.config import Config
from ledger.gov.signers import execution_refusal
from tests.gov_book import NET, Book, approve, client_tx, key_hex, propose

ADMINS: Final = (*sorted(NET.genesis.admins), "fiscal-admin9")
PROPOSAL_IDS: Final = ("p0", "p1", "p2")
FINANCE_ORG: Final = "City Finance Bureau"
CHANGES: Final = (
    {"change": "add-client", "id": "c0", "organisation": FINANCE_ORG, "role": "clerk",
     "public_key": key_hex("k0")},
    {"change": "add-client", "id": "c1", "organisation": "Harbor Mutual Insurance",
     "role": "auditor", "public_key": key_hex("k1")},
    {"change": "revoke-client", "id": "c0"},
    {"change": "revoke-client", "id": "fiscal-clerk0"},
    {"change": "rotate-client-key", "id": "fiscal-clerk0", "public_key": key_hex("k2")},
    {"change": "rotate-client-key", "id": "c0", "public_key": key_hex("k1")},
    {"change": "add-admin", "id": "fiscal-admin9", "organisation": FINANCE_ORG,
     "public_key": key_hex("k3")},
    {"change": "remove-admin", "id": "fiscal-admin1"},
    {"change": "remove-admin", "id": "fiscal-admin0"},
    {"change": "set-write-policy", "organisation": FINANCE_ORG, "namespaces": ["fiscal/x/"]},
    {"change": "set-params", "params": {"governance.quorum": 2}},
    {"change": "set-params", "params": {"governance.expiry_blocks": 2}},
    {"change": "add-validator", "id": "node9"},
)  # fmt: skip

proposals = st.builds(
    lambda admin, pid, change: propose(admin, pid, **change),
    st.sampled_from(ADMINS),
    st.sampled_from(PROPOSAL_IDS),
    st.sampled_from(CHANGES),
)
approvals = st.builds(approve, st.sampled_from(ADMINS), st.sampled_from(PROPOSAL_IDS))
votes = st.one_of(proposals, approvals, approvals, approvals)  # most proposals meet the quorum
blocks = st.lists(st.lists(votes, max_size=5), max_size=12)


def _run(chain: list[list[machine.GovTx]]) -> Book:
    book = Book()
    for txs in chain:
        book.block(*txs)
    return book


def _invariants(config: Config) -> None:
    members = config.members
    keys = [c.public_key for c in members.clients.values()]
    keys += [a.public_key for a in members.admins.values()]
    keys += [v.public_key for v in members.validators]
    assert len(set(keys)) == len(keys), "no two identities in force share a key"
    assert all(config.admins_of(org) for org in config.voters), "every voter keeps an admin"
    assert 1 <= config.quorum <= len(config.voters)
    assert not set(config.retired) & (set(members.clients) | set(members.admins))


@settings(max_examples=150, deadline=None)
@given(blocks)
def test_no_effect_without_the_quorum_and_one_version_per_effect(
    chain: list[list[machine.GovTx]],
) -> None:
    book = _run(chain)
    effective: dict[int, int] = {}
    for pid in PROPOSAL_IDS:
        found = machine.read_proposal(book.state.get, pid)
        if found is None or not found.effective_height:
            continue
        height = found.effective_height
        effective[height] = effective.get(height, 0) + 1
        before, after = book.after[height - 1], book.after[height]
        voters = set(before.voters)
        assert len(set(found.approvals)) == len(found.approvals), "one approval per organisation"
        assert set(found.approvals) <= voters
        assert len(found.approvals) >= min(before.quorum, after.quorum)
    for height in range(1, book.height + 1):
        made = book.after[height].version - book.after[height - 1].version
        assert made == effective.get(height, 0)
        if not made:
            assert book.after[height] == book.after[height - 1]
        _invariants(book.after[height])


@settings(max_examples=150, deadline=None)
@given(blocks)
def test_replaying_the_chain_gives_the_same_configuration_at_every_height(
    chain: list[list[machine.GovTx]],
) -> None:
    book = _run(chain)
    fresh = Book().configs
    for height, config in book.after.items():
        assert fresh.at_height(book.state.get, height) == config
    again = _run(chain)
    assert again.state == book.state
    assert again.after == book.after


@settings(max_examples=150, deadline=None)
@given(blocks)
def test_a_revoked_client_is_refused_from_its_effect_on(chain: list[list[machine.GovTx]]) -> None:
    book = _run(chain)
    revoked_at: dict[str, int] = {}
    for height in range(1, book.height + 1):
        config = book.after[height]
        for client_id in config.retired:
            revoked_at.setdefault(client_id, height)
        for client_id, since in revoked_at.items():
            assert client_id in config.retired, "a revocation is never undone"
            assert execution_refusal(client_tx(client_id, "any"), config) == codes.REVOKED
            # Not revoked before (signed with its first key, it may be refused key_rotated).
            before = execution_refusal(client_tx(client_id, "any"), book.after[since - 1])
            assert before != codes.REVOKED

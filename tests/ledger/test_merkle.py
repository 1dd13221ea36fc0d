"""RFC 9162 Merkle trees: published vectors, proof round trips, corrupted proofs, stored nodes."""

from collections.abc import Callable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import merkle
from ledger.merkle import EMPTY_ROOT, Frontier, Node

# --- Published vectors -----------------------------------------------------------------------
# Leaves, roots, inclusion paths and consistency proofs of the reference tree from
# google/certificate-transparency cpp/merkletree/merkle_tree_test.cc (kInputs, kSHA256Roots,
# kSHA256Paths, kSHA256Proofs; its leaf numbers are 1-based, converted to 0-based indices
# here) and transparency-dev/merkle proof/verify_test.go (which adds the 6 -> 7 proof).

LEAVES = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]

EMPTY_TREE_HASH = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

# ROOTS[n - 1] is the root of the first n leaves.
ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]

# Inclusion paths as index, size, path.
INCLUSION_VECTORS: list[tuple[int, int, list[str]]] = [
    (0, 1, []),
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]

# Consistency proofs as old_size, new_size, proof.
CONSISTENCY_VECTORS: list[tuple[int, int, list[str]]] = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]

# Stored node ids, as (level, index), that proofs read from a tree of 7 leaves, from
# transparency-dev/merkle proof/proof_test.go (TestInclusion, TestConsistency). Order is not
# compared: that file lists rehashed nodes in its own order.
INCLUSION_NODE_VECTORS: list[tuple[int, int, set[tuple[int, int]]]] = [
    (7, 0, {(0, 1), (1, 1), (0, 6), (1, 2)}),
    (7, 2, {(0, 3), (1, 0), (0, 6), (1, 2)}),
    (7, 4, {(0, 5), (0, 6), (2, 0)}),
    (7, 6, {(1, 2), (2, 0)}),
    (5, 3, {(0, 2), (1, 0), (0, 4)}),
    (6, 4, {(0, 5), (2, 0)}),
    (95, 81, {(0, 80), (1, 41), (2, 21), (0, 94), (1, 46), (2, 22), (4, 4), (6, 0)}),
]
CONSISTENCY_NODE_VECTORS: list[tuple[int, int, set[tuple[int, int]]]] = [
    (1, 6, {(0, 1), (1, 1), (1, 2)}),
    (2, 8, {(1, 1), (2, 1)}),
    (3, 7, {(0, 2), (0, 3), (1, 0), (0, 6), (1, 2)}),
    (4, 7, {(0, 6), (1, 2)}),
    (5, 7, {(0, 4), (0, 5), (0, 6), (2, 0)}),
    (7, 8, {(0, 6), (0, 7), (1, 2), (2, 0)}),
    (24, 31, {(3, 2), (0, 30), (1, 14), (2, 6), (4, 0)}),
    (
        81,
        95,
        {(0, 80), (0, 81), (1, 41), (2, 21), (0, 94), (1, 46), (2, 22), (4, 4), (6, 0)},
    ),
]


def hexes(values: Sequence[bytes]) -> list[str]:
    return [v.hex() for v in values]


def unhex(values: Sequence[str]) -> list[bytes]:
    return [bytes.fromhex(v) for v in values]


def test_empty_root_is_sha256_of_nothing() -> None:
    assert EMPTY_ROOT.hex() == EMPTY_TREE_HASH
    assert merkle.root([]) == EMPTY_ROOT
    assert Frontier.empty().root() == EMPTY_ROOT


@pytest.mark.parametrize("size", range(1, 9))
def test_published_roots(size: int) -> None:
    assert merkle.root(LEAVES[:size]).hex() == ROOTS[size - 1]


def test_leaf_hash_is_the_one_leaf_root() -> None:
    assert merkle.leaf_hash(b"").hex() == ROOTS[0]


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION_VECTORS)
def test_published_inclusion_proofs(index: int, size: int, path: list[str]) -> None:
    assert hexes(merkle.inclusion_proof(LEAVES[:size], index)) == path
    root = bytes.fromhex(ROOTS[size - 1])
    assert merkle.verify_inclusion(LEAVES[index], index, size, unhex(path), root)


@pytest.mark.parametrize(("old_size", "new_size", "proof"), CONSISTENCY_VECTORS)
def test_published_consistency_proofs(old_size: int, new_size: int, proof: list[str]) -> None:
    assert hexes(merkle.consistency_proof(LEAVES[:new_size], old_size)) == proof
    old_root = bytes.fromhex(ROOTS[old_size - 1])
    new_root = bytes.fromhex(ROOTS[new_size - 1])
    assert merkle.verify_consistency(old_size, new_size, old_root, new_root, unhex(proof))


# --- Stored nodes ----------------------------------------------------------------------------


def stored_nodes(leaves: Sequence[bytes]) -> dict[tuple[int, int], bytes]:
    """Every node a store keeps: those the frontier reports complete, append by append."""
    nodes: dict[tuple[int, int], bytes] = {}
    frontier = Frontier.empty()
    for leaf in leaves:
        frontier, completed = frontier.append_with_nodes(leaf)
        for node in completed:
            assert (node.level, node.index) not in nodes
            nodes[node.level, node.index] = node.digest
    return nodes


def node_reader(
    nodes: dict[tuple[int, int], bytes], reads: list[tuple[int, int]] | None = None
) -> merkle.SubtreeRoot:
    def get_node(level: int, index: int) -> bytes:
        if reads is not None:
            reads.append((level, index))
        return nodes[level, index]

    return lambda start, end: merkle.subtree_root_from_nodes(get_node, start, end)


def leaves_of(size: int) -> list[bytes]:
    return [i.to_bytes(4, "big") for i in range(size)]


@pytest.mark.parametrize(("size", "index", "want"), INCLUSION_NODE_VECTORS)
def test_inclusion_reads_published_node_ids(
    size: int, index: int, want: set[tuple[int, int]]
) -> None:
    leaves = leaves_of(size)
    reads: list[tuple[int, int]] = []
    proof = merkle.inclusion_proof_by(node_reader(stored_nodes(leaves), reads), size, index)
    assert set(reads) == want
    assert len(reads) == len(want)
    assert proof == merkle.inclusion_proof(leaves, index)


@pytest.mark.parametrize(("old_size", "new_size", "want"), CONSISTENCY_NODE_VECTORS)
def test_consistency_reads_published_node_ids(
    old_size: int, new_size: int, want: set[tuple[int, int]]
) -> None:
    leaves = leaves_of(new_size)
    reads: list[tuple[int, int]] = []
    subtree_root = node_reader(stored_nodes(leaves), reads)
    proof = merkle.consistency_proof_by(subtree_root, old_size, new_size)
    assert set(reads) == want
    assert len(reads) == len(want)
    assert proof == merkle.consistency_proof(leaves, old_size)


def test_proofs_from_a_bigger_store_match_the_prefix_tree() -> None:
    # A store that has grown to 21 leaves answers proofs about every earlier size.
    leaves = leaves_of(21)
    subtree_root = node_reader(stored_nodes(leaves))
    for size in range(1, 22):
        for index in range(size):
            want = merkle.inclusion_proof(leaves[:size], index)
            assert merkle.inclusion_proof_by(subtree_root, size, index) == want
        for old_size in range(size + 1):
            want = merkle.consistency_proof(leaves[:size], old_size)
            assert merkle.consistency_proof_by(subtree_root, old_size, size) == want


def test_subtree_root_from_nodes_rejects_unaligned_and_empty_ranges() -> None:
    nodes = stored_nodes(leaves_of(8))

    def get_node(level: int, index: int) -> bytes:
        return nodes[level, index]

    for start, end in [(1, 3), (2, 5), (4, 4), (3, 2), (-1, 0)]:
        with pytest.raises(ValueError, match="range"):
            merkle.subtree_root_from_nodes(get_node, start, end)
    assert merkle.subtree_root_from_nodes(get_node, 0, 8) == merkle.root(leaves_of(8))
    assert merkle.subtree_root_from_nodes(get_node, 4, 7) == merkle.root(leaves_of(8)[4:7])


# --- Frontier --------------------------------------------------------------------------------


def test_frontier_reports_nodes_in_level_index_convention() -> None:
    frontier = Frontier.empty()
    for leaf in LEAVES[:7]:
        frontier = frontier.append(leaf)
    completed = frontier.completed_nodes(LEAVES[7])
    # Leaf 7 closes the pairs [6, 8), [4, 8) and the whole tree [0, 8).
    assert [(n.level, n.index) for n in completed] == [(0, 7), (1, 3), (2, 1), (3, 0)]
    assert completed[-1].digest.hex() == ROOTS[7]
    assert completed[0] == Node(0, 7, merkle.leaf_hash(LEAVES[7]))


def test_frontier_from_nodes_resumes_appending() -> None:
    leaves = leaves_of(13)
    nodes = stored_nodes(leaves[:11])
    frontier = Frontier.from_nodes(lambda level, index: nodes[level, index], 11)
    assert frontier.root() == merkle.root(leaves[:11])
    assert frontier.append(leaves[11]).append(leaves[12]).root() == merkle.root(leaves)


def test_frontier_rejects_inconsistent_state() -> None:
    with pytest.raises(ValueError, match="peaks"):
        Frontier(3, (EMPTY_ROOT,))
    with pytest.raises(ValueError, match="hash"):
        Frontier(1, (b"short",))
    with pytest.raises(ValueError, match="size"):
        Frontier(-1, ())
    full = Frontier(merkle.TREE_SIZE_MAX, (EMPTY_ROOT,) * 64)
    with pytest.raises(ValueError, match="full"):
        full.append(b"")


# --- Generator argument checks ---------------------------------------------------------------


def test_inclusion_proof_rejects_bad_index() -> None:
    for leaves, index in [([], 0), (LEAVES[:1], 1), (LEAVES[:3], -1), (LEAVES, 8)]:
        with pytest.raises(ValueError, match="index"):
            merkle.inclusion_proof(leaves, index)
    with pytest.raises(ValueError, match="size"):
        merkle.inclusion_proof_by(lambda _s, _e: EMPTY_ROOT, 2**64, 0)


def test_consistency_proof_rejects_bad_sizes() -> None:
    for leaves, old_size in [(LEAVES[:3], 4), (LEAVES[:3], -1), ([], 1)]:
        with pytest.raises(ValueError, match="consistency"):
            merkle.consistency_proof(leaves, old_size)
    with pytest.raises(ValueError, match="size"):
        merkle.consistency_proof_by(lambda _s, _e: EMPTY_ROOT, 0, -1)


# --- Edge cases ------------------------------------------------------------------------------


def test_single_leaf_tree() -> None:
    root = merkle.root([b"only"])
    assert root == merkle.leaf_hash(b"only")
    assert merkle.inclusion_proof([b"only"], 0) == []
    assert merkle.verify_inclusion(b"only", 0, 1, [], root)
    assert not merkle.verify_inclusion(b"other", 0, 1, [], root)
    assert not merkle.verify_inclusion(b"only", 0, 1, [root], root)
    assert not merkle.verify_inclusion(b"only", 1, 1, [], root)
    assert not merkle.verify_inclusion(b"only", 0, 2, [], root)


def test_empty_tree_has_no_inclusion() -> None:
    for index in range(2):
        assert not merkle.verify_inclusion(b"", index, 0, [], EMPTY_ROOT)


def test_consistency_edge_cases() -> None:
    r1 = merkle.root(LEAVES[:1])
    r3 = merkle.root(LEAVES[:3])
    assert merkle.consistency_proof([], 0) == []
    assert merkle.consistency_proof(LEAVES, 0) == []
    assert merkle.consistency_proof(LEAVES, 8) == []
    assert merkle.verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    assert merkle.verify_consistency(0, 3, EMPTY_ROOT, r3, [])
    assert merkle.verify_consistency(1, 1, r1, r1, [])
    assert merkle.verify_consistency(3, 3, r3, r3, [])
    rejected = [
        (0, 0, EMPTY_ROOT, r1, []),  # an empty tree has exactly one root
        (0, 0, r1, r1, []),
        (0, 3, r1, r3, []),  # the old root of size 0 must be the empty root
        (0, 3, EMPTY_ROOT, r3, [r3]),  # nothing to prove, so no proof
        (1, 1, r1, r3, []),  # same size, different roots
        (3, 3, r3, r3, [r3]),
        (1, 0, r1, EMPTY_ROOT, []),  # shrinking
        (3, 1, r3, r1, []),
        (1, 3, r1, r3, []),  # a real step always needs a proof
    ]
    for old_size, new_size, old_root, new_root, proof in rejected:
        assert not merkle.verify_consistency(old_size, new_size, old_root, new_root, proof)


def test_verifiers_reject_malformed_arguments_without_raising() -> None:
    size, index = 5, 1
    root = merkle.root(LEAVES[:size])
    proof = merkle.inclusion_proof(LEAVES[:size], index)
    leaf = LEAVES[index]
    assert merkle.verify_inclusion(leaf, index, size, proof, root)
    bad_inclusion: list[tuple[object, object, object, object, object]] = [
        (leaf, index, size, proof, root[:31]),
        (leaf, index, size, proof, root + b"\x00"),
        (leaf, index, size, [*proof[:2], proof[2][:31]], root),
        (leaf, index, size, [*proof[:2], None], root),
        (leaf, index, size, None, root),
        (leaf, index, size, b"", root),
        (leaf, index, size, proof + [root] * 70, root),
        (leaf, index, size, proof, None),
        (None, index, size, proof, root),
        (leaf.hex(), index, size, proof, root),
        (leaf, -1, size, proof, root),
        (leaf, index, -5, proof, root),
        (leaf, index, 2**64, proof, root),
        (leaf, True, size, proof, root),
        (leaf, "1", size, proof, root),
        (leaf, 1.0, size, proof, root),
    ]
    verify_inclusion: Callable[..., bool] = merkle.verify_inclusion
    for args in bad_inclusion:
        assert verify_inclusion(*args) is False
    old_root = merkle.root(LEAVES[:2])
    cproof = merkle.consistency_proof(LEAVES[:size], 2)
    assert merkle.verify_consistency(2, size, old_root, root, cproof)
    bad_consistency: list[tuple[object, object, object, object, object]] = [
        (2, size, old_root[:16], root, cproof),
        (2, size, old_root, b"", cproof),
        (2, size, old_root, root, [c + b"\x00" for c in cproof]),
        (2, size, old_root, root, None),
        (2, size, old_root, root, "ab"),
        (2, size, old_root, root, cproof + [root] * 70),
        (-2, size, old_root, root, cproof),
        (2, 2**64, old_root, root, cproof),
        (2, None, old_root, root, cproof),
        (2.0, size, old_root, root, cproof),
    ]
    verify_consistency: Callable[..., bool] = merkle.verify_consistency
    for args in bad_consistency:
        assert verify_consistency(*args) is False


class HugeProof(Sequence[bytes]):
    """A proof claiming 10**12 hashes; reading any of them is a failure of the length bound."""

    def __len__(self) -> int:
        return 10**12

    # One signature instead of Sequence's int/slice overloads: verifiers only index by int.
    def __getitem__(self, item: object) -> bytes:  # type: ignore[override]
        raise AssertionError(f"a verifier read element {item!r} of an overlong proof")


def test_verifiers_bound_their_work_on_long_proofs() -> None:
    assert not merkle.verify_inclusion(b"", 0, 2**40, HugeProof(), EMPTY_ROOT)
    assert not merkle.verify_consistency(3, 2**40, EMPTY_ROOT, EMPTY_ROOT, HugeProof())


def test_verifiers_stop_at_the_root_as_the_rfc_says(monkeypatch: pytest.MonkeyPatch) -> None:
    # RFC 9162 stops the iteration once sn reaches 0: trailing hashes are never hashed in.
    calls: list[int] = []
    real_node_hash = merkle.node_hash

    def counting_node_hash(left: bytes, right: bytes) -> bytes:
        calls.append(1)
        return real_node_hash(left, right)

    monkeypatch.setattr(merkle, "node_hash", counting_node_hash)
    leaves = ALL_LEAVES[:4]
    proof, root = merkle.inclusion_proof(leaves, 1), merkle.root(leaves)
    cproof = merkle.consistency_proof(ALL_LEAVES[:7], 3)
    roots = merkle.root(leaves[:3]), merkle.root(ALL_LEAVES[:7])
    junk = [EMPTY_ROOT] * 40
    calls.clear()
    assert not merkle.verify_inclusion(leaves[1], 1, 4, proof + junk, root)
    assert len(calls) == len(proof)
    calls.clear()
    assert not merkle.verify_consistency(3, 7, *roots, cproof + junk)
    assert len(calls) <= 2 * len(cproof)


def test_proofs_do_not_bind_the_tree_size_alone() -> None:
    # RFC 9162 verification checks the path's shape, and leaf 0 has the same shape in trees
    # of 3 and 4 leaves, so the size must come from an authenticated header, never the prover.
    root3 = bytes.fromhex(ROOTS[2])
    proof = merkle.inclusion_proof(LEAVES[:3], 0)
    assert merkle.verify_inclusion(LEAVES[0], 0, 3, proof, root3)
    assert merkle.verify_inclusion(LEAVES[0], 0, 4, proof, root3)
    assert not merkle.verify_inclusion(LEAVES[0], 0, 5, proof, root3)


def test_verifiers_handle_the_largest_tree_size() -> None:
    # Sizes near 2**64 must not make the verifiers loop or raise; these proofs are nonsense.
    top = merkle.TREE_SIZE_MAX
    junk = [EMPTY_ROOT] * 64
    assert not merkle.verify_inclusion(b"", top - 1, top, junk, EMPTY_ROOT)
    assert not merkle.verify_consistency(top - 1, top, EMPTY_ROOT, EMPTY_ROOT, [*junk, EMPTY_ROOT])


# --- Corrupted proofs ------------------------------------------------------------------------


def flipped(proof: Sequence[bytes], item: int, bit: int) -> list[bytes]:
    out = list(proof)
    value = bytearray(out[item])
    value[bit // 8] ^= 1 << (bit % 8)
    out[item] = bytes(value)
    return out


Claim = tuple[bytes, int, int, list[bytes], bytes]
ConsistencyClaim = tuple[int, int, bytes, bytes, list[bytes]]
OTHER = merkle.leaf_hash(b"other")


def inclusion_corruptions(universe: Sequence[bytes], index: int, size: int) -> list[Claim]:
    """Every way to get a true inclusion claim over universe[:size] wrong, bar bit flips."""
    leaf, root = universe[index], merkle.root(universe[:size])
    proof = merkle.inclusion_proof(universe[:size], index)
    cases = [
        (leaf + b"x", index, size, proof, root),
        (merkle.leaf_hash(leaf), index, size, proof, root),
        (leaf, index, size, proof, EMPTY_ROOT),
        (leaf, index, size, proof, OTHER),
        (leaf, index, size, [*proof, OTHER], root),
        (leaf, index, size, [*proof, root], root),
        (leaf, index, size, [OTHER, *proof], root),
        (leaf, index, size, [root, *proof], root),
        (leaf, index, size * 2, proof, root),
        (leaf, index, size // 2, proof, root),
        (leaf, index + 1, size, proof, root),
        (leaf, index - 1, size, proof, root),
        (leaf, index ^ 2, size, proof, root),
        (leaf, index, size, proof[::-1], root),
    ]
    for i in range(len(proof)):
        cases.append((leaf, index, size, proof[:i] + proof[i + 1 :], root))
        cases.append((leaf, index, size, [*proof[:i], OTHER, *proof[i:]], root))
        cases.append((leaf, index, size, [*proof[:i], proof[i], *proof[i:]], root))
    # A mutation can land on another true claim (a palindromic proof, a repeated leaf).
    return [c for c in cases if not is_true_inclusion(universe, *c)]


def is_true_inclusion(
    universe: Sequence[bytes], leaf: bytes, index: int, size: int, proof: list[bytes], root: bytes
) -> bool:
    if not 0 <= index < size <= len(universe) or leaf != universe[index]:
        return False
    leaves = universe[:size]
    return merkle.root(leaves) == root and merkle.inclusion_proof(leaves, index) == proof


def consistency_corruptions(
    universe: Sequence[bytes], old_size: int, new_size: int
) -> list[ConsistencyClaim]:
    """Every way to get a true consistency claim over universe[:new_size] wrong, bar bit flips."""
    old_root, new_root = merkle.root(universe[:old_size]), merkle.root(universe[:new_size])
    proof = merkle.consistency_proof(universe[:new_size], old_size)
    cases = [
        (old_size, new_size, OTHER, new_root, proof),
        (old_size, new_size, old_root, OTHER, proof),
        (old_size, new_size, new_root, old_root, proof),
        (old_size, new_size, old_root, new_root, []),
        (old_size, new_size, old_root, new_root, [*proof, OTHER]),
        (old_size, new_size, old_root, new_root, [*proof, old_root]),
        (old_size, new_size, old_root, new_root, [*proof, new_root]),
        (old_size, new_size, old_root, new_root, [OTHER, *proof]),
        (old_size, new_size, old_root, new_root, [old_root, *proof]),
        (old_size, new_size, old_root, new_root, [new_root, *proof]),
        (old_size, new_size, old_root, new_root, proof[::-1]),
        (old_size - 1, new_size, old_root, new_root, proof),
        (old_size + 1, new_size, old_root, new_root, proof),
        (old_size ^ 2, new_size, old_root, new_root, proof),
        (old_size, new_size * 2, old_root, new_root, proof),
        (old_size, new_size // 2, old_root, new_root, proof),
    ]
    for i in range(len(proof)):
        cases.append((old_size, new_size, old_root, new_root, proof[:i] + proof[i + 1 :]))
        cases.append((old_size, new_size, old_root, new_root, [*proof[:i], OTHER, *proof[i:]]))
        cases.append((old_size, new_size, old_root, new_root, [*proof, proof[i]]))
    return [c for c in cases if not is_acceptable_consistency(universe, *c)]


def is_acceptable_consistency(
    universe: Sequence[bytes],
    old_size: int,
    new_size: int,
    old_root: bytes,
    new_root: bytes,
    proof: list[bytes],
) -> bool:
    # The empty tree is a prefix of every tree: nothing binds the new root to the new size.
    if old_size == 0 and old_root == EMPTY_ROOT and not proof and new_size > 0:
        return True
    if not 0 <= old_size <= new_size <= len(universe):
        return False
    return (
        old_root == merkle.root(universe[:old_size])
        and new_root == merkle.root(universe[:new_size])
        and proof == merkle.consistency_proof(universe[:new_size], old_size)
    )


ALL_LEAVES = leaves_of(17)


def check_inclusion_is_tamper_evident(leaves: list[bytes], index: int) -> None:
    size = len(leaves)
    root = merkle.root(leaves)
    proof = merkle.inclusion_proof(leaves, index)
    assert merkle.verify_inclusion(leaves[index], index, size, proof, root)
    for i in range(len(proof)):
        for bit in range(8 * merkle.HASH_BYTES):
            bad = flipped(proof, i, bit)
            assert not merkle.verify_inclusion(leaves[index], index, size, bad, root)
    for case in inclusion_corruptions(leaves, index, size):
        assert not merkle.verify_inclusion(*case), case


def check_consistency_is_tamper_evident(leaves: list[bytes], old_size: int) -> None:
    new_size = len(leaves)
    old_root, new_root = merkle.root(leaves[:old_size]), merkle.root(leaves)
    proof = merkle.consistency_proof(leaves, old_size)
    assert merkle.verify_consistency(old_size, new_size, old_root, new_root, proof)
    for i in range(len(proof)):
        for bit in range(8 * merkle.HASH_BYTES):
            bad = flipped(proof, i, bit)
            assert not merkle.verify_consistency(old_size, new_size, old_root, new_root, bad)
    for case in consistency_corruptions(leaves, old_size, new_size):
        assert not merkle.verify_consistency(*case), case


def test_every_corruption_is_rejected_exhaustively_for_small_trees() -> None:
    for size in range(1, 10):
        leaves = ALL_LEAVES[:size]
        for index in range(size):
            check_inclusion_is_tamper_evident(leaves, index)
        for old_size in range(size + 1):
            check_consistency_is_tamper_evident(leaves, old_size)


def test_published_proofs_resist_corruption() -> None:
    for index, size, _ in INCLUSION_VECTORS:
        for case in inclusion_corruptions(LEAVES, index, size):
            assert not merkle.verify_inclusion(*case), case
    for old_size, new_size, _ in CONSISTENCY_VECTORS:
        for ccase in consistency_corruptions(LEAVES, old_size, new_size):
            assert not merkle.verify_consistency(*ccase), ccase


# --- Properties ------------------------------------------------------------------------------

leaf_lists = st.lists(st.binary(max_size=12), max_size=40)


@settings(max_examples=60, deadline=None)
@given(leaf_lists)
def test_every_proof_of_a_random_tree_verifies(leaves: list[bytes]) -> None:
    size = len(leaves)
    roots = [merkle.root(leaves[:n]) for n in range(size + 1)]
    subtree_root = node_reader(stored_nodes(leaves))
    for index in range(size):
        proof = merkle.inclusion_proof(leaves, index)
        assert merkle.inclusion_proof_by(subtree_root, size, index) == proof
        assert merkle.verify_inclusion(leaves[index], index, size, proof, roots[size])
    for new_size in range(size + 1):
        for old_size in range(new_size + 1):
            proof = merkle.consistency_proof(leaves[:new_size], old_size)
            assert merkle.consistency_proof_by(subtree_root, old_size, new_size) == proof
            assert merkle.verify_consistency(
                old_size, new_size, roots[old_size], roots[new_size], proof
            )


@settings(max_examples=60, deadline=None)
@given(leaf_lists)
def test_frontier_root_tracks_the_tree(leaves: list[bytes]) -> None:
    frontier = Frontier.empty()
    for n, leaf in enumerate(leaves, start=1):
        frontier = frontier.append(leaf)
        assert frontier.size == n
        assert frontier.root() == merkle.root(leaves[:n])


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_a_flipped_bit_breaks_an_inclusion_proof(data: st.DataObject) -> None:
    size = data.draw(st.integers(min_value=2, max_value=200), label="size")
    index = data.draw(st.integers(min_value=0, max_value=size - 1), label="index")
    leaves = leaves_of(size)
    root = merkle.root(leaves)
    proof = merkle.inclusion_proof(leaves, index)
    item = data.draw(st.integers(min_value=0, max_value=len(proof) - 1), label="item")
    bit = data.draw(st.integers(min_value=0, max_value=8 * merkle.HASH_BYTES - 1), label="bit")
    bad = flipped(proof, item, bit)
    assert not merkle.verify_inclusion(leaves[index], index, size, bad, root)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_a_flipped_bit_breaks_a_consistency_proof(data: st.DataObject) -> None:
    new_size = data.draw(st.integers(min_value=2, max_value=200), label="new_size")
    old_size = data.draw(st.integers(min_value=1, max_value=new_size - 1), label="old_size")
    leaves = leaves_of(new_size)
    old_root, new_root = merkle.root(leaves[:old_size]), merkle.root(leaves)
    proof = merkle.consistency_proof(leaves, old_size)
    item = data.draw(st.integers(min_value=0, max_value=len(proof) - 1), label="item")
    bit = data.draw(st.integers(min_value=0, max_value=8 * merkle.HASH_BYTES - 1), label="bit")
    bad = flipped(proof, item, bit)
    assert not merkle.verify_consistency(old_size, new_size, old_root, new_root, bad)


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_wrong_claims_are_rejected(data: st.DataObject) -> None:
    size = data.draw(st.integers(min_value=1, max_value=len(ALL_LEAVES)), label="size")
    index = data.draw(st.integers(min_value=0, max_value=size - 1), label="index")
    old_size = data.draw(st.integers(min_value=0, max_value=size), label="old_size")
    for case in inclusion_corruptions(ALL_LEAVES, index, size):
        assert not merkle.verify_inclusion(*case), case
    for ccase in consistency_corruptions(ALL_LEAVES, old_size, size):
        assert not merkle.verify_consistency(*ccase), ccase

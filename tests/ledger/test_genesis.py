"""Genesis files: a valid file round-trips; every mistake is reported, all of them at once."""

import copy
import json
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import crypto, genesis
from ledger.encoding import encode
from ledger.errors import InvalidGenesis
from ledger.genesis import ConsensusParams, Genesis, Quorums
from tests import factory
from tests.factory import seeded_key

Doc = dict[str, Any]


def bounded(max_examples: int) -> settings:
    """Fixed examples every run: derandomized, no example database, no deadline."""
    return settings(max_examples=max_examples, deadline=None, derandomize=True, database=None)


def key_hex(name: str) -> str:
    return crypto.public_key_bytes(seeded_key(name)).hex()


def valid_doc() -> Doc:
    return {
        "chain_id": "springfield-1",
        "consensus": {"block_txs_max": 500, "checkpoint_interval": 8},
        "validators": [
            {
                "id": f"node{i}",
                "organisation": org,
                "kind": kind,
                "public_key": key_hex(f"genesis-test/validator/{i}"),
                "url": f"http://10.0.0.{i + 1}:7001",
            }
            for i, (org, kind) in enumerate(
                [
                    ("Finance", "municipal"),
                    ("Planning", "municipal"),
                    ("Harbor Mutual", "insurer"),
                    ("Civic Shield", "insurer"),
                ]
            )
        ],
        "clients": [
            {
                "id": "clerk-1",
                "organisation": "Finance",
                "public_key": key_hex("genesis-test/client/1"),
            },
            {
                "id": "adjuster.7",
                "organisation": "Harbor Mutual",
                "public_key": key_hex("genesis-test/client/7"),
            },
        ],
        "write_policies": [
            {"organisation": "Finance", "namespaces": ["fiscal/", "budget/2025/"]},
            {"organisation": "Harbor Mutual", "namespaces": ["claims/"]},
        ],
    }


def to_toml(doc: Doc) -> str:
    """A plain TOML writer for test documents (including broken ones dump_toml cannot make)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int):
            return str(v)
        if isinstance(v, str):
            return json.dumps(v, ensure_ascii=False)  # JSON string escapes are TOML's too
        assert isinstance(v, list), v
        return "[" + ", ".join(value(x) for x in v) + "]"

    lines: list[str] = []
    tables: list[str] = []
    for k, v in doc.items():
        if isinstance(v, dict):
            tables += ["", f"[{k}]"] + [f"{kk} = {value(vv)}" for kk, vv in v.items()]
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            for entry in v:
                tables += ["", f"[[{k}]]"] + [f"{kk} = {value(vv)}" for kk, vv in entry.items()]
        else:
            lines.append(f"{k} = {value(v)}")
    return "\n".join(lines + tables) + "\n"


def load_text(tmp_path: Path, text: str | bytes) -> Genesis:
    path = tmp_path / "genesis.toml"
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(text)
    return genesis.load(path)


def problems_of(tmp_path: Path, doc: Doc) -> list[str]:
    with pytest.raises(InvalidGenesis) as info:
        load_text(tmp_path, to_toml(doc))
    assert str(info.value) == "invalid genesis: " + "; ".join(info.value.problems)
    return info.value.problems


# --- Valid files -----------------------------------------------------------------------------


def test_valid_file_loads(tmp_path: Path) -> None:
    g = load_text(tmp_path, to_toml(valid_doc()))
    assert g.chain_id == "springfield-1"
    assert [v.index for v in g.validators] == [0, 1, 2, 3]
    assert g.validator("node2") is g.validators[2]
    assert g.validator("node9") is None
    assert g.validators[0].public_key == bytes.fromhex(key_hex("genesis-test/validator/0"))
    assert set(g.clients) == {"clerk-1", "adjuster.7"}
    assert g.policies == {"Finance": ("fiscal/", "budget/2025/"), "Harbor Mutual": ("claims/",)}
    assert g.params == ConsensusParams(block_txs_max=500, checkpoint_interval=8)
    assert g.quorums == Quorums(4)


def test_dump_and_load_round_trip(tmp_path: Path) -> None:
    for original in (genesis.from_dict(valid_doc()), factory.network().genesis):
        text = genesis.dump_toml(original)
        loaded = load_text(tmp_path, text)
        assert loaded == original
        assert loaded.hash == original.hash
        assert loaded.to_dict() == original.to_dict()
        assert genesis.dump_toml(loaded) == text


def test_hash_definition() -> None:
    g = genesis.from_dict(valid_doc())
    assert g.hash == crypto.sha256(crypto.Domain.GENESIS.value + encode(g.to_dict()))
    assert g.hash == genesis.genesis_hash(g.to_dict())
    assert len(g.hash) == 32


def test_hash_vector() -> None:
    # Pinned: a change here is a change of the protocol (docs/protocol.md), not a refactor.
    assert genesis.from_dict(valid_doc()).hash.hex() == (
        "895278ae41795e35127f4af80024cfa484b620c589aea21d9646bfb79dff5531"
    )


def test_defaults_are_part_of_the_hashed_content() -> None:
    # Omitting a parameter means its default: the same chain as writing the default out.
    doc = valid_doc()
    explicit = copy.deepcopy(doc)
    explicit["consensus"]["clock_skew_ms"] = ConsensusParams().clock_skew_ms
    assert genesis.from_dict(doc).hash == genesis.from_dict(explicit).hash
    del doc["consensus"], doc["clients"], doc["write_policies"]
    g = genesis.from_dict(doc)
    assert g.params == ConsensusParams()
    assert g.clients == {}
    assert g.policies == {}


def test_layout_of_the_file_does_not_change_the_hash(tmp_path: Path) -> None:
    # The hash is over the content, not the file's bytes: comments, spacing, key order and
    # hex case are presentation.
    base = load_text(tmp_path, to_toml(valid_doc())).hash
    doc = valid_doc()
    doc["validators"][0] = dict(reversed(doc["validators"][0].items()))
    doc["validators"][0]["public_key"] = doc["validators"][0]["public_key"].upper()
    text = "# a comment\n\n" + to_toml(doc).replace(" = ", "   =   ")
    assert load_text(tmp_path, text).hash == base


def test_policies_for_one_organisation_merge() -> None:
    doc = valid_doc()
    doc["write_policies"].append({"organisation": "Finance", "namespaces": ["tax/"]})
    g = genesis.from_dict(doc)
    assert g.policies["Finance"] == ("fiscal/", "budget/2025/", "tax/")
    assert genesis.from_dict(g.to_dict()) == g


def test_may_write_is_by_prefix() -> None:
    g = genesis.from_dict(valid_doc())
    clerk, adjuster = g.clients["clerk-1"], g.clients["adjuster.7"]
    assert g.may_write(clerk, "fiscal/2025/budget")
    assert g.may_write(clerk, "budget/2025/q1")
    assert not g.may_write(clerk, "budget/2024/q1")
    assert not g.may_write(clerk, "fiscalx/1")
    assert not g.may_write(clerk, "claims/1")
    assert g.may_write(adjuster, "claims/1")


@pytest.mark.parametrize(
    ("n", "f", "commit", "weak"),
    [
        (1, 0, 1, 1),
        (4, 1, 3, 2),
        (5, 1, 4, 2),
        (6, 1, 4, 2),
        (7, 2, 5, 3),
        (10, 3, 7, 4),
        (64, 21, 43, 22),
        (2, 0, 2, 1),
        (3, 0, 2, 1),
    ],
)
def test_quorums(n: int, f: int, commit: int, weak: int) -> None:
    q = Quorums(n)
    assert (q.f, q.commit, q.weak) == (f, commit, weak)


@pytest.mark.parametrize("n", range(1, 65))
def test_any_two_quorums_share_an_honest_validator_and_honest_ones_form_one(n: int) -> None:
    q = Quorums(n)
    assert 2 * q.commit - n >= q.f + 1  # safety: the overlap outnumbers the Byzantine
    assert q.commit <= n - q.f  # liveness: the honest validators alone are a quorum
    if n == 3 * q.f + 1:
        assert q.commit == 2 * q.f + 1


organisation_names = st.text(st.characters(codec="utf-8"), min_size=1, max_size=40)


@bounded(150)
@given(organisation_names, organisation_names)
def test_any_organisation_name_round_trips(org_a: str, org_b: str) -> None:
    doc = valid_doc()
    doc["validators"][0]["organisation"] = org_a
    doc["clients"][1]["organisation"] = org_b
    doc["write_policies"] = [{"organisation": org_a, "namespaces": ["x/"]}]
    g = genesis.from_dict(doc)
    loaded = genesis.from_dict(tomllib.loads(genesis.dump_toml(g)))
    assert loaded == g
    assert loaded.hash == g.hash


@pytest.mark.parametrize(
    "name", ['quote " and \\ backslash', "tab\there", "nl\nx", "\x7f", "é日本", "\U000f0000", "😀"]
)
def test_awkward_strings_round_trip(tmp_path: Path, name: str) -> None:
    doc = valid_doc()
    doc["validators"][1]["organisation"] = name
    g = genesis.from_dict(doc)
    assert load_text(tmp_path, genesis.dump_toml(g)) == g


# --- Every kind of mistake -------------------------------------------------------------------

Mutation = Callable[[Doc], None]


def setter(*path: Any, value: Any) -> Mutation:
    def mutate(doc: Doc) -> None:
        target: Any = doc
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value

    return mutate


def deleter(*path: Any) -> Mutation:
    def mutate(doc: Doc) -> None:
        target: Any = doc
        for step in path[:-1]:
            target = target[step]
        del target[path[-1]]

    return mutate


def duplicate_validator_field(name: str) -> Mutation:
    def mutate(doc: Doc) -> None:
        doc["validators"][1][name] = doc["validators"][0][name]

    return mutate


def too_many_validators(doc: Doc) -> None:
    template = doc["validators"][0]
    doc["validators"] = [
        {**template, "id": f"v{i}", "public_key": key_hex(f"many/{i}")} for i in range(65)
    ]


MISTAKES: dict[str, tuple[Mutation, str]] = {
    "missing chain_id": (deleter("chain_id"), "chain_id: expected"),
    "uppercase chain_id": (setter("chain_id", value="Springfield"), "chain_id: expected"),
    "chain_id with a newline": (setter("chain_id", value="city\n"), "chain_id: expected"),
    "chain_id too long": (setter("chain_id", value="c" * 65), "chain_id: expected"),
    "chain_id not a string": (setter("chain_id", value=7), "chain_id: expected"),
    "extra top-level field": (setter("extra", value=1), "unknown field 'extra'"),
    "consensus not a table": (setter("consensus", value=5), "consensus: expected a table"),
    "unknown parameter": (setter("consensus", "speed", value=1), "consensus.speed: unknown"),
    "parameter not an integer": (
        setter("consensus", "block_txs_max", value="5"),
        "consensus.block_txs_max: expected an integer",
    ),
    "parameter a boolean": (
        setter("consensus", "block_txs_max", value=True),
        "consensus.block_txs_max: expected an integer",
    ),
    "validators missing": (deleter("validators"), "validators: expected between 1 and 64"),
    "no validators": (setter("validators", value=[]), "validators: expected between 1 and 64"),
    "65 validators": (too_many_validators, "validators: expected between 1 and 64"),
    "validators not tables": (
        setter("validators", value=["node0"]),
        "validators[0]: expected a table",
    ),
    "validator extra field": (
        setter("validators", 0, "port", value=7001),
        "validators[0].port: unknown field",
    ),
    "validator empty field": (
        setter("validators", 2, "organisation", value=""),
        "validators[2].organisation: expected a non-empty string",
    ),
    "validator field too long": (
        setter("validators", 2, "organisation", value="o" * 257),
        "validators[2].organisation: expected a non-empty string",
    ),
    "validator field not a string": (
        setter("validators", 1, "url", value=7001),
        "validators[1].url: expected a non-empty string",
    ),
    "validator bad id": (
        setter("validators", 1, "id", value="Node 1"),
        "validators[1].id: expected a lowercase identifier",
    ),
    "validator id with a newline": (
        setter("validators", 1, "id", value="node1\n"),
        "validators[1].id: expected a lowercase identifier",
    ),
    "bad kind": (
        setter("validators", 3, "kind", value="hospital"),
        "validators[3].kind: expected one of municipal, insurer",
    ),
    "kind in capitals": (setter("validators", 3, "kind", value="Insurer"), "validators[3].kind"),
    "url without scheme": (
        setter("validators", 0, "url", value="10.0.0.1:7001"),
        "validators[0].url: expected an http:// or https:// URL",
    ),
    "ftp url": (setter("validators", 0, "url", value="ftp://10.0.0.1"), "validators[0].url"),
    "key not hex": (
        setter("validators", 0, "public_key", value="zz" * 32),
        "validators[0].public_key: expected 64 hex digits",
    ),
    "key too short": (
        setter("validators", 0, "public_key", value="ab" * 31),
        "validators[0].public_key",
    ),
    "key too long": (
        setter("validators", 0, "public_key", value="ab" * 33),
        "validators[0].public_key",
    ),
    "key odd length": (
        setter("validators", 0, "public_key", value="a" * 63),
        "validators[0].public_key",
    ),
    "key with spaces": (
        setter("validators", 0, "public_key", value=" ".join(["ab"] * 32)),
        "validators[0].public_key",
    ),
    "key with a 0x prefix": (
        setter("validators", 0, "public_key", value="0x" + "ab" * 31),
        "validators[0].public_key",
    ),
    "duplicate validator id": (duplicate_validator_field("id"), "validators: duplicate id 'node0'"),
    "duplicate validator key": (
        duplicate_validator_field("public_key"),
        "validators: duplicate public key",
    ),
    "clients not a list": (setter("clients", value=3), "clients: expected a list"),
    "client missing field": (
        deleter("clients", 0, "organisation"),
        "clients[0].organisation: expected a non-empty string",
    ),
    "client extra field": (
        setter("clients", 1, "url", value="http://x"),
        "clients[1].url: unknown field",
    ),
    "client bad id": (
        setter("clients", 1, "id", value="-adjuster"),
        "clients[1].id: expected a lowercase identifier",
    ),
    "client bad key": (
        setter("clients", 1, "public_key", value="00"),
        "clients[1].public_key: expected 64 hex digits",
    ),
    "duplicate client id": (
        setter("clients", 1, "id", value="clerk-1"),
        "clients: duplicate id 'clerk-1'",
    ),
    "policies not a list": (
        setter("write_policies", value="fiscal/"),
        "write_policies: expected a list",
    ),
    "policy missing namespaces": (
        deleter("write_policies", 0, "namespaces"),
        "write_policies[0]: expected exactly organisation and namespaces",
    ),
    "policy extra field": (
        setter("write_policies", 0, "read", value=True),
        "write_policies[0]: expected exactly organisation and namespaces",
    ),
    "policy empty organisation": (
        setter("write_policies", 1, "organisation", value=""),
        "write_policies[1].organisation: expected a non-empty string",
    ),
    "namespace without slash": (
        setter("write_policies", 1, "namespaces", value=["claims"]),
        "write_policies[1].namespaces: expected prefixes",
    ),
    "namespace with empty segment": (
        setter("write_policies", 1, "namespaces", value=["claims//"]),
        "write_policies[1].namespaces",
    ),
    "namespace with a space": (
        setter("write_policies", 1, "namespaces", value=["my claims/"]),
        "write_policies[1].namespaces",
    ),
    "namespace with a newline": (
        setter("write_policies", 1, "namespaces", value=["claims/\n"]),
        "write_policies[1].namespaces",
    ),
    "namespace not a string": (
        setter("write_policies", 1, "namespaces", value=[5]),
        "write_policies[1].namespaces",
    ),
    "unknown organisation in policies": (
        setter("write_policies", 1, "organisation", value="Nobody Inc"),
        "write_policies: organisation 'Nobody Inc' has no validator or client",
    ),
}


@pytest.mark.parametrize(("mutate", "expected"), MISTAKES.values(), ids=MISTAKES.keys())
def test_mistake_is_reported(tmp_path: Path, mutate: Mutation, expected: str) -> None:
    doc = valid_doc()
    mutate(doc)
    problems = problems_of(tmp_path, doc)
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize("name", sorted(ConsensusParams.__dataclass_fields__))
@pytest.mark.parametrize("side", ["low", "high"])
def test_parameter_out_of_bounds(tmp_path: Path, name: str, side: str) -> None:
    low, high = genesis._PARAM_BOUNDS[name]
    doc = valid_doc()
    for edge in (low, high):  # both ends of the range are allowed
        doc["consensus"] = {name: edge}
        assert getattr(genesis.from_dict(doc).params, name) == edge
    doc["consensus"] = {name: low - 1 if side == "low" else high + 1}
    assert problems_of(tmp_path, doc) == [
        f"consensus.{name}: expected an integer in [{low}, {high}]"
    ]


def test_every_parameter_has_bounds_and_is_hashed() -> None:
    assert set(genesis._PARAM_BOUNDS) == set(ConsensusParams.__dataclass_fields__)
    assert set(genesis.from_dict(valid_doc()).to_dict()["consensus"]) == set(genesis._PARAM_BOUNDS)


def test_several_mistakes_are_all_reported(tmp_path: Path) -> None:
    doc = valid_doc()
    doc["clients"].append({**doc["clients"][1], "id": "clerk-1", "public_key": key_hex("3")})
    mistakes = [
        (setter("chain_id", value="Springfield"), "chain_id: expected"),
        (setter("extra", value=1), "unknown field 'extra'"),
        (setter("consensus", "speed", value=1), "consensus.speed: unknown parameter"),
        (
            setter("consensus", "view_change_timeout_ms", value=1),
            "consensus.view_change_timeout_ms",
        ),
        (setter("validators", 1, "url", value="ftp://x"), "validators[1].url"),
        (setter("validators", 2, "public_key", value="zz" * 32), "validators[2].public_key"),
        (setter("validators", 3, "kind", value="hospital"), "validators[3].kind"),
        (setter("clients", 1, "url", value="http://x"), "clients[1].url: unknown field"),
        (lambda _doc: None, "clients: duplicate id 'clerk-1'"),  # made above
        (
            setter("write_policies", 0, "namespaces", value=["fiscal"]),
            "write_policies[0].namespaces",
        ),
        (
            setter("write_policies", 1, "organisation", value="Nobody"),
            "organisation 'Nobody' has no",
        ),
    ]
    for mutate, _ in mistakes:
        mutate(doc)
    problems = problems_of(tmp_path, doc)
    for _, text in mistakes:
        assert sum(text in p for p in problems) == 1, (text, problems)
    assert len(problems) == len(mistakes)


def test_not_toml(tmp_path: Path) -> None:
    with pytest.raises(InvalidGenesis, match="is not valid TOML") as info:
        load_text(tmp_path, 'chain_id = "x"\n[consensus\n')
    assert len(info.value.problems) == 1


def test_toml_with_duplicate_keys_is_not_toml(tmp_path: Path) -> None:
    with pytest.raises(InvalidGenesis, match="is not valid TOML"):
        load_text(tmp_path, 'chain_id = "a"\nchain_id = "b"\n')


def test_not_utf8(tmp_path: Path) -> None:
    with pytest.raises(InvalidGenesis, match="is not valid TOML"):
        load_text(tmp_path, to_toml(valid_doc()).encode("utf-8") + b"# \xff\xfe\n")


def test_deeply_nested_toml(tmp_path: Path) -> None:
    # tomllib recurses per nesting level; the failure must still be an InvalidGenesis.
    with pytest.raises(InvalidGenesis, match="is not valid TOML"):
        load_text(tmp_path, "x = " + "[" * 100_000 + "]" * 100_000 + "\n")


def test_oversize_file(tmp_path: Path) -> None:
    text = to_toml(valid_doc()) + "#" * genesis.GENESIS_BYTES_MAX + "\n"
    with pytest.raises(InvalidGenesis, match="is larger than"):
        load_text(tmp_path, text)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidGenesis, match="cannot read"):
        genesis.load(tmp_path / "missing.toml")
    with pytest.raises(InvalidGenesis, match="cannot read"):
        genesis.load(tmp_path)


def test_a_genesis_dict_must_be_a_toml_document() -> None:
    with pytest.raises(InvalidGenesis):
        genesis.from_dict({})


# --- Any change of content changes the hash --------------------------------------------------


def _leaf_paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _leaf_paths(v, (*path, k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _leaf_paths(v, (*path, i))]
    return [path]


BASE = genesis.from_dict(valid_doc())
CONTENT_PATHS = _leaf_paths(BASE.to_dict())


def _changed(value: Any, path: tuple[Any, ...]) -> Any:
    if isinstance(value, int):
        low, _ = genesis._PARAM_BOUNDS[path[-1]]
        return value - 1 if value > low else value + 1
    if path[-1] == "public_key":
        return key_hex(f"changed/{path}")
    if path[-1] == "kind":
        return "insurer" if value == "municipal" else "municipal"
    if path[-1] == "url":
        return value + "1"
    if path[-1] == "id" or path[0] == "chain_id":
        return value + "x"
    if path[0] == "write_policies" and path[-2] == "namespaces":
        return "other/"
    return value + " Dept"


@pytest.mark.parametrize("path", CONTENT_PATHS, ids=lambda p: ".".join(map(str, p)))
def test_changing_any_content_changes_the_hash(path: tuple[Any, ...]) -> None:
    doc = BASE.to_dict()
    target: Any = doc
    for step in path[:-1]:
        target = target[step]
    old = target[path[-1]]
    target[path[-1]] = _changed(old, path)
    if path[0] == "write_policies" and path[-1] == "organisation":
        # Rename the organisation everywhere, so the policy stays valid and only names change.
        for entry in doc["validators"] + doc["clients"]:
            if entry["organisation"] == old:
                entry["organisation"] = target[path[-1]]
    changed = genesis.from_dict(doc)
    assert changed.to_dict() == doc
    assert changed.hash != BASE.hash


def test_order_of_validators_and_clients_is_content() -> None:
    doc = valid_doc()
    doc["validators"].reverse()
    assert genesis.from_dict(doc).hash != BASE.hash
    doc = valid_doc()
    doc["clients"].reverse()
    assert genesis.from_dict(doc).hash != BASE.hash

"""Every kind's compiled schema test (`Kind.holds`) says yes exactly when the schema's
field-by-field definition (`base.schema_problem`) finds no problem, over random bodies near
and across every bound, and `check_schema` refuses with the definition's reason."""

from typing import Any, Final

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.kinds import base
from ledger.kinds.table import KINDS

EDGE_INTS: Final = (0, 1, -1, 1899, 1900, 2200, 2201, 2**53, 2**53 + 1, 10**15, 10**15 + 1)
SAMPLES: Final = (
    "", "a", "active", "blocked", "permits/x", "fiscal/l/0", "a//b", "a/./b", "a/../b", "..",
    "x.y", "a b", "a\nb", "\x00", "é" * 128, "é" * 129, "x" * 256, "x" * 257, "fire", "flood",
    "typhoon",
)  # fmt: skip
texts = st.one_of(st.sampled_from(SAMPLES), st.text(max_size=300))
values = st.one_of(
    texts,
    texts,
    texts,
    st.sampled_from(EDGE_INTS),
    st.integers(),
    st.booleans(),
    st.none(),
    st.lists(texts, max_size=34),
    st.floats(allow_nan=False),
)


def _good(f: base.Field) -> st.SearchStrategy[Any]:
    if f.type == "int":
        return st.one_of(st.integers(f.low, f.high), st.sampled_from((f.low, f.high)))
    if f.type == "list":
        return st.lists(st.sampled_from(("fire", "flood", "storm")), min_size=1, unique=True)
    if f.enum:
        return st.sampled_from(f.enum)
    if f.type == "key":
        return st.sampled_from(("fiscal/l/0", "policies/acme/p1", "a.b/c-d_e:f"))
    return st.text(alphabet="abzAZ09 .-_/:é", min_size=1, max_size=20)


@st.composite
def records(draw: st.DrawFn) -> tuple[base.Kind, str, dict[str, Any]]:
    """A valid body of a random kind, then up to two fields changed to any value, dropped or
    added, and the key in or out of the kind's namespace."""
    kind = draw(st.sampled_from(list(KINDS.values())))
    key = draw(st.sampled_from((kind.namespace + "x/1", kind.namespace + "y", "elsewhere/x")))
    body = {f.name: draw(_good(f)) for f in kind.fields if f.required or draw(st.booleans())}
    for _ in range(draw(st.integers(0, 2))):
        name = draw(st.sampled_from([*(f.name for f in kind.fields), "colour"]))
        if draw(st.integers(0, 4)) == 0:
            body.pop(name, None)
        else:
            body[name] = draw(values)
    return kind, key, body


@settings(max_examples=2000, deadline=None)
@given(records())
def test_the_compiled_schema_holds_exactly_when_the_definition_finds_no_problem(
    record: tuple[base.Kind, str, dict[str, Any]],
) -> None:
    kind, key, body = record
    problem = base.schema_problem(kind, key, body)
    assert kind.holds(key, body) is (problem is None), problem
    if problem is None:
        base.check_schema(kind, key, body)
    else:
        with pytest.raises(base.Refused) as refused:
            base.check_schema(kind, key, body)
        assert (refused.value.code, refused.value.why) == (base.SCHEMA, problem)


def test_the_memo_of_valid_reference_keys_stays_bounded_and_holds_only_valid_keys() -> None:
    kind = KINDS["budget.allocation"]
    for i in range(base.VALID_KEYS_MAX + 10):
        assert kind.holds("fiscal/l", {"appropriation": f"fiscal/a/{i}", "amount_cents": 1})
        assert len(base._valid_keys) <= base.VALID_KEYS_MAX
    for bad in ("fiscal//a", "fiscal/../a", "a b", "x" * 300):
        assert not kind.holds("fiscal/l", {"appropriation": bad, "amount_cents": 1})
        assert not kind.holds("fiscal/l", {"appropriation": bad, "amount_cents": 1})  # again
        assert bad not in base._valid_keys

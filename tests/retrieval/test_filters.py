"""``where`` filters: the grammar, its errors, and two translations that mean what ``matches`` means."""
from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dva.retrieval.filters import (
    And, Compare, FilterError, In, IsNull, Not, Or, matches, parse, to_milvus, to_sql,
)

COLS = ("id", "a", "b", "c")


# --- parsing ---------------------------------------------------------------------------------

def test_precedence_not_binds_tighter_than_and_tighter_than_or() -> None:
    f = parse("not a = 1 and b = 2 or c = 3")
    assert f == Or((And((Not(Compare("a", "=", 1, 4)), Compare("b", "=", 2, 16))), Compare("c", "=", 3, 27)))


def test_parentheses_override_precedence_and_keywords_ignore_case() -> None:
    f = parse("a = 1 AND (b = 2 Or c = 3)")
    assert isinstance(f, And)
    assert f.args[1] == Or((Compare("b", "=", 2, 11), Compare("c", "=", 3, 21)))


def test_in_not_in_is_null_and_literals() -> None:
    assert parse("label in ('x', 2, -1.5)") == In("label", ("x", 2, -1.5), False, 0)
    assert parse("label NOT IN ('x')") == In("label", ("x",), True, 0)
    assert parse("source is null") == IsNull("source", False, 0)
    assert parse("source IS NOT NULL") == IsNull("source", True, 0)
    assert parse("a <> 'it''s'") == Compare("a", "!=", "it's", 0)
    assert parse("a >= 1e3").value == 1000.0
    assert parse("a<=-7").value == -7
    assert isinstance(parse("a = 7").value, int)


def test_columns_lists_every_column_named() -> None:
    assert parse("a = 1 or not (b in (1) and c is null)").columns() == {"a", "b", "c"}


@pytest.mark.parametrize("text, pos, expected", [
    ("", 0, "expected a condition"),
    ("a = ", 4, "expected a value"),
    ("a == 1", 3, "expected a value"),
    ("a = 1 and", 9, "expected a column name"),
    ("(a = 1", 6, "expected ')'"),
    ("a = 1)", 5, "expected 'and', 'or'"),
    ("a in 1", 5, "expected '('"),
    ("a in (1 2)", 8, "expected ',' or ')'"),
    ("a is 1", 5, "expected 'null' or 'not null'"),
    ("a = 'open", 4, "unterminated string"),
    ('a = "x"', 4, "single quotes"),
    ("a ~ 1", 2, "unexpected character '~'"),
    ("a not 1", 6, "expected 'in'"),
    ("and = 1", 0, "expected a column name"),
    ("a = 99999999999999999999", 4, "64-bit"),
    ("a b", 2, "expected an operator"),
])
def test_errors_name_the_position_and_what_was_expected(text: str, pos: int, expected: str) -> None:
    with pytest.raises(FilterError) as info:
        parse(text)
    assert info.value.pos == pos
    assert expected in str(info.value)
    assert f"at position {pos}" in str(info.value)


def test_unknown_columns_are_refused_by_both_translations() -> None:
    f = parse("a = 1 and zzz = 2")
    for translate in (to_sql, to_milvus):
        with pytest.raises(FilterError, match="unknown column 'zzz'.*has: id, a"):
            translate(f, ("id", "a"))


def test_sql_passes_values_as_parameters_never_in_the_text() -> None:
    sql, params = to_sql(parse("a = 'x''); DROP TABLE t; --'"), COLS)
    assert "DROP" not in sql and params == ["x'); DROP TABLE t; --"]


# --- the meaning -----------------------------------------------------------------------------

@pytest.mark.parametrize("text, row, kept", [
    ("a = 5", {"a": "5"}, False),             # no coercion
    ("not a = 5", {"a": "5"}, True),          # a type mismatch is false, not unknown
    ("a != 5", {"a": "5"}, False),            # ... for every operator
    ("a < 'b'", {"a": 1}, False),
    ("a = 1", {"a": 1.0}, True),              # numbers compare as numbers
    ("not a = 1", {}, False),                 # null: unknown, and not unknown is unknown
    ("a is null", {}, True),
    ("a is null", {"a": None}, True),
    ("a is not null", {"a": ""}, True),
    ("a = 1 or b = 2", {"b": 2}, True),       # unknown or true = true
    ("not (a = 1 and b = 2)", {"b": 3}, True),  # unknown and false = false
    ("not (a = 1 and b = 2)", {"b": 2}, False),  # unknown and true = unknown
    ("a not in (1, 'x')", {"a": "y"}, True),
    ("a not in (1, 'x')", {}, False),
    ("a in (1, 'x')", {"a": "x"}, True),
])
def test_matches_follows_sql_three_valued_logic(text: str, row: dict, kept: bool) -> None:
    assert matches(parse(text), row) is kept


# --- translations agree with matches on random rows and filters ------------------------------

STRINGS = ["", "a", "b", "ab", "B", "'", '"', "\\", "é", "1", "a b", "\t"]
_values = st.one_of(st.none(), st.integers(-3, 3), st.sampled_from(STRINGS))
_rows = st.lists(st.fixed_dictionaries({"a": _values, "b": _values, "c": _values}), min_size=1, max_size=25)


def _quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


_lit = st.one_of(st.integers(-4, 4).map(str), st.sampled_from(["0.5", "-1.5", "2.0", "1e3", "-0.0", "1e30", "-1e30"]),
                 st.sampled_from(STRINGS).map(_quote))
_col = st.sampled_from(COLS)
_kw = st.sampled_from(["", "upper"]).map(lambda how: (lambda w: w.upper() if how else w))
_atom = st.one_of(
    st.tuples(_col, st.sampled_from(["=", "!=", "<>", "<", "<=", ">", ">="]), _lit).map(" ".join),
    st.tuples(_col, st.sampled_from(["in", "not in", "NOT IN"]), st.lists(_lit, min_size=1, max_size=3))
    .map(lambda t: f"{t[0]} {t[1]} ({', '.join(t[2])})"),
    st.tuples(_col, st.sampled_from(["is null", "IS NOT NULL"])).map(" ".join),
)
_filters = st.recursive(_atom, lambda inner: st.one_of(
    inner.map(lambda e: f"({e})"),
    inner.map(lambda e: f"not {e}"),
    st.tuples(inner, st.sampled_from(["and", "or", "AND", "Or"]), inner).map(" ".join),
), max_leaves=6)


def _sqlite_ids(rows: list[dict], text: str) -> list[int]:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (id, a, b, c)")  # no types: values keep theirs
    db.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", [(i, r["a"], r["b"], r["c"]) for i, r in enumerate(rows)])
    sql, params = to_sql(parse(text), COLS)
    return sorted(i for (i,) in db.execute(f"SELECT id FROM t WHERE {sql}", params))


def _expected(rows: list[dict], text: str) -> list[int]:
    f = parse(text)
    return [i for i, r in enumerate(rows) if matches(f, {"id": i, **r})]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=_rows, text=_filters)
def test_sql_agrees_with_matches(rows: list[dict], text: str) -> None:
    assert _sqlite_ids(rows, text) == _expected(rows, text)


@pytest.fixture(scope="module")
def milvus_rows(tmp_path_factory: pytest.TempPathFactory):
    """One Milvus Lite collection of random rows laid out as dva.retrieval.milvus stores them."""
    pymilvus = pytest.importorskip("pymilvus")
    from dva.retrieval.filters import milvus_fields

    client = pymilvus.MilvusClient(str(tmp_path_factory.mktemp("milvus") / "filters.db"))
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", pymilvus.DataType.INT64, is_primary=True)
    schema.add_field("vector", pymilvus.DataType.FLOAT_VECTOR, dim=2)
    for col in COLS[1:]:
        s, n = milvus_fields(col)
        schema.add_field(s, pymilvus.DataType.VARCHAR, max_length=256, nullable=True)
        schema.add_field(n, pymilvus.DataType.INT64, nullable=True)
    client.create_collection("t", schema=schema)
    rng = np.random.default_rng(0)
    values = [None, *range(-3, 4), *STRINGS]
    rows = [{c: values[rng.integers(len(values))] for c in COLS[1:]} for _ in range(80)]
    data = []
    for i, r in enumerate(rows):
        rec = {"id": i, "vector": [1.0, 0.0]}
        for c, v in r.items():
            s, n = milvus_fields(c)
            rec[s], rec[n] = (v if isinstance(v, str) else None), (v if isinstance(v, int) else None)
        data.append(rec)
    client.insert("t", data)
    client.flush("t")
    yield client, rows
    client.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(text=_filters)
def test_milvus_agrees_with_matches(milvus_rows, text: str) -> None:
    client, rows = milvus_rows
    got = client.query("t", filter=to_milvus(parse(text), COLS), output_fields=["id"], limit=1000)
    assert sorted(r["id"] for r in got) == _expected(rows, text)

"""Named quantities of the cub100 result files, and the prose templates of the docs that quote them.

Numbers in README.md and docs/BENCHMARKS.md are rendered from benchmarks/results by code: a notes
file is a template whose placeholders name quantities of the JSON, and a derived figure (a delta,
a gap, "behind" or "above") is an expression of those names, never a typed number:

    DVA is {mnv2.full.r1 - mnv2.dva.r1:.1f} R@1 behind the full fine-tune ({mnv2.dva.seeds} seeds)
    {assert mnv2.full.r1 > mnv2.dva.r1}{seeds_vs(vit.dva.ood_r1, vit.full.ood_r1)}

Placeholders (one line each; no ``eval``, a fixed grammar):

- ``{EXPR}`` / ``{EXPR:FORMAT}``: ``EXPR`` is a name, a number, or names and numbers joined by
  ``+`` and ``-``; ``FORMAT`` is a Python format spec (default ``.1f`` for floats, ``,`` for ints).
- ``{assert EXPR OP EXPR}`` (``OP``: ``>``, ``>=``, ``<``, ``<=``, ``==``, ``!=``): renders nothing and
  stops the rendering when false, so that a sentence whose words ("above", "every", "largest")
  depend on the numbers cannot outlive them.
- ``{seeds_vs(A, B)}``: where a per-seed metric ``A`` stands against ``B`` seed by seed ("in every
  seed", "in seeds 1 and 2; below it in seed 0"), from the per-seed values ``A.s0``, ``A.s1``...

Rounding rule (the renderer and tests/benchmarks/test_docs_numbers.py use the same code): every
figure is computed from the unrounded values stored in the JSON and rounded once, when it is
formatted. A delta is therefore the rounded difference of two means, which can differ by 0.1 from
the difference of the two rounded cells of a table; a rounded zero is written without a sign
flip (``+0.0``, never ``-0.0``).

Names: ``<backbone>.<row>.<metric>`` with backbone ``mnv2``, ``lite2``, ``vit`` (``pets.<backbone>``
for the pets37 open set; other prefixes as a section registers them), row ``frozen``, ``head``,
``full``, ``ica``, ``ica_opa``, ``dva``, metric ``r1``, ``map``, ``ood_r1``, ``ood_map`` (means in %),
``<metric>.sd`` (sample std), ``<metric>.s<seed>`` (one seed), ``hits.s<seed>`` / ``ood_hits.s<seed>``
(queries right), ``hits`` / ``ood_hits`` (all seeds, as "125, 117 and 120"), ``queries``,
``ood_queries``, ``seeds``, ``params``, ``pct``, ``steps``, ``collapse_step``, ``collapse_figure`` (text); per backbone
``<backbone>.backbone_params`` and ``<backbone>.backbone_m`` (millions); per result file
``file.<stem>.min`` (its wall time in minutes).
"""
from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

ORDER = ("frozen", "head", "full", "ica", "ica_opa", "dva")
METRICS = {"r1": "recall@1", "map": "map@r", "ood_r1": "ood_recall@1", "ood_map": "ood_map@r"}
# Queries of each retrieval set (leave-one-out: every image is a query). R@1 x queries must be a
# whole number of queries: checked when hits are computed, so a wrong count cannot pass silently.
QUERIES = {"cub100": 2953, "pets37_ood": 370, "pets37_open": 190}
Value = float | int | str


class TemplateError(ValueError):
    """A placeholder that names no quantity, does not parse, or an assumption that is false."""


# ----------------------------------------------------------------------------- quantities
def rows_of(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The main rows by name (stats: mean ± std over the seeds run); a pets37 profile's ``pets_*`` rows too."""
    out = {}
    for r in result["rows"]:
        key = r["name"].removeprefix("pets_") if r["group"] == "pets37" else r["name"]
        if r["group"] in ("main", "pets37") and key in ORDER:
            out[key] = r
    return out


def _hits(fraction: float, queries: int, where: str) -> int:
    n = fraction * queries
    if abs(n - round(n)) > 1e-6:
        raise ValueError(f"{where}: R@1 {fraction!r} x {queries} queries is not a whole number: wrong query count "
                         "in benchmarks/cub100/quantities.py QUERIES?")
    return round(n)


def join_words(items: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _row_quantities(p: str, r: dict[str, Any], queries: int, ood_queries: int | None) -> dict[str, Value]:
    """The quantities of one row (prefix ``p``, e.g. ``mnv2.dva``)."""
    q: dict[str, Value] = {f"{p}.seeds": len(r["seeds"]), f"{p}.params": r["trainable_params"],
                           f"{p}.pct": r["trainable_pct"], f"{p}.steps": r["runs"][0].get("steps", 0),
                           f"{p}.queries": queries}
    if ood_queries:
        q[f"{p}.ood_queries"] = ood_queries
    for short, key in METRICS.items():
        if r["stats"].get(key):
            q[f"{p}.{short}"], q[f"{p}.{short}.sd"] = r["stats"][key]
    for side, n, mkey in (("", queries, "metrics"), ("ood_", ood_queries, "ood_metrics")):
        hits = []
        for run in r["runs"]:
            m = run.get(mkey)
            if not m:
                continue
            s = int(run["seed"])
            q[f"{p}.{side}r1.s{s}"], q[f"{p}.{side}map.s{s}"] = 100 * m["recall@1"], 100 * m["map@r"]
            if n:
                q[f"{p}.{side}hits.s{s}"] = _hits(m["recall@1"], n, f"{p} seed {s}")
                hits.append(str(q[f"{p}.{side}hits.s{s}"]))
        if hits:
            q[f"{p}.{side}hits"] = join_words(hits)
    stops = [run["collapse"] for run in r["runs"] if run.get("status") == "stopped" and run.get("collapse")]
    if stops:
        q[f"{p}.collapse_step"], q[f"{p}.collapse_figure"] = stops[0]["step"], stops[0].get("figure", "")
    return q


def result_quantities(prefix: str, result: dict[str, Any], queries: int, ood_queries: int | None = None
                      ) -> dict[str, Value]:
    """Every quantity of one (merged) result: its rows under ``prefix``, its files under ``file.``.

    Args:
        prefix: the name the templates use (``mnv2``, ``pets.vit``...).
        result: a result file of ``run.py``, or several merged (``render.merge_results``).
        queries: queries of its retrieval set (``QUERIES``).
        ood_queries: queries of its out-of-distribution set, when it has one.

    Returns:
        name -> value.
    """
    q: dict[str, Value] = {}
    rows = rows_of(result)
    for key, r in rows.items():
        q.update(_row_quantities(f"{prefix}.{key}", r, queries, ood_queries if result["settings"].get("ood") else None))
    if rows:
        n = next(iter(rows.values()))["backbone_params"]
        q[f"{prefix}.backbone_params"], q[f"{prefix}.backbone_m"] = n, n / 1e6
    for src in result.get("sources") or [result]:
        if src.get("json") and src.get("wall_seconds_total"):
            q[f"file.{Path(src['json']).stem}.min"] = src["wall_seconds_total"] / 60
    return q


# ----------------------------------------------------------------------------- templates
_PLACEHOLDER = re.compile(r"\{([^{}\n]+)\}")
_TOKEN = re.compile(r"\s*(?:(?P<num>\d+(?:\.\d+)?)|(?P<name>[A-Za-z_][\w.]*)|(?P<op>[-+]))")
_ASSERT = re.compile(r"^assert\s+(.+?)\s*(>=|<=|==|!=|>|<)\s*(.+)$")
_CALL = re.compile(r"^(\w+)\(\s*([\w.]+)\s*,\s*([\w.]+)\s*\)$")


def evaluate(expr: str, q: Mapping[str, Value]) -> Value:
    """The value of ``expr``: a name or number, or names and numbers joined by ``+`` / ``-``."""
    pos, end, total, sign, terms, ints = 0, len(expr.rstrip()), 0.0, 1, 0, True
    expect_term = True
    while pos < end:
        m = _TOKEN.match(expr, pos)
        if not m or (m.group("op") is None and not expect_term):
            raise TemplateError(f"cannot parse `{expr}` at {expr[pos:]!r}: expected a name, a number, + or -")
        pos = m.end()
        if m.group("op"):  # a binary operator, or a sign before a term (``-1.0``)
            step = 1 if m.group("op") == "+" else -1
            sign, expect_term = (sign * step if expect_term else step), True
            continue
        if m.group("num"):
            v: Value = float(m.group("num")) if "." in m.group("num") else int(m.group("num"))
        else:
            name = m.group("name")
            if name not in q:
                close = difflib.get_close_matches(name, list(q), n=3)
                raise TemplateError(f"no quantity `{name}`" + (f" (did you mean {', '.join(close)}?)" if close else ""))
            v = q[name]
        if isinstance(v, str):
            if terms or pos < end:
                raise TemplateError(f"`{expr}`: {v!r} is text, it cannot be added or subtracted")
            return v
        total, terms, ints, expect_term = total + sign * v, terms + 1, ints and isinstance(v, int), False
    if expect_term:
        raise TemplateError(f"cannot parse `{expr}`: it ends with an operator or is empty")
    return int(total) if ints else total


def fmt(value: Value, spec: str | None) -> str:
    """``value`` formatted once; a rounded zero keeps no minus sign (``-0.04`` -> ``+0.0`` / ``0.0``)."""
    if isinstance(value, str):
        return value
    spec = spec if spec is not None else ("," if isinstance(value, int) else ".1f")
    out = format(value, spec)
    if out.lstrip("+-").replace("0", "").replace(".", "").replace(",", "") == "" and out.startswith("-"):
        out = ("+" if "+" in spec else "") + out[1:]
    return out


def seed_ids(name: str, q: Mapping[str, Value]) -> list[int]:
    """The seeds with a per-seed value of ``name`` (``name.s0``, ``name.s1``...), ascending."""
    return sorted(int(k[len(name) + 2:]) for k in q if k.startswith(name + ".s") and k[len(name) + 2:].isdigit())


def seeds_vs(a: str, b: str, q: Mapping[str, Value]) -> str:
    """Where ``a`` stands against ``b`` seed by seed: both per seed, or each seed of ``a`` against ``b``'s only one.

    Returns:
        ``in every seed`` / ``in no seed`` / ``in seeds 1 and 2; below it in seed 0`` (level seeds named too).
    """
    seeds_a, seeds_b = seed_ids(a, q), seed_ids(b, q)
    if not seeds_a or not seeds_b:
        raise TemplateError(f"seeds_vs({a}, {b}): no per-seed values")
    groups: dict[str, list[str]] = {"above": [], "below": [], "level": []}
    for s in seeds_a:
        other = q[f"{b}.s{s}"] if s in seeds_b else (q[f"{b}.s{seeds_b[0]}"] if len(seeds_b) == 1 else None)
        if other is None:
            raise TemplateError(f"seeds_vs({a}, {b}): seed {s} of {a} has no counterpart")
        d = float(q[f"{a}.s{s}"]) - float(other)
        groups["above" if d > 1e-9 else "below" if d < -1e-9 else "level"].append(str(s))
    if len(groups["above"]) == len(seeds_a):
        return "in every seed"
    lead = {"above": "in", "below": "below it in", "level": "level with it in"}
    parts = [f"{lead[k]} seed{'s' if len(v) > 1 else ''} {join_words(v)}" for k, v in groups.items() if v]
    return "; ".join(parts) if groups["above"] else "in no seed (" + "; ".join(parts) + ")"


FUNCTIONS: dict[str, Callable[[str, str, Mapping[str, Value]], str]] = {"seeds_vs": seeds_vs}


def _compare(op: str, x: float, y: float) -> bool:
    return {">": x > y, ">=": x >= y, "<": x < y, "<=": x <= y, "==": x == y, "!=": x != y}[op]


def _placeholder(body: str, q: Mapping[str, Value]) -> str:
    m = _ASSERT.match(body.strip())
    if m:
        lhs, op, rhs = m.groups()
        x, y = evaluate(lhs, q), evaluate(rhs, q)
        if not _compare(op, float(x), float(y)):
            raise TemplateError(f"assumption `{body.strip()[7:]}` is false ({float(x):.4g} vs {float(y):.4g}): "
                                "the sentence it guards no longer holds; rewrite it")
        return ""
    expr, _, spec = body.partition(":")
    call = _CALL.match(expr.strip())
    if call:
        fn = FUNCTIONS.get(call.group(1))
        if fn is None:
            raise TemplateError(f"no function `{call.group(1)}` (known: {', '.join(FUNCTIONS)})")
        return fn(call.group(2), call.group(3), q)
    return fmt(evaluate(expr, q), spec or None)


def fill(template: str, q: Mapping[str, Value], source: str = "template") -> str:
    """``template`` with every placeholder replaced by its value.

    Args:
        template: markdown with ``{...}`` placeholders (module docstring).
        q: the quantities.
        source: the template's file, named in errors.

    Returns:
        The rendered markdown.

    Raises:
        TemplateError: naming ``source``, the line and the placeholder.
    """
    out = []
    for n, line in enumerate(template.splitlines(keepends=True), 1):
        try:
            out.append(_PLACEHOLDER.sub(lambda m: _placeholder(m.group(1), q), line))
        except TemplateError as e:
            raise TemplateError(f"{source}, line {n}: {e}") from None
    return "".join(out)


# ----------------------------------------------------------------------------- checking
_NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?")


def numbers(text: str) -> list[str]:
    """The numbers of ``text`` as written (``-0.6``, ``2,953``, ``1.49``)."""
    return [n.rstrip(",") for n in _NUMBER.findall(text)]


def _skeleton(line: str) -> str:
    return " ".join(_NUMBER.sub("#", line).split())


def _table_context(lines: list[str], i: int) -> str:
    """For a table row: its first two cells and the column names; else empty."""
    if not lines[i].lstrip().startswith("|"):
        return ""
    j = i
    while j > 0 and lines[j - 1].lstrip().startswith("|"):
        j -= 1
    cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
    label = [c for c in cells[:2] if c and not re.fullmatch(r"[\s*±%()+\-\d.,]+", c)]  # names, not values
    return f"table row `{' / '.join(label)}`" if j != i else "table header"


def compare(actual: str, expected: str, where: str, skip: Callable[[str], bool] = lambda ln: False) -> list[str]:
    """Every difference between a doc's text and its rendering from the JSON, numbers first.

    Lines are aligned by their words (numbers masked), then the numbers of aligned lines are
    compared one by one; a table cell is named by its row and column.

    Args:
        actual: the text in the doc.
        expected: the text rendered from the JSON.
        where: the doc and section, for the messages.
        skip: lines to leave out on both sides (e.g. recorded commands, which other code formats).

    Returns:
        One message per difference; empty when the doc matches.
    """
    a = [ln.rstrip() for ln in actual.strip().splitlines() if ln.strip() and not skip(ln)]
    e = [ln.rstrip() for ln in expected.strip().splitlines() if ln.strip() and not skip(ln)]
    out = []
    sm = difflib.SequenceMatcher(a=[_skeleton(x) for x in a], b=[_skeleton(x) for x in e], autojunk=False)
    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        if tag == "equal":
            for i, j in zip(range(i1, i2), range(j1, j2)):
                na, ne = numbers(a[i]), numbers(e[j])
                for k, (x, y) in enumerate(zip(na, ne)):
                    if x != y:
                        out.append(f"{where}: {_table_context(e, j) or 'line'} {_cell(e, j, a[i], k)}: "
                                   f"the doc says {x}, the JSON gives {y}\n    doc:  {a[i]}\n    JSON: {e[j]}")
        else:
            out.append(f"{where}: text differs from its rendering (run the renderer)\n"
                       + "".join(f"    doc:  {x}\n" for x in a[i1:i2]) + "".join(f"    JSON: {y}\n" for y in e[j1:j2]))
    return out


def _cell(lines: list[str], j: int, actual_line: str, k: int) -> str:
    """The column of the ``k``-th number of a table row (from the header above it), else the number's index."""
    if not lines[j].lstrip().startswith("|"):
        return f"(number {k + 1})"
    h = j
    while h > 0 and lines[h - 1].lstrip().startswith("|"):
        h -= 1
    header = [c.strip() for c in lines[h].strip().strip("|").split("|")]
    seen = 0
    for col, cell in enumerate(c for c in actual_line.strip().strip("|").split("|")):
        seen += len(numbers(cell))
        if seen > k:
            return f"column `{header[col] if col < len(header) else col}`"
    return f"(number {k + 1})"

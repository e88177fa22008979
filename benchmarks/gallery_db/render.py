"""The tables and the docs section of the gallery_db benchmark, rendered from its JSON (never typed).

``summary`` computes which of the issue's targets hold; ``tables`` is what ``run.py`` prints;
``section`` is the body of the docs/BENCHMARKS.md section, between the markers
``<!-- rendered: gallery-db -->`` and ``<!-- /rendered: gallery-db -->``.

    python -m benchmarks.gallery_db.render            # write the section from benchmarks/results/gallery_db.json
    python -m benchmarks.gallery_db.render --check    # compare the docs with their rendering (exit 1 on a difference)
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from benchmarks import _common as C

RESULT = C.RESULTS / "gallery_db.json"
HEADING = "## Gallery as a database: add, remove, filtered search (FAISS and Milvus Lite)"
REGION = "gallery-db"
BEGIN, END = f"<!-- rendered: {REGION} -->", f"<!-- /rendered: {REGION} -->"
# The issue's targets
QPS_TARGET, RECALL_TARGET, ADD_RATIO_TARGET = 1000.0, 0.95, 0.10
STORES = ("faiss", "milvus")
STORE_NAMES = {"faiss": "FAISS IVF-PQ + fp16", "milvus": "Milvus Lite"}


def _phase(result: dict[str, Any], name: str) -> dict[str, Any] | None:
    return (result.get("phases") or {}).get(name)


def _rows(result: dict[str, Any], name: str) -> list[dict[str, Any]]:
    p = _phase(result, name)
    return list(p["rows"]) if p else []


def _fastest_at(rows: list[dict[str, Any]], recall: float) -> dict[str, Any] | None:
    """The row of highest q/s among those with recall@10 >= ``recall`` (None when none reaches it)."""
    ok = [r for r in rows if r["recall@10"] >= recall]
    return max(ok, key=lambda r: r["qps_batch"]) if ok else None


def _pick(r: dict[str, Any]) -> dict[str, Any]:
    """The setting, speed and recall of a search row."""
    return {k: r[k] for k in ("path", "rows_scanned", "nprobe", "k_factor", "ef", "default", "qps_batch",
                              "recall@10") if k in r}


def build_seconds(p: dict[str, Any]) -> float:
    """A build or add phase's time until its rows are searchable through the index (Milvus indexes in the background)."""
    return p.get("build_s", p.get("add_s", 0.0)) + p.get("index_wait_s", 0.0)


def _store_summary(result: dict[str, Any], store: str) -> dict[str, Any]:
    build, add, rm = (_phase(result, f"{store}_{s}") for s in ("build", "add", "remove"))
    out: dict[str, Any] = {"n": build["n"] if build else None}
    if build and add:
        out["add_ratio"] = build_seconds(add) / build_seconds(build)
    if rm:
        out["remove_ids_per_s"] = rm["ids_per_s"]
    plain = _rows(result, f"{store}_search")
    if plain:
        best = _fastest_at(plain, RECALL_TARGET)
        out["search_fastest_at_target_recall"] = (_pick(best) if best else None)
    filt: dict[str, Any] = {}
    for r in _rows(result, f"{store}_filter"):
        if str(r.get("path", "")).endswith("(forced)"):
            continue  # a comparison, not what the store does
        f = filt.setdefault(r["filter"], {"best_recall": 0.0, "fastest_at_target": None})
        f["best_recall"] = max(f["best_recall"], r["recall@10"])
        if r["recall@10"] >= RECALL_TARGET and (f["fastest_at_target"] is None
                                                or r["qps_batch"] > f["fastest_at_target"]["qps_batch"]):
            f["fastest_at_target"] = _pick(r)
    if filt:
        out["filtered"] = filt
    return out


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """Per store: add/build ratio, remove rate, fastest settings at recall >= 0.95; and whether each target holds.

    A target is None (not yet known) while the phases it needs are missing.
    """
    per = {s: _store_summary(result, s) for s in STORES}
    f = per["faiss"]
    best = f.get("search_fastest_at_target_recall")
    plain = _rows(result, "faiss_search")
    targets = {
        "faiss_search_1000qps_at_recall_0.95": (bool(best and best["qps_batch"] >= QPS_TARGET) if plain else None),
        "faiss_add_100k_under_10pct_of_build": (f["add_ratio"] < ADD_RATIO_TARGET if "add_ratio" in f else None),
        "faiss_filtered_recall_0.95": ({k: v["best_recall"] >= RECALL_TARGET for k, v in f["filtered"].items()}
                                       if "filtered" in f else None),
        "milvus_filtered_recall_0.95": ({k: v["best_recall"] >= RECALL_TARGET
                                         for k, v in per["milvus"]["filtered"].items()}
                                        if "filtered" in per["milvus"] else None),
    }
    return {"stores": per, "targets": targets}


# ----------------------------------------------------------------------------- formatting
def _s(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return f"{seconds:,.0f} s" if seconds >= 10 else f"{seconds:.1f} s" if seconds >= 1 else f"{seconds:.2f} s"


def _gb(n_bytes: float | None) -> str:
    return "–" if not n_bytes else f"{n_bytes / 2**30:.1f} GiB"


def _n(n: int | None) -> str:
    return "–" if n is None else f"{n:,}"


def _yes(flag: bool | None) -> str:
    return "not measured" if flag is None else ("**yes**" if flag else "**no**")


def _setting(r: dict[str, Any]) -> str:
    if r.get("path") == "exact scan":
        return f"exact scan of the {_n(r['rows_scanned'])} kept rows (the store's choice)"
    if r.get("path") == "ivf (forced)":
        return f"IVF path forced: nprobe={r['nprobe']}, k_factor={r['k_factor']}"
    if r.get("path") == "hnsw (forced)":
        return f"HNSW path forced: ef={r['ef']}"
    if "nprobe" in r:
        text = f"nprobe={r['nprobe']}, k_factor={r['k_factor']}"
    elif "ef" in r:
        text = f"ef={r['ef']}"
    else:
        return "store default"
    return text + (" (default)" if r.get("default") else "")


def _sizes_label(result: dict[str, Any], store: str) -> str:
    b = _phase(result, f"{store}_build")
    full = result["settings"]["data"]["n"]
    if not b:
        return "–"
    return _n(b["n"]) + ("" if b["n"] == full else f" (not {_n(full)}: see below)")


# ----------------------------------------------------------------------------- tables
def table_mutations(result: dict[str, Any]) -> str:
    """Build, add and remove per store: time, ratio, rate, peak memory, size on disk."""
    rows = []
    for s in STORES:
        b, a, r = (_phase(result, f"{s}_{x}") for x in ("build", "add", "remove"))
        if not b:
            continue
        rows.append([STORE_NAMES[s], _n(b["n"]), _s(build_seconds(b)),
                     f"{_n(a['n_added'])} in {_s(build_seconds(a))}" if a else "–",
                     f"{100 * build_seconds(a) / build_seconds(b):.1f}%" if a else "–",
                     f"{_n(r['n_removed'])} in {_s(r['remove_s'])}" if r else "–",
                     f"{r['ids_per_s']:,.0f}" if r else "–",
                     " / ".join(_gb(p["peak_rss_bytes"]) if p else "–" for p in (b, a, r)),
                     _gb((a or {}).get("build_bytes") or b["disk_bytes"])])  # the build's own files
    return C.md_table(["store", "gallery", "build", "add", "add / build", "remove", "ids removed/s",
                       "peak RSS build / add / remove", "on disk"], rows, "lrrrrrrrr")


def table_search(result: dict[str, Any]) -> str:
    """Unfiltered batch search of the fresh build: every setting measured."""
    rows = []
    for s in STORES:
        p = _phase(result, f"{s}_search")
        for r in (p["rows"] if p else []):
            lat = r.get("latency_ms_single")
            rows.append([STORE_NAMES[s], _n(p["n"]), _setting(r), f"{r['qps_batch']:,.0f}",
                         "" if lat is None else f"{lat:.2f}", f"{r['recall@10']:.3f}"])
    return C.md_table(["store", "gallery", "setting", "queries/s (batch)", "ms/query (single)", "recall@10"],
                      rows, "lrlrrr")


def table_filtered(result: dict[str, Any]) -> str:
    """Filtered batch search of the fresh build against the exact filtered top-10."""
    rows = []
    for s in STORES:
        p = _phase(result, f"{s}_filter")
        for r in (p["rows"] if p else []):
            rows.append([STORE_NAMES[s], f"`{r['where']}`", f"{100 * r['selectivity']:.1f}%", _setting(r),
                         _n(r.get("nprobe_visited")), f"{r['qps_batch']:,.0f}", f"{r['recall@10']:.3f}"])
    return C.md_table(["store", "filter", "rows kept", "setting", "IVF lists visited", "queries/s (batch)",
                       "recall@10"], rows, "llrlrrr")


def table_after(result: dict[str, Any]) -> str:
    """Search of the gallery after add + remove (default settings): recall holds, removed ids stay out."""
    rows = []
    for s in STORES:
        p = _phase(result, f"{s}_after")
        for r in (p["rows"] if p else []):
            rows.append([STORE_NAMES[s], _n(p["n"]), "none" if r["where"] is None else f"`{r['where']}`",
                         f"{r['qps_batch']:,.0f}", f"{r['recall@10']:.3f}", str(p["removed_returned"])])
    return C.md_table(["store", "gallery", "filter", "queries/s (batch)", "recall@10", "removed ids returned"],
                      rows, "lrlrrr")


def table_real(result: dict[str, Any]) -> str:
    """The real gallery: recall@10 of each store, unfiltered and filtered by label."""
    p = _phase(result, "real")
    rows = [[STORE_NAMES[r["store"]], r["filter"], f"{100 * p['selectivity'][r['filter']]:.1f}%",
             f"{r['qps_batch']:,.0f}", f"{r['recall@10']:.3f}"] for r in (p["rows"] if p else [])]
    return C.md_table(["store", "filter on label", "images kept", "queries/s (batch)", "recall@10"], rows, "llrrr")


def table_targets(result: dict[str, Any]) -> str:
    """The issue's targets: what was measured, and whether each holds."""
    sm = summary(result)
    f, t = sm["stores"]["faiss"], sm["targets"]
    best = f.get("search_fastest_at_target_recall")
    b, a = _phase(result, "faiss_build"), _phase(result, "faiss_add")
    rows = [["FAISS IVF-PQ + fp16 re-rank: >= 1,000 q/s at recall@10 >= 0.95 (batch, 2 cores)",
             (f"{best['qps_batch']:,.0f} q/s at recall@10 {best['recall@10']:.3f} ({_setting(best)})" if best
              else "no setting reached recall@10 0.95") if _rows(result, "faiss_search") else "–",
             _yes(t["faiss_search_1000qps_at_recall_0.95"])],
            [f"adding {_n(a['n_added']) if a else '–'} vectors to a {_n(b['n']) if b else '–'} index: under 10% of "
             "a full build", f"{_s(build_seconds(a))} / {_s(build_seconds(b))} = {100 * f['add_ratio']:.1f}%"
             if "add_ratio" in f else "–", _yes(t["faiss_add_100k_under_10pct_of_build"])]]
    for s in STORES:
        filt = sm["stores"][s].get("filtered") or {}
        for name, v in filt.items():
            fast = v["fastest_at_target"]
            rows.append([f"{STORE_NAMES[s]}: filtered recall@10 >= 0.95, {name} of the rows kept",
                         f"best {v['best_recall']:.3f}" + (f"; {fast['qps_batch']:,.0f} q/s at {_setting(fast)}"
                                                          if fast else ""),
                         _yes(v["best_recall"] >= RECALL_TARGET)])
    return C.md_table(["target", "measured", "holds"], rows, "llr")


def tables(result: dict[str, Any]) -> str:
    """Every table, titled (what ``run.py`` prints)."""
    parts = [("Build, add, remove", table_mutations), ("Search, fresh build", table_search),
             ("Filtered search, fresh build", table_filtered), ("After add + remove", table_after),
             ("Real gallery", table_real), ("Targets", table_targets)]
    return "\n\n".join(f"{title}\n\n{fn(result)}" for title, fn in parts)


# ----------------------------------------------------------------------------- the docs section
def _loads(result: dict[str, Any], names: tuple[str, ...] | None = None) -> tuple[float, float]:
    """The lowest and highest 1-minute load average at the start and end of the phases ``names`` (default all)."""
    phases = [p for k, p in (result.get("phases") or {}).items() if names is None or k in names]
    loads = [x for p in phases for x in (p["load_avg_start"][0], p["load_avg_end"][0])]
    return (min(loads), max(loads)) if loads else (0.0, 0.0)


def _load_note(result: dict[str, Any], kind: str) -> str:
    names = tuple(f"{s}_{kind}" for s in STORES)
    if not any(_phase(result, n) for n in names):
        return ""
    per = []
    for n in names:
        if _phase(result, n):
            lo, hi = _loads(result, (n,))
            per.append(f"{STORE_NAMES[n.split('_')[0]]} {lo:.1f}–{hi:.1f}")
    return " Load average at the phases' start and end: " + ", ".join(per) + "."


def _milvus_index(probe: dict[str, Any] | None) -> str:
    if not probe or not probe.get("kind"):
        return "as the store builds it"
    return f"{probe['kind']} (" + ", ".join(f"{k} {v}" for k, v in (probe.get("params") or {}).items()) + ")"


def _setup(result: dict[str, Any]) -> str:
    d, s = result["settings"]["data"], result.get("phases") or {}
    sel = (s.get("data") or {}).get("selectivity") or {}
    fb = (s.get("faiss_build") or {}).get("params") or {}
    faiss = (f"nlist {fb['nlist']:,}, {fb['m']} x {fb['nbits']}-bit PQ codes, training on {fb['train_size']:,} "
             f"vectors, nprobe {fb['nprobe']}, the {fb['k_factor']}·k best PQ candidates re-ranked with fp16 vectors"
             if fb else "not built yet")
    probe = s.get("milvus_probe")
    stops = "".join(
        f"A try at {_n(a['n'])} rows was stopped after {a['running_s'] / 60:.0f} min still building "
        f"({_gb(a['rss_bytes'])} resident, {_gb(a.get('db_bytes'))} on disk): the small gallery's rate did not "
        "extrapolate. " for a in result.get("stopped") or [] if a["phase"] == "milvus_build")
    growth = ("" if not probe or probe.get("growth_exponent", 1.0) <= 1.0 else
              f" (build time taken to grow like size^{probe['growth_exponent']:.2f}, the exponent through the "
              "probe and the stopped try)")
    milvus = ("Not measured" if not probe else
              stops + f"Its build ran at {probe['rows_per_s']:,.0f} rows/s on {_n(probe['n'])} rows{growth}; predicted "
              + ", ".join(f"{_n(int(k))} rows {_s(v)}" for k, v in probe["predicted_s"].items())
              + f" for its phases, so it ran at {_n(probe['chosen_n'])} rows"
              + ("" if probe["full_size"] else
                 (f" (the largest size under the {_s(probe['budget_s'])} budget)" if probe.get("fits_budget", True)
                  else f" (the smallest size listed: none fits the {_s(probe['budget_s'])} budget)")
                 + f", not {_n(d['n'])}: its rows are the first {_n(probe['chosen_n'])} of the same data, "
                 "with a tenth as many added and a hundredth removed, as for FAISS"))
    m = result["machine"]
    lo, hi = _loads(result)
    v = result["versions"]
    return "\n".join([
        f"**Setup.** A gallery of {_n(d['n'])} synthetic {d['dim']}-d vectors (`benchmarks.search_speed`'s generator "
        f"and seed: the first {_n(d['n'])} rows are that benchmark's gallery), {_n(d['n_add'])} more vectors of the "
        f"same clusters added to it, then {_n(d['n_remove'])} ids removed (old and added rows alike). Three metadata "
        "columns are drawn independently of the vectors: `shard2`, `shard10` and `shard100` hold one of 2, 10 or 100 "
        "values, so the filters "
        + ", ".join(f"`{w}` keep {100 * sel.get(k, 0):.1f}%" for k, w in (("50%", "shard2 = '0'"),
                                                                           ("10%", "shard10 = '0'"),
                                                                           ("1%", "shard100 = '0'")))
        + " of the rows, spread over the whole vector space (the hard case for an IVF index: the filter "
        "thins every list instead of selecting a few). "
        f"{d['queries']:,} queries are new points of the same clusters, sent in one batch; recall@10 is the "
        "overlap with the exact (filtered) top 10, computed by blockwise matrix products over the same rows.",
        "",
        f"FAISS: `dva index --kind ivfpq` with the product defaults ({faiss}); the tables vary nprobe and "
        "k_factor at search time. A filter is applied inside the IVF scan (an id selector), not by "
        "over-fetching and dropping, and a filtered search visits nprobe / (fraction of rows kept) lists, "
        "capped at nlist (the store's rule, so that a rare value still finds its neighbours); a filter that "
        "keeps few rows is instead scored exactly on the kept rows' fp16 copies (the store's choice: "
        "\"exact scan\" below).",
        "",
        f"Milvus Lite (embedded, one file) with the store's own index: {_milvus_index(probe)}. {milvus}.",
        "",
        f"**Machine.** {m['cpu_count']} CPU cores ({m.get('cpu_model') or m.get('processor')}), load average "
        f"{lo:.1f}–{hi:.1f} at the phases' starts and ends; faiss-cpu {v.get('faiss-cpu')}, pymilvus "
        f"{v.get('pymilvus')}, milvus-lite {v.get('milvus-lite')}. Each phase ran in a process of its own: its peak "
        "RSS is its own (the Milvus Lite engine's process included), and a phase that reads the "
        "memory-mapped vectors counts the pages it touched.",
    ])


def section(result: dict[str, Any]) -> str:
    """The body of the docs section (between the markers), every number from ``result``."""
    status = ("" if result.get("status") == "complete" else
              f"\n**Partial run**: the phases {', '.join(result.get('phases_pending') or [])} are not measured yet.\n")
    real = _phase(result, "real")
    real_text = ("" if not real else
                 f"**Real gallery**: {real['dataset']}'s test half, {_n(real['images'])} images of {real['classes']} "
                 f"classes, embedded by {real['model']}; every image is a query; FAISS index "
                 f"{real['faiss']['kind']} ({', '.join(f'{k} {v}' for k, v in (real['faiss']['params'] or {}).items())}).")
    cmd = "python -m benchmarks.gallery_db.run --work WORK" + (" --quick" if result["settings"].get("profile") == "quick"
                                                                else "")
    return "\n\n".join(filter(None, [
        "How a gallery behaves as a database: images added and removed without a rebuild, and searches "
        "restricted by a metadata filter, on FAISS (the default store) and on Milvus Lite. Script: "
        "`benchmarks/gallery_db/`; raw results (command, commit, machine, versions, every number): "
        "`benchmarks/results/gallery_db.json`. Rendered from it by `python -m benchmarks.gallery_db.render`.",
        f"```\nOMP_WAIT_POLICY=PASSIVE {cmd}    # WORK: a scratch folder; add --reuse to resume\n```",
        status.strip(), _setup(result),
        "**Build, add, remove.** Each on a copy of the previous state; an add or remove is committed (written "
        "to disk) before its clock stops." + _load_note(result, "build"), table_mutations(result),
        "**Search, fresh build** (no filter)." + _load_note(result, "search"), table_search(result),
        "**Filtered search, fresh build**, against the exact filtered top 10." + _load_note(result, "filter"),
        table_filtered(result),
        "**After add + remove** (default settings): recall against the exact top 10 of the gallery as it "
        "now is, and how many removed ids came back in any result.", table_after(result),
        real_text, table_real(result) if real else "",
        "**Targets** (issue 27).", table_targets(result), findings(result),
    ]))


def _default_row(rows: list[dict[str, Any]], filt: str = "none") -> dict[str, Any] | None:
    return next((r for r in rows if r.get("default") and r.get("filter", "none") == filt), None)


def _search_speed_default(n: int) -> dict[str, Any] | None:
    """The IVF-PQ + fp16 row at the default nprobe of ``benchmarks/results/search_speed.json`` for ``n`` vectors."""
    path = C.RESULTS / "search_speed.json"
    if not path.is_file():
        return None
    old = json.loads(path.read_text())
    rows = [r for r in old.get("search", []) if r["n"] == n and r.get("params", {}).get("refine") == "fp16"]
    return ({**min(rows, key=lambda r: r["params"]["nprobe"]), "load": old["machine"].get("load_avg_at_end")}
            if rows else None)


def _scan_sentence(store: str, rows: list[dict[str, Any]]) -> str:
    """The rarest filter a store answers by an exact scan, against its index path forced (empty when none)."""
    for name in ("1%", "10%", "50%"):
        scan = next((r for r in rows if r["filter"] == name and r.get("path") == "exact scan"), None)
        forced = next((r for r in rows if r["filter"] == name and str(r.get("path", "")).endswith("(forced)")), None)
        if not scan:
            continue
        how = "IVF lists" if store == "faiss" else "its HNSW graph"
        text = (f"{STORE_NAMES[store]} at {name} of the rows kept scores the {_n(scan['rows_scanned'])} kept rows' "
                f"stored vectors exactly instead of searching {how}: {scan['qps_batch']:,.0f} q/s at recall@10 "
                f"{scan['recall@10']:.3f}")
        if forced:
            way = (f"the IVF path (forced; nprobe {forced['nprobe']}, k_factor {forced['k_factor']})"
                   if store == "faiss" else f"the HNSW path (forced; ef {forced['ef']})")
            text += (f", where {way} gives {forced['qps_batch']:,.0f} q/s at {forced['recall@10']:.3f}"
                     + (": with a rare value the true neighbours lie far away, where PQ codes rank the re-ranking "
                        "candidates poorly" if store == "faiss" else ": the graph walk under a filter that excludes "
                        "most nodes misses neighbours"))
        return text + "."
    return ""


def findings(result: dict[str, Any]) -> str:
    """What the numbers say, each sentence computed from them (empty while the phases it needs are missing)."""
    out = []
    plain, filt = _rows(result, "faiss_search"), _rows(result, "faiss_filter")
    d, s = _default_row(plain), _phase(result, "faiss_search")
    old = _search_speed_default(s["n"]) if s else None
    if d and old and old["params"]["nprobe"] == d["nprobe"]:
        lo, hi = s["load_avg_start"][0], s["load_avg_end"][0]
        out.append(f"The plain {_n(s['n'])} search at the product defaults (nprobe {d['nprobe']}, k_factor "
                   f"{d['k_factor']}) answers {d['qps_batch']:,.0f} q/s at recall@10 {d['recall@10']:.3f} here "
                   f"(load average {lo:.1f} when the phase began, {hi:.1f} when it ended); the search speed section "
                   f"above measured {old['qps_batch']:,.0f} q/s at {old['recall@10']:.3f} on the same vectors with "
                   f"{old['queries']:,} other queries (load average {old['load'][0]:.1f}).")
    one = next((r for r in filt if r["filter"] == "1%" and r.get("default") and r.get("path") != "ivf (forced)"),
               None)
    if d and one and one.get("path") != "exact scan":
        out.append(f"At 1% of the rows kept, the default filtered search visits {_n(one['nprobe_visited'])} lists "
                   f"(nprobe {one['nprobe']} / 0.01, capped at nlist) and answers {one['qps_batch']:,.0f} q/s at "
                   f"recall@10 {one['recall@10']:.3f}, {d['qps_batch'] / one['qps_batch']:.1f}x slower than "
                   "the unfiltered search at the same settings.")
    out += [x for st in STORES if (x := _scan_sentence(st, _rows(result, f"{st}_filter")))]
    for name in ("1%", "10%"):  # the rarest filter searched through IVF lists
        ivf = [r for r in filt if r["filter"] == name and r.get("path", "ivf") == "ivf"]
        base = next((r for r in ivf if r.get("default")), None)
        kfs = sorted((r for r in ivf if base and r["nprobe"] == base["nprobe"]), key=lambda r: r["k_factor"])
        if len(kfs) < 2:
            continue
        probes = [r["recall@10"] for r in ivf if r["k_factor"] == base["k_factor"]]
        by_kf = max(r["recall@10"] for r in kfs) - min(r["recall@10"] for r in kfs)
        why = (": the re-ranking, not the lists visited, decides the recall here (recall@10 "
               f"{min(probes):.3f}–{max(probes):.3f} over every nprobe measured at k_factor {base['k_factor']})"
               if by_kf > 0.01 and max(probes) - min(probes) < by_kf / 2 else "")
        out.append(f"At {name} of the rows kept, recall@10 by the re-ranked candidates per neighbour (k_factor, at "
                   f"nprobe {base['nprobe']}): " + ", ".join(f"{r['recall@10']:.3f} at {r['k_factor']} "
                                                             f"({r['qps_batch']:,.0f} q/s)" for r in kfs) + why + ".")
        break
    m_one = [r for r in _rows(result, "milvus_filter") if r["filter"] == "1%" and r.get("path", "hnsw") == "hnsw"]
    if len(m_one) > 1:
        lo_ef, hi_ef = min(m_one, key=lambda r: r["ef"]), max(m_one, key=lambda r: r["ef"])
        out.append(f"Milvus Lite's HNSW at 1% of the rows kept: recall@10 {lo_ef['recall@10']:.3f} at ef "
                   f"{lo_ef['ef']}, {hi_ef['recall@10']:.3f} at ef {hi_ef['ef']} ({hi_ef['qps_batch']:,.0f} "
                   f"against {lo_ef['qps_batch']:,.0f} q/s): a filter that keeps few rows needs a wider search.")
    m_plain = _default_row(_rows(result, "milvus_search"))
    m_half = next((r for r in _rows(result, "milvus_filter") if r["filter"] == "50%" and r.get("default")), None)
    if m_plain and m_half:
        out.append(f"Milvus Lite with a filter that keeps 50% (its HNSW path, ef {m_half['ef']}): "
                   f"{m_half['qps_batch']:,.0f} q/s against {m_plain['qps_batch']:,.0f} unfiltered; single queries "
                   f"{m_half['latency_ms_single']:,.0f} ms against {m_plain['latency_ms_single']:,.0f} ms.")
    mem = (_phase(result, "data") or {}).get("import_memory")
    if mem:
        out.append(f"Memory floor: a fresh process that imports both stores holds {_gb(mem['rss_bytes'])} resident "
                   f"({_gb(mem['anon_bytes'])} of it anonymous): `import dva` brings torch along.")
    return "**What this says.**\n" + "\n".join(f"- {x}" for x in out) if out else ""


def put(doc: str, body: str) -> str:
    """``doc`` with the region's body replaced (the section and its markers appended when absent)."""
    if BEGIN not in doc:
        return C.replace_section(doc, HEADING, f"{BEGIN}\n{body.strip()}\n{END}")
    i, j = doc.index(BEGIN) + len(BEGIN), doc.index(END)
    return doc[:i] + f"\n{body.strip()}\n" + doc[j:]


def get(doc: str) -> str:
    """The region's body in ``doc``."""
    i, j = doc.find(BEGIN), doc.find(END)
    if i < 0 or j < i:
        raise ValueError(f"{C.repo_relative(C.DOC)}: no region `{REGION}`; run `python -m benchmarks.gallery_db.render`")
    return doc[i + len(BEGIN):j]


def check(result: dict[str, Any] | None = None, doc: str | None = None) -> list[str]:
    """Every number or line of the docs region that differs from its rendering from the JSON."""
    from benchmarks.cub100 import quantities as Q

    result = result or json.loads(RESULT.read_text())
    doc = C.DOC.read_text() if doc is None else doc
    return Q.compare(get(doc), section(result), f"{C.repo_relative(C.DOC)} [{REGION}]")


def main(argv: list[str] | None = None) -> int:
    """Write the docs section from the JSON, or ``--check`` it."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gallery_db.render", description=__doc__.split("\n")[0])
    ap.add_argument("--result", type=Path, default=RESULT)
    ap.add_argument("--check", action="store_true", help="compare only; exit 1 when the docs differ")
    args = ap.parse_args(argv)
    result = json.loads(args.result.read_text())
    if args.check:
        problems = check(result)
        print("\n".join(problems) or "docs/BENCHMARKS.md [gallery-db] matches the JSON")
        return 1 if problems else 0
    C.write_text(C.DOC, put(C.DOC.read_text(), section(result)))
    print(f"wrote {C.repo_relative(C.DOC)} [{REGION}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""benchmarks/gallery_db: the data, the exact reference, the id map, the phase harness, resuming, rendering."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from benchmarks import _common as C
from benchmarks.gallery_db import exact
from benchmarks.gallery_db import render as R
from benchmarks.gallery_db.data import FILTERS, Data, DataSpec, generate, removed_rows
from benchmarks.gallery_db.harness import run_child
from benchmarks.gallery_db.measure import IdMap, measure_search

SMALL = DataSpec(n=3000, n_add=300, n_remove=30, queries=40, dim=32, latent=8, cluster_size=50)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Data:
    return Data(generate(SMALL, tmp_path_factory.mktemp("data")))


def test_the_gallery_is_search_speeds_gallery_bit_for_bit(data):
    from benchmarks.search_speed.run import make_data

    s = SMALL
    x, q = make_data(s.n, s.queries, s.dim, s.latent, s.cluster_size, s.noise, s.iso, s.seed)
    assert np.array_equal(np.asarray(data.vectors[: s.n]), x) and np.array_equal(data.queries, q)
    assert data.total == s.n + s.n_add and data.vectors.dtype == np.float32
    norms = np.linalg.norm(np.asarray(data.vectors), axis=1)
    assert np.allclose(norms, 1.0, atol=1e-5)
    assert not np.allclose(np.asarray(data.vectors[s.n:s.n + 5]), x[:5])  # the added rows are new points


def test_filters_keep_their_nominal_share_of_the_rows_and_arrive_as_strings(data):
    for name, nominal in (("50%", 0.5), ("10%", 0.1), ("1%", 0.01)):
        share = data.mask(name).mean()
        assert abs(share - nominal) < 4 * np.sqrt(nominal * (1 - nominal) / data.total) + 1e-3, (name, share)
    extras = data.extras(np.arange(5))
    assert all(set(e) == {"shard2", "shard10", "shard100"} and all(isinstance(v, str) for v in e.values())
               for e in extras)
    rows = np.flatnonzero(data.mask("10%"))[:3]
    assert all(e["shard10"] == "0" for e in data.extras(rows))  # the filter expression matches the mask
    assert FILTERS["10%"] == "shard10 = '0'"
    assert data.paths([7, 1234]) == ["synthetic/0000007.jpg", "synthetic/0001234.jpg"]


def test_generate_again_with_the_same_spec_keeps_the_files_and_another_spec_replaces_them(tmp_path):
    spec = DataSpec(n=200, n_add=20, n_remove=2, queries=4, dim=8, latent=4, cluster_size=20)
    generate(spec, tmp_path)
    stamp = (tmp_path / "vectors.npy").stat().st_mtime_ns
    generate(spec, tmp_path)
    assert (tmp_path / "vectors.npy").stat().st_mtime_ns == stamp
    generate(DataSpec(**{**spec.to_dict(), "n": 300}), tmp_path)
    assert Data(tmp_path).total == 320


def test_removed_rows_are_seeded_distinct_and_alive():
    alive = np.zeros(1000, bool)
    alive[::3] = True
    a, b = removed_rows(alive, 50, 0), removed_rows(alive, 50, 0)
    assert np.array_equal(a, b) and len(np.unique(a)) == 50 and alive[a].all()
    assert not np.array_equal(a, removed_rows(alive, 50, 1))


def _brute(vectors, queries, mask, k):
    s = np.where(mask[None, :], queries @ vectors.T, -np.inf)
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.where(np.take_along_axis(s, order, 1) > -np.inf, order, -1)


def test_exact_topk_matches_brute_force_for_every_view_and_pads_short_ones(data):
    x = np.asarray(data.vectors)
    rng = np.random.default_rng(0)
    views = {"all": np.ones(len(x), bool), "10%": data.mask("10%"), "few": np.zeros(len(x), bool)}
    views["few"][rng.choice(len(x), 4, replace=False)] = True
    got = exact.exact_topk(data.vectors, data.queries, 10, views, block=257)  # blocks cut anywhere
    for name, m in views.items():
        want = _brute(x, data.queries, m, 10)
        assert np.array_equal(got[name][1], want), name
    assert (got["few"][1][:, 4:] == -1).all() and np.isneginf(got["few"][0][:, 4:]).all()
    assert np.all(np.diff(got["all"][0], axis=1) <= 0)  # best first


def test_recall_counts_overlap_and_never_the_padding():
    ex = np.array([[1, 2, 3, 4], [5, 6, -1, -1]])
    assert exact.recall_at(np.array([[4, 3, 9, 8], [6, 5, -1, -1]]), ex) == pytest.approx((0.5 + 1.0) / 2)
    assert exact.recall_at(np.array([[-1, -1, -1, -1], [-1, -1, -1, -1]]), ex) == 0.0


def test_exact_save_and_load_round_trip(tmp_path):
    t = {"all": (np.zeros((2, 3), np.float32), np.arange(6).reshape(2, 3))}
    exact.save(tmp_path / "t.npz", t)
    assert np.array_equal(exact.load(tmp_path / "t.npz")["all"], np.arange(6).reshape(2, 3))
    assert [p.name for p in tmp_path.iterdir()] == ["t.npz"]


def test_idmap_translates_both_ways_and_refuses_reused_or_unknown_ids(tmp_path):
    m = IdMap(100, np.array([205, 200, 201]), np.array([1005, 1000, 1001]))
    assert m.rows(np.array([[3, 200, -1], [205, 99, 201]])).tolist() == [[3, 1000, -1], [1005, 99, 1001]]
    assert m.ids(np.array([5, 1001, 1005])).tolist() == [5, 201, 205]
    m.save(tmp_path / "m.npz")
    assert IdMap.load(tmp_path / "m.npz").rows(np.array([201])).tolist() == [1001]
    with pytest.raises(ValueError, match="no build or add gave out"):
        m.rows(np.array([202]))
    with pytest.raises(ValueError, match="reused"):
        IdMap(100, np.array([50]), np.array([1000]))


class _Exact:
    """A store that answers exactly (through the protocol's search) with ids = rows + 0."""

    def __init__(self, x, alive):
        self.x, self.alive = x, alive

    def search(self, q, k, where=None):
        rows = _brute(self.x, q, self.alive, k)
        return np.zeros(rows.shape, np.float32), rows


def test_measure_search_gives_full_recall_for_an_exact_store_and_times_it(data):
    x = np.asarray(data.vectors)
    alive = np.ones(len(x), bool)
    ref = exact.exact_topk(data.vectors, data.queries, 10, {"all": alive})["all"][1]
    m = measure_search(_Exact(x, alive), data.queries, ref, IdMap(len(x)), repeats=2, single=3)
    assert m["recall@10"] == 1.0 and m["qps_batch"] > 0 and m["queries"] == SMALL.queries
    assert 1 <= m["batch_calls"] <= 2 and m["latency_ms_single"] > 0 and m["short_rows"] == 0
    half = alive.copy()
    half[::2] = False  # a store that misses half the rows
    assert measure_search(_Exact(x, half), data.queries, ref, IdMap(len(x)), repeats=1)["recall@10"] < 0.8


def test_run_child_measures_the_childs_own_peak_memory_and_reports_a_failure(tmp_path):
    out = tmp_path / "r.json"
    # The child holds its 300 MiB for half a second: a sampler every 20 ms must see it (memory freed
    # at once could fall between two samples on a loaded machine).
    code = ("import json, sys, time, numpy as np; a = np.ones(300 * 2**20 // 8); time.sleep(0.5); "
            f"json.dump({{'sum': float(a.sum())}}, open({str(out)!r}, 'w'))")
    res = run_child([sys.executable, "-c", code], C.child_env(), out, interval=0.02)
    assert res["sum"] == 300 * 2**20 // 8 and res["wall_s"] > 0
    assert res["peak_rss_bytes"] >= 300 * 2**20 and res["peak_anon_bytes"] >= 250 * 2**20
    with pytest.raises(RuntimeError, match="exited with status 3") as e:
        run_child([sys.executable, "-c", "raise SystemExit(3)"], C.child_env(), tmp_path / "none.json")
    assert e.value.record["returncode"] == 3 and e.value.record["running_s"] > 0


def test_the_command_recorded_names_no_scratch_folder():
    from benchmarks.gallery_db.run import shown_argv

    assert shown_argv(["--work", "/tmp/x", "--quick"]) == ["--work", "WORK", "--quick"]
    assert shown_argv(["--work=/tmp/x"]) == ["--work=WORK"]


def _run(tmp_path, *extra):
    from benchmarks.gallery_db.run import main

    out = tmp_path / "r.json"
    argv = ["--work", str(tmp_path / "w"), "--quick", "--n", "2000", "--queries", "12", "--out", str(out), *extra]
    return main(argv), out


def test_phases_run_in_children_resume_with_reuse_and_redo(tmp_path, capsys):
    rc, out = _run(tmp_path, "--phases", "truth")
    first = json.loads(out.read_text())
    assert rc == 0 and first["status"] == "partial" and list(first["phases"]) == ["data", "truth"]
    assert first["phases_pending"][:2] == ["faiss_build", "faiss_search"] and "real" in first["phases_pending"]
    assert first["command"].startswith("python -m benchmarks.gallery_db.run --work WORK --quick")
    data = first["phases"]["data"]
    assert data["rows"] == 2200 and data["peak_rss_bytes"] > 0 and data["ru_maxrss_self_bytes"] > 0
    assert data["import_memory"]["rss_bytes"] > data["import_memory"]["anon_bytes"] > 0
    # the reference the truth phase cached is the brute-force one
    d = Data(tmp_path / "w" / "data")
    truth = exact.load(next((tmp_path / "w" / "truth").glob("n2000_base.npz")))
    base = np.zeros(d.total, bool)
    base[:2000] = True
    assert np.array_equal(truth["10%"], _brute(np.asarray(d.vectors), d.queries, base & d.mask("10%"), 10))

    rc, _ = _run(tmp_path, "--phases", "truth", "--reuse")
    again = json.loads(out.read_text())
    assert rc == 0 and again["phases"] == first["phases"]  # nothing re-measured
    assert "== data: reused" in capsys.readouterr().out
    rc, _ = _run(tmp_path, "--phases", "truth", "--reuse", "--redo", "truth")
    redone = json.loads(out.read_text())
    assert redone["phases"]["data"] == first["phases"]["data"]
    assert redone["phases"]["truth"]["wall_s"] != first["phases"]["truth"]["wall_s"]
    with pytest.raises(SystemExit, match="made with other settings"):
        _run(tmp_path, "--phases", "truth", "--reuse", "--queries", "13")
    rc, _ = _run(tmp_path, "--phases", "truth", "--reuse", "--milvus-budget-s", "99")  # only Milvus's size depends on it
    assert rc == 0 and json.loads(out.read_text())["settings"]["milvus_budget_s"] == 99


def test_work_inside_the_repository_is_refused():
    from benchmarks.gallery_db.run import main

    with pytest.raises(SystemExit, match="inside the repository"):
        main(["--work", str(C.REPO / "runs" / "gdb"), "--quick", "--phases", "data"])


# ----------------------------------------------------------------------------- rendering
def _search(qps, recall, **setting):
    return {"qps_batch": qps, "recall@10": recall, "queries": 1000, **setting}


def _phase(**kw):
    return {"wall_s": 1.0, "peak_rss_bytes": 2**30, "peak_anon_bytes": 2**29, "load_avg_start": [1.0, 1, 1],
            "load_avg_end": [2.0, 1, 1], **kw}


@pytest.fixture()
def result():
    sel = {"50%": 0.5, "10%": 0.1, "1%": 0.01}
    filt = [dict(_search(900, r, nprobe=125, k_factor=8, default=True), filter=f, where=FILTERS[f],
                 selectivity=sel[f], nprobe_visited=250) for f, r in (("50%", 0.99), ("10%", 0.97), ("1%", 0.93))]
    return {
        "command": "python -m benchmarks.gallery_db.run --work WORK", "status": "complete",
        "settings": {"data": DataSpec().to_dict()},
        "machine": {"cpu_count": 2, "cpu_model": "a CPU"},
        "versions": {"faiss-cpu": "1.15.1", "pymilvus": "3.0.2", "milvus-lite": "3.2.2"},
        "phases": {
            "data": _phase(selectivity=sel),
            "faiss_build": _phase(n=1_000_000, build_s=600.0, disk_bytes=1.6e9,
                                  params={"nlist": 4000, "m": 64, "nbits": 8, "train_size": 160000, "nprobe": 125,
                                          "k_factor": 8}),
            "faiss_search": _phase(n=1_000_000, rows=[_search(1500, 0.94, nprobe=31, k_factor=8, default=False),
                                                      _search(1100, 0.96, nprobe=62, k_factor=8, default=False),
                                                      _search(700, 0.99, nprobe=125, k_factor=8, default=True)]),
            "faiss_filter": _phase(n=1_000_000, rows=filt),
            "faiss_add": _phase(n_added=100_000, add_s=30.0),
            "faiss_remove": _phase(n_removed=10_000, remove_s=2.0, ids_per_s=5000.0),
        },
    }


def test_summary_decides_each_target_from_the_numbers(result):
    t = R.summary(result)["targets"]
    assert t["faiss_search_1000qps_at_recall_0.95"] is True  # 1,100 q/s at 0.96; 1,500 at 0.94 does not count
    assert t["faiss_add_100k_under_10pct_of_build"] is True  # 30 s / 600 s
    assert t["faiss_filtered_recall_0.95"] == {"50%": True, "10%": True, "1%": False}
    assert t["milvus_filtered_recall_0.95"] is None  # not measured
    result["phases"]["faiss_add"]["add_s"] = 61.0
    result["phases"]["faiss_search"]["rows"][1]["recall@10"] = 0.949
    t = R.summary(result)["targets"]
    assert t["faiss_add_100k_under_10pct_of_build"] is False and t["faiss_search_1000qps_at_recall_0.95"] is False


def test_the_targets_table_says_what_was_measured(result):
    table = R.table_targets(result)
    assert "| 1,100 q/s at recall@10 0.960 (nprobe=62, k_factor=8) | **yes** |" in table
    assert "| 30 s / 600 s = 5.0% | **yes** |" in table
    assert "1% of the rows kept | best 0.930 | **no** |" in table


def test_the_section_renders_partial_results_and_the_check_finds_an_edited_number(result):
    result["status"], result["phases_pending"] = "partial", ["milvus_build"]
    body = R.section(result)
    assert "**Partial run**: the phases milvus_build are not measured yet." in body
    assert "`shard100 = '0'` keep 1.0%" in body and "nlist 4,000" in body
    # findings are computed: the 1M default row against search_speed.json's, the 1% filter against no filter
    old = json.loads((C.RESULTS / "search_speed.json").read_text())
    row = next(r for r in old["search"] if r["n"] == 1_000_000 and r["method"] == "ivfpq + fp16 re-rank, nprobe=125")
    assert f"measured {row['qps_batch']:,.0f} q/s at {row['recall@10']:.3f} on the same vectors" in body
    assert "answers 700 q/s at recall@10 0.990 here" in body
    assert "visits 250 lists (nprobe 125 / 0.01, capped at nlist) and answers 900 q/s at recall@10 0.930, 0.8x" in body
    doc = R.put("# Benchmarks\n\n## Other\n\ntheirs\n", body)
    assert doc.startswith("# Benchmarks\n\n## Other\n\ntheirs\n") and R.HEADING in doc
    assert R.get(doc).strip() == body.strip() and R.check(result, doc) == []
    edited = doc.replace("| 1,100 |", "| 1,200 |", 1)
    assert edited != doc
    problems = R.check(result, edited)
    assert len(problems) == 1 and "the doc says 1,200, the JSON gives 1,100" in problems[0]
    assert R.put(doc, body) == doc  # rendering again changes nothing
    with pytest.raises(ValueError, match="no region `gallery-db`"):
        R.get("# Benchmarks\n")


def test_the_docs_section_matches_the_committed_json():
    assert R.RESULT.is_file(), f"{R.RESULT} is missing: run python -m benchmarks.gallery_db.run"
    assert R.check() == []


def test_real_gallery_label_filters_pick_spread_classes_and_quote_them():
    from benchmarks.gallery_db.real import label_filters

    names = [f"class_{i:02d}" for i in range(50)] + ["Anna's_Hummingbird"]
    f = label_filters(names * 2)
    expr, chosen = f["1 class"]
    assert expr == "label = 'Anna''s_Hummingbird'" and chosen == ["Anna's_Hummingbird"]  # quote doubled
    expr, chosen = f["10% of classes"]
    assert len(chosen) == 5 == len(set(chosen)) and expr.startswith("label in ('Anna''s_Hummingbird', 'class_09'")
    assert len(f["50% of classes"][1]) == 25

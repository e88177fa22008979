"""The static report and the one-call pipeline the demo uses."""
from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dva.retrieval.report import plot_curves, read_log
from dva.retrieval.pipeline import index_search_report


def _write_log(path: Path) -> Path:
    lines = []
    for step in range(1, 11):
        lines.append({"kind": "train", "epoch": step // 5, "step": step, "loss": 3.0 / step,
                      "loss_proxy": 2.0 / step, "loss_dpt": 0.5 / step, "lr": 1e-3, "seconds": 0.1,
                      "img_per_s": 100.0})
    lines.append({"kind": "eval", "epoch": 1, "step": 5, "recall@1": 0.5, "recall@2": 0.6,
                  "recall@4": 0.7, "recall@8": 0.8, "map@r": 0.3})
    lines.append({"kind": "eval", "epoch": 2, "step": 10, "recall@1": 0.55, "map@r": 0.32})
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(json.dumps(x) for x in lines) + '\n{"kind": "train", "step": 11, "lo'  # cut line
    path.write_text(text)
    return path


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []
        self.hits: list[str] = []
        self.rows = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.srcs.append(a["src"])
        if tag == "figure" and "hit" in a.get("class", ""):
            self.hits.append(a["data-same"])
        if tag == "div" and a.get("class") == "row":
            self.rows += 1


def test_pipeline_writes_report_with_marks_maps_and_curves(embedder, gallery, tmp_path):
    paths, labels = gallery
    log = _write_log(tmp_path / "run" / "log.jsonl")
    queries = [paths[0], paths[4], paths[8]]
    # k=9 > 7 other images per class: every row must show both marks
    res = index_search_report(embedder, paths, labels, queries, tmp_path / "out", log_path=log, k=9,
                              class_names=["red", "green", "blue"])
    html_path = Path(res["report_html"])
    assert html_path.exists() and res["num_gallery"] == 24 and res["num_skipped"] == 0
    assert res["self_hit_rate"] == 1.0 and 0 <= res["precision_at_k"] <= 1
    assert res["curves_png"] and Image.open(res["curves_png"]).size[0] > 300

    parser = _Links()
    parser.feed(html_path.read_text())
    assert parser.rows == 3
    for src in parser.srcs:
        assert not src.startswith(("/", "http")), f"links must be relative: {src}"
        assert (html_path.parent / src).is_file(), f"missing {src}"
        Image.open(html_path.parent / src).verify()
    assert "curves.png" in parser.srcs
    assert sum(s.endswith("_frozen.png") for s in parser.srcs) == 3
    assert sum(s.endswith("_dva.png") for s in parser.srcs) == 3
    # k + 1 hits per gallery query: the self hit plus k others, all marked
    assert len(parser.hits) == 3 * 10 and parser.hits.count("self") == 3
    assert set(parser.hits) == {"self", "same", "diff"}
    # marks agree with the labels
    text = html_path.read_text()
    rows = re.findall(r'<div class="row" id="q(\d)">(.*?)</div>(?=<div class="row"|\s*</body>)', text, re.S)
    assert len(rows) == 3
    checked = 0
    for qi, row in rows:
        qlab = labels[[0, 4, 8][int(qi)]]
        for cls, name in re.findall(r'<figure class="hit (\w+)".*?<br>(\w+)<br>', row, re.S):
            if cls != "self":
                assert (cls == "same") == (name == ["red", "green", "blue"][qlab]), (cls, name)
                checked += 1
    assert checked == 3 * 9
    # the report folder is self-contained: moving it keeps every link valid
    moved = tmp_path / "moved"
    html_path.parent.rename(moved)
    assert all((moved / s).is_file() for s in parser.srcs)
    assert json.loads((tmp_path / "out" / "embeddings" / "meta.json").read_text())["count"] == 24

    # re-running on the same folder with another gallery re-embeds instead of failing
    res2 = index_search_report(embedder, paths[:12], labels[:12], queries[:1], tmp_path / "out", k=2)
    assert res2["num_gallery"] == 12 and res2["curves_png"] is None


def test_curves_robust_to_missing_keys(tmp_path):
    log = _write_log(tmp_path / "log.jsonl")
    train, evals = read_log(log)
    assert len(train) == 10 and len(evals) == 2  # the cut last line is ignored
    assert plot_curves(log, tmp_path / "c.png") == tmp_path / "c.png"
    only_eval = tmp_path / "eval.jsonl"
    only_eval.write_text(json.dumps({"kind": "eval", "epoch": 0, "recall@1": 0.4}) + "\n")
    assert plot_curves(only_eval, tmp_path / "e.png").exists()
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"kind": "meta", "config": {}}\n')
    assert plot_curves(empty, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_report_cli(embedder, gallery, tmp_path, monkeypatch, capsys):
    from dva_cli import cli
    from dva_cli import _model as embed_cmd

    monkeypatch.setattr(embed_cmd, "embedder_from_args", lambda args: embedder)
    paths, labels = gallery
    lst = tmp_path / "gallery.csv"
    lst.write_text("".join(f"{p},{lab}\n" for p, lab in zip(paths, labels)))
    assert cli.main(["embed", "--images", str(lst), "--out", str(tmp_path / "emb"), "--no-progress"]) == 0
    assert cli.main(["index", "--embeddings", str(tmp_path / "emb"), "--out", str(tmp_path / "idx")]) == 0
    qlist = tmp_path / "queries.csv"
    qlist.write_text(f"{paths[1]},1\n")
    log = _write_log(tmp_path / "log.jsonl")
    assert cli.main(["report", "--index", str(tmp_path / "idx"), str(paths[2]), "--query-list", str(qlist),
                     "--out", str(tmp_path / "rep"), "--k", "3", "--log", str(log)]) == 0
    assert "report written" in capsys.readouterr().out
    page = (tmp_path / "rep" / "index.html").read_text()
    assert page.count('class="row"') == 2 and (tmp_path / "rep" / "curves.png").exists()
    assert "same" in page
    assert cli.main(["report", "--index", str(tmp_path / "idx"), "--out", str(tmp_path / "r2")]) == 2


@pytest.mark.parametrize("adapted", [False, True])
def test_activation_overlay_matches_model_view(embedder, gallery, adapted):
    import torch

    from dva.retrieval.report import activation_overlays, model_view, overlay_heatmap

    paths, _ = gallery
    im = Image.open(paths[0]).convert("RGB")
    view = model_view(embedder.transform, im)
    assert view.size == (embedder.img_size, embedder.img_size)
    maps = activation_overlays(embedder, im)
    assert set(maps) == {"frozen", "dva"}
    name = "dva" if adapted else "frozen"
    assert maps[name].size == view.size
    # Each overlay is its own model's map on the model's view (not the other one's).
    with torch.no_grad():
        amap = embedder.activation_maps(embedder.transform(im).unsqueeze(0), adapted=adapted)[0].numpy()
    assert np.array_equal(np.asarray(maps[name]), np.asarray(overlay_heatmap(view, amap)))
    assert not np.array_equal(np.asarray(maps["dva"]), np.asarray(maps["frozen"]))


def test_report_reads_as_words_and_shows_the_metrics_table(tmp_path):
    from dva.retrieval.report import write_report
    from dva.retrieval.search import Hit, QueryResult

    img = tmp_path / "q.png"
    Image.new("RGB", (20, 20), (9, 9, 9)).save(img)
    res = [QueryResult(str(img), [Hit(1, 0, 0.9, str(img), 3)], 3)]
    html = write_report(tmp_path / "r", res, summary={"precision_at_k": 0.525, "k": 8, "recall_at_1": 0.5},
                        metrics={"frozen backbone": {"recall@1": 0.791, "map@r": 0.291},
                                 "DVA": {"recall@1": 0.829, "map@r": 0.384}}).read_text()
    assert "precision_at_k" not in html and "precision@8: share of same-class images" in html
    assert "52.5%" in html and "<th>R@1</th><th>MAP@R</th>" in html
    assert "<td>DVA</td><td>82.9</td><td>38.4</td>" in html and "<td>79.1</td><td>29.1</td>" in html
    assert "flex-wrap: nowrap" in html  # a row of hits scrolls instead of wrapping under the query

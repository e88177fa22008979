"""Static visual report of a retrieval run: top-k per query, activation maps, training curves.

:func:`write_report` makes a self-contained folder (``index.html`` + ``images/``, relative
links only, no external assets) that opens from disk or any static file server:

* per query: the query image, the activation map of the frozen backbone and of the adapted
  model overlaid on it (like the paper's Figure 4), then the top-k gallery images marked as
  same / different class when labels are known;
* the training curves read from a run's ``log.jsonl`` (see :func:`plot_curves`).
"""
from __future__ import annotations

import html
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from dva.retrieval.search import QueryResult
from dva.retrieval.store.images import load_image_strict
from dva.utils import atomic_write_text

if TYPE_CHECKING:
    from dva.runtime.protocol import EmbedderLike

THUMB = 192


# --------------------------------------------------------------------------- training curves
def read_log(log_path: str | Path, run: str | None = "latest") -> tuple[list[dict], list[dict]]:
    """Read ``log.jsonl``: (train lines, eval lines); malformed lines are ignored.

    Args:
        log_path: the file.
        run: which run's rows, by their ``run`` id (a folder trained again from scratch holds
            several runs; a resumed run keeps its id): ``"latest"`` = the id of the last row that
            has one, an id, or None = every row. Rows without an id (logs written before run
            ids) are kept only when no row has one.
    """
    rows = []
    with open(log_path, encoding="utf-8") as fh:
        for line in fh:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a killed run
            if isinstance(row, dict):
                rows.append(row)
    if run == "latest":
        run = next((r["run"] for r in reversed(rows) if r.get("run")), None)
    if run is not None:
        rows = [r for r in rows if r.get("run") == run]
    train = [r for r in rows if r.get("kind") == "train"]
    evals = [r for r in rows if r.get("kind") == "eval"]
    return train, evals


def _series(rows: list[dict], key: str, xkeys: Sequence[str]) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for i, r in enumerate(rows):
        y = r.get(key)
        if not isinstance(y, (int, float)) or isinstance(y, bool) or not math.isfinite(y):
            continue
        x = next((r[k] for k in xkeys if isinstance(r.get(k), (int, float))), i)
        xs.append(float(x))
        ys.append(float(y))
    return xs, ys


def plot_curves(log_path: str | Path, out_png: str | Path) -> Path | None:
    """Plot the losses, learning rate and evaluation metrics of a run's ``log.jsonl``.

    Only the latest run's rows (:func:`read_log`: by ``run`` id; a resumed run's continuation
    included). Whatever keys are present are plotted (``loss`` and every ``loss_*``; ``lr``;
    ``recall@K`` and ``map@r``); missing ones are skipped.

    Returns:
        ``out_png``, or None when the log holds nothing to plot.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train, evals = read_log(log_path)
    loss_keys = sorted({k for r in train for k in r if k == "loss" or k.startswith("loss_")},
                       key=lambda k: (k != "loss", k))
    metric_keys = sorted({k for r in evals for k in r if k.startswith("recall@") or k == "map@r"},
                         key=lambda k: (k == "map@r", int(k.split("@")[1]) if k[7:].isdigit() else 0))
    panels = []
    if loss_keys:
        panels.append(("training loss", train, loss_keys, "step"))
    if any("lr" in r for r in train):
        panels.append(("learning rate", train, ["lr"], "step"))
    if metric_keys:
        panels.append(("evaluation", evals, metric_keys, "step"))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, (title, rows, keys, xlabel) in zip(axes[0], panels):
        for key in keys:
            xs, ys = _series(rows, key, ("step", "epoch"))
            if xs:
                ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, ms=3, label=key)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        if len(keys) > 1 or title == "evaluation":
            ax.legend(fontsize=8)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_png.with_name(f".{out_png.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(out_png)
    return out_png


# --------------------------------------------------------------------------- activation maps
def model_view(transform: Any, image: Image.Image) -> Image.Image:
    """The image as the model sees it: the transform's geometric steps, before tensor/normalise.

    Works for ``torchvision``/``timm`` ``Compose`` transforms; otherwise the image resized to
    the transform's output size.
    """
    steps = getattr(transform, "transforms", None)
    if steps:
        view = image
        for t in steps:
            nxt = t(view)
            if not isinstance(nxt, Image.Image):
                return view
            view = nxt
        return view
    x = transform(image)
    return image.resize((int(x.shape[-1]), int(x.shape[-2])), Image.BILINEAR)


def overlay_heatmap(view: Image.Image, amap: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """Overlay a (h, w) map in [0, 1] on ``view`` with the ``jet`` colour map."""
    from matplotlib import colormaps

    amap = np.nan_to_num(np.asarray(amap, dtype=np.float32))
    lo, hi = float(amap.min()), float(amap.max())
    amap = (amap - lo) / (hi - lo) if hi > lo else np.zeros_like(amap)
    up = Image.fromarray(amap).resize(view.size, Image.BILINEAR)
    rgb = (colormaps["jet"](np.clip(np.asarray(up), 0, 1))[..., :3] * 255).astype(np.uint8)
    return Image.blend(view.convert("RGB"), Image.fromarray(rgb), alpha)


def activation_overlays(embedder: EmbedderLike, image: Image.Image) -> dict[str, Image.Image]:
    """``{"frozen": overlay, "dva": overlay}`` for one image (empty when not supported)."""
    import torch

    if not hasattr(embedder, "activation_maps"):
        return {}
    view = model_view(embedder.transform, image)
    x = embedder.transform(image).unsqueeze(0)
    out = {}
    with torch.no_grad():
        for name, adapted in (("frozen", False), ("dva", True)):
            try:
                amap = embedder.activation_maps(x, adapted=adapted)[0]
            except NotImplementedError:  # an ONNX embedder: its graph outputs embeddings only
                return {}
            out[name] = overlay_heatmap(view, amap.detach().float().cpu().numpy())
    return out


# --------------------------------------------------------------------------- the page
def _thumb(src: str | Path | Image.Image, dst: Path, size: int = THUMB) -> bool:
    try:
        im = src if isinstance(src, Image.Image) else load_image_strict(src)
    except Exception:
        return False
    im = im.convert("RGB")
    im.thumbnail((size, size))
    dst.parent.mkdir(parents=True, exist_ok=True)
    im.save(dst, "JPEG", quality=85)
    return True


def _name(label: Any, class_names: Sequence[str] | Mapping | None) -> str:
    if label is None:
        return ""
    if class_names is not None:
        try:
            if isinstance(class_names, Mapping):
                return str(class_names.get(label, class_names.get(str(label), label)))
            return str(class_names[int(label)])
        except (ValueError, IndexError, TypeError):
            pass
    return str(label)


def _same(a: Any, b: Any) -> bool | None:
    if a is None or b is None:
        return None
    return str(a) == str(b)


def _query_cells(qi: int, res: QueryResult, embedder: EmbedderLike | None, img_dir: Path,
                 class_names: Sequence[str] | Mapping | None) -> list[str]:
    """The query thumbnail and, with an embedder, its frozen and DVA activation maps."""
    esc = html.escape
    q_img = None
    try:
        q_img = load_image_strict(res.query)
    except Exception:
        pass
    q_ok = q_img is not None and _thumb(q_img, img_dir / f"q{qi}.jpg")
    cells = [
        '<figure class="query">'
        + (f'<img src="images/q{qi}.jpg" alt="query {qi}">' if q_ok else '<div class="missing">unreadable</div>')
        + f"<figcaption><b>query</b><br>{esc(_name(res.label, class_names))}<br>"
        f"<span class=path>{esc(Path(res.query).name)}</span></figcaption></figure>"
    ]
    if embedder is None or q_img is None:
        return cells
    try:
        maps = activation_overlays(embedder, q_img)
    except Exception as exc:  # a model without maps must not cost the whole report
        maps = {}
        cells.append(f'<div class="missing">activation maps failed: {esc(str(exc))}</div>')
    same_maps = len(maps) == 2 and np.array_equal(np.asarray(maps["frozen"]), np.asarray(maps["dva"]))
    dva_caption = "DVA: no adapters loaded, same as frozen" if same_maps else "DVA (adapted)"
    for name, caption in (("frozen", "frozen backbone"), ("dva", dva_caption)):
        if name in maps:
            fn = f"q{qi}_{name}.png"
            maps[name].resize((THUMB, THUMB * maps[name].height // maps[name].width)).save(img_dir / fn)
            cells.append(f'<figure class="amap"><img src="images/{fn}" alt="{caption} map">'
                         f"<figcaption>{caption}</figcaption></figure>")
    return cells


def _hit_cell(h, res: QueryResult, img_dir: Path, gallery_done: dict[int, bool],
              class_names: Sequence[str] | Mapping | None) -> str:
    """One retrieved image, framed green/red/blue for same class / different class / the query itself."""
    esc = html.escape
    if h.id not in gallery_done:  # a gallery image shown for several queries is written once
        gallery_done[h.id] = _thumb(h.path, img_dir / f"g{h.id}.jpg")
    is_self = Path(h.path).resolve() == Path(res.query).resolve()
    cls, mark = ("self", "self") if is_self else {
        True: ("same", "&#10003; same"), False: ("diff", "&#10007; different"),
        None: ("unknown", "")}[_same(res.label, h.label)]
    img = (f'<img src="images/g{h.id}.jpg" alt="hit {h.rank}">' if gallery_done[h.id]
           else '<div class="missing">unreadable</div>')
    return (f'<figure class="hit {cls}" data-same="{cls}">{img}<figcaption>'
            f"#{h.rank} <b>{h.score:.3f}</b> <span class=mark>{mark}</span><br>"
            f"{esc(_name(h.label, class_names))}<br><span class=path>{esc(Path(h.path).name)}</span>"
            "</figcaption></figure>")


_CSS = f"""
body {{ font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; }}
table.summary th {{ text-align: left; padding-right: 1rem; font-weight: 600; }}
.row {{ display: flex; flex-wrap: nowrap; overflow-x: auto; gap: .5rem; align-items: flex-start;
        padding: .6rem 0; border-bottom: 1px solid #ddd; }}
figure {{ flex: 0 0 auto; }}
table.metrics {{ border-collapse: collapse; margin: .5rem 0 1rem; }}
table.metrics th, table.metrics td {{ padding: .2rem .7rem; text-align: right; border-bottom: 1px solid #ddd; }}
table.metrics th:first-child, table.metrics td:first-child {{ text-align: left; }}
figure {{ margin: 0; width: {THUMB}px; font-size: .75rem; }}
figure img {{ max-width: {THUMB}px; max-height: {THUMB}px; display: block; border: 4px solid transparent; }}
figure.query img {{ border-color: #333; }}
figure.amap img {{ border-color: #888; }}
figure.same img {{ border-color: #2a2; }} figure.diff img {{ border-color: #d22; }}
figure.self img {{ border-color: #28d; }}
.same .mark {{ color: #2a2; }} .diff .mark {{ color: #d22; }} .self .mark {{ color: #28d; }}
.path {{ color: #777; word-break: break-all; }}
.missing {{ width: {THUMB}px; height: 80px; background: #eee; color: #900; font-size: .75rem; }}
img.curves {{ max-width: 100%; }}
"""


# Summary keys a person reads: what each number is. ``{k}`` is the hits counted.
_SUMMARY_LABELS = {
    "gallery_queries": "queries that are gallery images",
    "self_hit_rate": "of those, the share that find themselves first",
    "precision_at_k": "precision@{k}: share of same-class images among the first {k} hits (self excluded)",
    "recall_at_1": "recall@1: queries whose first hit (self excluded) has their class",
}
_RATES = set(_SUMMARY_LABELS)


def _summary_rows(info: Mapping[str, Any]) -> str:
    esc = html.escape
    k = info.get("k", "k")
    rows = []
    for key, v in info.items():
        if key == "k":
            continue
        label = _SUMMARY_LABELS.get(key, key).format(k=k)
        text = f"{100 * v:.1f}%" if key in _RATES and isinstance(v, float) else (
            f"{v:.4f}" if isinstance(v, float) else str(v))
        rows.append(f"<tr><th>{esc(label)}</th><td>{esc(text)}</td></tr>")
    return "".join(rows)


def _metrics_table(metrics: Mapping[str, Mapping[str, float]] | None) -> str:
    """Recall@K and MAP@R per model (e.g. frozen backbone vs DVA), in percent."""
    if not metrics:
        return ""
    esc = html.escape
    cols = [c for c in ("recall@1", "recall@2", "recall@4", "recall@8", "map@r")
            if all(c in m for m in metrics.values())]
    head = "".join(f"<th>{esc(c.replace('recall@', 'R@').replace('map@r', 'MAP@R'))}</th>" for c in cols)
    body = "".join(f"<tr><td>{esc(name)}</td>" + "".join(f"<td>{100 * m[c]:.1f}</td>" for c in cols) + "</tr>"
                   for name, m in metrics.items())
    return (f'<h2>Retrieval on the test classes (%)</h2><table class="metrics"><tr><th>model</th>{head}</tr>'
            f"{body}</table>")


def _page(title: str, info: Mapping[str, Any], curves: bool, top: int, rows_html: Sequence[str],
          metrics: Mapping[str, Mapping[str, float]] | None = None) -> str:
    esc = html.escape
    info_html = _summary_rows(info)
    curves_html = ('<h2>Training curves</h2><img class="curves" src="curves.png" alt="training curves">'
                   if curves else "")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>{_CSS}</style></head><body>
<h1>{esc(title)}</h1>
<table class="summary">{info_html}</table>
{_metrics_table(metrics)}
{curves_html}
<h2>Queries</h2>
<p>Each row: the query, the activation map of the frozen backbone and of DVA overlaid on the
query, then the top-{top} gallery images
(green = same class, red = different class, blue = the query itself).</p>
{"".join(rows_html)}
</body></html>
"""


def write_report(
    out_dir: str | Path,
    results: Sequence[QueryResult],
    *,
    embedder: EmbedderLike | None = None,
    log_path: str | Path | None = None,
    class_names: Sequence[str] | Mapping | None = None,
    title: str = "DVA retrieval report",
    summary: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Mapping[str, float]] | None = None,
) -> Path:
    """Write the report folder and return the path of its ``index.html``.

    Args:
        out_dir: the folder to (re)write; images go to ``out_dir/images``.
        results: per query, its hits (e.g. from :func:`dva.retrieval.search.search_paths`);
            a hit is marked same/different when both its label and the query's are known,
            and "self" when it is the query file itself.
        embedder: when it has ``activation_maps``, frozen vs adapted maps are shown per query.
        log_path: a run's ``log.jsonl``; its curves go to ``out_dir/curves.png``.
        class_names: label -> display name (a list indexed by int label, or a mapping).
        title: the page title.
        summary: extra key/values shown at the top (e.g. precision@k).
        metrics: model name -> Recall@K / MAP@R (e.g. frozen backbone and DVA), shown as a table.
    """
    out = Path(out_dir)
    img_dir = out / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    curves = None
    if log_path is not None and Path(log_path).exists():
        curves = plot_curves(log_path, out / "curves.png")
    gallery_done: dict[int, bool] = {}
    rows_html = []
    for qi, res in enumerate(results):
        cells = _query_cells(qi, res, embedder, img_dir, class_names)
        cells += [_hit_cell(h, res, img_dir, gallery_done, class_names) for h in res.hits]
        rows_html.append(f'<div class="row" id="q{qi}">' + "".join(cells) + "</div>")
    info = dict(summary or {})
    info.setdefault("queries", len(results))
    if embedder is not None and hasattr(embedder, "fingerprint"):
        info.setdefault("model fingerprint", str(embedder.fingerprint)[:16])
    info["generated"] = time.strftime("%Y-%m-%d %H:%M:%S")
    # The hits shown besides the query's own (a gallery image finds itself first: k + 1 hits).
    top = max((sum(os.path.realpath(h.path) != os.path.realpath(r.query) for h in r.hits) for r in results),
              default=0)
    page = _page(title, info, bool(curves), top, rows_html, metrics)
    html_path = out / "index.html"
    atomic_write_text(html_path, page)
    return html_path

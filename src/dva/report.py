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
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dva.retrieval.search import QueryResult
from dva.retrieval.store import atomic_write_text, load_image_strict

THUMB = 192


# --------------------------------------------------------------------------- training curves
def read_log(log_path: str | Path) -> tuple[list[dict], list[dict]]:
    """Read ``log.jsonl``: (train lines, eval lines); malformed lines are ignored."""
    train, evals = [], []
    with open(log_path, encoding="utf-8") as fh:
        for line in fh:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a killed run
            if not isinstance(row, dict):
                continue
            if row.get("kind") == "train":
                train.append(row)
            elif row.get("kind") == "eval":
                evals.append(row)
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

    Whatever keys are present are plotted (``loss`` and every ``loss_*``; ``lr``;
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


def activation_overlays(embedder: Any, image: Image.Image) -> dict[str, Image.Image]:
    """``{"frozen": overlay, "dva": overlay}`` for one image (empty when not supported)."""
    import torch

    if not hasattr(embedder, "activation_maps"):
        return {}
    view = model_view(embedder.transform, image)
    x = embedder.transform(image).unsqueeze(0)
    out = {}
    with torch.no_grad():
        for name, adapted in (("frozen", False), ("dva", True)):
            amap = embedder.activation_maps(x, adapted=adapted)[0]
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


def write_report(
    out_dir: str | Path,
    results: Sequence[QueryResult],
    *,
    embedder: Any = None,
    log_path: str | Path | None = None,
    class_names: Sequence[str] | Mapping | None = None,
    title: str = "DVA retrieval report",
    summary: Mapping[str, Any] | None = None,
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
    """
    out = Path(out_dir)
    img_dir = out / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    curves = None
    if log_path is not None and Path(log_path).exists():
        curves = plot_curves(log_path, out / "curves.png")

    esc = html.escape
    rows_html = []
    gallery_done: dict[int, bool] = {}
    for qi, res in enumerate(results):
        cells = []
        q_img = None
        try:
            q_img = load_image_strict(res.query)
        except Exception:
            pass
        q_ok = q_img is not None and _thumb(q_img, img_dir / f"q{qi}.jpg")
        qlab = _name(res.label, class_names)
        cells.append(
            '<figure class="query">'
            + (f'<img src="images/q{qi}.jpg" alt="query {qi}">' if q_ok else '<div class="missing">unreadable</div>')
            + f"<figcaption><b>query</b><br>{esc(qlab)}<br>"
            f"<span class=path>{esc(Path(res.query).name)}</span></figcaption></figure>"
        )
        if embedder is not None and q_img is not None:
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
        for h in res.hits:
            if h.id not in gallery_done:
                gallery_done[h.id] = _thumb(h.path, img_dir / f"g{h.id}.jpg")
            is_self = Path(h.path).resolve() == Path(res.query).resolve()
            same = _same(res.label, h.label)
            cls, mark = ("self", "self") if is_self else {
                True: ("same", "&#10003; same"), False: ("diff", "&#10007; different"),
                None: ("unknown", "")}[same]
            img = (f'<img src="images/g{h.id}.jpg" alt="hit {h.rank}">' if gallery_done[h.id]
                   else '<div class="missing">unreadable</div>')
            cells.append(
                f'<figure class="hit {cls}" data-same="{cls}">{img}<figcaption>'
                f"#{h.rank} <b>{h.score:.3f}</b> <span class=mark>{mark}</span><br>"
                f"{esc(_name(h.label, class_names))}<br><span class=path>{esc(Path(h.path).name)}</span>"
                "</figcaption></figure>"
            )
        rows_html.append(f'<div class="row" id="q{qi}">' + "".join(cells) + "</div>")

    info = dict(summary or {})
    info.setdefault("queries", len(results))
    if embedder is not None and hasattr(embedder, "fingerprint"):
        info.setdefault("model fingerprint", str(embedder.fingerprint)[:16])
    info["generated"] = time.strftime("%Y-%m-%d %H:%M:%S")
    info_html = "".join(
        f"<tr><th>{esc(str(k))}</th><td>{esc(f'{v:.4f}' if isinstance(v, float) else str(v))}</td></tr>"
        for k, v in info.items()
    )
    curves_html = ('<h2>Training curves</h2><img class="curves" src="curves.png" alt="training curves">'
                   if curves else "")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; }}
table.summary th {{ text-align: left; padding-right: 1rem; font-weight: 600; }}
.row {{ display: flex; flex-wrap: wrap; gap: .5rem; align-items: flex-start; padding: .6rem 0;
        border-bottom: 1px solid #ddd; }}
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
</style></head><body>
<h1>{esc(title)}</h1>
<table class="summary">{info_html}</table>
{curves_html}
<h2>Queries</h2>
<p>Each row: the query, the activation map of the frozen backbone and of DVA overlaid on the
query, then the top-{max((len(r.hits) for r in results), default=0)} gallery images
(green = same class, red = different class, blue = the query itself).</p>
{"".join(rows_html)}
</body></html>
"""
    html_path = out / "index.html"
    atomic_write_text(html_path, page)
    return html_path

"""Several domains behind one frozen backbone: a registry, a shared frozen prefix, and a router.

A DVA checkpoint is a few hundred KB of adapters on top of frozen weights, so one process can
serve every domain (birds, pets, cars, ...) with ONE copy of the backbone in memory: each
domain's model is a structural copy of the frozen encoder whose frozen tensors *are* the shared
ones (:func:`shared_copy`), with that domain's adapters inserted beside them.

**Shared frozen prefix.** Everything below a model's first adapted stage (``DVAModel.split``,
the same split the trainer caches, docs/METHOD.md, Training) is a fixed function of the image.
:class:`SharedBackbone` runs each frozen stage once per query and feeds every domain's adapted
suffix from it. Domains whose adapters start at different stages share the common part: the
prefix up to the earliest first-adapted stage runs once, and so does each frozen stage after it
(the prefix is carried from one domain's split to the next). The results equal the one-domain
path (tests/retrieval/test_domains.py). On onnxruntime (``runtime="onnx"``, or ``auto`` on a CPU
with onnxruntime installed) :class:`OnnxSharedBackbone` runs one prefix graph up to the earliest
first-adapted stage and one suffix graph per domain (its docstring gives the scheme); the
embeddings equal torch's to cosine >= 0.99999. A single domain of the classic form keeps
whatever runtime its embedder has.

**Routing.** A query without a domain goes where it most likely belongs (:class:`Route`):

* ``frozen`` router: the query's frozen embedding (the shared backbone alone, adapters off,
  continuing from the shared prefix) against per-domain prototypes made once at start-up by
  embedding a sample of each gallery's images with the frozen backbone (class means where the
  gallery has labels; cached under ``$DVA_CACHE/domains/``). One frozen suffix per query, then
  only the chosen domain's suffix. All domains are compared in one embedding space.
* ``adapted`` router: the query's embedding by each domain's own model against that domain's
  prototypes taken from its index vectors. Every domain's suffix runs; no image is read at
  start-up, but the scores of different domains come from different embedding spaces.

The score of a domain is the highest cosine to one of its prototypes; the margin is the
winner's score minus the runner-up's. docs/BENCHMARKS.md ("Domains") measures both routers.
"""
from __future__ import annotations

import copy
import io
import json
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from dva import backbone as bb
from dva.retrieval import filters
from dva.retrieval.index import GalleryIndex
from dva.retrieval.search import Hit, QueryResult, hits_from_arrays, load_query_images

if TYPE_CHECKING:
    from dva.model import DVAModel
    from dva.retrieval.backend import Gallery
    from dva.runtime.protocol import EmbedderLike

ALL = "all"  # the request value that searches every domain and merges the lists
DEFAULT = "default"  # the one domain of the classic --checkpoint/--index form
ROUTERS = ("frozen", "adapted")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class UnknownDomainError(ValueError, LookupError):
    """A request named a domain the server does not have (the message lists the known ones)."""


class BackboneMismatchError(ValueError):
    """Domains whose checkpoints were trained on different frozen backbones or input sizes."""


# ----------------------------------------------------------------------------- specs
@dataclass(frozen=True)
class DomainSpec:
    """One domain to load: its name, checkpoint (None = the frozen backbone alone) and index folder."""

    name: str
    checkpoint: str | None
    index: str


def check_name(name: str) -> str:
    """``name`` if it can name a domain (letters, digits, ``_.-``; not ``all``), else ValueError."""
    if not _NAME.match(name or "") or name == ALL:
        raise ValueError(f"domain name {name!r}: use 1-64 letters, digits, '_', '.' or '-' "
                         f"(starting with a letter or digit), and not {ALL!r}, which means every domain")
    return name


def parse_domain(text: str) -> DomainSpec:
    """``NAME=CHECKPOINT:INDEX`` -> :class:`DomainSpec` (``NAME=:INDEX``: the frozen backbone).

    The index folder is what follows the last ``:``, so it may not contain one (the checkpoint may).
    """
    name, eq, rest = text.partition("=")
    ckpt, colon, index = rest.rpartition(":")
    if not eq or not colon or not index:
        raise ValueError(f"--domain {text!r}: expected NAME=CHECKPOINT:INDEX, e.g. "
                         "birds=runs/birds/last.safetensors:runs/birds/idx (NAME=:INDEX for the frozen backbone)")
    return DomainSpec(check_name(name.strip()), ckpt or None, index)


def read_domains_file(path: str | Path) -> list[DomainSpec]:
    """Domains listed in a YAML file, paths relative to the file's folder::

        domains:
          birds: {checkpoint: runs/birds/last.safetensors, index: runs/birds/idx}
          pets:  {checkpoint: runs/pets/last.safetensors,  index: runs/pets/idx}
    """
    import yaml

    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{p}: cannot read the domains file ({exc})") from None
    items = doc.get("domains") if isinstance(doc, dict) else None
    if not isinstance(items, dict) or not items:
        raise ValueError(f"{p}: expected a mapping 'domains:' of NAME: {{checkpoint: FILE, index: FOLDER}}")

    def here(v: Any) -> str | None:
        return None if v in (None, "") else str(p.parent / Path(str(v)).expanduser())

    specs = []
    for name, d in items.items():
        if not isinstance(d, dict) or not d.get("index") or set(d) - {"checkpoint", "index"}:
            raise ValueError(f"{p}: domain {name!r} needs 'index' (and optionally 'checkpoint'), got {d!r}")
        specs.append(DomainSpec(check_name(str(name)), here(d.get("checkpoint")), here(d["index"])))
    return specs


# ----------------------------------------------------------------------------- one backbone
def shared_copy(base: nn.Module) -> nn.Module:
    """A copy of ``base``'s module structure whose parameters and buffers ARE ``base``'s.

    Adapters inserted into the copy (ICA wraps the frozen convs/projections) leave ``base``
    untouched, and the frozen tensors exist once in memory however many copies there are.
    """
    memo: dict[int, Any] = {id(t): t for t in (*base.parameters(), *base.buffers())}
    return copy.deepcopy(base, memo)


def _check_same_backbone(infos: dict[str, tuple[str | None, dict]]) -> dict:
    """The backbone every checkpoint shares, or :class:`BackboneMismatchError` naming the two that differ."""
    first = None
    for name, (ckpt, info) in infos.items():
        if info is None:
            continue
        b = info["config"].backbone
        key = {"name": b.name, "weights": b.weights, "img_size": b.img_size, "fingerprint": info["fingerprint"],
               "domain": name, "checkpoint": ckpt}
        if first is None:
            first = key
        elif any(key[f] != first[f] for f in ("name", "img_size", "fingerprint")):
            def say(k: dict) -> str:
                return (f"{k['domain']!r} ({k['checkpoint']}) was trained on {k['name']} (frozen weights "
                        f"fingerprint {k['fingerprint']}) at {k['img_size']} px")
            raise BackboneMismatchError(
                f"domains {first['domain']!r} and {name!r} cannot share one frozen backbone: {say(first)}, "
                f"{say(key)}; serve them from separate `dva serve` processes, or train them on the same "
                "backbone, weights and input size")
    return first or {}


def _domain_model(base: nn.Module, fp: str, checkpoint: str | None, info: dict | None,
                  frozen_cfg: Any) -> DVAModel:
    """The model of one domain on top of the shared frozen ``base``; proxies dropped (training state)."""
    from dva.checkpoint import load_into
    from dva.model import DVAModel

    cfg = info["config"] if info else frozen_cfg
    # A full fine-tune changed the backbone itself: that domain keeps its own copy (nothing shared).
    enc = copy.deepcopy(base) if cfg.train.trainable == "full" else shared_copy(base)
    model = DVAModel(enc, cfg, info["num_classes"] if info else 0, fp)
    if checkpoint:
        load_into(model, checkpoint)
    model.proxies = None  # queries never use them
    return model.eval()


class SharedBackbone:
    """One frozen encoder and the adapted models of several domains built on it.

    :meth:`prefixes` runs the frozen stages once and keeps the activation at every stop asked
    for; :meth:`suffix` continues a domain's model from its own split; :meth:`frozen` the
    frozen network alone (for the router).
    """

    runtime = "torch"

    def __init__(self, base: nn.Module, models: dict[str, DVAModel], device: torch.device) -> None:
        self.base, self.models, self.device = base.eval(), models, device
        self.n_stages = len(bb.stages(base))
        # A full fine-tune trained the backbone itself: it has its own copy and shares no prefix.
        self.alone = {n for n, m in models.items() if m.cfg.train.trainable == "full"}

    def stops(self, names: Sequence[str], frozen: bool = False) -> list[int]:
        """The distinct splits of ``names`` (and the last stage when the frozen embedding is wanted)."""
        s = {self.models[n].split for n in names if n not in self.alone}
        return sorted(s | ({self.n_stages} if frozen or not s else set()))

    def embed(self, name: str, hs: dict[int, torch.Tensor], x: torch.Tensor,
              rows: Sequence[int] | None = None) -> torch.Tensor:
        """Domain ``name``'s embeddings of ``x`` (``rows`` of it): from the shared prefixes, or whole when alone."""
        if name in self.alone:
            return self.full(name, x if rows is None else x[list(rows)])
        return self.suffix(name, hs, None if rows is None else torch.as_tensor(list(rows)))

    @torch.no_grad()
    def prefixes(self, x: torch.Tensor, stops: Sequence[int]) -> dict[int, torch.Tensor]:
        """Activations entering each stage in ``stops``; every frozen stage runs once.

        The first stop is the frozen prefix of the trainer's cache (``bb.forward_prefix``); the
        frozen stages between two stops are unadapted in every model that starts later, so they
        run on the shared encoder and the result is carried on.
        """
        stops = sorted(stops)
        h = bb.forward_prefix(self.base, x.to(self.device), stops[0])
        out, at = {stops[0]: h}, stops[0]
        stages = bb.stages(self.base)
        for s in stops[1:]:
            for blk in stages[at:s]:
                h = blk(h)
            out[s], at = h, s
        return out

    @torch.no_grad()
    def suffix(self, name: str, hs: dict[int, torch.Tensor], rows: torch.Tensor | None = None) -> torch.Tensor:
        """L2-normalised embeddings of domain ``name`` from the shared prefixes (``rows``: a subset)."""
        m = self.models[name]
        h = hs[m.split] if rows is None else hs[m.split][rows]
        return m.embed_from_prefix(h, normalize=True).float().cpu()

    @torch.no_grad()
    def frozen(self, hs: dict[int, torch.Tensor]) -> torch.Tensor:
        """The frozen backbone's L2-normalised embedding, continued from the deepest shared prefix."""
        s = max(hs)
        return F.normalize(bb.pool(self.base, bb.forward_suffix(self.base, hs[s], s)), dim=-1).float().cpu()

    @torch.no_grad()
    def full(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """Domain ``name``'s whole network on ``x`` (no sharing: the reference the shared path equals)."""
        return self.models[name].embed(x.to(self.device)).float().cpu()

    @torch.no_grad()
    def full_frozen(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen backbone's whole network on ``x`` (no sharing)."""
        return self.frozen(self.prefixes(x, [0]))


class OnnxSharedBackbone(SharedBackbone):
    """:class:`SharedBackbone` run by onnxruntime: one prefix graph and one suffix graph per domain.

    The scheme, chosen for simplicity: ONE prefix graph, the frozen stages below the earliest
    first-adapted stage ``start`` of all the domains (the trainer's frozen-prefix graph,
    :func:`dva.runtime.frozen.export_frozen`), and per domain one suffix graph from that
    activation to its L2-normalised embedding, adapters merged or folded as for a whole-embedder
    export (:func:`dva.runtime.onnx_export.export_suffix`). A domain whose adapters start later
    runs its frozen stages between ``start`` and its own split inside its suffix graph: they are
    not shared between domains as the torch chain shares them (a little more compute; fewer,
    simpler graphs). The frozen router gets a suffix graph of the frozen network from ``start``.
    A full fine-tune shares nothing and runs its whole-embedder export. Each graph is exported
    once into ``$DVA_CACHE/onnx/`` (keyed by fingerprint, start and config digest) and reused.
    Memory: each suffix graph holds its own copy of the frozen weights after ``start`` (adapters
    merged or folded into them: they are no longer the shared tensors), e.g. 7 MB per domain of
    a MobileNetV2 adapted in its last 2 stages; the torch models stay loaded too (they define
    the graphs and give the domains' fingerprints and transform). ``runtime="torch"`` keeps one copy.
    """

    runtime = "onnx"

    def __init__(self, base: nn.Module, models: dict[str, DVAModel], device: torch.device,
                 frozen_model: DVAModel, threads: int | None = None) -> None:
        from dva.runtime.frozen import export_frozen
        from dva.runtime.load import onnx_embedder_for
        from dva.runtime.onnx_embedder import SplitSessions
        from dva.runtime.torch_embedder import Embedder

        super().__init__(base, models, device)
        shared = [m for n, m in models.items() if n not in self.alone]
        ref = min(shared, key=lambda m: m.split, default=frozen_model)  # its prefix ends at the earliest split
        self.start, size, dev = ref.split, int(ref.cfg.backbone.img_size), str(device)
        self._open = lambda path: SplitSessions(path, threads, dev)
        self._prefix = self._open(export_frozen(ref, "prefix", size))
        self._suffix = {n: self._open(_suffix_graph(Embedder(m, device), self.start))
                        for n, m in models.items() if n not in self.alone}
        self._alone = {n: onnx_embedder_for(Embedder(models[n], device)) for n in self.alone}
        self._frozen_model, self._frozen = frozen_model, None  # the frozen router's graph, made on first use

    def stops(self, names: Sequence[str], frozen: bool = False) -> list[int]:
        """Always the one shared start (later splits continue inside their own suffix graphs)."""
        return [self.start]

    def prefixes(self, x: torch.Tensor, stops: Sequence[int]) -> dict[int, torch.Tensor]:
        """``{start: the prefix graph's output}`` (float32, CPU), whatever ``stops`` asks for."""
        return {self.start: torch.from_numpy(self._prefix.run(_np(x)))}

    def suffix(self, name: str, hs: dict[int, torch.Tensor], rows: torch.Tensor | None = None) -> torch.Tensor:
        h = hs[self.start] if rows is None else hs[self.start][rows]
        return torch.from_numpy(self._suffix[name].run(_np(h)))

    def frozen(self, hs: dict[int, torch.Tensor]) -> torch.Tensor:
        from dva.runtime.torch_embedder import Embedder

        if self._frozen is None:
            emb = Embedder(self._frozen_model, self.device)
            self._frozen = self._open(_suffix_graph(emb, self.start, adapted=False))
        return torch.from_numpy(self._frozen.run(_np(hs[self.start])))

    def full(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """Domain ``name`` alone: its prefix and suffix graphs (or its whole graph), nothing shared."""
        if name in self.alone:
            return self._alone[name].embed_tensor(x)
        return self.suffix(name, self.prefixes(x, [self.start]))

    def close(self) -> None:
        """Free the onnxruntime sessions and their threads (made again on the next run)."""
        for s in (self._prefix, *self._suffix.values(), *([self._frozen] if self._frozen else [])):
            s.close()


def _np(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)


def _suffix_graph(embedder: Any, start: int, adapted: bool = True) -> Path:
    """The cached suffix graph of ``embedder`` from stage ``start`` (exported on first use)."""
    from dva.runtime.cache import suffix_cache_path
    from dva.runtime.onnx_export import config_digest, export_suffix

    path = suffix_cache_path(embedder.fingerprint, start, config_digest(embedder), adapted)
    if not path.is_file():
        export_suffix(embedder, start, path, adapted=adapted)
    return path


# ----------------------------------------------------------------------------- domains
@dataclass
class Domain:
    """One served domain: its gallery (any store), the embedder that made it, and where it came from."""

    name: str
    index: Gallery
    embedder: EmbedderLike
    checkpoint: str | None = None
    prototypes: np.ndarray | None = None  # (P, D) L2-normalised, in the router's space
    runtime: str | None = None  # what runs its queries when not its embedder's (the shared onnx graphs)
    # ((count, build), whether any item has a label): asked once, kept until a write or another count
    _labelled: tuple[tuple, bool] | None = field(default=None, init=False, repr=False, compare=False)

    def info(self) -> dict:
        """What ``/api/info`` says about this domain; any store (``kind`` is None where it has none)."""
        model = getattr(self.embedder, "model", None)
        count = len(self.index)
        return {"name": self.name, "count": count, "dim": self.index.dim,
                "kind": self.index.meta.get("kind"), "fingerprint": self.index.fingerprint,
                "checkpoint": os.path.basename(self.checkpoint) if self.checkpoint else None,
                "first_adapted_stage": getattr(model, "split", None),
                "has_labels": self.labelled(count),
                "runtime": self.runtime or getattr(self.embedder, "runtime", "torch")}

    def labelled(self, count: int | None = None) -> bool:
        """Whether any item has a label (:func:`gallery_has_labels`), cached until :meth:`changed`.

        The cache is also keyed by the item count and the build, so a change made by another
        writer (a Milvus server's other clients) is seen once it changes either.
        """
        key = (len(self.index) if count is None else count, self.index.meta.get("build"))
        if self._labelled is None or self._labelled[0] != key:
            self._labelled = (key, gallery_has_labels(self.index))
        return self._labelled[1]

    def changed(self) -> None:
        """Forget what was cached about the gallery's items (call after a write or a reload)."""
        self._labelled = None


def gallery_has_labels(gallery: Gallery) -> bool:
    """Whether any item of any store has a label, without a scan.

    A FAISS index asks its items table for one row; another store runs one filtered search with
    k=1 (``label is not null``, applied inside the search), whatever the query vector.
    """
    ask = getattr(gallery, "has_labels", None)
    if callable(ask):
        return bool(ask())
    probe = np.zeros((1, int(gallery.dim)), np.float32)
    probe[0, 0] = 1.0
    ids = gallery.search(probe, 1, "label is not null")[1]
    return bool(ids.size and ids[0, 0] >= 0)


@dataclass
class Route:
    """Where a query without a domain went: the domain, its margin over the runner-up, every score."""

    domain: str
    margin: float | None
    scores: dict[str, float]
    router: str

    def to_dict(self) -> dict:
        return {"domain": self.domain, "margin": None if self.margin is None else round(self.margin, 6),
                "scores": {k: round(v, 6) for k, v in self.scores.items()}, "router": self.router}


@dataclass
class DomainHit(Hit):
    """A hit tagged with the domain whose gallery it comes from."""

    domain: str = ""


@dataclass
class DomainAnswer:
    """The hits of one query: the domain searched (a name or ``all``), and the route when one was taken."""

    domain: str
    hits: list[DomainHit]
    route: Route | None = None
    extra: dict = field(default_factory=dict)


def _tag(hits: list[Hit], name: str) -> list[DomainHit]:
    return [DomainHit(**asdict(h), domain=name) for h in hits]


def _merge(per_domain: dict[str, list[DomainHit]], k: int) -> list[DomainHit]:
    """One list, best cosine first, ranks renumbered (scores of different domains compared as they are)."""
    merged = sorted((h for hits in per_domain.values() for h in hits), key=lambda h: -h.score)[:k]
    for r, h in enumerate(merged, 1):
        h.rank = r
    return merged


class DomainSet:
    """The domains of one server (or one ``dva search`` run) and how queries reach them.

    Args:
        domains: the domains, in the order ``/api/info`` lists them.
        shared: their models on one frozen backbone (None: each domain's own embedder runs whole,
            e.g. the single onnxruntime domain of the classic form).
        router: ``frozen`` or ``adapted`` (module docstring); unused with one domain.
        share_prefix: False runs each domain's whole network (the benchmark's comparison).
    """

    def __init__(self, domains: Sequence[Domain], shared: SharedBackbone | None = None, router: str = "frozen",
                 share_prefix: bool = True) -> None:
        if not domains:
            raise ValueError("no domain to serve")
        names = [d.name for d in domains]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"domain names must be unique: {dup} given more than once")
        if router not in ROUTERS:
            raise ValueError(f"router must be one of {ROUTERS}, got {router!r}")
        if router == "frozen" and shared is None and len(domains) > 1:
            router = "adapted"  # no shared frozen backbone to embed with
        self.domains = {d.name: d for d in domains}
        self.shared, self.router, self.share_prefix = shared, router, share_prefix and shared is not None
        first = domains[0].embedder
        self.transform, self.img_size = first.transform, first.img_size

    @property
    def names(self) -> list[str]:
        return list(self.domains)

    def __len__(self) -> int:
        return len(self.domains)

    def __getitem__(self, name: str) -> Domain:
        key = self.resolve(name)
        if key not in self.domains:  # None (route) or "all": not one domain
            raise UnknownDomainError(f"{name!r} names no single domain; known: {', '.join(self.domains)}")
        return self.domains[key]

    def resolve(self, domain: str | None) -> str | None:
        """``domain`` checked: a known name, ``all``, or None/"" (route); else :class:`UnknownDomainError`."""
        if domain in (None, ""):
            return None
        if domain == ALL or domain in self.domains:
            return domain
        raise UnknownDomainError(f"unknown domain {domain!r}: the domains are {', '.join(self.names)} "
                                 f"(or {ALL!r} for every domain, or none to route the query)")

    def info(self) -> dict:
        """What ``/api/info`` says about the domains and how they are served."""
        out: dict[str, Any] = {"domains": [d.info() for d in self.domains.values()],
                               "router": self.router if len(self) > 1 else None,
                               "shared_prefix": self.share_prefix,
                               "runtime": getattr(self.shared, "runtime", None)}
        if self.shared is not None:
            model = next(iter(self.shared.models.values()))
            out["backbone"] = {"name": model.cfg.backbone.name, "fingerprint": model.fingerprint,
                               "img_size": model.cfg.backbone.img_size}
        return out

    # ------------------------------------------------------------------ embedding
    def embed(self, x: torch.Tensor, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """``(B, 3, H, W)`` -> each domain's L2-normalised ``(B, D)`` embeddings (the frozen prefix once)."""
        names = list(names if names is not None else self.names)
        if not self.share_prefix:
            return {n: self._full(n, x) for n in names}
        # Full fine-tunes ("alone") run their own whole network: no shared prefix for them alone.
        shared = [n for n in names if n not in self.shared.alone]
        hs = self.shared.prefixes(x, self.shared.stops(shared)) if shared else {}
        return {n: self.shared.embed(n, hs, x).numpy() for n in names}

    def _full(self, name: str, x: torch.Tensor) -> np.ndarray:
        if self.shared is not None:
            return self.shared.full(name, x).numpy()
        return self.domains[name].embedder.embed_tensor(x).detach().float().cpu().numpy()

    def images_to_tensor(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """PIL images through the shared eval transform (the same for every domain of one backbone)."""
        from dva.data.images import to_rgb

        return torch.stack([self.transform(to_rgb(im)) for im in images])

    # ------------------------------------------------------------------ search
    def check_where(self, where: str | None, domain: str | None = None) -> str | None:
        """``where`` parsed and its columns checked in every domain a query for ``domain`` may reach
        (a name; ``all`` or None, routed: every domain); None for no filter or a blank one.

        Raises:
            FilterError: a malformed filter, or one naming a column such a domain lacks.
            UnknownDomainError: ``domain`` is not one of the set's, nor ``all``.
        """
        target = self.resolve(domain)
        if where is None or not where.strip():
            return None
        f = filters.parse(where)
        for n in self.names if target in (None, ALL) else [target]:
            filters.check_columns(f, self.domains[n].index.columns, where)
        return where

    def search_tensor(self, x: torch.Tensor, k: int = 10, domain: str | None = None,
                      where: str | None = None) -> list[DomainAnswer]:
        """Top-``k`` hits of each normalised image row: in ``domain``, in ``all`` (merged), or routed
        (None); only among the items ``where`` keeps (:mod:`dva.retrieval.filters`), inside the search."""
        target = self.resolve(domain)
        if target is None and len(self) == 1:
            target = self.names[0]
        if target is None:
            return self._routed(x, k, where)
        names = self.names if target == ALL else [target]
        return self.search_vectors(self.embed(x, names), k, target, where)

    def search_vectors(self, vectors: Mapping[str, np.ndarray], k: int, target: str,
                       where: str | None = None) -> list[DomainAnswer]:
        """Top-``k`` hits of query vectors already embedded, ``{domain: (B, D)}``: one domain's
        (``target`` its name), or every domain's merged by cosine (``target`` = ``all``).

        The one search behind ``dva search --domain`` and the server; hits carry the items'
        extra metadata columns (``Hit.extra``) and their domain.
        """
        per = {n: self._hits(n, np.atleast_2d(np.asarray(v, np.float32)), k, where) for n, v in vectors.items()}
        if target != ALL:
            return [DomainAnswer(target, hits) for hits in per[target]]
        rows = len(next(iter(per.values()))) if per else 0
        return [DomainAnswer(ALL, _merge({n: per[n][i] for n in per}, k)) for i in range(rows)]

    def search_images(self, images: Sequence[Image.Image], k: int = 10, domain: str | None = None,
                      where: str | None = None) -> list[DomainAnswer]:
        """:meth:`search_tensor` of PIL images (decoded once, whatever the number of domains)."""
        self.resolve(domain)  # an unknown domain fails before any pixel work
        return self.search_tensor(self.images_to_tensor(images), k, domain, where) if images else []

    def search_paths(self, paths: Sequence[str | Path], k: int = 10, domain: str | None = None,
                     batch_size: int = 32, where: str | None = None) -> list[QueryResult]:
        """Top-``k`` hits of each query image file (``dva search``); ``extra`` names the domain and route.

        Raises:
            UnknownDomainError: ``domain`` is not one of the set's, nor ``all``.
            FilterError: a bad ``where`` (checked before any image is read: :meth:`check_where`).
            ValueError: a query image cannot be read (the message names the file).
        """
        where = self.check_where(where, domain)
        out: list[QueryResult] = []
        for lo in range(0, len(paths), batch_size):
            chunk = [str(p) for p in paths[lo:lo + batch_size]]
            for path, ans in zip(chunk, self.search_images(load_query_images(chunk), k, domain, where)):
                extra = {"domain": ans.domain, **({"route": ans.route.to_dict()} if ans.route else {})}
                out.append(QueryResult(path, list(ans.hits), None, extra))
        return out

    def _hits(self, name: str, vectors: np.ndarray, k: int, where: str | None = None) -> list[list[DomainHit]]:
        index = self.domains[name].index
        reading = getattr(index, "reading", None)  # a FAISS index: no add/remove between search and lookup
        with reading() if reading is not None else nullcontext():
            scores, ids = index.search(vectors, k) if where is None else index.search(vectors, k, where)
            return [_tag(h, name) for h in hits_from_arrays(index, scores, ids)]

    # ------------------------------------------------------------------ routing
    def route(self, x: torch.Tensor) -> tuple[list[Route], list[np.ndarray]]:
        """Each row's :class:`Route` and its embedding by the chosen domain's model."""
        missing = [n for n, d in self.domains.items() if d.prototypes is None]
        if missing:
            raise RuntimeError(f"no routing prototypes for {missing}: call build_prototypes() first")
        if self.router == "adapted":
            embs = self.embed(x)
            scores = {n: self._score(n, embs[n]) for n in self.names}
            routes = self._decide(scores)
            return routes, [embs[r.domain][i] for i, r in enumerate(routes)]
        if self.share_prefix:
            hs = self.shared.prefixes(x, self.shared.stops(self.names, frozen=True))
            frozen = self.shared.frozen(hs).numpy()
        else:
            frozen = self.shared.full_frozen(x).numpy()
        routes = self._decide({n: self._score(n, frozen) for n in self.names})
        vecs: list[np.ndarray | None] = [None] * len(routes)
        for n in {r.domain for r in routes}:  # only the chosen domains' suffixes run
            rows = [i for i, r in enumerate(routes) if r.domain == n]
            e = (self.shared.embed(n, hs, x, rows) if self.share_prefix else self.shared.full(n, x[rows])).numpy()
            for j, i in enumerate(rows):
                vecs[i] = e[j]
        return routes, vecs  # type: ignore[return-value]

    def _score(self, name: str, q: np.ndarray) -> np.ndarray:
        return (q @ self.domains[name].prototypes.T).max(axis=1)

    def _decide(self, scores: dict[str, np.ndarray]) -> list[Route]:
        names = list(scores)
        table = np.stack([scores[n] for n in names], axis=1)  # (B, domains)
        routes = []
        for row in table:
            order = np.argsort(-row, kind="stable")
            margin = float(row[order[0]] - row[order[1]]) if len(names) > 1 else None
            routes.append(Route(names[order[0]], margin, {n: float(v) for n, v in zip(names, row)}, self.router))
        return routes

    def _routed(self, x: torch.Tensor, k: int, where: str | None = None) -> list[DomainAnswer]:
        routes, vecs = self.route(x)
        answers: list[DomainAnswer | None] = [None] * len(routes)
        for n in {r.domain for r in routes}:
            rows = [i for i, r in enumerate(routes) if r.domain == n]
            for i, hits in zip(rows, self._hits(n, np.stack([vecs[i] for i in rows]), k, where)):
                answers[i] = DomainAnswer(n, hits, routes[i])
        return answers  # type: ignore[return-value]

    def build_prototypes(self, sample: int = 256, use_cache: bool = True, batch_size: int = 32) -> None:
        """Give every domain its routing prototypes (a no-op with one domain).

        ``frozen``: up to ``sample`` gallery images per domain (spread over the labels) embedded
        by the frozen backbone, cached by content; falls back to ``adapted`` (with a warning)
        when a gallery has no readable image. ``adapted``: up to ``sample`` index vectors.
        """
        if len(self) == 1:
            return
        if self.router == "frozen":
            try:
                for d in self.domains.values():
                    ids, labels = _sample_ids(d.index, sample)
                    vecs, ids = self._frozen_vectors(d, ids, use_cache, batch_size)
                    d.prototypes = class_prototypes(vecs, [labels[i] for i in ids])
                return
            except _NoImages as exc:
                warnings.warn(f"{exc}; routing with the adapted router instead", stacklevel=2)
                self.router = "adapted"
        for d in self.domains.values():
            ids, labels = _sample_ids(d.index, sample)
            d.prototypes = class_prototypes(index_vectors(d.index, ids), [labels[i] for i in ids])

    def _frozen_vectors(self, d: Domain, ids: list[int], use_cache: bool,
                        batch_size: int) -> tuple[np.ndarray, list[int]]:
        """Frozen embeddings of the gallery images ``ids`` of ``d`` (the readable ones), cached by content."""
        from dva.data import load_rgb
        from dva.runtime.cache import domain_sample_cache_path
        from dva.utils import atomic_write_bytes

        stats = {i: os.stat(d.index.paths[i]) for i in ids if os.path.isfile(d.index.paths[i])}
        ids = [i for i in ids if i in stats]
        if not ids:
            raise _NoImages(f"domain {d.name!r}: none of the sampled gallery images is on disk")
        model = next(iter(self.shared.models.values()))
        key = json.dumps([model.fingerprint, self.img_size, str(self.transform),
                          [(d.index.paths[i], stats[i].st_size, stats[i].st_mtime_ns) for i in ids]])
        path = domain_sample_cache_path(key)
        if use_cache and path.is_file():
            with np.load(path) as z:
                return z["vectors"], [int(i) for i in z["ids"]]
        rows, kept = [], []
        for lo in range(0, len(ids), batch_size):
            images = []
            for i in ids[lo:lo + batch_size]:
                try:
                    images.append(load_rgb(d.index.paths[i]))
                    kept.append(i)
                except Exception:  # an unreadable gallery file only drops out of the sample
                    continue
            if images:
                x = self.images_to_tensor(images)
                rows.append((self.shared.frozen(self.shared.prefixes(x, self.shared.stops([], frozen=True)))).numpy())
        if not rows:
            raise _NoImages(f"domain {d.name!r}: no sampled gallery image could be decoded")
        vecs = np.concatenate(rows).astype(np.float32)
        buf = io.BytesIO()
        np.savez(buf, vectors=vecs, ids=np.asarray(kept, np.int64))
        atomic_write_bytes(path, buf.getvalue())
        return vecs, kept


class _NoImages(RuntimeError):
    """A gallery with no readable sampled image (the frozen router cannot describe it)."""


def _sample_ids(index: GalleryIndex, sample: int, seed: int = 0) -> tuple[list[int], dict[int, Any]]:
    """Up to ``sample`` gallery ids spread evenly over the labels (all of them when fewer), sorted,
    and ``{id: label}`` of those ids (ids are the index's stable ones: gaps where items were removed)."""
    all_ids = [int(i) for i in index.ids()]
    labels = dict(zip(all_ids, index.labels))  # both in id order; the labels column is read in batches
    if len(all_ids) <= sample:
        return all_ids, labels
    by: dict[Any, list[int]] = {}
    for i in all_ids:
        by.setdefault(labels[i], []).append(i)
    rng = np.random.default_rng(seed)
    pools = [list(rng.permutation(v)) for v in by.values()]
    out: list[int] = []
    while len(out) < sample:  # round-robin over the labels: each gets its share
        for p in pools:
            if p and len(out) < sample:
                out.append(int(p.pop()))
    out.sort()
    return out, {i: labels[i] for i in out}


def class_prototypes(vectors: np.ndarray, labels: Sequence[Any]) -> np.ndarray:
    """L2-normalised mean vector per label; unlabelled rows are prototypes by themselves."""
    v = np.asarray(vectors, np.float32)
    groups: dict[Any, list[int]] = {}
    loose = []
    for i, lab in enumerate(labels):
        (groups.setdefault(lab, []) if lab is not None else loose).append(i)
    protos = [v[rows].mean(0) for rows in groups.values()] + [v[i] for i in loose]
    p = np.stack(protos) if protos else np.zeros((0, v.shape[1]), np.float32)
    return p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12)


def index_vectors(index: GalleryIndex, ids: Sequence[int]) -> np.ndarray:
    """The stored vectors ``ids`` of an index (flat exactly; IVF-PQ from its re-ranking copies or codes)."""
    try:
        return np.asarray(index.vectors(ids), np.float32)
    except RuntimeError as exc:
        raise ValueError(f"index {index.path}: its vectors cannot be read back ({str(exc).splitlines()[0]}); "
                         "route with the frozen router instead") from None


# ----------------------------------------------------------------------------- loading
def single_domain(index: Gallery, embedder: EmbedderLike, name: str = DEFAULT,
                  checkpoint: str | None = None) -> DomainSet:
    """The classic one-index, one-model server as a set of one domain (any runtime)."""
    index.check_fingerprint(embedder.fingerprint)
    return DomainSet([Domain(check_name(name), index, embedder, checkpoint)])


def _base_backbone(key: dict, backbone: str | None, weights: str | None, img_size: int | None,
                   device: torch.device) -> tuple[nn.Module, str, Any]:
    """The shared frozen encoder (on ``device``), its fingerprint, and the config of a frozen-only domain."""
    from dva.config import DVAConfig, validate

    cfg = DVAConfig()
    cfg.backbone.name = key.get("name") or backbone or "mobilenetv2_100"
    # As load_embedder: the checkpoints name their weights; only an explicit other source overrides them.
    keep = key and weights in (None, "bundled")
    cfg.backbone.weights = key["weights"] if keep else (weights or "bundled")
    cfg.backbone.img_size = img_size or key.get("img_size") or 224
    cfg.ica.enabled = False
    validate(cfg, "frozen domain")
    base = bb.create_backbone(cfg.backbone.name, cfg.backbone.weights, cfg.backbone.img_size).to(device)
    return base, bb.fingerprint(base, cfg.backbone.name), cfg


def load_domains(specs: Sequence[DomainSpec], *, backbone: str | None = None, weights: str | None = None,
                 img_size: int | None = None, device: str = "cpu", router: str = "frozen",
                 route_sample: int = 256, share_prefix: bool = True, runtime: str = "torch") -> DomainSet:
    """Load every domain on ONE frozen backbone and prepare the router.

    Args:
        specs: the domains (:func:`parse_domain`, :func:`read_domains_file`).
        backbone: backbone name when no domain has a checkpoint (default ``mobilenetv2_100``).
        weights: where the frozen weights come from (default: the checkpoints' own, else bundled).
        img_size: input size (default: the checkpoints').
        device: ``cpu``, ``cuda`` or ``auto``.
        router: ``frozen`` or ``adapted`` (module docstring).
        route_sample: gallery images (frozen) or vectors (adapted) per domain behind its prototypes.
        share_prefix: False runs each domain's whole network (for comparisons).
        runtime: ``torch`` (:class:`SharedBackbone`), ``onnx`` (:class:`OnnxSharedBackbone`: a
            prefix graph and per-domain suffix graphs, exported once into the cache) or ``auto``
            (onnx on the CPU when onnx and onnxruntime are installed, else torch, as
            :func:`dva.runtime.load.load_embedder`).

    Raises:
        BackboneMismatchError: two checkpoints were trained on different frozen weights or sizes.
        FingerprintMismatchError: an index was built by another model than its domain's.
    """
    from dva.checkpoint import read_checkpoint
    from dva.retrieval.index import FingerprintMismatchError
    from dva.runtime import RUNTIMES, sessions
    from dva.runtime.torch_embedder import Embedder
    from dva.utils import resolve_device

    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if not specs:
        raise ValueError("no domain given: pass --domain NAME=CHECKPOINT:INDEX (repeatable) or --domains FILE")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"domain names must be unique: {sorted({n for n in names if names.count(n) > 1})} repeated")
    infos = {s.name: (s.checkpoint, read_checkpoint(s.checkpoint)[1] if s.checkpoint else None) for s in specs}
    key = _check_same_backbone(infos)
    indexes = {s.name: GalleryIndex.load(s.index) for s in specs}  # a missing index fails before the model
    dev = resolve_device(device)
    base, fp, frozen_cfg = _base_backbone(key, backbone, weights, img_size, dev)
    domains, models = [], {}
    for s in specs:
        info = infos[s.name][1]
        if info is not None and img_size:
            info["config"].backbone.img_size = img_size
        models[s.name] = _domain_model(base, fp, s.checkpoint, info, frozen_cfg)
        emb = Embedder(models[s.name], dev)
        try:
            indexes[s.name].check_fingerprint(emb.fingerprint)
        except FingerprintMismatchError as exc:
            raise FingerprintMismatchError(f"domain {s.name!r}: {exc}") from None
        domains.append(Domain(s.name, indexes[s.name], emb, s.checkpoint))
    # Through the module attribute: tests can stand in a missing onnxruntime.
    use_onnx = runtime == "onnx" or (runtime == "auto" and dev.type == "cpu" and sessions.onnx_available())
    if use_onnx:
        shared: SharedBackbone = OnnxSharedBackbone(base, models, dev, _domain_model(base, fp, None, None, frozen_cfg))
        for d in domains:
            d.runtime = "onnx"
    else:
        shared = SharedBackbone(base, models, dev)
    out = DomainSet(domains, shared, router, share_prefix)
    out.build_prototypes(route_sample)
    return out

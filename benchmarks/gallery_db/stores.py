"""The two gallery stores as the benchmark drives them: build, open, copy, tune, size on disk.

Everything else (search, add, remove, filters) goes through the store-neutral protocol
:class:`dva.retrieval.backend.Gallery`, so both stores run the very same phase code.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any


def disk_bytes(path: Path) -> int:
    """Bytes of a file, or of every file under a folder."""
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def remove_store(path: Path) -> None:
    """Delete the store at ``path`` (a file or a folder; nothing when absent)."""
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def copy_store(src: Path, dst: Path) -> None:
    """Replace ``dst`` with a copy of the store at ``src`` (a file or a folder).

    Add and remove change a store in place; each mutating phase works on a fresh copy of the
    previous phase's store, so a phase re-run (``--reuse`` after a failure) starts from the same state.
    """
    remove_store(dst)
    if src.is_dir():
        shutil.copytree(src, dst)
    else:
        shutil.copy2(src, dst)


class FaissStore:
    """A FAISS IVF-PQ index directory (``dva index --kind ivfpq``, the product's defaults)."""

    name = "faiss"

    def __init__(self, **build_params: Any) -> None:
        self.build_params = build_params

    def location(self, work: Path, stage: str) -> Path:
        """The index directory of ``stage`` (build, added, removed)."""
        return work / "faiss" / stage

    def build(self, embeddings: Any, location: Path) -> Any:
        """Build IVF-PQ + fp16 re-ranking over ``embeddings`` at ``location`` (replacing what is there)."""
        from dva.retrieval.index import build_index

        params = {"kind": "ivfpq", "fallback": False, **self.build_params}
        return build_index(embeddings, location, overwrite=True, **params)

    def open(self, location: Path) -> Any:
        """Load the index directory."""
        from dva.retrieval.index import GalleryIndex

        return GalleryIndex.load(location)

    def describe(self, gallery: Any) -> dict[str, Any]:
        """The index kind and parameters (nlist, m, nbits, nprobe, refine, k_factor, train_size)."""
        return {"kind": gallery.meta.get("kind"), "params": dict(gallery.meta.get("params") or {})}

    def settle(self, gallery: Any) -> float:
        """Seconds until the store has indexed everything written (FAISS: at once)."""
        return 0.0

    def committed_bytes(self, location: Path) -> int:
        """Bytes of the build ``index.json`` names (older builds' files may linger beside it for readers)."""
        import json

        pointer = json.loads((location / "index.json").read_text())
        names = ["index.json", *(pointer[k] for k in ("faiss_file", "items_file") if pointer.get(k))]
        return sum((location / n).stat().st_size for n in names)

    def tune(self, gallery: Any, nprobe: int | None = None, k_factor: int | None = None) -> None:
        """Set the lists visited and the re-ranked candidates per neighbour for the next searches."""
        if nprobe is not None:
            gallery.set_nprobe(nprobe)
        if k_factor is not None:
            gallery.set_k_factor(k_factor)


class MilvusStore:
    """A Milvus Lite database (``dva index --store milvus --uri gallery.db``), embedded in the process."""

    name = "milvus"

    def location(self, work: Path, stage: str) -> Path:
        """The Milvus Lite database of ``stage`` (build, added, removed, probe)."""
        return work / "milvus" / f"{stage}.db"

    def build(self, embeddings: Any, location: Path) -> Any:
        """Create the collection at ``location`` (replacing it) and insert ``embeddings``."""
        from dva.retrieval.milvus import build_milvus

        location.parent.mkdir(parents=True, exist_ok=True)
        return build_milvus(embeddings, str(location), overwrite=True)

    def open(self, location: Path) -> Any:
        """Open the collection of the database at ``location``."""
        from dva.retrieval.milvus import MilvusGallery

        if not location.exists():
            raise FileNotFoundError(f"{location}: no Milvus Lite database; run the phase that builds it")
        return MilvusGallery.open(str(location))

    def describe(self, gallery: Any) -> dict[str, Any]:
        """The collection's vector index as the store records it (HNSW: M, efConstruction, search ef)."""
        index = dict((getattr(gallery, "meta", {}) or {}).get("index") or {})
        return {"kind": index.pop("kind", None), "params": index}

    def settle(self, gallery: Any, timeout: float = 3600.0, poll: float = 0.5) -> float:
        """Seconds until the collection's vector index covers every row (Milvus indexes flushed rows in the
        background: a search before that scans the unindexed rows by brute force)."""
        t0 = time.perf_counter()
        client, name = gallery.client, gallery.collection
        while time.perf_counter() - t0 < timeout:
            info = client.describe_index(name, client.list_indexes(name)[0])
            if int(info.get("pending_index_rows", 0)) == 0 and info.get("indexed_rows") == info.get("total_rows"):
                break
            time.sleep(poll)
        return time.perf_counter() - t0

    def committed_bytes(self, location: Path) -> int:
        """Bytes of the database folder."""
        return disk_bytes(location)

    def tune(self, gallery: Any, ef: int | None = None) -> None:
        """Set the HNSW search breadth for the next searches."""
        if ef is not None:
            gallery.ef = int(ef)


def store(name: str, **faiss_params: Any) -> FaissStore | MilvusStore:
    """The store called ``name`` (``faiss`` or ``milvus``)."""
    if name == "faiss":
        return FaissStore(**faiss_params)
    if name == "milvus":
        return MilvusStore()
    raise ValueError(f"unknown store {name!r}: expected faiss or milvus")

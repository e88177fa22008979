"""An interrupted embedding run resumes without redoing finished shards."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dva.retrieval.store import GalleryItem, embed_gallery, load_embeddings


class Interrupt(Exception):
    pass


def _files(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()
            and p.name != "meta.json"}


def test_interrupted_run_resumes_to_identical_output(embedder, gallery, tmp_path):
    paths, labels = gallery
    items = [GalleryItem(str(p), lab) for p, lab in zip(paths, labels)]
    kw = dict(shard_size=5, batch_size=2, progress=False)  # 24 images -> 5 shards

    ref_dir = tmp_path / "ref"
    embed_gallery(embedder, items, ref_dir, **kw)

    def stop_after_two(i: int) -> None:
        if i == 1:
            raise Interrupt

    out = tmp_path / "out"
    embedder.images_seen = 0
    with pytest.raises(Interrupt):
        embed_gallery(embedder, items, out, on_shard_done=stop_after_two, **kw)
    assert embedder.images_seen == 10
    assert json.loads((out / "meta.json").read_text())["status"] == "running"
    with pytest.raises(ValueError, match="unfinished"):
        load_embeddings(out)
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "shards").glob("*")}

    embedder.images_seen = 0
    finished: list[int] = []
    s = embed_gallery(embedder, items, out, on_shard_done=finished.append, **kw)
    assert finished == [2, 3, 4], "only the unfinished shards are embedded"
    assert embedder.images_seen == 14, "finished shards must not be re-embedded"
    assert (s.shards_embedded, s.shards_total, s.count) == (3, 5, 24)
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items()), "finished shards untouched"
    assert _files(out) == _files(ref_dir)
    np.testing.assert_array_equal(load_embeddings(out).vectors, load_embeddings(ref_dir).vectors)

    # a complete run re-run does nothing
    embedder.images_seen = 0
    assert embed_gallery(embedder, items, out, **kw).shards_embedded == 0
    assert embedder.images_seen == 0


def test_half_written_shard_is_redone(embedder, gallery, tmp_path):
    """A shard whose .json exists but whose .npy is missing/stale counts as unfinished."""
    paths, _ = gallery
    items = [GalleryItem(str(p)) for p in paths]
    out = tmp_path / "out"
    embed_gallery(embedder, items, out, shard_size=8, progress=False)
    ref = load_embeddings(out).vectors.copy()
    (out / "shards" / "00001.npy").unlink()
    meta = json.loads((out / "meta.json").read_text())
    meta["status"] = "running"
    (out / "meta.json").write_text(json.dumps(meta))
    (out / "shards" / ".00002.npy.abc.tmp").write_bytes(b"partial")  # a killed atomic write
    embedder.images_seen = 0
    s = embed_gallery(embedder, items, out, shard_size=8, progress=False)
    assert s.shards_embedded == 1 and embedder.images_seen == 8
    assert not list(out.rglob("*.tmp")), "stale temp files of a killed write are removed"
    np.testing.assert_array_equal(load_embeddings(out).vectors, ref)


def test_resume_refuses_other_model_or_inputs(embedder, make_embedder, gallery, tmp_path):
    paths, _ = gallery
    items = [GalleryItem(str(p)) for p in paths]
    out = tmp_path / "out"
    embed_gallery(embedder, items, out, shard_size=8, progress=False)
    with pytest.raises(ValueError, match="fingerprint"):
        embed_gallery(make_embedder(seed=1), items, out, shard_size=8, progress=False)
    with pytest.raises(ValueError, match="inputs_sha256"):
        embed_gallery(embedder, items[:-1], out, shard_size=8, progress=False)
    with pytest.raises(ValueError, match="shard_size"):
        embed_gallery(embedder, items, out, shard_size=4, progress=False)
    other = make_embedder(seed=1)
    s = embed_gallery(other, items, out, shard_size=8, progress=False, overwrite=True)
    assert s.shards_embedded == 3 and load_embeddings(out).fingerprint == other.fingerprint


def test_a_list_whose_extra_columns_changed_is_another_input(embedder, gallery, tmp_path):
    paths, _ = gallery
    base = [GalleryItem(str(p), "x", {"source": "a"}) for p in paths]
    out = tmp_path / "out"
    embed_gallery(embedder, base, out, shard_size=8, progress=False)
    assert json.loads((out / "meta.json").read_text())["columns"] == ["source"]
    assert embed_gallery(embedder, base, out, shard_size=8, progress=False).shards_embedded == 0  # same: resumes
    renamed = [GalleryItem(it.path, it.label, {"site": "a"}) for it in base]
    revalued = [GalleryItem(it.path, it.label, {"source": "b" if k == 5 else "a"}) for k, it in enumerate(base)]
    plain = [GalleryItem(it.path, it.label) for it in base]
    with pytest.raises(ValueError, match=r"columns: \['source'\] -> \['site'\]"):
        embed_gallery(embedder, renamed, out, shard_size=8, progress=False)
    with pytest.raises(ValueError, match="extras_sha256"):
        embed_gallery(embedder, revalued, out, shard_size=8, progress=False)
    with pytest.raises(ValueError, match=r"columns: \['source'\] -> None"):  # dropped columns count too
        embed_gallery(embedder, plain, out, shard_size=8, progress=False)
    s = embed_gallery(embedder, revalued, out, shard_size=8, progress=False, overwrite=True)
    assert s.shards_embedded == 3 and load_embeddings(out).extras[5] == {"source": "b"}


def test_inputs_with_bad_or_uneven_extra_columns_are_refused(embedder, gallery, tmp_path):
    paths, _ = gallery
    with pytest.raises(ValueError, match="column 1 'label': the name is reserved"):
        embed_gallery(embedder, [GalleryItem(str(p), None, {"label": "x"}) for p in paths], tmp_path / "a",
                      progress=False)
    uneven = [GalleryItem(str(p), None, {"source": "a"} if i else {}) for i, p in enumerate(paths)]
    with pytest.raises(ValueError, match=r"input 1 .* has extra columns \['source'\], input 0 has \[\]"):
        embed_gallery(embedder, uneven, tmp_path / "b", progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # refused before writing


def test_plain_run_refuses_to_become_one_with_columns(embedder, gallery, tmp_path):
    paths, _ = gallery
    out = tmp_path / "out"
    embed_gallery(embedder, [GalleryItem(str(p)) for p in paths], out, shard_size=8, progress=False)
    with pytest.raises(ValueError, match=r"columns: None -> \['source'\]"):
        embed_gallery(embedder, [GalleryItem(str(p), None, {"source": "a"}) for p in paths], out,
                      shard_size=8, progress=False)


_CHILD = r"""
import sys, time
sys.path[:0] = [{src!r}, {tests!r}]
from conftest import TinyEmbedder
from dva.retrieval.store import embed_gallery, list_images

class Slow(TinyEmbedder):
    def embed_tensor(self, x):
        time.sleep(0.05)
        return super().embed_tensor(x)

def tick(i):
    print("shard", i, flush=True)

embed_gallery(Slow(), list_images({gallery!r}), {out!r}, shard_size=4, batch_size=2,
              progress=False, on_shard_done=tick)
print("done", flush=True)
"""


def test_killed_process_resumes(embedder, gallery, tmp_path):
    """SIGKILL a real embedding process mid-run; the next run finishes the job."""
    src = str(Path(__file__).resolve().parents[2] / "src")
    code = _CHILD.format(src=src, tests=str(Path(__file__).parent), gallery=str(tmp_path / "gallery"),
                         out=str(tmp_path / "out"))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            if line.startswith("shard 1"):
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    done_before = sorted(p.name for p in (tmp_path / "out" / "shards").glob("*.npy"))
    assert 2 <= len(done_before) < 6

    from dva.retrieval.store import list_images

    embedder.images_seen = 0
    s = embed_gallery(embedder, list_images(tmp_path / "gallery"), tmp_path / "out", shard_size=4,
                      batch_size=2, progress=False)
    assert s.count == 24 and s.shards_embedded == 6 - len(done_before)
    assert embedder.images_seen == 24 - 4 * len(done_before)
    ref = embed_gallery(embedder, list_images(tmp_path / "gallery"), tmp_path / "ref", shard_size=4,
                        progress=False)
    np.testing.assert_allclose(load_embeddings(tmp_path / "out").vectors,
                               load_embeddings(ref.out_dir).vectors, atol=1e-6)
    assert not list((tmp_path / "out").rglob("*.tmp"))

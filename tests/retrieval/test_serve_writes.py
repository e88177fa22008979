"""The service as a living gallery: the api-key guard, POST/DELETE /items, /healthz, ``where`` in /search."""
from __future__ import annotations

import hashlib
import importlib.util
import io
import threading
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from dva.retrieval.index import GalleryIndex, build_index
from dva.retrieval.serve import create_app
from dva.retrieval.store import EmbeddingSet

KEY = "k3y-for-tests_0123456789"
BEARER = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
def index_dir(embedder, gallery, tmp_path) -> Path:
    """The 24-image gallery indexed with an extra column ``source`` (trap0 / trap1)."""
    paths, labels = gallery
    es = EmbeddingSet(embedder.embed_paths(paths).astype(np.float32), [str(p) for p in paths], list(labels),
                      {"fingerprint": embedder.fingerprint}, extras=[{"source": f"trap{i % 2}"} for i in range(24)],
                      columns=("source",))
    build_index(es, tmp_path / "idx")
    return tmp_path / "idx"


@pytest.fixture
def client(embedder, index_dir) -> TestClient:
    return TestClient(create_app(index_dir, embedder, api_key=KEY, max_upload_bytes=200_000, default_k=5,
                                 max_files=3))


def _png(tmp_path: Path, seed: int, label: int = 0, size: tuple[int, int] = (40, 36)) -> bytes:
    """A new random-textured PNG (not in the gallery), as the gallery fixture makes them."""
    rng = np.random.default_rng(seed)
    base = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200]][label % 3])
    arr = np.clip(base + rng.normal(0, 50, size=(size[1], size[0], 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def _search(client: TestClient, data: bytes, k: int | None = None, **form) -> dict:
    r = client.post(f"/search?k={k}" if k else "/search", files={"file": ("q.png", data, "image/png")}, data=form)
    assert r.status_code == 200, r.text
    return r.json()


# ----------------------------------------------------------------------------- the guard
def test_without_a_key_the_server_is_read_only(embedder, index_dir, tmp_path):
    client = TestClient(create_app(index_dir, embedder))
    r = client.post("/items", files={"file": ("a.png", _png(tmp_path, 50), "image/png")}, headers=BEARER)
    assert r.status_code == 403 and "read-only server" in r.json()["detail"] and "DVA_API_KEY" in r.json()["detail"]
    assert client.delete("/items/0", headers=BEARER).status_code == 403
    assert client.get("/api/info").json()["writable"] is False
    assert not (index_dir / "uploads").exists()  # a read-only server makes no upload folder
    assert len(GalleryIndex.load(index_dir)) == 24


def test_api_key_guard(client, index_dir, tmp_path):
    up = {"file": ("a.png", _png(tmp_path, 51), "image/png")}
    answers = [client.post("/items", files=up, headers=h) for h in
               ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "wrong"}, {"Authorization": KEY},
                {"Authorization": f"Basic {KEY}"}, {"X-API-Key": KEY[:-1]})]
    assert [r.status_code for r in answers] == [401] * 6
    assert len({r.json()["detail"] for r in answers}) == 1  # no hint which: missing and wrong read alike
    assert answers[0].headers["www-authenticate"] == "Bearer"
    assert client.delete("/items/0").status_code == 401
    assert client.delete("/items/0", headers={"X-API-Key": "x"}).status_code == 401
    assert len(GalleryIndex.load(index_dir)) == 24  # nothing got through
    r = client.post("/items", files=up, headers={"Authorization": f"bearer {KEY}"})  # the scheme in any case
    assert r.status_code == 200, r.text
    r = client.delete(f"/items/{r.json()['added'][0]['id']}", headers={"X-API-Key": KEY})
    assert r.status_code == 200 and r.json()["count"] == 24
    assert client.get("/api/info").json()["writable"] is True


def test_a_body_without_the_key_is_refused_before_it_is_read(client):
    big = b"\0" * 2_000_000  # over the limit of 3 files of 200 kB: would be 413 with the key
    multipart = {"content-type": "multipart/form-data; boundary=x"}
    assert client.post("/items", content=big, headers=multipart).status_code == 401
    r = client.post("/items", content=big, headers={**BEARER, **multipart})
    assert r.status_code == 413
    assert r.json()["detail"] == "upload too large: the limit is 0.2 MiB per image, 3 images per request"


@pytest.mark.parametrize("key", ["", "has space", "tab\tkey", "ключ"])
def test_unusable_keys_are_refused_at_start(embedder, index_dir, key):
    with pytest.raises(ValueError, match="api key"):
        create_app(index_dir, embedder, api_key=key)


# ----------------------------------------------------------------------------- add, search, remove
def test_upload_is_found_first_then_removed(client, index_dir, tmp_path):
    data = _png(tmp_path, 60, label=2)
    r = client.post("/items", files={"file": ("mine.png", data, "image/png")},
                    data={"label": "heron", "source": "phone"}, headers=BEARER)
    assert r.status_code == 200, r.text
    body = r.json()
    (new,) = body["added"]
    name = hashlib.sha256(data).hexdigest() + ".png"
    assert new["id"] == 24 and new["path"] == f"uploads/{name}" and new["label"] == "heron"
    assert new["extra"] == {"source": "phone"} and new["image_url"] == "image/24" and body["count"] == 25
    stored = index_dir / "uploads" / name
    assert stored.read_bytes() == data  # content-addressed, the bytes as sent
    reloaded = GalleryIndex.load(index_dir)  # committed before the answer
    assert len(reloaded) == 25 and reloaded.items([24])[0].path == str(stored.resolve())
    top = _search(client, data)["results"][0]
    assert (top["id"], top["label"], top["extra"], top["path"]) == (24, "heron", {"source": "phone"}, f"uploads/{name}")
    assert top["score"] == pytest.approx(1, abs=1e-5)
    assert client.get("/image/24").content == data
    assert client.get("/api/info").json()["count"] == 25

    r = client.delete("/items/24", headers=BEARER)
    assert r.status_code == 200 and r.json() == {"domain": "default", "removed": 24, "path": f"uploads/{name}",
                                                 "count": 24}
    assert 24 not in [h["id"] for h in _search(client, data, k=24)["results"]]
    assert client.get("/image/24").status_code == 404 and client.get("/image/24?size=32").status_code == 404
    assert not stored.exists() and len(GalleryIndex.load(index_dir)) == 24
    assert client.get("/api/info").json()["count"] == 24
    for gone in ("24", "999", "abc", "-1", "1.0"):
        assert client.delete(f"/items/{gone}", headers=BEARER).status_code == 404, gone
    again = client.post("/items", files={"file": ("mine.png", data, "image/png")}, headers=BEARER).json()
    assert again["added"][0]["id"] == 25  # a removed id is never reused


def test_several_files_in_one_request(client, tmp_path):
    files = [("file", (f"{s}.png", _png(tmp_path, s), "image/png")) for s in (70, 71, 72)]
    r = client.post("/items", files=files, data={"label": "batch"}, headers=BEARER)
    assert r.status_code == 200, r.text
    ids = [a["id"] for a in r.json()["added"]]
    assert ids == [24, 25, 26] and r.json()["count"] == 27
    for (_, (_, data, _)), i in zip(files, ids):
        assert _search(client, data)["results"][0]["id"] == i
    hits = _search(client, files[0][1][1], where="label = 'batch'", k=10)["results"]
    assert sorted(h["id"] for h in hits) == ids  # the extra column defaults to null
    assert all(h["extra"] == {"source": None} for h in hits)


@pytest.mark.parametrize("case,status,words", [
    ("unknown column", 400, ["unknown metadata column colour", "label, source"]),
    ("no file", 400, ["no image"]),
    ("not an image", 415, ["file 2 (b.png)", "not a decodable image"]),
    ("empty file", 400, ["file 1", "empty upload"]),
    ("too many files", 413, ["at most 3 images"]),
    ("file too big", 413, ["file 1", "too large"]),
    ("same file twice", 409, ["same image as an earlier file"]),
    ("already indexed", 409, ["already in the gallery as id 5"]),
    ("other file field", 400, ["'image'"]),
    ("all domains", 400, ["name the domain"]),
])
def test_bad_uploads_change_nothing(client, index_dir, gallery, tmp_path, case, status, words):
    paths, _ = gallery
    ok = ("file", ("a.png", _png(tmp_path, 80), "image/png"))
    files, data, query = [ok], {}, ""
    if case == "unknown column":
        data = {"colour": "red"}
    elif case == "no file":
        files, data = [], {"label": "x"}
    elif case == "not an image":
        files = [ok, ("file", ("b.png", b"not an image", "image/png"))]
    elif case == "empty file":
        files = [("file", ("e.png", b"", "image/png"))]
    elif case == "too many files":
        files = [("file", (f"{s}.png", _png(tmp_path, s), "image/png")) for s in range(81, 85)]
    elif case == "file too big":
        files = [("file", ("big.png", b"\x89PNG" + b"\0" * 250_000, "image/png"))]
    elif case == "same file twice":
        files = [ok, ok]
    elif case == "already indexed":
        files = [("file", ("g.png", paths[5].read_bytes(), "image/png"))]
        (index_dir / "uploads").mkdir(exist_ok=True)
        (index_dir / "uploads" / (hashlib.sha256(paths[5].read_bytes()).hexdigest() + ".png")).unlink(missing_ok=True)
        added = client.post("/items", files=files, headers=BEARER).json()["added"][0]["id"]  # once: fine
        files = [("file", ("g.png", paths[5].read_bytes(), "image/png"))]
        words = [f"already in the gallery as id {added}"]
    elif case == "other file field":
        files = [("image", ok[1])]
    elif case == "all domains":
        query = "?domain=all"
    before = len(GalleryIndex.load(index_dir))
    kept = set((index_dir / "uploads").iterdir()) if (index_dir / "uploads").exists() else set()
    r = client.post(f"/items{query}", files=files, data=data, headers=BEARER)
    assert r.status_code == status, r.text
    assert all(w in r.json()["detail"] for w in words), r.json()["detail"]
    assert len(GalleryIndex.load(index_dir)) == before
    assert set((index_dir / "uploads").iterdir()) == kept  # no stray file of a refused upload


def test_pixel_limit_holds_for_every_uploaded_file(embedder, index_dir, tmp_path):
    client = TestClient(create_app(index_dir, embedder, api_key=KEY, max_pixels=2000))
    small, large = _png(tmp_path, 90, size=(40, 36)), _png(tmp_path, 91, size=(60, 60))
    r = client.post("/items", files=[("file", ("s.png", small, "image/png")), ("file", ("l.png", large, "image/png"))],
                    headers=BEARER)
    assert r.status_code == 413 and "file 2 (l.png)" in r.json()["detail"] and "pixels" in r.json()["detail"]
    assert len(GalleryIndex.load(index_dir)) == 24


def test_upload_dir_option_and_milvus_like_stores_need_one(embedder, index_dir, tmp_path):
    client = TestClient(create_app(index_dir, embedder, api_key=KEY, upload_dir=tmp_path / "elsewhere"))
    data = _png(tmp_path, 95)
    added = client.post("/items", files={"file": ("a.png", data, "image/png")}, headers=BEARER).json()["added"][0]
    assert (tmp_path / "elsewhere" / added["path"].split("/", 1)[1]).read_bytes() == data
    assert client.get(added["image_url"]).content == data
    gi = GalleryIndex.load(index_dir)
    gi.path = None  # a store with no folder of its own (a remote Milvus)
    with pytest.raises(ValueError, match="--upload-dir"):
        create_app(gi, embedder, api_key=KEY)
    create_app(gi, embedder)  # read-only: needs none


# ----------------------------------------------------------------------------- where
def test_where_restricts_the_hits_inside_the_search(client, gallery):
    paths, labels = gallery
    q = paths[0].read_bytes()
    hits = _search(client, q, where="label = 1", k=24)["results"]
    assert len(hits) == 8 and {h["label"] for h in hits} == {1}  # all of them: filtered, not over-fetched
    hits = _search(client, q, where="source = 'trap1' and label != 1", k=24)["results"]
    assert sorted(h["id"] for h in hits) == [i for i in range(24) if i % 2 == 1 and labels[i] != 1]
    assert all(h["extra"] == {"source": "trap1"} for h in hits)
    by_query = client.post("/search?where=label%20%3D%202&k=3", files={"file": ("q.png", q)}).json()
    assert [h["label"] for h in by_query["results"]] == [2, 2, 2] and by_query["where"] == "label = 2"
    assert _search(client, q, where="label = 'none such'")["results"] == []
    assert _search(client, q, where="  ")["where"] is None
    info = client.get("/api/info").json()
    assert info["columns"] == ["id", "path", "label", "source"]


@pytest.mark.parametrize("where,words", [
    ("label = ", ["bad filter", "position"]),
    ("colour = 'red'", ["unknown column 'colour'", "id, path, label, source"]),
    ("label = 'a' or", ["bad filter"]),
])
def test_bad_filters_are_400_with_the_parsers_message(client, gallery, where, words):
    paths, _ = gallery
    r = client.post("/search", files={"file": ("q.png", paths[0].read_bytes())}, data={"where": where})
    assert r.status_code == 400 and all(w in r.json()["detail"] for w in words), r.json()


# ----------------------------------------------------------------------------- health, concurrency
def test_healthz(client, index_dir):
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok", "items": 24, "domains": ["default"]}
    (index_dir / "index.json").rename(index_dir / "moved.json")
    r = client.get("/healthz")
    assert r.status_code == 503 and r.json()["status"] == "unavailable"
    assert "index.json" in r.json()["problems"]["default"] and str(index_dir) not in r.text


def test_searches_during_writes_never_fail(client, gallery, tmp_path):
    paths, _ = gallery
    uploads = [_png(tmp_path, s) for s in range(100, 104)]
    codes, stop = [], threading.Event()

    def searching():
        while not stop.is_set():
            r = client.post("/search?k=24", files={"file": ("q.png", paths[3].read_bytes())})
            codes.append((r.status_code, r.json()["results"][0]["id"] if r.status_code == 200 else r.text))

    threads = [threading.Thread(target=searching) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for data in uploads:
            r = client.post("/items", files={"file": ("u.png", data, "image/png")}, headers=BEARER)
            assert r.status_code == 200, r.text
            assert client.delete(f"/items/{r.json()['added'][0]['id']}", headers=BEARER).status_code == 200
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert codes and set(codes) == {(200, 3)}
    assert client.get("/api/info").json()["count"] == 24


# ----------------------------------------------------------------------------- other stores, the command
@pytest.mark.skipif(importlib.util.find_spec("milvus_lite") is None, reason="milvus-lite absent")
def test_writes_on_a_milvus_lite_gallery(embedder, gallery, tmp_path):
    from dva.retrieval.milvus import MilvusGallery, build_milvus

    paths, labels = gallery
    es = EmbeddingSet(embedder.embed_paths(paths).astype(np.float32), [str(p) for p in paths], list(labels),
                      {"fingerprint": embedder.fingerprint})
    g = build_milvus(es, str(tmp_path / "g.db"))
    client = TestClient(create_app(g, embedder, api_key=KEY))
    data = _png(tmp_path, 120)
    r = client.post("/items", files={"file": ("m.png", data, "image/png")}, data={"label": "m"}, headers=BEARER)
    assert r.status_code == 200, r.text
    new = r.json()["added"][0]
    assert new["id"] == 24 and (tmp_path / "g-uploads" / new["path"].split("/", 1)[1]).read_bytes() == data
    top = _search(client, data)["results"][0]
    assert (top["id"], top["label"]) == (24, "m") and client.get("/image/24").content == data
    assert [h["label"] for h in _search(client, data, where="label = 1", k=24)["results"]] == [1] * 8
    assert client.get("/healthz").json() == {"status": "ok", "items": 25, "domains": ["default"]}
    assert client.delete("/items/24", headers=BEARER).status_code == 200
    assert client.get("/image/24").status_code == 404 and len(g) == 24
    assert 24 not in [h["id"] for h in _search(client, data, k=24)["results"]]
    assert isinstance(g, MilvusGallery)


@pytest.fixture
def captured(monkeypatch, embedder):
    """`dva serve` with uvicorn replaced: the arguments it would serve with."""
    import dva.retrieval.serve as serve_mod
    from dva_cli import _model

    seen: dict = {}
    monkeypatch.setattr(serve_mod, "serve", lambda *a, **kw: seen.update(args=a, **kw))
    monkeypatch.setattr(_model, "embedder_from_args", lambda args: embedder)
    monkeypatch.delenv("DVA_API_KEY", raising=False)
    return seen


def test_cli_api_key_from_the_environment_or_the_option(captured, index_dir, tmp_path, monkeypatch, capsys):
    from dva_cli.cli import main

    assert main(["serve", "--index", str(index_dir)]) == 0
    assert captured["api_key"] is None and "read-only" in capsys.readouterr().out
    monkeypatch.setenv("DVA_API_KEY", KEY)
    assert main(["serve", "--index", str(index_dir), "--upload-dir", str(tmp_path / "up"), "--max-files", "4"]) == 0
    out, err = capsys.readouterr()
    assert captured["api_key"] == KEY and captured["upload_dir"] == str(tmp_path / "up") and captured["max_files"] == 4
    assert "writes enabled" in out and err == ""
    assert isinstance(captured["args"][0], GalleryIndex) and len(captured["args"][0]) == 24
    assert main(["serve", "--index", str(index_dir), "--api-key", "other-key"]) == 0  # the option wins, warned
    err = capsys.readouterr().err
    assert captured["api_key"] == "other-key" and "visible to other users" in err and "DVA_API_KEY instead" in err


def test_cli_refusals_before_the_model_loads(captured, index_dir, monkeypatch, capsys):
    from dva_cli import _model
    from dva_cli.cli import main

    monkeypatch.setattr(_model, "embedder_from_args", lambda args: pytest.fail("the model must not load"))
    assert main(["serve", "--index", str(index_dir), "--api-key", "has space"]) == 2
    assert "api key" in capsys.readouterr().err
    assert main(["serve", "--index", str(index_dir), "--uri", "g.db"]) == 2
    assert "--store milvus" in capsys.readouterr().err
    assert main(["serve", "--store", "milvus"]) == 2 and "needs --uri" in capsys.readouterr().err
    assert main(["serve", "--store", "milvus", "--uri", "g.db", "--index", str(index_dir)]) == 2
    assert "leave out --index" in capsys.readouterr().err
    assert not captured


@pytest.mark.skipif(importlib.util.find_spec("milvus_lite") is None, reason="milvus-lite absent")
def test_cli_serves_a_milvus_gallery(captured, embedder, gallery, tmp_path, capsys):
    from dva.retrieval.milvus import build_milvus
    from dva_cli.cli import main

    paths, labels = gallery
    es = EmbeddingSet(embedder.embed_paths(paths).astype(np.float32), [str(p) for p in paths], list(labels),
                      {"fingerprint": embedder.fingerprint})
    build_milvus(es, str(tmp_path / "g.db")).client.close()  # one process, one client: let the command open it
    assert main(["serve", "--store", "milvus", "--uri", str(tmp_path / "g.db")]) == 0
    assert "serving 24 images from milvus" in capsys.readouterr().out
    assert captured["args"][0].fingerprint == embedder.fingerprint and len(captured["args"][0]) == 24


def test_writes_name_their_domain_when_there_are_several(embedder, index_dir, tmp_path):
    import shutil

    from dva.retrieval.domains import Domain, DomainSet

    shutil.copytree(index_dir, tmp_path / "idx2")
    ds = DomainSet([Domain("birds", GalleryIndex.load(index_dir), embedder),
                    Domain("pets", GalleryIndex.load(tmp_path / "idx2"), embedder)])
    client = TestClient(create_app(domains=ds, api_key=KEY, upload_dir=tmp_path / "up"))
    data = _png(tmp_path, 130)
    up = {"file": ("p.png", data, "image/png")}
    r = client.post("/items", files=up, headers=BEARER)
    assert r.status_code == 400 and "birds, pets" in r.json()["detail"]
    r = client.post("/items?domain=pets", files=up, headers=BEARER)
    assert r.status_code == 200 and r.json()["added"][0]["image_url"] == "domains/pets/image/24"
    assert (tmp_path / "up" / "pets" / r.json()["added"][0]["path"].split("/", 1)[1]).is_file()
    assert len(GalleryIndex.load(tmp_path / "idx2")) == 25 and len(GalleryIndex.load(index_dir)) == 24
    assert client.get("/domains/pets/image/24").content == data
    assert client.get("/domains/birds/image/24").status_code == 404
    top = _search(client, data, domain="pets")["results"][0]
    assert (top["id"], top["domain"]) == (24, "pets")
    assert client.delete("/items/24", headers=BEARER).status_code == 400
    assert client.delete("/items/24?domain=birds", headers=BEARER).status_code == 404
    assert client.delete("/items/24?domain=pets", headers=BEARER).status_code == 200
    assert client.get("/healthz").json() == {"status": "ok", "items": 48, "domains": ["birds", "pets"]}


# ----------------------------------------------------------------------------- other writers, other stores
def _one(embedder, path: Path, label: str, source: str) -> EmbeddingSet:
    """An embeddings set of one image with a ``source`` column (what `dva embed` gives `dva index --add`)."""
    return EmbeddingSet(embedder.embed_paths([path]).astype(np.float32), [str(path)], [label],
                        {"fingerprint": embedder.fingerprint}, extras=[{"source": source}], columns=("source",))


def test_a_commit_by_another_process_is_seen_by_the_next_request(embedder, index_dir, tmp_path, monkeypatch):
    import dva.retrieval.serve.reload as reload_mod
    from dva.retrieval.index import add_to_index, remove_from_index

    monkeypatch.setattr(reload_mod, "CHECK_EVERY_S", 0.0)  # look before every request
    loads = []
    real_load = GalleryIndex.load.__func__
    monkeypatch.setattr(GalleryIndex, "load", classmethod(lambda cls, p: loads.append(p) or real_load(cls, p)))
    client = TestClient(create_app(index_dir, embedder, api_key=KEY, upload_dir=tmp_path / "up"))
    own = client.post("/items", files={"file": ("o.png", _png(tmp_path, 141), "image/png")}, headers=BEARER)
    assert own.status_code == 200 and own.json()["added"][0]["id"] == 24
    data = _png(tmp_path, 140)
    assert _search(client, data)["results"][0]["id"] != 25
    assert len(loads) == 1  # create_app's own: the server's commit and the looks after it load nothing
    (tmp_path / "new.png").write_bytes(data)
    add_to_index(index_dir, _one(embedder, tmp_path / "new.png", "n", "trap9"))  # the server is not told
    top = _search(client, data)["results"][0]
    assert (top["id"], top["label"], top["extra"], top["score"]) == (25, "n", {"source": "trap9"}, 1.0)
    assert client.get("/image/25").content == data and client.get("/api/info").json()["count"] == 26
    assert len(loads) == 3  # add_to_index's, and one reload
    remove_from_index(index_dir, [25])
    assert 25 not in [h["id"] for h in _search(client, data, k=30)["results"]]
    assert client.get("/image/25").status_code == 404 and client.get("/api/info").json()["count"] == 25


def test_the_index_directory_is_looked_at_once_per_interval(embedder, index_dir, tmp_path, monkeypatch):
    import dva.retrieval.serve.reload as reload_mod
    from dva.retrieval.index import add_to_index

    monkeypatch.setattr(reload_mod, "CHECK_EVERY_S", 3600.0)
    client = TestClient(create_app(index_dir, embedder))
    data = _png(tmp_path, 142)
    _search(client, data)  # the first request looks
    (tmp_path / "new.png").write_bytes(data)
    add_to_index(index_dir, _one(embedder, tmp_path / "new.png", "n", "trap9"))
    assert client.get("/api/info").json()["count"] == 24  # within the interval: the loaded build answers
    assert len(GalleryIndex.load(index_dir)) == 25


@pytest.mark.skipif(importlib.util.find_spec("milvus_lite") is None, reason="milvus-lite absent")
def test_api_info_on_a_milvus_lite_gallery(embedder, gallery, tmp_path, monkeypatch):
    from dva.retrieval.milvus import build_milvus

    paths, _ = gallery
    es = EmbeddingSet(embedder.embed_paths(paths).astype(np.float32), [str(p) for p in paths], [None] * 24,
                      {"fingerprint": embedder.fingerprint}, extras=[{"source": f"trap{i % 2}"} for i in range(24)],
                      columns=("source",))
    g = build_milvus(es, str(tmp_path / "g.db"))
    client = TestClient(create_app(g, embedder, api_key=KEY))
    monkeypatch.setattr(g, "ids", lambda: pytest.fail("/api/info must not list the gallery"))
    probes = []
    real_search = g.search
    monkeypatch.setattr(g, "search", lambda q, k, where=None: probes.append(where) or real_search(q, k, where))
    r = client.get("/api/info")
    assert r.status_code == 200, r.text
    info = r.json()
    assert (info["count"], info["kind"], info["has_labels"], info["fingerprint"]) == (24, None, False,
                                                                                    embedder.fingerprint)
    assert info["columns"] == ["id", "path", "label", "source"] and info["domains"][0]["kind"] is None
    assert probes == ["label is not null"]
    assert client.get("/api/info").json()["has_labels"] is False and len(probes) == 1  # cached
    r = client.post("/items", files={"file": ("m.png", _png(tmp_path, 150), "image/png")}, data={"label": "m"},
                    headers=BEARER)
    assert r.status_code == 200, r.text
    assert client.get("/api/info").json()["has_labels"] is True  # the write renewed it
    assert client.delete("/items/24", headers=BEARER).status_code == 200
    info = client.get("/api/info").json()
    assert (info["has_labels"], info["count"]) == (False, 24)

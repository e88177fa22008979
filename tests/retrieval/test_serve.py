"""The search service through FastAPI's TestClient: uploads, limits, image serving, traversal."""
from __future__ import annotations

import io
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from dva.retrieval.index import FingerprintMismatchError, build_index
from dva.retrieval.serve import create_app
from dva.retrieval.store import GalleryItem, embed_gallery


@pytest.fixture
def served(embedder, gallery, tmp_path):
    paths, labels = gallery
    embed_gallery(embedder, [GalleryItem(str(p), lab) for p, lab in zip(paths, labels)],
                  tmp_path / "emb", progress=False)
    build_index(tmp_path / "emb", tmp_path / "idx")
    (tmp_path / "secret.txt").write_text("do not serve me")
    app = create_app(tmp_path / "idx", embedder, max_upload_bytes=200_000, default_k=5)
    return TestClient(app), paths, labels


def _png_bytes(path: Path) -> bytes:
    return path.read_bytes()


def test_search_upload_returns_self_first(served):
    client, paths, labels = served
    r = client.post("/search?k=4", files={"file": ("q.png", _png_bytes(paths[7]), "image/png")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["results"]) == 4 and body["k"] == 4
    top = body["results"][0]
    assert top["id"] == 7 and top["label"] == labels[7] and top["score"] == pytest.approx(1, abs=1e-5)
    assert top["path"] == "class_1/img_07.png"  # relative to the gallery root, no server dirs
    assert [h["score"] for h in body["results"]] == sorted((h["score"] for h in body["results"]), reverse=True)
    img = client.get(top["image_url"])
    assert img.status_code == 200 and img.headers["content-type"] == "image/png"
    assert img.content == paths[7].read_bytes()
    thumb = client.get(top["image_url"] + "?size=16")
    assert thumb.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(thumb.content)).size) <= 16
    assert len(client.post("/search", files={"file": ("q.png", _png_bytes(paths[0]))}).json()["results"]) == 5


def test_other_formats_are_accepted(served):
    client, _, _ = served
    buf = io.BytesIO()
    Image.new("CMYK", (20, 30), (0, 100, 50, 10)).save(buf, "JPEG")
    r = client.post("/search", files={"file": ("q.jpg", buf.getvalue(), "application/octet-stream")})
    assert r.status_code == 200 and r.json()["query"]["width"] == 20


@pytest.mark.parametrize("payload,status,says", [
    (b"not an image at all", 415, "not a decodable image"),
    (b"GIF89a" + b"\0" * 20, 415, "not a decodable image"),
    (b"", 400, "empty upload"),
])
def test_bad_uploads_get_clear_4xx(served, payload, status, says):
    client, _, _ = served
    r = client.post("/search", files={"file": ("q.png", payload, "image/png")})
    assert r.status_code == status
    assert says in r.json()["detail"]


def test_missing_field_and_bad_k(served):
    client, paths, _ = served
    assert client.post("/search").status_code == 422
    r = client.post("/search?k=0", files={"file": ("q.png", _png_bytes(paths[0]))})
    assert r.status_code == 422


def test_oversized_upload_is_413(served):
    client, _, _ = served
    big = b"\x89PNG" + b"\0" * 300_000  # over the 200 kB limit of the fixture
    r = client.post("/search", files={"file": ("q.png", big, "image/png")})
    assert r.status_code == 413 and "too large" in r.json()["detail"]
    # just under the body limit but over the file limit: caught by the endpoint check
    r = client.post("/search", files={"file": ("q.png", b"\0" * 210_000, "image/png")})
    assert r.status_code == 413

    def chunks():  # no Content-Length: counted while streaming
        for _ in range(40):
            yield b"\0" * 10_000

    r = client.post("/search", content=chunks(),
                    headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert r.status_code == 413


def test_too_many_pixels_is_413(embedder, gallery, tmp_path):
    paths, _ = gallery
    embed_gallery(embedder, [GalleryItem(str(p)) for p in paths], tmp_path / "emb", progress=False)
    build_index(tmp_path / "emb", tmp_path / "idx")
    client = TestClient(create_app(tmp_path / "idx", embedder, max_pixels=1000))
    r = client.post("/search", files={"file": ("q.png", _png_bytes(paths[0]))})  # 40x36 px
    assert r.status_code == 413 and "pixels" in r.json()["detail"]


@pytest.mark.parametrize("url", [
    "/image/..%2F..%2Fetc%2Fpasswd",
    "/image/../../etc/passwd",
    "/image/%2Fetc%2Fpasswd",
    "/image//etc/passwd",
    "/image/..%2Fsecret.txt",
    "/image/-1",
    "/image/24",
    "/image/999999999999999999999",
    "/image/1.0",
    "/image/0x1",
    "/image/%31%2F..",
    "/image/%C2%B2",  # superscript two: str.isdigit() but not int()
    "/image/%D9%A1",  # Arabic-Indic one: int() would accept it
])
def test_only_indexed_images_are_served(served, url):
    client, _, _ = served
    r = client.get(url)
    assert r.status_code == 404, (url, r.status_code)
    assert b"do not serve me" not in r.content and b"root:" not in r.content


def test_page_and_info(served):
    client, _, _ = served
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    assert 'type="file"' in page and "fetch(" in page
    for external in ("http://", "https://", "//cdn", "<link "):
        assert external not in page, f"the page must be self-contained ({external!r} found)"
    info = client.get("/api/info").json()
    assert info["count"] == 24 and info["kind"] == "flat" and info["max_upload_bytes"] == 200_000


def test_wrong_model_cannot_serve(make_embedder, embedder, gallery, tmp_path):
    paths, _ = gallery
    embed_gallery(embedder, [GalleryItem(str(p)) for p in paths], tmp_path / "emb", progress=False)
    build_index(tmp_path / "emb", tmp_path / "idx")
    with pytest.raises(FingerprintMismatchError):
        create_app(tmp_path / "idx", make_embedder(seed=3))


@pytest.mark.parametrize("slots", [1, 2])
def test_concurrent_decodes_are_bounded(embedder, gallery, tmp_path, monkeypatch, slots):
    import threading
    import time

    import dva.retrieval.serve.service as S  # the module that decodes uploads

    paths, _ = gallery
    embed_gallery(embedder, [GalleryItem(str(p)) for p in paths], tmp_path / "emb", progress=False)
    build_index(tmp_path / "emb", tmp_path / "idx")
    inside, most, guard = [0], [0], threading.Lock()
    real = S.decode_upload

    def slow_decode(data, max_pixels):
        with guard:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        time.sleep(0.15)  # long enough for every request to be waiting
        with guard:
            inside[0] -= 1
        return real(data, max_pixels)

    monkeypatch.setattr(S, "decode_upload", slow_decode)
    client = TestClient(create_app(tmp_path / "idx", embedder, max_decodes=slots))
    body = _png_bytes(paths[0])
    codes = []
    threads = [threading.Thread(target=lambda: codes.append(
        client.post("/search", files={"file": ("q.png", body, "image/png")}).status_code)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == [200] * 6 and most[0] == slots
    assert client.get("/api/info").json()["max_decodes"] == slots


def test_image_urls_never_come_from_the_host_header(served):
    client, paths, _ = served
    r = client.post("/search?k=2", files={"file": ("q.png", _png_bytes(paths[3]), "image/png")},
                    headers={"Host": "evil.example"})
    urls = [h["image_url"] for h in r.json()["results"]]
    assert urls == ["image/3", f"image/{r.json()['results'][1]['id']}"], urls
    assert client.get(urls[0]).content == paths[3].read_bytes()  # resolves against the service root


def test_public_url_makes_image_urls_absolute_under_it(embedder, gallery, tmp_path):
    paths, labels = gallery
    embed_gallery(embedder, [GalleryItem(str(p), lab) for p, lab in zip(paths, labels)],
                  tmp_path / "emb", progress=False)
    build_index(tmp_path / "emb", tmp_path / "idx")
    client = TestClient(create_app(tmp_path / "idx", embedder, public_url="https://search.example.org/dva/"))
    r = client.post("/search?k=1", files={"file": ("q.png", _png_bytes(paths[5]), "image/png")},
                    headers={"Host": "evil.example"})
    assert r.json()["results"][0]["image_url"] == "https://search.example.org/dva/image/5"
    for bad in ("search.example.org", "ftp://x.org", "https://x.org/?a=1", "/dva"):
        with pytest.raises(ValueError, match="--public-url"):
            create_app(tmp_path / "idx", embedder, public_url=bad)
    with pytest.raises(ValueError, match="default k must be between 1 and 100"):
        create_app(tmp_path / "idx", embedder, default_k=101)


def test_cli_serve_refuses_a_malformed_public_url(embedder, gallery, tmp_path, monkeypatch, capsys):
    from dva_cli import _model
    from dva_cli.cli import main

    paths, _ = gallery
    embed_gallery(embedder, [GalleryItem(str(p)) for p in paths], tmp_path / "emb", progress=False)
    build_index(tmp_path / "emb", tmp_path / "idx")
    monkeypatch.setattr(_model, "embedder_from_args", lambda args: pytest.fail("the model must not load"))
    assert main(["serve", "--index", str(tmp_path / "idx"), "--public-url", "example.org"]) == 2
    assert "--public-url 'example.org'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["serve", "--index", str(tmp_path / "idx"), "--k", "0"])

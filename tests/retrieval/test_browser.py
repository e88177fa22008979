"""End to end in a real browser: the served page uploads a query and renders the results.

Needs Debian's ``chromium`` and ``chromium-driver`` and the ``selenium`` package; the driver
path is given explicitly so selenium-manager never tries to download one.
"""
from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from dva.retrieval.index import build_index
from dva.retrieval.serve import create_app
from dva.retrieval.store import GalleryItem, embed_gallery

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists() or not Path(CHROMEDRIVER).exists(),
    reason="needs /usr/bin/chromium and /usr/bin/chromedriver (apt-get install chromium "
           "chromium-driver)",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(embedder, gallery, tmp_path):
    import uvicorn

    paths, labels = gallery
    embed_gallery(embedder, [GalleryItem(str(p), lab) for p, lab in zip(paths, labels)],
                  tmp_path / "emb", progress=False)
    build_index(tmp_path / "emb", tmp_path / "idx")
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(tmp_path / "idx", embedder, default_k=6),
                                        host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        if time.monotonic() > deadline or not th.is_alive():
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", paths
    srv.should_exit = True
    th.join(timeout=10)


@pytest.fixture
def browser(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 f"--user-data-dir={tmp_path / 'chrome-profile'}"):
        opts.add_argument(flag)
    drv = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    drv.set_page_load_timeout(30)
    yield drv
    drv.quit()


def test_page_uploads_query_and_renders_results(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    base, paths = server
    browser.get(base + "/")
    WebDriverWait(browser, 15).until(lambda d: "gallery images" in d.find_element(By.ID, "info").text)
    assert "24 gallery images" in browser.find_element(By.ID, "info").text
    browser.find_element(By.ID, "file").send_keys(str(paths[5].resolve()))

    def loaded_results(d):
        imgs = d.find_elements(By.CSS_SELECTOR, "#results img.result")
        ok = d.execute_script(
            "return Array.from(document.querySelectorAll('#results img.result'))"
            ".map(i => i.complete && i.naturalWidth > 0)")
        return imgs if len(imgs) == 6 and all(ok) else False

    imgs = WebDriverWait(browser, 30).until(loaded_results)
    assert browser.find_element(By.ID, "error").text == ""
    assert "/image/5" in imgs[0].get_attribute("src"), "the query itself comes first"
    first_caption = browser.find_elements(By.CSS_SELECTOR, "#results figcaption")[0].text
    assert "1.000" in first_caption and "img_05.png" in first_caption
    assert browser.execute_script("return document.getElementById('query-img').naturalWidth") > 0

    # a non-image upload shows the server's error message instead of results
    bad = paths[0].parent / "notes.txt"
    bad.write_text("not an image")
    browser.find_element(By.ID, "file").send_keys(str(bad))
    WebDriverWait(browser, 15).until(lambda d: "415" in d.find_element(By.ID, "error").text)
    assert browser.find_elements(By.CSS_SELECTOR, "#results img.result") == []

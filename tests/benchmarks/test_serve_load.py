"""benchmarks/serve_load: the table and the sentence a reader gets from a run's rows."""
from __future__ import annotations

from benchmarks.serve_load import run


def _row(n, peak, p95, errors=0):
    return {"max_decodes": n, "clients": 8, "requests": 40, "errors": errors, "p50_ms": 1000, "p95_ms": p95,
            "max_ms": p95 + 1, "rss_idle_mb": 900, "rss_peak_mb": 900 + peak, "peak_above_idle_mb": peak,
            "rss_after_mb": 950}


def test_markdown_compares_default_with_widest_setting():
    result = {"rows": [_row(2, 366, 4222), _row(8, 1270, 8457, errors=1)], "image": {"side": 6300, "bytes": 132000},
              "load_before": 0.5, "command": "python benchmarks/serve_load/run.py", "date": "d",
              "machine": {"cpu_count": 2}}
    md = run.markdown(result)
    assert "| 2 | 40 (8 clients) | 0 | 1000 | 4222 |" in md
    assert "peak is 366 MB above idle and p95 4.2 s" in md and "raises the peak to 1270 MB" in md
    assert "(1 errors in all)" in md and "114 MB as RGB" in md
    assert md.startswith("`python -m benchmarks.serve_load.run` (d, 2 CPU cores")  # recorded as a file: a module


def test_big_png_is_small_on_disk_and_huge_decoded():
    import io

    from PIL import Image

    data = run.big_png(2000)
    assert len(data) < 40_000 and Image.open(io.BytesIO(data)).size == (2000, 2000)

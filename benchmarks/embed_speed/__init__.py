"""Speed of ``dva embed`` on real cub100 photos, decode included, per runtime.

    python -m benchmarks.embed_speed.run --help
"""

"""The cub100 benchmark, DVA against its baselines: plan (rows.yaml), run (one row per subprocess), render (docs).

    python -m benchmarks.cub100.run --quick
"""

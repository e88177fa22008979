"""Speed and peak memory of ``dva.metrics.retrieval_metrics`` against pytorch-metric-learning.

    python -m benchmarks.metrics_speed.run --help
"""

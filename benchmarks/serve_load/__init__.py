"""Load test of ``dva serve`` on the loopback interface: memory and latency under concurrent uploads.

    python -m benchmarks.serve_load.run --help
"""

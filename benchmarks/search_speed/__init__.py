"""Search speed and recall of the gallery index, plus embedding throughput.

    python -m benchmarks.search_speed.run --help
"""

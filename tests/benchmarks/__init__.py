"""Tests of the benchmark scripts under benchmarks/ (a package: test_cub100.py is also a name in tests/data)."""

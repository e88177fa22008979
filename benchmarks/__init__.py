"""The benchmarks of the repository (not part of the wheel): run each from the repository root as a module.

    python -m benchmarks.cub100.run --quick
    python -m benchmarks.<name>.run --help

Shared helpers live in :mod:`benchmarks._common`; numbers go to ``benchmarks/results/`` and
``docs/BENCHMARKS.md``.
"""

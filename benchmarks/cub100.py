#!/usr/bin/env python
"""cub100 benchmark: DVA against its baselines (frozen, head, full fine-tune, ICA, ICA + OPA), with ablations.

A thin wrapper: the logic lives in :mod:`dva_train.bench` (also ``dva bench cub100``).

    python benchmarks/cub100.py --profile quick    # main rows, 1 seed (~20 min on 2 cores)
    python benchmarks/cub100.py --profile full     # main rows x 3 seeds + ablations + speed-up checks
    python benchmarks/cub100.py --profile val      # hyper-parameter candidates on the validation split
"""
import sys

from dva_train.bench import main

if __name__ == "__main__":
    sys.exit(main())

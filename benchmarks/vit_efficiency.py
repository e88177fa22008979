#!/usr/bin/env python
"""ViT-B/16 efficiency (random weights): parameters and CPU img/s, frozen vs ICA vs merged ICA.

A thin wrapper around :func:`dva_train.bench.vit_main` (also ``dva bench vit-efficiency``).
"""
import sys

from dva_train.bench import vit_main

if __name__ == "__main__":
    sys.exit(vit_main())

"""ViT-B/16 efficiency (random weights): parameters and CPU img/s, frozen vs ICA vs merged ICA.

    python -m benchmarks.vit_efficiency.run --help
"""

"""OPA box quality: every box source against the whole-animal boxes of pets37.

    python -m benchmarks.boxes.run --help
"""

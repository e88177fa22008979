"""Where the model looks, frozen vs DVA (the paper's Fig. 4): activation maps and a number beside them.

    python -m benchmarks.activation_maps.run --help
"""

"""The defaults benchmark: ``dva train --preset P`` with nothing but the dataset given (issue 25).

``run`` runs the default command per (preset, dataset) and compares it with the frozen backbone
and the datasets harness's tuned DVA row; ``budget`` gathers the step-budget evidence (the select
profiles' ``steps`` stage, and a pets37 one) for ``AUTO_STEPS``; ``render`` writes the markdown.
"""

"""The in- vs out-of-distribution frontier over training budgets and alphas (issue 26): ``python -m benchmarks.frontier.run``."""

"""One benchmark harness over the ID datasets (cub100, cars196, aircraft47) x backbones: validation
choice per dataset (``select``), test rows (``main``) and the OOD matrix. Run ``python -m benchmarks.datasets.run``."""

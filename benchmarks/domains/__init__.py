"""Multi-domain serving: one frozen backbone, the adapters of several domains (see run.py)."""

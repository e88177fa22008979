"""Packaged YAML configs; ``dva train --config NAME`` finds ``NAME.yaml`` here."""

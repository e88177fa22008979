"""``python -m dva_cli ...`` (and ``torchrun ... -m dva_cli train ...``) is ``dva ...``."""
import sys

from dva_cli.cli import main

sys.exit(main())

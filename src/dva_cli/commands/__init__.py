"""Sub-commands of the ``dva`` command line.

Each module in this package is one sub-command and defines:

* ``NAME``: the sub-command (``"train"``, ``"data-info"``, ...);
* ``HELP``: one line for ``dva --help``;
* ``add_arguments(parser: argparse.ArgumentParser) -> None``;
* ``run(args: argparse.Namespace) -> int``: the exit code.

``dva_cli.cli`` discovers the modules, so adding a command is adding a file.
"""

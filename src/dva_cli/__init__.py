"""The ``dva`` command line, above the library (:mod:`dva`) and the trainer (:mod:`dva_train`).

``dva_cli.cli`` builds the parser from the modules of :mod:`dva_cli.commands` (one file per
sub-command); options shared by several commands live in private modules here. Commands only
parse arguments, call the library or the trainer, and print.
"""

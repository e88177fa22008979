"""The ``dva`` command line: one sub-command per module of :mod:`dva_cli.commands`.

Errors a user can act on (a bad value, a missing or existing file, a full disk, memory) end the
command with one line on stderr and exit status 2; ``--debug`` (before or after the command
name) also prints the traceback. Other exceptions are bugs: they keep their traceback.
"""
from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import traceback
from collections.abc import Sequence

from dva_cli import commands

USER_ERROR = 2  # exit status of a refused command (argparse uses it too)
PACKAGES = ("dva", "dva_train", "dva_cli")  # an exception class defined here is one of the project's own


def _command_modules() -> list:
    mods = []
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"dva_cli.commands.{info.name}")
        if hasattr(mod, "NAME") and hasattr(mod, "run"):
            mods.append(mod)
    return mods


def _debug_flag(default: object) -> argparse.ArgumentParser:
    """A parent parser with ``--debug``; sub-commands get it with a suppressed default, so that
    ``dva --debug train`` is not reset to False by the sub-command's own default."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--debug", action="store_true", default=default,
                        help="on an error, also print the Python traceback")
    return parent


def build_parser() -> argparse.ArgumentParser:
    """The ``dva`` parser: the global ``--debug`` flag and one sub-parser per command module."""
    parser = argparse.ArgumentParser(
        prog="dva", description="Fine-grained image retrieval with Dual-Vision Adaptation.",
        epilog="`dva train` and `dva demo` also take config overrides: --section.key value (e.g. --train.epochs 3).",
        parents=[_debug_flag(False)],
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in _command_modules():
        # No abbreviations: `--over` must not mean --overwrite (it deletes a run's checkpoints), and a
        # typo of a flag is reported as such, not taken for the one it starts.
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP, parents=[_debug_flag(argparse.SUPPRESS)],
                           allow_abbrev=False)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def is_user_error(exc: BaseException) -> bool:
    """Whether ``exc`` is reported as one line: a bad value or file (ValueError, OSError: missing,
    existing, unwritable, disk full), MemoryError, or an exception class of the project's own."""
    own = type(exc).__module__.split(".")[0] in PACKAGES
    return isinstance(exc, (ValueError, OSError, MemoryError)) or own or _out_of_memory(exc)


def _out_of_memory(exc: BaseException) -> bool:
    """torch's OutOfMemoryError (a RuntimeError; CUDA or another accelerator ran out)."""
    return type(exc).__name__ == "OutOfMemoryError"


def error_line(command: str, exc: BaseException) -> str:
    """The one line a refused command prints: what failed, with the type where the text alone is unclear."""
    text = str(exc).strip()
    if not isinstance(exc, ValueError):  # another library's text may run over many lines
        text = text.splitlines()[0] if text else ""
    if isinstance(exc, MemoryError) or _out_of_memory(exc):
        what = f"out of memory ({text or 'MemoryError'}): lower the batch size, image size or number of workers"
    elif isinstance(exc, ValueError) or (isinstance(exc, FileNotFoundError) and text):
        what = text  # the project's messages name the file or key and the fix
    else:  # e.g. PermissionError: [Errno 13] Permission denied: 'out.json'
        what = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return f"dva {command}: error: {what}"


def _stdout_gone() -> bool:
    """Whether standard output's reader has closed it (another pipe's error is reported instead)."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        return True
    except (OSError, ValueError):
        return False
    return False


def _silence_stdout() -> None:
    """Point stdout at the null device, so that the interpreter's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no file descriptor (stdout replaced, e.g. in tests)
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``dva`` with ``argv`` (default: the command line); returns the exit status."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    # Only commands that accept free-form ``--key value`` config overrides see ``extra``.
    if extra:
        if not hasattr(args, "overrides"):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = list(args.overrides or []) + extra
    try:
        status = int(args._run(args) or 0)
        sys.stdout.flush()  # here, not at the interpreter's exit: a reader gone is caught below
        return status
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError as exc:
        if _stdout_gone():  # `dva search ... | head`: the reader left; nothing to report
            _silence_stdout()
            return 141  # 128 + SIGPIPE, what a shell reports for a writer cut off by its pipe
        print(error_line(args.command, exc) + " (--debug shows the traceback)", file=sys.stderr)
        return USER_ERROR
    except Exception as exc:  # noqa: BLE001 - sorted below: user errors are one line, bugs keep their traceback
        if not is_user_error(exc):
            raise
        debug = bool(getattr(args, "debug", False))
        if debug:
            traceback.print_exc(file=sys.stderr)
        # The project's ValueError / FileNotFoundError messages say what to do; for the others
        # (a full disk, memory, another package's error) the traceback may help.
        hint = "" if debug or isinstance(exc, (ValueError, FileNotFoundError)) else " (--debug shows the traceback)"
        print(error_line(args.command, exc) + hint, file=sys.stderr)
        return USER_ERROR


if __name__ == "__main__":
    sys.exit(main())

"""The ``synthdet`` command: one entry point, one sub-command per pipeline stage.

Each stage's package has a ``commands.py`` with ``register(subparsers)`` that adds its
sub-commands; every sub-command is a thin layer over that package's Python API.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pickle
import sys
from typing import NoReturn

from .utils.errors import UserError

# Sub-command modules, in pipeline order.
_COMMAND_MODULES = (
    "synthdet.datasets.commands",      # data birds
    "synthdet.segmentation.commands",  # segment fit/apply/eval
    "synthdet.sources.commands",       # generator fit/sample
    "synthdet.synthesis.commands",     # synth
    "synthdet.training.commands",      # pretrain, finetune, mixed
    "synthdet.evaluation.commands",    # eval
    "synthdet.inference.commands",     # predict, export
    "synthdet.experiments.commands",   # experiment, report, demo
)


class _Parser(argparse.ArgumentParser):
    """Command-line mistakes as one line (exit 2, argparse's usage-error code) instead of the
    usage block, pointing at ``--help``."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        where = self.prog.removeprefix("synthdet").strip()
        where = f"{where}: " if where else ""
        self.exit(2, f"synthdet: error: {where}{_one_line(message)} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(
        prog="synthdet",
        description="Train object detectors with few box labels using synthetic samples made "
        "from classification images.",
    )
    parser.add_argument("--version", action="version", version=f"synthdet {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging, and tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:
                continue
            raise
        module.register(sub)
    _add_verbose_everywhere(parser)
    return parser


def _add_verbose_everywhere(parser: argparse.ArgumentParser) -> None:
    """Accept ``-v`` after any sub-command too (``synthdet eval ... -v``)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in set(action.choices.values()):
                sub.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                                 help="debug logging, and tracebacks for errors")
                _add_verbose_everywhere(sub)


# Exceptions that report a user mistake (bad path, bad value, bad file): one line, exit 1.
# Anything else is a bug in synthdet and keeps its traceback.
_USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError, OSError, RuntimeError, EOFError, pickle.UnpicklingError, UserError,
)


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def error_message(e: BaseException) -> str:
    """``<file>: <problem>`` for an OS error, the exception's own message otherwise, on one line."""
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        files = f"{e.filename} -> {e.filename2}" if e.filename2 is not None else str(e.filename)
        return _one_line(f"{files}: {e.strerror}")
    if isinstance(e, KeyError) and e.args:
        return _one_line(str(e.args[0]))
    return _one_line(str(e) or type(e).__name__)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except _USER_ERRORS as e:
        if args.verbose:
            raise
        print(f"synthdet: error: {error_message(e)}", file=sys.stderr)
        for line in getattr(e, "details", ()):  # e.g. the first few bad files, one per line
            print(f"  {_one_line(line)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""The ``synthdet`` command: one entry point, one sub-command per pipeline stage.

Each stage's package has a ``commands.py`` with ``register(subparsers)`` that adds its
sub-commands; every sub-command is a thin layer over that package's Python API.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Sub-command modules, in pipeline order.
_COMMAND_MODULES = (
    "synthdet.datasets.commands",      # data birds
    "synthdet.segmentation.commands",  # segment fit/apply/eval
    "synthdet.sources.commands",       # generator fit/sample
    "synthdet.synthesis.commands",     # synth
    "synthdet.training.commands",      # pretrain, finetune, mixed
    "synthdet.evaluation.commands",    # eval
    "synthdet.experiments.commands",   # experiment, report, demo
)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="synthdet",
        description="Train object detectors with few box labels using synthetic samples made "
        "from classification images.",
    )
    parser.add_argument("--version", action="version", version=f"synthdet {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:
                continue
            raise
        module.register(sub)
    return parser


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
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        if args.verbose:
            raise
        print(f"synthdet {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

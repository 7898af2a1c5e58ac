"""Command line: ``python -m spacy_padellm {demo,convert,train,assemble,evaluate,annotate,compress,settings,tune,calibrate,average,base-folder} ...``.

Each subcommand lives in the module named for it and registers itself through ``add_parser``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

# subcommand -> module that defines add_parser(subparsers) and sets a `func` default
COMMANDS = {
    "demo": "spacy_padellm.cli.demo",
    "convert": "spacy_padellm.cli.convert",
    "train": "spacy_padellm.cli.train",
    "assemble": "spacy_padellm.cli.assemble",
    "evaluate": "spacy_padellm.cli.evaluate",
    "annotate": "spacy_padellm.cli.annotate",
    "compress": "spacy_padellm.training.compress",
    "settings": "spacy_padellm.cli.settings",
    "tune": "spacy_padellm.cli.tune",
    "calibrate": "spacy_padellm.cli.calibrate",
    "average": "spacy_padellm.training.adapter_average",
    "base-folder": "spacy_padellm.training.base_folder",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m spacy_padellm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module in COMMANDS.items():
        try:
            mod = importlib.import_module(module)
        except ImportError as err:  # an optional subcommand whose extra is not installed
            p = sub.add_parser(name, help=f"(unavailable: {err})")
            p.set_defaults(func=lambda args, err=err: _unavailable(err))
            continue
        mod.add_parser(sub)
    return parser


def _unavailable(err: Exception) -> int:
    print(f"This command needs a package that is not installed: {err}", file=sys.stderr)
    return 2


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_overrides", False):
        parser.error(f"unrecognised arguments: {' '.join(extra)}")
    args.overrides = extra
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as err:
        # Configuration and input errors are one line that says what to fix, not a traceback.
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

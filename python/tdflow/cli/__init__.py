"""Command line: ``tdflow fig1`` (the Figure 1 reproduction) and friends."""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from . import deflate, doctor, experiments, sweep
from .common import Help


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(prog="tdflow", description=__doc__, formatter_class=Help)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    experiments.add_parsers(sub)  # fig1, linear, compare
    deflate.add_parsers(sub)  # deflate, plot
    sweep.add_parsers(sub)
    doctor.add_parsers(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    from ..io import FolderLockedError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, ImportError, OSError, FolderLockedError) as err:
        print(f"tdflow {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

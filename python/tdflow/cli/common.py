"""What every command of the command line shares: the help format, output paths checked before
the work and results saved where they can be, the integrator flags (one per
:class:`~tdflow.SolverOptions` field, and the object built back from them) and --threads."""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

# the flags of add_solver_arguments: every SolverOptions field but t_eval (an array)
SOLVER_FLAGS = ("method", "rtol", "atol", "h", "max_step", "max_steps", "n_records")


class Help(argparse.ArgumentDefaultsHelpFormatter):
    """Help that shows each option's default, except where there is none to show (flags,
    options whose default comes from elsewhere and says so in its help)."""

    def _get_help_string(self, action):
        if action.default in (None, False, argparse.SUPPRESS) or "(default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def writable(path, name: str) -> Path:
    """Check an output path before any work (a read-only folder fails now, not after the run)."""
    from .. import io

    return io.check_writable(path, name)


def save(save: Callable[[Path], Path], path: Path) -> Path:
    """Write a finished result; when its place cannot be written (disk full, folder gone), write
    it to a new temporary folder instead and say where, so that the work is not lost."""
    try:
        return save(path)
    except OSError as err:
        saved = save(Path(tempfile.mkdtemp(prefix="tdflow-")) / path.name)
        print(f"tdflow: {err}; the result was written to {saved} instead", file=sys.stderr)
        return saved


def add_solver_arguments(parser, defaults: Mapping[str, Any]) -> None:
    """One flag per field of :class:`~tdflow.SolverOptions` (``t_eval`` excepted), each with
    default None so that a config file can fill it; the help shows the command's ``defaults``
    (laid over ``SolverOptions()``). :func:`solver_options` builds the object back."""
    import dataclasses

    from ..options import METHODS, SolverOptions

    shown = SolverOptions(**defaults).to_dict()
    shown.update(h=shown["h"] if shown["h"] is not None else "automatic",
                 max_step=shown["max_step"] if shown["max_step"] is not None else "none")
    for f in dataclasses.fields(SolverOptions):
        if f.name not in SOLVER_FLAGS:
            continue
        kw = dict(choices=METHODS) if f.name == "method" else \
            dict(type=int if isinstance(f.default, int) else float, metavar=f.name.upper())
        parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, **kw,
                            help=f"{f.metadata['help']} (default: {shown[f.name]})")


def solver_options(args, defaults: Mapping[str, Any], config: Optional[Mapping[str, Any]] = None):
    """The SolverOptions of a command: its ``defaults``, then ``config`` (a file's table), then the
    flags of :func:`add_solver_arguments` that were given."""
    from ..options import SolverOptions

    given = {k: getattr(args, k) for k in SOLVER_FLAGS if getattr(args, k) is not None}
    return SolverOptions.resolve(None, {**dict(config or {}), **given}, defaults,
                                 where="the solver options")


def arg_type(parse):
    """An argparse type from a parser that raises ValueError (its message shown as is)."""
    def convert(text: str):
        try:
            return parse(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    return convert


def add_threads_argument(parser) -> None:
    parser.add_argument("--threads", type=int, default=0,
                        help="OpenMP threads (0: the OpenMP default)")


def apply_threads(args) -> None:
    """--threads, for the whole process (0: leave the OpenMP default)."""
    from ..threads import set_num_threads

    if args.threads:
        set_num_threads(args.threads)

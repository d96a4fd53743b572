"""``tdflow doctor``: what this install is (version, CPU level, compiler, Eigen, OpenMP, threads),
for bug reports; the same text as :func:`tdflow.show_config`."""
from __future__ import annotations

from .common import Help


def _doctor(args) -> int:
    from ..config import show_config

    show_config()
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("doctor", formatter_class=Help,
                       help="print the version, CPU level, compiler, Eigen, OpenMP and threads of "
                       "this install (for bug reports; also tdflow.show_config())")
    p.set_defaults(func=_doctor)

"""``tdflow sweep``: a grid of runs x seeds on dask.distributed (:mod:`tdflow.sweeps`)."""
from __future__ import annotations

from .common import Help


def add_parsers(sub) -> None:
    p = sub.add_parser("sweep", help="a grid of runs x seeds on dask.distributed (local cluster by default)",
                       formatter_class=Help)
    p.add_argument("spec", help="TOML spec (format: python -m pydoc tdflow.sweeps)")
    p.add_argument("--out", default=None, help="output folder (default: the spec path without .toml)")
    p.add_argument("--scheduler", default=None, help="address of a running Dask scheduler, tcp://host:port (default: a local cluster)")
    p.add_argument("--workers", type=int, default=None, help="local worker processes (default: one per core)")
    p.add_argument("--max-runs", type=int, default=None, help="run at most this many pending runs now (default: all)")
    p.add_argument("--no-dashboard", action="store_true", help="no Dask dashboard for the local cluster")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_sweep)


def _sweep(args) -> int:
    from ..sweeps import sweep

    try:
        result = sweep(args.spec, args.out, scheduler=args.scheduler, workers=args.workers,
                       max_runs=args.max_runs, dashboard=not args.no_dashboard,
                       progress=False if args.quiet else None)
    except KeyboardInterrupt:  # sweep() said "interrupted, N runs kept"
        return 130
    print(result.report())
    return 1 if result.errors else 0

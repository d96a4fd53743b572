"""Command line: ``tdflow fig1`` (the Figure 1 reproduction) and friends."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence


def _fig1(args) -> int:
    from .figure1 import run_figure1
    from .threads import set_num_threads

    if args.threads:
        set_num_threads(args.threads)
    out = Path(args.out)
    result = run_figure1(
        seeds=range(args.seed0, args.seed0 + args.seeds), d=args.d, m=args.m, r=args.r,
        ratio=args.ratio, radius=args.radius, lam=args.lam, t_end=args.t_end, method=args.method,
        h=args.h, rtol=args.rtol, progress=False if args.quiet else None,
    )
    npz = result.save(out / "fig1.npz")
    print(result.summary())
    print(f"arrays: {npz}")
    if not args.no_plot:
        from .plot import plot_figure1

        png = out / "fig1.png"
        plot_figure1(result, png)
        print(f"figure: {png}")
    return 0


def _linear(args) -> int:
    from .linear_examples import plot_linear_comparison, run_linear_comparison

    out = Path(args.out)
    result = run_linear_comparison(rng=args.seed, rtol=args.rtol, rk4_h=args.rk4_h,
                                   progress=False if args.quiet else None)
    print(result.summary())
    npz = result.save(out / "linear.npz")
    print(f"arrays: {npz}")
    if not args.no_plot:
        png = out / "linear.png"
        plot_linear_comparison(result, png)
        print(f"figure: {png}")
    return 0 if result.holds() else 1


def _sweep(args) -> int:
    from .sweep import sweep

    try:
        result = sweep(args.spec, args.out, scheduler=args.scheduler, workers=args.workers,
                       max_runs=args.max_runs, dashboard=not args.no_dashboard,
                       progress=False if args.quiet else None)
    except KeyboardInterrupt:
        print("tdflow sweep: interrupted; finished runs are kept, run the same command to resume",
              file=sys.stderr)
        return 130
    print(result.report())
    return 1 if result.errors else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tdflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fig1", help="reproduce Figure 1 of the deflation paper (Ge et al. 2021)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="fig1", help="output folder for fig1.png and fig1.npz")
    p.add_argument("--seeds", type=int, default=5, help="number of seeds")
    p.add_argument("--seed0", type=int, default=0, help="first seed")
    p.add_argument("--d", type=int, default=10, help="dimension")
    p.add_argument("--m", type=int, default=50, help="number of components")
    p.add_argument("--r", type=int, default=5, help="number of target directions")
    p.add_argument("--ratio", type=float, default=1.2, help="a_i / a_{i+1}")
    p.add_argument("--radius", type=float, default=1e-15, help="initialisation radius")
    p.add_argument("--lam", type=float, default=0.0, help="weight decay")
    p.add_argument("--t-end", type=float, default=250.0, help="final time")
    p.add_argument("--method", choices=("euler", "rk4", "dopri5"), default="rk4")
    p.add_argument("--h", type=float, default=0.05, help="step (fixed-step methods)")
    p.add_argument("--rtol", type=float, default=1e-8, help="relative tolerance (dopri5)")
    p.add_argument("--threads", type=int, default=0, help="OpenMP threads (0: default)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG (no matplotlib needed)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_fig1)

    p = sub.add_parser("linear", help="deep linear models: convergence-rate bounds against observed rates",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="linear", help="output folder for linear.png and linear.npz")
    p.add_argument("--seed", type=int, default=0, help="seed of the random matrix/regression cases")
    p.add_argument("--rtol", type=float, default=1e-10, help="relative tolerance (dopri5)")
    p.add_argument("--rk4-h", type=float, default=0.002, help="step of the RK4 runs")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG (no matplotlib needed)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_linear)

    p = sub.add_parser("sweep", help="a grid of runs x seeds on dask.distributed (local cluster by default)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("spec", help="TOML spec (see python -m pydoc tdflow.sweep)")
    p.add_argument("--out", default=None, help="output folder (default: the spec path without .toml)")
    p.add_argument("--scheduler", default=None, help="address of a running Dask scheduler, tcp://host:port")
    p.add_argument("--workers", type=int, default=None, help="local worker processes (default: one per core)")
    p.add_argument("--max-runs", type=int, default=None, help="run at most this many pending runs now")
    p.add_argument("--no-dashboard", action="store_true", help="no Dask dashboard for the local cluster")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_sweep)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, ImportError) as err:
        print(f"tdflow {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

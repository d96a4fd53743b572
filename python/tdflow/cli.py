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


def _compare(args) -> int:
    from .compare import run_comparison
    from .threads import set_num_threads

    if args.threads:
        set_num_threads(args.threads)
    result = run_comparison(
        d=args.d, r=args.r, order=args.order, ms=args.ms, seed=args.seed, methods=args.methods,
        t_end=args.t_end, radius=args.radius, epochs=args.epochs, steps=args.steps,
        delta=args.delta, lam=args.lam, n_starts=args.starts, n_iters=args.iters, progress=False,
    )
    print(result.table())
    if args.plot:
        result.plot(args.plot, x=args.x)
        print(f"figure: {args.plot}")
    return 0


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

    from .compare import METHODS

    p = sub.add_parser("compare", help="lazy fit, beyond-lazy variant, power method and gradient "
                       "flow on one target: error against m and work",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--d", type=int, default=8, help="dimension")
    p.add_argument("--r", type=int, default=2, help="rank of the target (random unit components)")
    p.add_argument("--order", type=int, default=3, help="tensor order l")
    p.add_argument("--ms", type=int, nargs="+", default=[3, 6, 12, 24], help="numbers of components")
    p.add_argument("--seed", type=int, default=0, help="seed of the target and every run")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS), help="methods to run")
    p.add_argument("--t-end", type=float, default=60.0, help="gradient flow: final time")
    p.add_argument("--radius", type=float, default=1e-3, help="gradient flow: initialisation radius")
    p.add_argument("--epochs", type=int, default=20, help="beyond-lazy: epochs K")
    p.add_argument("--steps", type=int, default=100, help="beyond-lazy: steps per epoch H")
    p.add_argument("--delta", type=float, default=1e-3, help="beyond-lazy: initialisation norm")
    p.add_argument("--lam", type=float, default=1e-4, help="beyond-lazy: regularisation")
    p.add_argument("--starts", type=int, default=20, help="power method: random starts")
    p.add_argument("--iters", type=int, default=30, help="power method: iterations per start")
    p.add_argument("--plot", default=None, help="write a figure to this path (needs matplotlib)")
    p.add_argument("--x", choices=("m", "work"), default="m", help="the figure's x axis")
    p.add_argument("--threads", type=int, default=0, help="OpenMP threads (0: default)")
    p.set_defaults(func=_compare)
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

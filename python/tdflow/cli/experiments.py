"""Commands that reproduce the papers' experiments: ``tdflow fig1`` (Figure 1 of Ge et al.
2021), ``tdflow linear`` (rate bounds of Min, Vidal, Mallada; ``linear three-layer``) and
``tdflow compare`` (lazy fit, beyond-lazy variant, power method and gradient flow)."""
from __future__ import annotations

from pathlib import Path

from ..figure1 import SOLVER as FIG1_SOLVER
from .common import (Help, add_solver_arguments, add_threads_argument, apply_threads, save,
                     solver_options, writable)


def add_parsers(sub) -> None:
    p = sub.add_parser("fig1", help="reproduce Figure 1 of the deflation paper (Ge et al. 2021)",
                       formatter_class=Help)
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
    add_solver_arguments(p.add_argument_group("integrator"), FIG1_SOLVER)
    add_threads_argument(p)
    p.add_argument("--no-plot", action="store_true", help="skip the PNG (no matplotlib needed)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_fig1)

    _add_linear_parsers(sub)

    from ..compare import METHODS

    p = sub.add_parser("compare", help="lazy fit, beyond-lazy variant, power method and gradient "
                       "flow on one target: error against m and work",
                       formatter_class=Help)
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
    add_threads_argument(p)
    p.set_defaults(func=_compare)


def _fig1(args) -> int:
    from ..figure1 import run_figure1

    apply_threads(args)
    out = Path(args.out)
    writable(out / "fig1.npz", "--out")
    result = run_figure1(
        seeds=range(args.seed0, args.seed0 + args.seeds), d=args.d, m=args.m, r=args.r,
        ratio=args.ratio, radius=args.radius, lam=args.lam, t_end=args.t_end,
        options=solver_options(args, FIG1_SOLVER), progress=False if args.quiet else None,
    )
    npz = save(result.save, out / "fig1.npz")
    print(result.summary())
    print(f"arrays: {npz}")
    if not args.no_plot:
        from ..plot import plot_figure1

        png = npz.parent / "fig1.png"
        plot_figure1(result, png)
        print(f"figure: {png}")
    return 0


def _linear(args) -> int:
    if args.linear_command == "three-layer":
        return _linear_three_layer(args)
    from ..linear_examples import plot_linear_comparison, run_linear_comparison

    out = Path(args.out)
    writable(out / "linear.npz", "--out")
    result = run_linear_comparison(rng=args.seed, rtol=args.rtol, rk4_h=args.rk4_h,
                                   progress=False if args.quiet else None)
    print(result.summary())
    npz = save(result.save, out / "linear.npz")
    print(f"arrays: {npz}")
    if not args.no_plot:
        png = npz.parent / "linear.png"
        plot_linear_comparison(result, png)
        print(f"figure: {png}")
    return 0 if result.holds() else 1


def _linear_three_layer(args) -> int:
    from ..linear_three_layer import plot_three_layer, run_three_layer

    out = Path(args.tl_out)
    writable(out / "three_layer.npz", "--out")
    result = run_three_layer(n=args.tl_n, m=args.tl_m, h1=args.tl_h1, h2=args.tl_h2,
                             draws=args.tl_draws, seed=args.tl_seed, horizon=args.tl_horizon,
                             rtol=args.tl_rtol, progress=False if args.tl_quiet else None)
    print(result.summary())
    npz = save(result.save, out / "three_layer.npz")
    print(f"arrays: {npz}")
    if not args.tl_no_plot:
        png = npz.parent / "three_layer.png"
        plot_three_layer(result, png)
        print(f"figure: {png}")
    return 0 if result.holds() else 1


def _add_linear_parsers(sub) -> None:
    p = sub.add_parser("linear", help="deep linear models: convergence-rate bounds against observed rates",
                       formatter_class=Help,
                       description="Without a subcommand: the table of rate bounds against "
                       "observed rates. 'tdflow linear three-layer --help': the three-layer "
                       "experiment of Min, Vidal, Mallada 2023.")
    p.add_argument("--out", default="linear", help="output folder for linear.png and linear.npz")
    p.add_argument("--seed", type=int, default=0, help="seed of the random matrix/regression cases")
    p.add_argument("--rtol", type=float, default=1e-10, help="relative tolerance (dopri5, dop853)")
    p.add_argument("--rk4-h", type=float, default=0.002, help="step of the RK4 runs")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG (no matplotlib needed)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_linear)
    # the subcommand's options have their own dest names: argparse versions differ in whether
    # a subparser's defaults override the parent's
    from ..linear_three_layer import DEFAULTS as TL

    lsub = p.add_subparsers(dest="linear_command", metavar="{three-layer}")
    q = lsub.add_parser("three-layer", formatter_class=Help,
                        help="Min, Vidal, Mallada 2023, Fig. 1 (left): Theorem 2's rate bound "
                        "Delta*(D21, D23) against observed rates, NTK / Fan-in / Fan-out",
                        description="Draws the three-layer initialisations of Min, Vidal, Mallada "
                        "2023 (App. A), computes Theorem 2's Delta*(D21, D23) and runs gradient flow "
                        "on 1/2 ||1 - W1 W2 W3||^2 from each; writes three_layer.png (box plot: "
                        "bound 2 Delta*, 2 lambda_min(T(0)), observed minimum rate) and "
                        "three_layer.npz. NTK values are divided by sqrt(m h1 h2), as in the "
                        "paper's figure. Exit status 0 when every observed rate is above its bound.")
    q.add_argument("--out", dest="tl_out", metavar="DIR", default="linear-three-layer",
                   help="output folder for three_layer.png and three_layer.npz")
    for name, typ, text in (("n", int, "rows of W = W1 W2 W3 (input side)"),
                            ("m", int, "columns of W (output side)"),
                            ("h1", int, "width of the first hidden layer"),
                            ("h2", int, "width of the second hidden layer"),
                            ("draws", int, "initialisations per scheme"),
                            ("seed", int, "draw k uses the seed (seed, k)"),
                            ("horizon", float, "run until the loss gap fell by exp(-horizon)"),
                            ("rtol", float, "relative tolerance of dopri5")):
        q.add_argument("--" + name, dest="tl_" + name, metavar=name.upper(), type=typ,
                       default=TL[name], help=text)
    q.add_argument("--no-plot", dest="tl_no_plot", action="store_true",
                   help="skip the PNG (no matplotlib needed)")
    q.add_argument("--quiet", dest="tl_quiet", action="store_true", help="no progress bar")


def _compare(args) -> int:
    from ..compare import run_comparison

    apply_threads(args)
    if args.plot:
        writable(args.plot, "--plot")
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

"""Command line: ``tdflow fig1`` (the Figure 1 reproduction) and friends."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from .flow import METHODS as STEPPERS


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


SCHEDULE_OPTIONS = (
    ("delta0", float, "initialisation / re-draw radius"),
    ("delta1", float, "re-draw threshold and S_i norm threshold"),
    ("alpha", float, "S_i alignment: wbar_i^2 >= 1 - alpha^2"),
    ("gamma", float, "beta <- beta (1 - gamma) each epoch"),
    ("lam", float, "weight decay lambda"),
    ("eps", float, "stop when ||T - T*||_F <= eps"),
    ("c1", float, "t1 = c1 d / (beta log d)"),
    ("c2", float, "t2 = c2 (log 1/delta1 + log 1/lam) / beta"),
    ("max_epochs", int, "maximum number of epochs"),
    ("max_time", float, "maximum simulated time"),
    ("fit_tol", float, "fitted when a_i - a_hat_i <= fit_tol (default max(2 lam, eps))"),
    ("margin", float, "Definition 2 near-tie factor"),
)
PROBLEM_DEFAULTS = dict(d=20, r=5, m=60, spectrum="geo", span=30.0, seed=0, order=4,
                        target="basis", method="dopri5", rtol=1e-7, n_records=41)


def _read_toml(path) -> dict:
    try:
        import tomllib  # Python >= 3.11
    except ImportError:  # pragma: no cover - Python 3.9/3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise ImportError("reading a TOML file on Python < 3.11 needs the 'tomli' package: "
                              "python -m pip install tomli") from None
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as err:
        raise ValueError(f"cannot read the config file {path}: {err}") from None
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path} is not valid TOML: {err}") from None
    unknown = sorted(set(data) - {"schedule", "problem"})
    if unknown:
        raise ValueError(f"{path}: unknown tables {unknown}; expected [schedule] and [problem]")
    problem = data.get("problem", {})
    bad = sorted(set(problem) - set(PROBLEM_DEFAULTS))
    if bad:
        raise ValueError(f"{path}: unknown [problem] keys {bad}; known: {sorted(PROBLEM_DEFAULTS)}")
    return data


def _weights(kind: str, r: int, span: float):
    import math

    from .target import geometric_weights, power_law_weights, uniform_weights

    if span < 1:
        raise ValueError(f"span must be >= 1, got {span}")
    if kind == "geo":
        return geometric_weights(r, span ** (1.0 / max(r - 1, 1)))
    if kind == "pow":
        return power_law_weights(r, math.log(span) / math.log(r) if r > 1 else 0.0)
    if kind == "uniform":
        return uniform_weights(r)
    raise ValueError(f"spectrum must be 'geo', 'pow' or 'uniform', got {kind!r}")


def _deflate(args) -> int:
    from .deflation import Schedule, deflate
    from .target import Target
    from .threads import set_num_threads

    if args.threads:
        set_num_threads(args.threads)
    config = _read_toml(args.config) if args.config else {}
    prob = dict(PROBLEM_DEFAULTS, **config.get("problem", {}))
    for key in PROBLEM_DEFAULTS:
        if getattr(args, key) is not None:
            prob[key] = getattr(args, key)
    sched = dict(config.get("schedule", {}))
    for name, _, _ in SCHEDULE_OPTIONS:
        if getattr(args, name) is not None:
            sched[name] = getattr(args, name)
    if args.theory:
        schedule = Schedule.theory(prob["d"], sched.pop("eps", 0.01), **sched)
    else:
        schedule = Schedule.from_dict(sched)
    a = _weights(prob["spectrum"], prob["r"], prob["span"])
    if prob["target"] == "basis":
        target = Target.orthogonal(prob["d"], a, order=prob["order"])
    elif prob["target"] == "rotation":
        target = Target.random_rotation(prob["d"], a, rng=prob["seed"] + 10_000, order=prob["order"])
    else:
        raise ValueError(f"target must be 'basis' or 'rotation', got {prob['target']!r}")
    out = Path(args.out)
    res = deflate(target, prob["m"], schedule, prob["seed"], method=prob["method"],
                  rtol=prob["rtol"], n_records=prob["n_records"], checkpoint=out,
                  checkpoint_every=args.checkpoint_every, resume=args.resume,
                  progress=False if args.quiet else None)
    print(res.summary())
    print(f"result: {out}")
    return 0 if res.status == "recovered" else 1


def _plot(args) -> int:
    import json

    import numpy as np

    from . import io

    path = Path(args.result)
    if not path.exists():
        raise ValueError(f"no such file: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            kind = json.loads(str(data["__meta__"])).get("kind") if "__meta__" in data.files else None
    except Exception as err:
        raise ValueError(f"{path} is not a readable tdflow result file: {err}") from None
    out = Path(args.out) if args.out else path.parent
    png = out / (path.stem + ".png")
    if kind == "deflation":
        from .deflation import DeflationResult
        from .plot import plot_deflation

        plot_deflation(DeflationResult.load(path), png)
    elif kind == "figure1":
        from .figure1 import Figure1Result
        from .plot import plot_figure1

        plot_figure1(Figure1Result.load(path), png)
    else:
        io.load_npz(path, kind="deflation")  # raises the precise error
        raise ValueError(f"{path}: nothing to plot")  # pragma: no cover
    print(f"figure: {png}")
    return 0


def _add_deflate_parsers(sub) -> None:
    p = sub.add_parser("deflate", help="run Algorithm 2 of the deflation paper (epochs + re-draws)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="Algorithm 2 (Ge et al. 2021) on an orthogonal target. Options "
                       "left out come from --config (TOML tables [problem] and [schedule]), then "
                       "from the defaults (tdflow.Schedule()). Exit status 0 when recovered, 1 "
                       "when the run stopped otherwise, 2 on bad input.")
    p.add_argument("--config", help="TOML file with [problem] and [schedule] tables")
    p.add_argument("--out", default="deflation.npz",
                   help="result file, also the checkpoint (written atomically after every epoch)")
    p.add_argument("--resume", action="store_true", help="continue from --out if it exists")
    p.add_argument("--checkpoint-every", type=int, default=1, help="epochs between checkpoints")
    p.add_argument("--theory", action="store_true",
                   help="Schedule.theory(d, eps) (Theorem 1, constants = 1) instead of the defaults")
    g = p.add_argument_group("problem (defaults: " + ", ".join(f"{k}={v}" for k, v in PROBLEM_DEFAULTS.items()) + ")")
    g.add_argument("--d", type=int, help="dimension")
    g.add_argument("--r", type=int, help="number of target directions")
    g.add_argument("--m", type=int, help="number of columns")
    g.add_argument("--spectrum", choices=("geo", "pow", "uniform"), help="weight spectrum (sum 1)")
    g.add_argument("--span", type=float, help="a_max / a_min of the spectrum")
    g.add_argument("--target", choices=("basis", "rotation"), help="orthogonal target frame")
    g.add_argument("--order", type=int, help="tensor order l")
    g.add_argument("--seed", type=int, help="random seed of the run")
    g.add_argument("--method", choices=STEPPERS, help="integrator")
    g.add_argument("--rtol", type=float, help="relative tolerance of the adaptive methods")
    g.add_argument("--n-records", type=int, help="recording times per phase")
    g = p.add_argument_group("schedule (defaults: tdflow.Schedule())")
    for name, typ, text in SCHEDULE_OPTIONS:
        g.add_argument("--" + name.replace("_", "-"), dest=name, type=typ, help=text)
    p.add_argument("--threads", type=int, default=0, help="OpenMP threads (0: default)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_deflate)

    p = sub.add_parser("plot", help="figures of a saved result (deflation or fig1)")
    p.add_argument("result", help="a .npz written by tdflow deflate / tdflow fig1")
    p.add_argument("--out", help="output folder (default: next to the result)")
    p.set_defaults(func=_plot)


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


def _doctor(args) -> int:
    from .config import show_config

    show_config()
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
    p.add_argument("--method", choices=STEPPERS, default="rk4")
    p.add_argument("--h", type=float, default=0.05, help="step (fixed-step methods)")
    p.add_argument("--rtol", type=float, default=1e-8, help="relative tolerance (dopri5, dop853)")
    p.add_argument("--threads", type=int, default=0, help="OpenMP threads (0: default)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG (no matplotlib needed)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_fig1)

    p = sub.add_parser("linear", help="deep linear models: convergence-rate bounds against observed rates",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="linear", help="output folder for linear.png and linear.npz")
    p.add_argument("--seed", type=int, default=0, help="seed of the random matrix/regression cases")
    p.add_argument("--rtol", type=float, default=1e-10, help="relative tolerance (dopri5, dop853)")
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

    _add_deflate_parsers(sub)

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

    p = sub.add_parser("doctor", help="print the version, CPU level, compiler, Eigen, OpenMP and "
                       "threads of this install (for bug reports; also tdflow.show_config())")
    p.set_defaults(func=_doctor)
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

"""Command line: ``tdflow fig1`` (the Figure 1 reproduction) and friends."""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Callable, Optional, Sequence

from typing import Any, Mapping

from .figure1 import SOLVER as FIG1_SOLVER
from .deflation import SOLVER as DEFLATE_SOLVER
from .target import SPECTRA, TARGET_KINDS

# the flags of add_solver_arguments: every SolverOptions field but t_eval (an array)
SOLVER_FLAGS = ("method", "rtol", "atol", "h", "max_step", "max_steps", "n_records")


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Help that shows each option's default, except where there is none to show (flags,
    options whose default comes from elsewhere and says so in its help)."""

    def _get_help_string(self, action):
        if action.default in (None, False, argparse.SUPPRESS) or "(default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _writable(path, name: str) -> Path:
    """Check an output path before any work (a read-only folder fails now, not after the run)."""
    from . import io

    return io.check_writable(path, name)


def _save(save: Callable[[Path], Path], path: Path) -> Path:
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

    from .options import METHODS, SolverOptions

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
    from .options import SolverOptions

    given = {k: getattr(args, k) for k in SOLVER_FLAGS if getattr(args, k) is not None}
    return SolverOptions.resolve(None, {**dict(config or {}), **given}, defaults,
                                 where="the solver options")


def _fig1(args) -> int:
    from .figure1 import run_figure1
    from .threads import set_num_threads

    if args.threads:
        set_num_threads(args.threads)
    out = Path(args.out)
    _writable(out / "fig1.npz", "--out")
    result = run_figure1(
        seeds=range(args.seed0, args.seed0 + args.seeds), d=args.d, m=args.m, r=args.r,
        ratio=args.ratio, radius=args.radius, lam=args.lam, t_end=args.t_end,
        options=solver_options(args, FIG1_SOLVER), progress=False if args.quiet else None,
    )
    npz = _save(result.save, out / "fig1.npz")
    print(result.summary())
    print(f"arrays: {npz}")
    if not args.no_plot:
        from .plot import plot_figure1

        png = npz.parent / "fig1.png"
        plot_figure1(result, png)
        print(f"figure: {png}")
    return 0


def _linear(args) -> int:
    if args.linear_command == "three-layer":
        return _linear_three_layer(args)
    from .linear_examples import plot_linear_comparison, run_linear_comparison

    out = Path(args.out)
    _writable(out / "linear.npz", "--out")
    result = run_linear_comparison(rng=args.seed, rtol=args.rtol, rk4_h=args.rk4_h,
                                   progress=False if args.quiet else None)
    print(result.summary())
    npz = _save(result.save, out / "linear.npz")
    print(f"arrays: {npz}")
    if not args.no_plot:
        png = npz.parent / "linear.png"
        plot_linear_comparison(result, png)
        print(f"figure: {png}")
    return 0 if result.holds() else 1


def _linear_three_layer(args) -> int:
    from .linear_three_layer import plot_three_layer, run_three_layer

    out = Path(args.tl_out)
    result = run_three_layer(n=args.tl_n, m=args.tl_m, h1=args.tl_h1, h2=args.tl_h2,
                             draws=args.tl_draws, seed=args.tl_seed, horizon=args.tl_horizon,
                             rtol=args.tl_rtol, progress=False if args.tl_quiet else None)
    print(result.summary())
    npz = result.save(out / "three_layer.npz")
    print(f"arrays: {npz}")
    if not args.tl_no_plot:
        png = out / "three_layer.png"
        plot_three_layer(result, png)
        print(f"figure: {png}")
    return 0 if result.holds() else 1


def _add_linear_parsers(sub) -> None:
    p = sub.add_parser("linear", help="deep linear models: convergence-rate bounds against observed rates",
                       formatter_class=_Help,
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
    from .linear_three_layer import DEFAULTS as TL

    lsub = p.add_subparsers(dest="linear_command", metavar="{three-layer}")
    q = lsub.add_parser("three-layer", formatter_class=_Help,
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
    from .compare import run_comparison
    from .threads import set_num_threads

    if args.threads:
        set_num_threads(args.threads)
    if args.plot:
        _writable(args.plot, "--plot")
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


def _schedule_arguments(group) -> None:
    """One flag per Schedule field (its metadata: help text, parser), default None so that
    --config can fill it."""
    import dataclasses

    from .schedule import Schedule

    defaults = _schedule_defaults()
    for f in dataclasses.fields(Schedule):
        parse = f.metadata["parse"]
        typ = _arg_type(parse) if parse else int if isinstance(f.default, int) else float
        group.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=typ,
                           metavar=f.name.upper(),
                           help=f"{f.metadata['help']} (default: {defaults[f.name]})")


def _arg_type(parse):
    """An argparse type from a parser that raises ValueError (its message shown as is)."""
    def convert(text: str):
        try:
            return parse(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    return convert


PROBLEM_DEFAULTS = dict(d=20, r=5, m=60, spectrum="geometric", span=30.0, seed=0, order=4,
                        target="orthogonal")
PROBLEM_OPTIONAL = ("ratio", "exponent")  # the spectrum's parameter instead of span (no default)
TABLES = ("problem", "solver", "schedule")


def _read_toml(path) -> dict:
    from . import io

    data = io.load_toml(path, "--config")  # a missing file: OSError naming --config
    unknown = sorted(set(data) - set(TABLES))
    if unknown:
        raise ValueError(f"{path}: unknown tables {unknown}; expected {[f'[{t}]' for t in TABLES]}")
    for table in TABLES:
        if not isinstance(data.get(table, {}), dict):
            raise ValueError(f"{path}: {table} must be a table ([{table}]), got {data[table]!r}")
    data = {t: dict(data.get(t, {})) for t in TABLES}
    problem, solver = data["problem"], data["solver"]
    for key in OLD_PROBLEM_KEYS:  # configs written before [solver] held these in [problem]
        if key in problem:
            if key in solver:
                raise ValueError(f"{path}: {key} is in both [problem] and [solver]; keep the one "
                                 "in [solver]")
            solver[key] = problem.pop(key)
    known = set(PROBLEM_DEFAULTS) | set(PROBLEM_OPTIONAL)
    bad = sorted(set(problem) - known)
    if bad:
        raise ValueError(f"{path}: unknown [problem] keys {bad}; known: {sorted(known)}")
    bad = sorted(set(solver) - set(SOLVER_FLAGS))
    if bad:
        raise ValueError(f"{path}: unknown [solver] keys {bad}; known: {sorted(SOLVER_FLAGS)}")
    return data


OLD_PROBLEM_KEYS = ("method", "rtol", "n_records")


def _problem(prob: dict) -> dict:
    """The [problem] values (from --config or flags), each checked with its name; the target's
    old names (basis, rotation, geo, pow) read as Target.from_spec's."""
    from ._checks import positive_int, real_number
    from .target import spec_name

    out = {}
    for key, default in PROBLEM_DEFAULTS.items():
        v = prob[key]
        if key in ("target", "spectrum"):
            out[key] = spec_name(key, v)
        elif isinstance(default, int):
            out[key] = positive_int(v, key, minimum=0 if key == "seed" else 1)
        else:
            out[key] = real_number(v, key, minimum=1.0 if key == "span" else 0.0)
    for key in PROBLEM_OPTIONAL:
        if prob.get(key) is not None:
            out[key] = real_number(prob[key], key)
    return out


def _old_name(key: str):
    """argparse type of --target / --spectrum: the names before issue 17 read as the new ones."""
    from .target import OLD_NAMES

    return lambda text: OLD_NAMES[key].get(text, text)


def _deflate(args) -> int:
    from . import io
    from .deflation import deflate
    from .schedule import Schedule
    from .target import SPEC_KEYS, Target
    from .threads import set_num_threads

    if args.threads:
        set_num_threads(args.threads)
    config = _read_toml(args.config) if args.config else {}
    prob = dict(PROBLEM_DEFAULTS, **config.get("problem", {}))
    for key in (*PROBLEM_DEFAULTS, *PROBLEM_OPTIONAL):
        if getattr(args, key) is not None:
            prob[key] = getattr(args, key)
    prob = _problem(prob)
    sched = dict(config.get("schedule", {}))
    for name in Schedule.field_names():
        if getattr(args, name) is not None:
            sched[name] = getattr(args, name)
    if args.theory:
        schedule = Schedule.theory(prob["d"], sched.pop("eps", 0.01), prob["m"], **sched)
    else:
        schedule = Schedule.from_dict(sched)
    target = Target.from_spec({k: prob[k] for k in SPEC_KEYS if k in prob}, seed=prob["seed"])
    out = _writable(io.npz_path(args.out, "--out"), "--out")
    options = solver_options(args, DEFLATE_SOLVER, config.get("solver"))
    res = deflate(target, prob["m"], schedule, prob["seed"], options=options, checkpoint=out,
                  checkpoint_every=args.checkpoint_every, resume=args.resume,
                  progress=False if args.quiet else None)
    print(res.summary())
    print(f"result: {_save(res.save, out)}")
    return 0 if res.success else 1


def _plot(args) -> int:
    from . import io

    path = io.npz_path(args.result, "result")
    if not path.exists():
        raise ValueError(f"no such file: {path}")
    kind = io.file_kind(path)  # a damaged file is a ValueError naming it
    out = Path(args.out) if args.out else path.parent
    png = _writable(out / (path.name[: -len(io.SUFFIX)] + ".png"), "--out")
    if kind == "deflation":
        from .deflation_result import DeflationResult
        from .plot import plot_deflation

        plot_deflation(DeflationResult.load(path), png)
    elif kind == "figure1":
        from .figure1 import Figure1Result
        from .plot import plot_figure1

        plot_figure1(Figure1Result.load(path), png)
    else:
        raise ValueError(f"{path} holds a {kind!r} result; tdflow plot draws 'deflation' "
                         "(tdflow deflate) and 'figure1' (tdflow fig1) results")
    print(f"figure: {png}")
    return 0


def _add_deflate_parsers(sub) -> None:
    p = sub.add_parser("deflate", help="run Algorithm 2 of the deflation paper (epochs + re-draws)",
                       formatter_class=_Help,
                       description="Algorithm 2 (Ge et al. 2021) on the target of --target "
                       "(Target.from_spec: the sweep kind 'deflate' makes the same run). Options "
                       "left out come from --config (TOML tables [problem], [solver] and "
                       "[schedule]), then "
                       "from the defaults (tdflow.Schedule()). Exit status 0 when recovered, 1 "
                       "when the run stopped otherwise, 2 on bad input.")
    p.add_argument("--config", help="TOML file with [problem], [solver] and [schedule] tables")
    p.add_argument("--out", default="deflation.npz",
                   help="result file, also the checkpoint (written atomically after every epoch; "
                   ".npz is appended unless the name ends with it)")
    p.add_argument("--resume", action="store_true", help="continue from --out if it exists")
    p.add_argument("--checkpoint-every", type=int, default=1, help="epochs between checkpoints")
    p.add_argument("--theory", action="store_true",
                   help="Schedule.theory(d, eps, m) (Theorem 1, constants = 1; --c1 etc. override "
                   "them) instead of tdflow's practical defaults")
    g = p.add_argument_group("problem (each default is overridden by [problem] in --config)")
    for name, kw, text in (
            ("d", dict(type=int), "dimension"), ("r", dict(type=int), "number of target directions"),
            ("m", dict(type=int), "number of columns"),
            ("spectrum", dict(choices=SPECTRA, type=_old_name("spectrum")),
             "weight spectrum (sum 1; geo and pow: old names)"),
            ("span", dict(type=float), "a_max / a_min of the spectrum, unless --ratio / --exponent"),
            ("target", dict(choices=TARGET_KINDS, type=_old_name("target")),
             "target frame (drawn from the seed's target stream when random; basis and rotation: "
             "old names)"),
            ("order", dict(type=int), "tensor order l"),
            ("seed", dict(type=int), "seed of the run: initialisation and re-draws from "
             "default_rng(seed), a random target from default_rng([seed, 1])")):
        g.add_argument("--" + name.replace("_", "-"), dest=name, **kw,
                       help=f"{text} (default: {PROBLEM_DEFAULTS[name]})")
    g.add_argument("--ratio", type=float, help="geometric spectrum: a_i / a_{i+1} (default: from --span)")
    g.add_argument("--exponent", type=float,
                   help="power_law spectrum: a_i ~ i^-exponent (default: from --span)")
    add_solver_arguments(p.add_argument_group(
        "integrator of each phase (each default is overridden by [solver] in --config)"),
        DEFLATE_SOLVER)
    g = p.add_argument_group("schedule (each default is overridden by [schedule] in --config; "
                             "--theory: Theorem 1's values)")
    _schedule_arguments(g)
    p.add_argument("--threads", type=int, default=0, help="OpenMP threads (0: the OpenMP default)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_deflate)

    p = sub.add_parser("plot", help="figures of a saved result (deflation or fig1)",
                       formatter_class=_Help)
    p.add_argument("result", help="a .npz written by tdflow deflate / tdflow fig1")
    p.add_argument("--out", help="output folder (default: the result's folder)")
    p.set_defaults(func=_plot)


def _sweep(args) -> int:
    from .sweeps import sweep

    try:
        result = sweep(args.spec, args.out, scheduler=args.scheduler, workers=args.workers,
                       max_runs=args.max_runs, dashboard=not args.no_dashboard,
                       progress=False if args.quiet else None)
    except KeyboardInterrupt:  # sweep() said "interrupted, N runs kept"
        return 130
    print(result.report())
    return 1 if result.errors else 0


def _schedule_defaults() -> dict:
    from .schedule import Schedule

    out = Schedule().to_dict()
    out["max_time"] = "none" if out["max_time"] is None else out["max_time"]
    out["fit_tol"] = "paper" if out["fit_tol"] is None else out["fit_tol"]
    return out


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="tdflow", description=__doc__, formatter_class=_Help)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fig1", help="reproduce Figure 1 of the deflation paper (Ge et al. 2021)",
                       formatter_class=_Help)
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
    p.add_argument("--threads", type=int, default=0, help="OpenMP threads (0: the OpenMP default)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG (no matplotlib needed)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_fig1)

    _add_linear_parsers(sub)

    from .compare import METHODS

    p = sub.add_parser("compare", help="lazy fit, beyond-lazy variant, power method and gradient "
                       "flow on one target: error against m and work",
                       formatter_class=_Help)
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
    p.add_argument("--threads", type=int, default=0, help="OpenMP threads (0: the OpenMP default)")
    p.set_defaults(func=_compare)

    _add_deflate_parsers(sub)

    p = sub.add_parser("sweep", help="a grid of runs x seeds on dask.distributed (local cluster by default)",
                       formatter_class=_Help)
    p.add_argument("spec", help="TOML spec (format: python -m pydoc tdflow.sweeps)")
    p.add_argument("--out", default=None, help="output folder (default: the spec path without .toml)")
    p.add_argument("--scheduler", default=None, help="address of a running Dask scheduler, tcp://host:port (default: a local cluster)")
    p.add_argument("--workers", type=int, default=None, help="local worker processes (default: one per core)")
    p.add_argument("--max-runs", type=int, default=None, help="run at most this many pending runs now (default: all)")
    p.add_argument("--no-dashboard", action="store_true", help="no Dask dashboard for the local cluster")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_sweep)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    from .io import FolderLockedError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, ImportError, OSError, FolderLockedError) as err:
        print(f"tdflow {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

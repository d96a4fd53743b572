"""``tdflow deflate`` (Algorithm 2 of Ge et al. 2021 from flags and a TOML config: the
problem, the integrator of each phase, the Schedule) and ``tdflow plot`` (figures of a saved
result)."""
from __future__ import annotations

from pathlib import Path

from ..deflation import SOLVER as DEFLATE_SOLVER
from ..target import SPECTRA, TARGET_KINDS
from .common import (SOLVER_FLAGS, Help, add_solver_arguments, add_threads_argument, apply_threads,
                     arg_type, save, solver_options, writable)

PROBLEM_DEFAULTS = dict(d=20, r=5, m=60, spectrum="geometric", span=30.0, seed=0, order=4,
                        target="orthogonal")
PROBLEM_OPTIONAL = ("ratio", "exponent")  # the spectrum's parameter instead of span (no default)
TABLES = ("problem", "solver", "schedule")
OLD_PROBLEM_KEYS = ("method", "rtol", "n_records")  # in [problem] before [solver] existed


def add_parsers(sub) -> None:
    p = sub.add_parser("deflate", help="run Algorithm 2 of the deflation paper (epochs + re-draws)",
                       formatter_class=Help,
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
    add_threads_argument(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_deflate)

    p = sub.add_parser("plot", help="figures of a saved result (deflation or fig1)",
                       formatter_class=Help)
    p.add_argument("result", help="a .npz written by tdflow deflate / tdflow fig1")
    p.add_argument("--out", help="output folder (default: the result's folder)")
    p.set_defaults(func=_plot)


def _read_toml(path) -> dict:
    from .. import io

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



def _problem(prob: dict) -> dict:
    """The [problem] values (from --config or flags), each checked with its name; the target's
    old names (basis, rotation, geo, pow) read as Target.from_spec's."""
    from .._checks import positive_int, real_number
    from ..target import spec_name

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
    from ..target import OLD_NAMES

    return lambda text: OLD_NAMES[key].get(text, text)


def _deflate(args) -> int:
    from .. import io
    from ..deflation import deflate
    from ..schedule import Schedule
    from ..target import SPEC_KEYS, Target

    apply_threads(args)
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
    out = writable(io.npz_path(args.out, "--out"), "--out")
    options = solver_options(args, DEFLATE_SOLVER, config.get("solver"))
    res = deflate(target, prob["m"], schedule, prob["seed"], options=options, checkpoint=out,
                  checkpoint_every=args.checkpoint_every, resume=args.resume,
                  progress=False if args.quiet else None)
    print(res.summary())
    # deflate's final checkpoint is the result file; written again only where that write failed
    print(f"result: {save(res.save, out) if res.checkpoint_failed else out}")
    return 0 if res.success else 1


def _plot(args) -> int:
    from .. import io

    path = io.npz_path(args.result, "result")
    if not path.exists():
        raise ValueError(f"no such file: {path}")
    kind, arrays, meta = io.read_npz(path)  # one read; a damaged file is a ValueError naming it
    out = Path(args.out) if args.out else path.parent
    png = writable(out / (path.name[: -len(io.SUFFIX)] + ".png"), "--out")
    if kind == "deflation":
        from ..checkpoint import from_npz
        from ..plot import plot_deflation

        plot_deflation(from_npz(path, arrays, meta), png)
    elif kind == "figure1":
        from ..figure1 import Figure1Result
        from ..plot import plot_figure1

        plot_figure1(Figure1Result.from_npz(path, arrays, meta), png)
    else:
        raise ValueError(f"{path} holds a {kind!r} result; tdflow plot draws 'deflation' "
                         "(tdflow deflate) and 'figure1' (tdflow fig1) results")
    print(f"figure: {png}")
    return 0


def _schedule_arguments(group) -> None:
    """One flag per Schedule field (its metadata: help text, parser), default None so that
    --config can fill it."""
    import dataclasses

    from ..schedule import Schedule

    defaults = _schedule_defaults()
    for f in dataclasses.fields(Schedule):
        parse = f.metadata["parse"]
        typ = arg_type(parse) if parse else int if isinstance(f.default, int) else float
        group.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=typ,
                           metavar=f.name.upper(),
                           help=f"{f.metadata['help']} (default: {defaults[f.name]})")


def _schedule_defaults() -> dict:
    from ..schedule import Schedule

    out = Schedule().to_dict()
    out["max_time"] = "none" if out["max_time"] is None else out["max_time"]
    out["fit_tol"] = "paper" if out["fit_tol"] is None else out["fit_tol"]
    return out

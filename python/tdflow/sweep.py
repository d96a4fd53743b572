"""Parameter sweeps: many independent runs on dask.distributed, one result file each.

``tdflow.sweep(spec, out)`` (and ``tdflow sweep SPEC.toml``) expands a spec into runs
(parameter set x seed), runs them on a Dask cluster -- a ``LocalCluster`` on this machine by
default (one single-threaded worker process per core, loopback only), or the scheduler at
``scheduler="tcp://host:port"`` -- and writes

* ``OUT/runs/<id>.npz``: one file per run (``tdflow.io`` format, kind ``"sweep-run"``), written
  atomically by the client as soon as the run completes; its metadata holds the kind, the
  parameters, the seed, the status (``"ok"`` or ``"error"``, with the message and traceback),
  the summary row, the wall time and the worker;
* ``OUT/summary.csv`` (and ``OUT/summary.parquet`` when pyarrow is importable): one row per run,
  rebuilt from the result files at the end of every invocation;
* ``OUT/spec.json``: the expanded spec.

Each run has a stable id, a hash of its kind, its full parameter set (defaults filled in) and its
seed. Re-running a sweep skips the runs whose result file exists, is readable and says
``status = "ok"``; runs recorded as errors, and unreadable (e.g. truncated) files, are run again.
A run that raises is recorded as an error and does not stop the others; a killed sweep loses
nothing that had finished. A run is reproducible from its kind, parameters and seed alone.
One sweep at a time works in a folder (``OUT/.lock``; a second one is refused with the first's
pid). Ctrl-C writes the summary and says "interrupted, N runs kept" (the workers print nothing);
results that cannot be written (disk full) are kept in ``SweepResult.unsaved``.

Spec format (TOML, or the same structure as a dict)
---------------------------------------------------
::

    kind = "flow"            # a registered run kind (see KINDS)
    seeds = 5                # seeds 0..4; or an explicit list, e.g. [0, 7, 11]
    threads = 1              # optional: OpenMP threads per run (default 1)
    name = "m and lambda"    # optional label, kept in OUT/spec.json

    [fixed]                  # parameters shared by every run
    d = 10
    r = 5
    t_end = 250.0

    [grid]                   # every combination of these lists (a Cartesian product)
    m = [20, 50, 100]
    lam = [0.0, 1e-3]

    [[runs]]                 # and/or explicit parameter sets, each laid over [fixed]
    m = 30
    spectrum = "uniform"

The parameter sets are the grid points (when ``[grid]`` is given) followed by the ``[[runs]]``
entries (when given); with neither, ``[fixed]`` alone is one parameter set. A key may not appear
in both ``[fixed]`` and ``[grid]``; a ``[[runs]]`` entry overrides ``[fixed]``. Unknown parameter
names are rejected before anything runs (with the list of known ones); bad values (``d = 0``) make
that run an error. Identical runs (same id) are run once.

Run kinds
---------
``KINDS`` maps a name to a :class:`RunKind`: a function ``fn(params: dict, seed: int) ->
(summary_row: dict, arrays: dict)`` and its default parameters (which also fix the accepted
names; ``defaults=None`` accepts anything). Built in:

* ``"flow"`` (:func:`run_flow`): plain gradient flow of the deflation model from a small random
  initialisation; the row holds the recovered directions, the fit order and times, the final
  ``||T - T*||_F``, the simulated time and the number of right-hand sides.
* ``"linear"`` (:func:`run_linear`): a deep linear model (``tdflow.linear``); the row holds the
  rate bound against the observed decay rates.

* ``"deflate"`` (:func:`run_deflate`): Algorithm 2 (``tdflow.deflate``) with the Schedule's
  fields as parameters; the row holds the status, the number of fitted directions, the epochs,
  the fit order, the final ``||T - T*||_F``, the simulated time and Proposition 1's verdict.

Another kind is one line, ``register_kind(name, fn, defaults)``. The function travels to the workers with each task (module-level functions by reference, others
by value), so a kind registered in a script works on any cluster that can import tdflow.

``tdflow.sweep`` (the attribute) is the function :func:`sweep`; import the rest of this module
with ``from tdflow.sweep import register_kind, parse_spec, run_one, ...``.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import io as _stdio
import itertools
import json
import math
import numbers
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import io
from ._checks import flag, positive_int, show

FILE_KIND = "sweep-run"
INSTALL_HINT = "python -m pip install 'tdflow[dask]'"

# -- run kinds ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RunKind:
    """A registered run: ``fn(params, seed) -> (summary_row, arrays)`` and its default parameters."""

    name: str
    fn: Callable[[dict, int], Tuple[dict, dict]]
    defaults: Optional[Mapping[str, Any]] = None


KINDS: Dict[str, RunKind] = {}


def register_kind(name: str, fn: Callable[[dict, int], Tuple[dict, dict]],
                  defaults: Optional[Mapping[str, Any]] = None) -> RunKind:
    """Register (or replace) the run kind ``name``; ``defaults`` fixes the accepted parameters."""
    if not isinstance(name, str) or not name:
        raise TypeError("name must be a non-empty string")
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    KINDS[name] = RunKind(name, fn, None if defaults is None else dict(defaults))
    return KINDS[name]


FLOW_DEFAULTS: Dict[str, Any] = dict(
    d=10, m=50, r=5, order=4,
    target="orthogonal",      # "orthogonal" (basis vectors), "random_rotation", "random_unit"
    spectrum="geometric",     # "geometric" (ratio), "power_law" (exponent), "uniform"
    ratio=1.2, exponent=1.0,
    radius=1e-15, lam=0.0, t_end=250.0,
    method="dopri5", h=None, rtol=1e-8, n_records=501,
    threshold=0.5, active_tol=1e-16, save_norms=False,
)


def _weights(p: dict) -> np.ndarray:
    from .target import geometric_weights, power_law_weights, uniform_weights

    if p["spectrum"] == "geometric":
        return geometric_weights(p["r"], p["ratio"])
    if p["spectrum"] == "power_law":
        return power_law_weights(p["r"], p["exponent"])
    if p["spectrum"] == "uniform":
        return uniform_weights(p["r"])
    raise ValueError(f"spectrum must be 'geometric', 'power_law' or 'uniform', got {p['spectrum']!r}")


def _target(p: dict, seed: int):
    """The target of a run: kind p["target"], weights from p["spectrum"]; random frames are drawn
    from ``default_rng([seed, 1])``."""
    from .target import Target

    d, r = positive_int(p["d"], "d"), positive_int(p["r"], "r")
    if p["target"] in ("orthogonal", "random_rotation") and r > d:
        raise ValueError(f"r must be <= d for an orthogonal target, got r={r}, d={d}")
    a = _weights(p)
    if p["target"] == "orthogonal":
        return Target.orthogonal(d, a, order=p["order"])
    if p["target"] == "random_rotation":
        return Target.random_rotation(d, a, np.random.default_rng([seed, 1]), order=p["order"])
    if p["target"] == "random_unit":
        return Target.random_unit(d, a, np.random.default_rng([seed, 1]), order=p["order"])
    raise ValueError(f"target must be 'orthogonal', 'random_rotation' or 'random_unit', got {p['target']!r}")


def run_flow(params: dict, seed: int) -> Tuple[dict, dict]:
    """One plain gradient flow of the deflation model (parameters: :data:`FLOW_DEFAULTS`).

    ``W0 = sphere(d, m, radius, default_rng(seed))`` (the initialisation of ``tdflow fig1`` for
    the same seed); a random target is drawn from ``default_rng([seed, 1])``. A direction counts
    as recovered when ``fit_times(threshold)`` is finite.
    """
    from .flow import GradientFlow
    from .sampling import sphere

    p = dict(FLOW_DEFAULTS, **params)
    target = _target(p, seed)
    d = target.dim
    flow = GradientFlow(target, lam=p["lam"], active_tol=p["active_tol"])
    W0 = sphere(d, p["m"], p["radius"], np.random.default_rng(seed))
    traj = flow.integrate(W0, (0.0, p["t_end"]), method=p["method"], h=p["h"], rtol=p["rtol"],
                          n_records=p["n_records"], save_norms=bool(p["save_norms"]), progress=False)
    fit_times = traj.fit_times(p["threshold"])
    row = dict(
        recovered=int(np.isfinite(fit_times).sum()),
        fit_order=[int(i) for i in traj.fit_order(p["threshold"])],
        fit_times=[float(x) for x in fit_times],
        final_error=float(traj.residual_norm[-1]),
        final_loss=float(traj.loss[-1]),
        t_final=float(traj.t_final),
        n_rhs=int(traj.n_rhs),
        n_steps=int(traj.n_steps),
        integration=traj.status,
    )
    arrays = dict(t=traj.t, loss=traj.loss, residual_norm=traj.residual_norm,
                  directional_residual=traj.directional_residual, W=traj.W, a=target.a,
                  U=target.U, fit_times=fit_times)
    if traj.norms is not None:
        arrays["norms"] = traj.norms
    return row, arrays


LINEAR_DEFAULTS: Dict[str, Any] = dict(
    n0=3, nL=3, hidden=[3],   # end-to-end n0 x nL, hidden widths (n_1, ..., n_{L-1})
    problem="factorisation",  # or "regression" (N samples, Y = X B + noise)
    N=20, noise=0.1,
    init="random",            # "random": i.i.d. N(0, scale^2) layers; "near": two layers whose
    scale=0.5,                #   product is W* + E, ||E||_F = offset * sigma_min(W*) sqrt(mu/K),
    offset=0.5, balance=1.0,  #   factored with W_1 scaled by balance, W_2 by 1/balance
    t_end=5.0, method="dopri5", h=None, rtol=1e-10, n_records=201, floor=1e-10,
)


def run_linear(params: dict, seed: int) -> Tuple[dict, dict]:
    """One deep linear flow (parameters: :data:`LINEAR_DEFAULTS`): the rate bound of
    :meth:`DeepLinearFlow.rate_bound` against the observed decay rates of ``L(t) - f*``.

    The data and the initialisation come from ``default_rng(seed)``. Where no bound applies
    (four or more matrix layers without unimodal imbalance) the bound is NaN and
    ``bound_kind`` is ``"none"``.
    """
    from .linear import DeepLinearFlow
    from .linear_examples import _factor

    p = dict(LINEAR_DEFAULTS, **params)
    rng = np.random.default_rng(seed)
    n0, nL = positive_int(p["n0"], "n0"), positive_int(p["nL"], "nL")
    hidden = p["hidden"]
    if isinstance(hidden, (int, np.integer)):
        hidden = [hidden]
    if p["problem"] == "factorisation":
        flow = DeepLinearFlow(rng.standard_normal((n0, nL)), hidden)
    elif p["problem"] == "regression":
        X = rng.standard_normal((positive_int(p["N"], "N"), n0))
        Y = X @ rng.standard_normal((n0, nL)) + p["noise"] * rng.standard_normal((X.shape[0], nL))
        flow = DeepLinearFlow(Y, hidden, X=X)
    else:
        raise ValueError(f"problem must be 'factorisation' or 'regression', got {p['problem']!r}")
    if p["init"] == "random":
        layers0 = flow.random_layers(rng, p["scale"])
    elif p["init"] == "near":
        if flow.depth != 2:
            raise ValueError(f"init 'near' needs two layers (hidden = [h]), got hidden = {list(hidden)}")
        Ws = flow.W_star
        s_min = np.linalg.svd(Ws, compute_uv=False)[-1]
        E = rng.standard_normal(Ws.shape)
        W0 = Ws + p["offset"] * s_min * math.sqrt(flow.mu / flow.K) * E / np.linalg.norm(E)
        layers0 = _factor(W0, flow.dims[1], float(p["balance"]))
    else:
        raise ValueError(f"init must be 'random' or 'near', got {p['init']!r}")
    try:
        bound = flow.rate_bound(layers0)
        bound_rate, bound_kind = float(bound.rate), bound.kind
    except ValueError:
        bound_rate, bound_kind = math.nan, "none"
    traj = flow.integrate(layers0, (0.0, p["t_end"]), method=p["method"], h=p["h"], rtol=p["rtol"],
                          n_records=p["n_records"], save_products=False, progress=False)
    rates = {}
    for kind in ("min", "secant", "final"):
        try:
            rates[kind] = traj.observed_rate(kind, p["floor"])
        except ValueError:
            rates[kind] = math.nan
    drift = traj.imbalance_drift()
    row = dict(
        depth=flow.depth, bound=bound_rate, bound_kind=bound_kind,
        rate_min=rates["min"], rate_secant=rates["secant"], rate_final=rates["final"],
        holds=bool(rates["min"] >= bound_rate * (1 - 1e-8)) if math.isfinite(bound_rate) else None,
        final_gap=float(traj.gap[-1]), drift=float(drift.max()) if drift.size else 0.0,
        t_final=float(traj.t_final), n_rhs=int(traj.n_rhs), n_steps=int(traj.n_steps),
        integration=traj.status,
    )
    arrays = dict(t=traj.t, loss=traj.loss, gap=traj.gap, rate=traj.rate)
    for i, W in enumerate(traj.layers):
        arrays[f"layer_{i + 1}"] = W
    return row, arrays


DEFLATE_DEFAULTS: Dict[str, Any] = dict(
    d=20, m=60, r=5, order=4, target="orthogonal", spectrum="geometric", ratio=1.5, exponent=1.0,
    # the Schedule's fields (tdflow.Schedule() defaults)
    delta0=1e-3, delta1=1e-2, alpha=0.3, gamma=0.3, lam=1e-4, eps=5e-4, c1=1.0, c1pp=0.0,
    c1ppp=0.0, c2=1.0, c_rho=0.1, max_epochs=100, max_time=None, fit_tol=None, margin=1.0,
    method="dopri5", rtol=1e-7, n_records=41,
)


def run_deflate(params: dict, seed: int) -> Tuple[dict, dict]:
    """Algorithm 2 (``tdflow.deflate``) on the target of ``params`` (:data:`DEFLATE_DEFAULTS`)."""
    from .deflation import Schedule, deflate

    p = dict(DEFLATE_DEFAULTS, **params)
    target = _target(p, seed)
    schedule = Schedule.from_dict({k: p[k] for k in ("delta0", "delta1", "alpha", "gamma", "lam",
                                                     "eps", "c1", "c1pp", "c1ppp", "c2", "c_rho",
                                                     "max_epochs", "max_time", "fit_tol",
                                                     "margin")})
    res = deflate(target, positive_int(p["m"], "m"), schedule, seed, method=p["method"],
                  rtol=p["rtol"], n_records=p["n_records"], progress=False)
    row = dict(
        recovered=int(np.sum(res.fitted_now)), status=res.status, epochs=int(res.n_epochs),
        fit_order=[int(i) for i in res.fit_order], final_error=float(res.residual_norm),
        t_final=float(res.t), n_rhs=int(np.sum(res.epochs["n_rhs"])),
        proposition1=bool(np.all(res.proposition1_ok)),
    )
    arrays = {f"epoch_{k}": np.asarray(v) for k, v in res.epochs.items()}
    arrays.update(W=res.W, a=target.a, U=target.U)
    return row, arrays


register_kind("flow", run_flow, FLOW_DEFAULTS)
register_kind("linear", run_linear, LINEAR_DEFAULTS)
register_kind("deflate", run_deflate, DEFLATE_DEFAULTS)


# -- spec ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Run:
    """One run of a sweep: kind, full parameter set and seed; ``id`` is their stable hash."""

    kind: str
    params: Dict[str, Any]
    seed: int
    id: str


@dataclasses.dataclass
class SweepSpec:
    """An expanded spec: the runs in order (parameter sets outer, seeds inner)."""

    kind: str
    seeds: List[int]
    param_sets: List[Dict[str, Any]]
    runs: List[Run]
    threads: int = 1
    raw: Dict[str, Any] = dataclasses.field(default_factory=dict)


load_toml = io.load_toml  # the spec reader (kept under its old name)


def _plain(x):
    """``x`` with NumPy scalars/arrays turned into Python values (JSON-able)."""
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, np.ndarray)):
        return [_plain(v) for v in x]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, numbers.Integral):
        return int(x)
    if isinstance(x, numbers.Real):
        return float(x)
    if x is None or isinstance(x, str):
        return x
    raise TypeError(f"parameters and summary values must be numbers, strings, booleans or lists, got {type(x).__name__}")


def run_id(kind: str, params: Mapping[str, Any], seed: int) -> str:
    """Stable 16-hex-digit id of a run: a SHA-256 of kind, parameters and seed."""
    text = json.dumps({"kind": kind, "params": _plain(params), "seed": int(seed)}, sort_keys=True,
                      separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _full_params(kind: RunKind, given: Mapping[str, Any], where: str) -> Dict[str, Any]:
    given = _plain(dict(given))
    if kind.defaults is None:
        return given
    unknown = sorted(set(given) - set(kind.defaults))
    if unknown:
        raise ValueError(f"{where}: unknown parameter(s) {unknown} for kind {kind.name!r}; "
                         f"known: {sorted(kind.defaults)}")
    out = dict(kind.defaults)
    for k, v in given.items():
        # 2 and 2.0 are the same run: a float parameter given as an integer becomes a float
        if isinstance(kind.defaults[k], float) and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        out[k] = v
    return out


def _seeds(seeds) -> List[int]:
    if isinstance(seeds, numbers.Integral) and not isinstance(seeds, bool):
        return list(range(positive_int(seeds, "seeds")))
    if isinstance(seeds, (list, tuple, range)):
        out = [positive_int(s, "seeds entry", minimum=0) for s in seeds]
        if not out:
            raise ValueError("seeds must not be empty")
        return list(dict.fromkeys(out))
    raise TypeError(f"seeds must be a positive integer or a list of seeds, got {type(seeds).__name__}")


SPEC_KEYS = ("kind", "seeds", "threads", "fixed", "grid", "runs", "name")


def parse_spec(spec: Union[Mapping[str, Any], str, os.PathLike]) -> SweepSpec:
    """Expand a spec (a dict, or the path of a TOML file) into its runs; see the module docstring."""
    if isinstance(spec, (str, os.PathLike)):
        spec = load_toml(spec, "spec")
    if not isinstance(spec, Mapping):
        raise TypeError(f"spec must be a dict or the path of a TOML file, got {type(spec).__name__}")
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if unknown:
        raise ValueError(f"spec: unknown key(s) {unknown}; known: {list(SPEC_KEYS)}")
    name = spec.get("kind")
    if name not in KINDS:
        raise ValueError(f"spec: kind must be one of {sorted(KINDS)}, got {name!r}")
    kind = KINDS[name]
    seeds = _seeds(spec.get("seeds", 1))
    threads = positive_int(spec.get("threads", 1), "threads")
    fixed = spec.get("fixed", {})
    grid = spec.get("grid")
    runs = spec.get("runs")
    if not isinstance(fixed, Mapping):
        raise TypeError("spec: [fixed] must be a table of parameters")
    sets: List[Dict[str, Any]] = []
    if grid is not None:
        if not isinstance(grid, Mapping) or not grid:
            raise TypeError("spec: [grid] must be a non-empty table of lists")
        for k, v in grid.items():
            if not isinstance(v, (list, tuple)) or len(v) == 0:
                raise TypeError(f"spec: grid entry {k!r} must be a non-empty list (single values go in [fixed])")
            if k in fixed:
                raise ValueError(f"spec: {k!r} is in both [fixed] and [grid]")
        keys = list(grid)
        for values in itertools.product(*(grid[k] for k in keys)):
            sets.append(dict(fixed, **dict(zip(keys, values))))
    if runs is not None:
        if not isinstance(runs, (list, tuple)) or not all(isinstance(r, Mapping) for r in runs):
            raise TypeError("spec: runs must be a list of tables ([[runs]])")
        sets.extend(dict(fixed, **r) for r in runs)
    if grid is None and runs is None:
        sets.append(dict(fixed))
    full, out, seen = [], [], set()
    for i, s in enumerate(sets):
        p = _full_params(kind, s, f"spec parameter set {i}")
        full.append(p)
        for seed in seeds:
            rid = run_id(name, p, seed)
            if rid not in seen:
                seen.add(rid)
                out.append(Run(name, p, seed, rid))
    raw = _plain({k: v for k, v in spec.items()})
    return SweepSpec(name, seeds, full, out, threads, raw)


# -- running ------------------------------------------------------------------------------


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return "local"


def execute(fn: Callable[[dict, int], Tuple[dict, dict]], params: dict, seed: int, threads: int = 1) -> dict:
    """Run ``fn(params, seed)`` with ``threads`` OpenMP threads, catching any exception.

    Returns ``{"status", "error", "traceback", "row", "arrays", "wall_time", "worker"}``; this is
    the task each Dask worker runs.
    """
    from .threads import num_threads

    start = time.perf_counter()
    worker = _worker_name()
    if worker != "local":
        _thread_lock_for_tqdm()
    try:
        with num_threads(threads):
            row, arrays = fn(dict(params), int(seed))
        row = _plain(row)
        arrays = io.plain_arrays(arrays, "arrays")  # object arrays: an error, never a pickle
        status, error, tb = "ok", None, None
    except Exception as err:  # a failing run is a result, not a crash of the sweep
        row, arrays, status = {}, {}, "error"
        error = f"{type(err).__name__}: {err}"
        tb = traceback.format_exc()
    return dict(status=status, error=error, traceback=tb, row=row, arrays=arrays,
                wall_time=time.perf_counter() - start, worker=worker)


def _thread_lock_for_tqdm() -> None:
    """In a Dask worker, tqdm's (disabled) bars would create a multiprocessing lock: a semaphore
    registered with the resource tracker, reported as leaked when an interrupted sweep kills the
    worker. A thread lock does: the bars of a worker never cross processes."""
    from tqdm.auto import tqdm

    if not isinstance(getattr(tqdm, "_lock", None), type(threading.RLock())):
        tqdm.set_lock(threading.RLock())


def run_one(kind: str, params: Mapping[str, Any], seed: int, *, threads: int = 1) -> dict:
    """Run one run of a sweep here, in this process (same parameters as in a spec)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
    p = _full_params(KINDS[kind], params, "params")
    return execute(KINDS[kind].fn, p, positive_int(seed, "seed", minimum=0), threads)


def _result_path(out: Path, run: Run) -> Path:
    return out / "runs" / f"{run.id}.npz"


def _read_result(path: Path, run: Run, damaged: Optional[List[str]] = None) -> Optional[dict]:
    """The metadata of a result file that belongs to ``run``; None when missing or unreadable
    (a damaged or foreign file is run again; its reason is appended to ``damaged``)."""
    try:
        _, meta = io.load_npz(path, kind=FILE_KIND)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        if damaged is not None:
            damaged.append(str(err))
        return None
    if (meta.get("id") != run.id or meta.get("kind") != run.kind or meta.get("seed") != run.seed
            or meta.get("params") != run.params or meta.get("status") not in ("ok", "error")):
        if damaged is not None:
            damaged.append(f"{path} does not hold run {run.id}")
        return None
    return meta


def _result_meta(run: Run, res: dict) -> dict:
    """The metadata of a run's result file."""
    from . import __version__

    return dict(id=run.id, kind=run.kind, params=run.params, seed=run.seed, status=res["status"],
                error=res["error"], traceback=res["traceback"], row=res["row"],
                wall_time=float(res["wall_time"]), worker=res["worker"], tdflow=__version__)


RESERVED = ("id", "kind", "seed", "status", "error", "wall_time", "worker")


def summary_row(run: Run, meta: Optional[dict]) -> dict:
    """The summary-table row of ``run`` from its result metadata (None: not run yet)."""
    row: Dict[str, Any] = dict(id=run.id, kind=run.kind, seed=run.seed)
    for k, v in run.params.items():
        row[k if k not in RESERVED else f"param_{k}"] = v
    row["status"] = "pending" if meta is None else meta["status"]
    row["error"] = None if meta is None else meta.get("error")
    for k, v in ({} if meta is None else meta.get("row", {})).items():
        row[k if k not in row else f"result_{k}"] = v
    row["wall_time"] = None if meta is None else meta.get("wall_time")
    row["worker"] = None if meta is None else meta.get("worker")
    return row


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, (list, dict)):
        return json.dumps(v, separators=(",", ":"))
    if isinstance(v, float):
        return repr(v)
    return str(v)


def write_summary(out, rows: Sequence[dict]) -> List[Path]:
    """Write ``OUT/summary.csv`` (and ``summary.parquet`` when pyarrow is importable) atomically.

    Columns are the union of the rows' keys in first-seen order; lists are written as JSON,
    missing values as empty cells. Returns the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    columns: List[str] = list(dict.fromkeys(k for r in rows for k in r))
    buf = _stdio.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([_cell(r.get(c)) for c in columns])

    paths = [out / "summary.csv"]
    io.atomic_write(paths[0], lambda fh: fh.write(buf.getvalue().encode("utf-8")))
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        try:  # a Parquet file from an earlier invocation would no longer match the CSV
            (out / "summary.parquet").unlink()
        except FileNotFoundError:
            pass
        return paths

    def cell(v):
        return json.dumps(v, separators=(",", ":")) if isinstance(v, (list, dict)) else v

    data = {}
    for c in columns:
        col = [cell(r.get(c)) for r in rows]
        kinds = {type(v) for v in col if v is not None}
        if kinds == {int, float}:
            col = [None if v is None else float(v) for v in col]
        elif len(kinds) > 1:
            col = [None if v is None else _cell(v) for v in col]
        data[c] = col
    paths.append(out / "summary.parquet")
    io.atomic_write(paths[1], lambda fh: pq.write_table(pa.table(data), fh))
    return paths


@dataclasses.dataclass
class SweepResult:
    """What :func:`sweep` did: the summary ``rows`` (one per run, in spec order) and counts."""

    out: Path
    rows: List[dict]
    ran: int
    skipped: int
    errors: int
    pending: int
    files: List[Path]
    wall_time: float
    unsaved: Dict[str, dict] = dataclasses.field(default_factory=dict)
    """Finished runs whose file could not be written (disk full, ...): run id -> the run's
    result (``status, row, arrays, ...``), so that nothing computed is lost."""

    def counts(self) -> Dict[str, int]:
        """Number of runs per status over the whole sweep."""
        out: Dict[str, int] = {}
        for r in self.rows:
            out[r["status"]] = out.get(r["status"], 0) + 1
        return out

    def report(self) -> str:
        c = self.counts()
        lines = [f"{len(self.rows)} runs: " + ", ".join(f"{v} {k}" for k, v in sorted(c.items()))
                 + f"; this invocation ran {self.ran}, skipped {self.skipped} already complete"
                 + f" ({self.wall_time:.1f} s)"]
        errs = [r for r in self.rows if r["status"] == "error"]
        for r in errs[:5]:
            lines.append(f"  error in run {r['id']} (seed {r['seed']}): {r['error']}")
        if len(errs) > 5:
            lines.append(f"  ... and {len(errs) - 5} more errors (see the 'error' column)")
        if self.unsaved:
            lines.append(f"  {len(self.unsaved)} finished runs could not be written to "
                         f"{self.out / 'runs'}; they are kept in SweepResult.unsaved")
        lines.extend(f"summary: {p}" for p in self.files)
        return "\n".join(lines)


def _require_distributed():
    try:
        import distributed
    except ImportError as err:
        raise ImportError(f"tdflow sweeps run on dask.distributed, which is not installed: {INSTALL_HINT} ({err})") from None
    return distributed


def local_cluster(workers: Optional[int] = None, *, dashboard: bool = False):
    """A ``distributed.LocalCluster`` on 127.0.0.1 only: ``workers`` worker processes (default:
    one per core) of one thread each, with ``OMP_NUM_THREADS=1``.

    The scheduler's HTTP server (which serves the dashboard when ``dashboard`` is true and bokeh
    is installed) listens on a free loopback port, never on 0.0.0.0 or a fixed port.
    """
    distributed = _require_distributed()
    import dask

    n = positive_int(workers, "workers") if workers is not None else (os.cpu_count() or 1)
    # Dask sets MALLOC_TRIM_THRESHOLD_=65536 in its workers by default; glibc then returns every
    # freed temporary to the OS, which more than doubles the time of a run (measured: m = 500,
    # 1.7 s -> 4.4 s, mostly system time). Keep Dask's other settings (OMP/MKL threads = 1).
    environ = {k: v for k, v in dask.config.get("distributed.nanny.pre-spawn-environ", {}).items()
               if k != "MALLOC_TRIM_THRESHOLD_"}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
        return distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                        host="127.0.0.1", dashboard_address="127.0.0.1:0",
                                        scheduler_kwargs={"dashboard": bool(dashboard)},
                                        env={"OMP_NUM_THREADS": "1"})


def _has_bokeh() -> bool:
    import importlib.util

    return importlib.util.find_spec("bokeh") is not None


def sweep(
    spec: Union[Mapping[str, Any], str, os.PathLike],
    out=None,
    *,
    scheduler: Optional[str] = None,
    workers: Optional[int] = None,
    client=None,
    max_runs: Optional[int] = None,
    on_result: Optional[Callable[[dict], None]] = None,
    dashboard: bool = True,
    progress: Optional[bool] = None,
    verbose: bool = True,
) -> SweepResult:
    """Run every run of ``spec`` not already complete under ``out`` on dask.distributed.

    Parameters
    ----------
    spec : dict or path
        A spec (see the module docstring) or the path of a TOML file holding one.
    out : path, optional
        Output folder (default: the spec file's path without its suffix).
    scheduler : str, optional
        Address of a running scheduler (``"tcp://host:port"``); by default a ``LocalCluster`` on
        127.0.0.1 with ``workers`` single-threaded worker processes (default: one per core).
    client : distributed.Client, optional
        Use this client (and its cluster) instead of starting one.
    max_runs : int, optional
        Run at most this many of the pending runs in this invocation (the rest stay pending).
    on_result : callable, optional
        Called with each finished run's summary row, after its file is written.
    dashboard : bool
        Start the local cluster's dashboard (on 127.0.0.1, a free port) when bokeh is installed;
        its link is printed when ``verbose``.
    progress : bool, optional
        Progress bar over runs; by default only when stderr is a terminal.
    verbose : bool
        Print the cluster and the dashboard link to stderr.

    Returns
    -------
    SweepResult
        ``rows`` is the summary table (also written to ``OUT/summary.csv``).
    """
    start = time.perf_counter()
    parsed = parse_spec(spec)
    if out is None:
        if not isinstance(spec, (str, os.PathLike)):
            raise ValueError("out is required when spec is a dict")
        out = Path(spec).with_suffix("")
    out = io.path_arg(out, "out")
    if max_runs is not None:
        max_runs = positive_int(max_runs, "max_runs", minimum=0)
    if workers is not None:
        workers = positive_int(workers, "workers")
    if scheduler is not None and not isinstance(scheduler, str):
        raise TypeError(f"scheduler must be an address string, got {show(scheduler)}")
    if sum(x is not None for x in (scheduler, client)) > 1:
        raise ValueError("give at most one of scheduler and client")
    if workers is not None and (scheduler is not None or client is not None):
        raise ValueError("workers applies to the local cluster only (not with scheduler or client)")
    if on_result is not None and not callable(on_result):
        raise TypeError(f"on_result must be callable or None, got {show(on_result)}")
    progress = None if progress is None else flag(progress, "progress")
    verbose = flag(verbose, "verbose")
    io.check_writable(out / "runs" / "probe.npz", "out")  # before any run, not after
    with io.folder_lock(out, "out"):  # a second sweep on this folder would repeat our runs
        return _sweep(parsed, out, start, max_runs, (scheduler, workers, client), on_result,
                      dashboard, progress, verbose)


def _say(verbose: bool, msg: str) -> None:
    if verbose:
        print(msg, file=sys.stderr, flush=True)


def _sweep(parsed, out, start, max_runs, where, on_result, dashboard, progress, verbose):
    spec_text = json.dumps(dict(kind=parsed.kind, seeds=parsed.seeds, threads=parsed.threads,
                                param_sets=parsed.param_sets, spec=parsed.raw), indent=1)
    io.atomic_write(out / "spec.json", lambda fh: fh.write(spec_text.encode("utf-8")))

    metas: Dict[str, Optional[dict]] = {}
    todo: List[Run] = []
    damaged: List[str] = []
    for run in parsed.runs:
        meta = _read_result(_result_path(out, run), run, damaged)
        metas[run.id] = meta
        if meta is None or meta.get("status") != "ok":
            todo.append(run)
    for why in damaged[:3]:
        _say(verbose, f"tdflow sweep: run again: {why}")
    if len(damaged) > 3:
        _say(verbose, f"tdflow sweep: ... and {len(damaged) - 3} more damaged result files run again")
    skipped = len(parsed.runs) - len(todo)
    if max_runs is not None:
        todo = todo[:max_runs]
    state = dict(done=0, unsaved={})
    interrupted = False
    if todo:
        try:
            _run_on_dask(parsed, todo, out, metas, *where, on_result, dashboard, progress,
                         verbose, state)
        except KeyboardInterrupt:
            interrupted = True
    rows = [summary_row(run, metas[run.id]) for run in parsed.runs]
    try:
        files = write_summary(out, rows)
    except OSError as err:  # the rows are returned all the same
        files = []
        _say(verbose, f"tdflow sweep: {err}; the summary is in the returned SweepResult.rows")
    result = SweepResult(out=out, rows=rows, ran=state["done"], skipped=skipped,
                         errors=sum(r["status"] == "error" for r in rows),
                         pending=sum(r["status"] == "pending" for r in rows), files=files,
                         wall_time=time.perf_counter() - start, unsaved=state["unsaved"])
    if interrupted:
        kept = len(rows) - result.pending - len(result.unsaved)
        _say(verbose, f"tdflow sweep: interrupted, {kept} runs kept ({state['done']} finished in "
                      f"this invocation), {result.pending} pending; run the same command to resume")
        raise KeyboardInterrupt
    return result


@contextlib.contextmanager
def _sigint_ignored():
    """SIGINT is ignored inside the block (main thread only: elsewhere it cannot be changed).

    Worker processes started inside keep ignoring it (SIG_IGN survives exec, and Python leaves an
    ignored SIGINT alone): Ctrl-C reaches the terminal's whole process group, and without this
    every worker printed its own KeyboardInterrupt traceback. The sweep process alone reacts and
    shuts its workers down; the block also covers that shutdown (a second Ctrl-C is ignored).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


@contextlib.contextmanager
def _sigint_sets(event: threading.Event):
    """Inside the block Ctrl-C sets ``event`` instead of raising (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, lambda *_: event.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


@contextlib.contextmanager
def _quiet_logs():
    """No log records from Dask while a sweep shuts down after Ctrl-C."""
    import logging

    loggers = [logging.getLogger(name) for name in ("distributed", "tornado", "asyncio")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _run_on_dask(parsed: SweepSpec, todo: List[Run], out: Path, metas: Dict[str, Optional[dict]],
                 scheduler, workers, client, on_result, dashboard, progress, verbose,
                 state: dict) -> None:
    """Run ``todo``; ``state["done"]`` counts the finished runs, ``state["unsaved"]`` keeps those
    whose file could not be written. Ctrl-C: the cluster is shut down quietly, then
    ``KeyboardInterrupt``."""
    distributed = _require_distributed()
    from tqdm.auto import tqdm

    from .progress import tqdm_disable

    cluster = own_client = None
    try:
        if client is None:
            if scheduler is not None:
                own_client = client = distributed.Client(scheduler)
                _say(verbose, f"tdflow sweep: connected to {scheduler}")
            else:
                with _sigint_ignored():
                    cluster = local_cluster(workers, dashboard=dashboard and _has_bokeh())
                own_client = client = distributed.Client(cluster)
                _say(verbose, f"tdflow sweep: local cluster, {len(cluster.workers)} workers x 1 "
                              f"thread ({cluster.scheduler_address})")
        # a local cluster without bokeh serves no dashboard (only its HTTP endpoints)
        if ((cluster is None or (dashboard and _has_bokeh()))
                and "dashboard" in client.scheduler_info().get("services", {})):
            _say(verbose, f"tdflow sweep: dashboard {client.dashboard_link}")
        fn = KINDS[parsed.kind].fn
        futures = {client.submit(execute, fn, run.params, run.seed, parsed.threads, pure=False): run
                   for run in todo}
        bar = tqdm(total=len(todo), desc=f"sweep {parsed.kind}", unit="run",
                   disable=tqdm_disable(progress))
        stop = threading.Event()
        try:
            ready = distributed.as_completed(futures)
            # Ctrl-C only sets `stop`: a KeyboardInterrupt inside one of Dask's blocking calls
            # makes its event loop log a traceback (distributed.utils.sync); we stop here instead
            with _sigint_sets(stop):
                while not ready.is_empty():
                    batch = ready.next_batch(block=False)
                    if not batch:
                        stop.wait(0.05)
                    for fut in batch:
                        _collect(fut, futures[fut], out, metas, state, on_result, verbose)
                        bar.update(1)
                    if stop.is_set():
                        raise KeyboardInterrupt
        finally:
            bar.close()
            pending = [f for f in futures if not f.done()]
            if pending and cluster is None:  # our own cluster just closes (no worker log lines)
                with _sigint_ignored(), _quiet_logs():
                    client.cancel(pending)
    except KeyboardInterrupt:
        if cluster is not None:  # our workers: no log lines for the runs cut short
            with _sigint_ignored(), _quiet_logs(), contextlib.suppress(Exception):
                client.run(_silence_worker_logs)
        raise
    finally:
        with _sigint_ignored(), _quiet_logs():
            if own_client is not None:
                own_client.close()
            if cluster is not None:
                cluster.close()


def _collect(fut, run: Run, out: Path, metas, state: dict, on_result, verbose) -> None:
    """Write the result of a finished run (or keep it in ``state["unsaved"]``)."""
    try:
        res = fut.result()
    except Exception as err:  # the task itself failed (e.g. a worker died)
        res = dict(status="error", error=f"{type(err).__name__}: {err}",
                   traceback=traceback.format_exc(), row={}, arrays={}, wall_time=math.nan,
                   worker="")
    fut.release()
    meta = _result_meta(run, res)
    try:
        io.save_npz(_result_path(out, run), res["arrays"], meta, kind=FILE_KIND)
    except OSError as err:  # disk full: keep the result, go on
        if not state["unsaved"]:
            _say(verbose, f"tdflow sweep: {err}; finished runs are kept in memory "
                          "(SweepResult.unsaved)")
        state["unsaved"][run.id] = res
    metas[run.id] = meta
    state["done"] += 1
    if on_result is not None:
        on_result(summary_row(run, meta))


def _silence_worker_logs() -> None:
    """Run on each worker of an interrupted local sweep before it is closed."""
    import logging

    logging.getLogger("distributed").setLevel(logging.CRITICAL + 1)

"""Run kinds of a sweep: the registry (:func:`register_kind`), the task a worker runs
(:func:`execute`, :func:`run_one` here) and the built-in kinds ``"flow"``, ``"linear"`` and
``"deflate"`` (what each one runs and records: the package docstring, :mod:`tdflow.sweeps`)."""
from __future__ import annotations

import dataclasses
import math
import numbers
import threading
import time
import traceback
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import numpy as np

from .. import io
from .._checks import positive_int
from ..deflation import SOLVER as DEFLATE_SOLVER
from ..options import SolverOptions
from ..schedule import Schedule
from ..solution import Status


def plain(x):
    """``x`` with NumPy scalars/arrays turned into Python values (JSON-able)."""
    if isinstance(x, Mapping):
        return {str(k): plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, np.ndarray)):
        return [plain(v) for v in x]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, numbers.Integral):
        return int(x)
    if isinstance(x, numbers.Real):
        return float(x)
    if x is None:
        return x
    if isinstance(x, str):
        return str(x)  # a Status (or another str subclass) as a plain string
    raise TypeError(f"parameters and summary values must be numbers, strings, booleans or lists, got {type(x).__name__}")


@dataclasses.dataclass(frozen=True)
class RunKind:
    """A registered run: ``fn(params, seed) -> (summary_row, arrays)`` and its default parameters."""

    name: str
    fn: Callable[[dict, int], Tuple[dict, dict]]
    defaults: Optional[Mapping[str, Any]] = None

    def full_params(self, given: Mapping[str, Any], where: str) -> Dict[str, Any]:
        """``given`` over the defaults; unknown names (with ``defaults``) are an error naming ``where``."""
        given = plain(dict(given))
        if self.defaults is None:
            return given
        unknown = sorted(set(given) - set(self.defaults))
        if unknown:
            raise ValueError(f"{where}: unknown parameter(s) {unknown} for kind {self.name!r}; "
                             f"known: {sorted(self.defaults)}")
        out = dict(self.defaults)
        for k, v in given.items():
            # 2 and 2.0 are the same run: a float parameter given as an integer becomes a float
            if isinstance(self.defaults[k], float) and isinstance(v, int) and not isinstance(v, bool):
                v = float(v)
            out[k] = v
        return out


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


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return "local"


def execute(fn: Callable[[dict, int], Tuple[dict, dict]], params: dict, seed: int, threads: int = 1) -> dict:
    """Run ``fn(params, seed)`` with ``threads`` OpenMP threads, catching any exception.

    Returns ``{"status", "error", "traceback", "row", "arrays", "wall_time", "worker"}`` (status
    ``Status.OK`` or ``Status.ERROR``); this is
    the task each Dask worker runs.
    """
    from ..threads import num_threads

    start = time.perf_counter()
    worker = _worker_name()
    if worker != "local":
        _thread_lock_for_tqdm()
    try:
        with num_threads(threads):
            row, arrays = fn(dict(params), int(seed))
        row = plain(row)
        arrays = io.plain_arrays(arrays, "arrays")  # object arrays: an error, never a pickle
        status, error, tb = Status.OK, None, None
    except Exception as err:  # a failing run is a result, not a crash of the sweep
        row, arrays, status = {}, {}, Status.ERROR
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
    p = KINDS[kind].full_params(params, "params")
    return execute(KINDS[kind].fn, p, positive_int(seed, "seed", minimum=0), threads)


# -- the built-in kinds ------------------------------------------------------------------


FLOW_DEFAULTS: Dict[str, Any] = dict(
    d=10, m=50, r=5, order=4,
    target="orthogonal",      # "orthogonal" (basis vectors), "random_rotation", "random_unit"
    spectrum="geometric",     # "geometric" (ratio), "power_law" (exponent), "uniform"
    ratio=1.2, exponent=1.0,
    radius=1e-15, lam=0.0, t_end=250.0,
    method="dopri5", h=None, rtol=1e-8, n_records=501,
    threshold=0.5, active_tol=1e-16, save_norms=False,
)


def _target(p: dict, seed: int):
    """The target of a run: :meth:`Target.from_spec` of its parameters and seed (a random frame is
    drawn from ``default_rng([seed, 1])``, tdflow's seeding rule)."""
    from ..target import SPEC_KEYS, Target

    return Target.from_spec({k: p[k] for k in SPEC_KEYS if k in p}, seed=seed)


def run_flow(params: dict, seed: int) -> Tuple[dict, dict]:
    """One plain gradient flow of the deflation model (parameters: :data:`FLOW_DEFAULTS`).

    ``W0 = sphere(d, m, radius, default_rng(seed))`` (the initialisation of ``tdflow fig1`` for
    the same seed); a random target is drawn from ``default_rng([seed, 1])``. A direction counts
    as recovered when ``fit_times(threshold)`` is finite.
    """
    from ..flow import GradientFlow
    from ..sampling import sphere

    p = dict(FLOW_DEFAULTS, **params)
    target = _target(p, seed)
    d = target.dim
    flow = GradientFlow(target, lam=p["lam"], active_tol=p["active_tol"])
    W0 = sphere(d, p["m"], p["radius"], np.random.default_rng(seed))
    traj = flow.integrate(W0, (0.0, p["t_end"]), options=SolverOptions.from_params(p),
                          save_norms=bool(p["save_norms"]), progress=False)
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
    from ..linear import DeepLinearFlow
    from ..linear_examples import _factor

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
    traj = flow.integrate(layers0, (0.0, p["t_end"]), options=SolverOptions.from_params(p),
                          save_products=False, progress=False)
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
    **Schedule().to_dict(),  # the Schedule's fields, at Schedule()'s defaults
    # deflate's integrator defaults (the kind exposes these three SolverOptions fields)
    **{k: SolverOptions(**DEFLATE_SOLVER).to_dict()[k] for k in ("method", "rtol", "n_records")},
)


def run_deflate(params: dict, seed: int) -> Tuple[dict, dict]:
    """Algorithm 2 (``tdflow.deflate``) on the target of ``params`` (:data:`DEFLATE_DEFAULTS`)."""
    from ..deflation import deflate

    p = dict(DEFLATE_DEFAULTS, **params)
    target = _target(p, seed)
    schedule = Schedule.from_dict({k: p[k] for k in Schedule.field_names()})
    res = deflate(target, positive_int(p["m"], "m"), schedule, seed,
                  options=SolverOptions.from_params(p), progress=False)
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

"""Algorithm 2 of Ge, Ren, Wang, Zhou (2021): gradient flow with epochs and re-initialisation.

Our reading of the algorithm (DESIGN.md §1), as implemented by :func:`deflate`:

1. Draw every column from ``delta0 · Unif(S^{d-1})``; ``beta_0 = ||T - T*||_F`` at that state.
2. Epoch ``s = 0, 1, ...``:

   - phase 1: gradient flow of ``L = 1/2 ||T - T*||_F^2 + lam/2 ||W||_F^2`` for
     ``t1 = c1 · d / (beta_s log d)``;
   - re-draw every column with ``||w|| < delta1`` from ``delta0 · Unif(S^{d-1})``;
   - phase 2: gradient flow for ``t2 = c2 · (log(1/delta1) + log(1/lam)) / beta_s`` (the
     ``log(1/lam)`` term is dropped when ``lam = 0``);
   - ``beta_{s+1} = beta_s (1 - gamma)``.

3. Stop at the end of the first epoch with ``||T - T*||_F <= eps`` (status ``"recovered"``), or
   after ``max_epochs`` epochs (``"max-epochs"``), or when the simulated time reaches
   ``max_time`` (``"max-time"``; the last phase is cut there), or when a re-draw finds no
   column below ``delta1`` while some direction is still unfitted (``"stalled"``: every column
   has been absorbed by the directions found so far, and no fresh column remains to find the
   others — the failure mode of a too small ``m``).

The S_i membership (see :mod:`tdflow.analysis`) is detected in the C++ stepping loop after every
accepted step. Everything needed to continue a run lives in :class:`DeflationResult` (state,
membership, ``beta``, the RNG state), so a run can be checkpointed at every epoch boundary and
resumed with :func:`resume`: the resumed run is bitwise identical to an uninterrupted one.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import time
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional

import numpy as np

from . import _core, analysis, io
from ._checks import choice, flag, generator, positive_int, real_array, real_number, show
from .flow import ADAPTIVE, METHODS, GradientFlow, IntegrationError, Trajectory
from .target import Target

KIND = "deflation"


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Parameters of Algorithm 2 (all explicit; see the module docstring for their roles).

    ``t1 = c1 · d / (beta · log d)`` and ``t2 = c2 · (log(1/delta1) + log(1/lam)) / beta``.

    The defaults are a *practical* schedule for targets with ``sum a_i = 1`` (the scale of
    :func:`tdflow.geometric_weights`): ``delta0 = 1e-3``, ``delta1 = 1e-2``, ``alpha = 0.3``,
    ``gamma = 0.3``, ``lam = 1e-4``, ``eps = 5e-4``, ``c1 = 1``, ``c2 = 1``. With these, runs on
    orthogonal targets recover every direction for d from 10 to 50 and weight spectra spanning a
    factor 30 (and 100; tests/test_deflation.py and the table in the README). Where they break:

    * ``m`` too small (measured: ``m = r`` always fails, ``m = 1.5 r`` mostly fails, ``m = 2 r``
      mostly works, ``m >= 4 r`` worked in every case tried): in each epoch several fresh
      columns align with the same large direction and grow past ``delta1``, so they stay in
      that ``S_i`` for good; once every column has been absorbed no fresh column is left and the
      run stops with status ``"stalled"`` and a warning naming the unfitted directions.
    * weights at or below ``max(2 lam, eps)`` are not resolved (a warning says so at the start):
      the run stops as soon as ``||T - T*||_F <= eps``.
    * the constants assume ``sum a_i ~ 1``: ``lam`` and ``eps`` are absolute, so for another
      scale rescale them with the target (the times ``t1, t2`` scale with ``1/beta`` by
      themselves).

    ``eps`` is an absolute tolerance on ``||T - T*||_F``; it must exceed the weight-decay floor
    ``~ sqrt(r) lam / 2`` (each fitted direction keeps a gap ``a_i - â_i ~ lam/2``).

    ``alpha`` defines S_i (``w̄_i^2 >= 1 - alpha^2``); ``fit_tol`` (None: ``max(2 lam, eps)``) defines
    "fitted" (``a_i - â_i <= fit_tol``); ``margin`` the near-tie factor of Definition 2.
    """

    delta0: float = 1e-3
    delta1: float = 1e-2
    alpha: float = 0.3
    gamma: float = 0.3
    lam: float = 1e-4
    eps: float = 5e-4
    c1: float = 1.0
    c2: float = 1.0
    max_epochs: int = 100
    max_time: float = math.inf
    fit_tol: Optional[float] = None
    margin: float = 1.0

    def __post_init__(self):
        for name in ("delta0", "delta1", "eps", "c1", "c2"):
            real_number(getattr(self, name), name, minimum=0.0, strict=True)
        real_number(self.alpha, "alpha", minimum=0.0, strict=True, maximum=1.0, strict_max=True)
        real_number(self.gamma, "gamma", minimum=0.0, maximum=1.0, strict_max=True)
        real_number(self.lam, "lam", minimum=0.0)
        real_number(self.margin, "margin", minimum=0.0)
        if not self.delta0 < self.delta1:
            raise ValueError(f"delta0 must be < delta1, got delta0={self.delta0}, delta1={self.delta1}")
        positive_int(self.max_epochs, "max_epochs")
        if not (isinstance(self.max_time, numbers.Real) and not isinstance(self.max_time, (bool, np.bool_))
                and self.max_time > 0):  # inf allowed: no limit
            raise (ValueError if isinstance(self.max_time, numbers.Real) else TypeError)(
                f"max_time must be a number > 0 (inf: no limit), got {show(self.max_time)}")
        if self.fit_tol is not None:
            real_number(self.fit_tol, "fit_tol", minimum=0.0)

    @classmethod
    def theory(cls, d: int, eps: float, **overrides) -> "Schedule":
        """Theorem 1's parameter choices with every hidden constant set to 1.

        Our reading of the orders of magnitude (written without a copy of the paper at hand, so
        treat them as a documented stand-in, not a quotation)::

            lam    = eps / sqrt(d)       # d fitted directions each leave O(lam) of residual
            alpha  = sqrt(lam)           # members' mass off u_i stays O(lam)
            delta1 = lam / d
            delta0 = delta1 / d**2       # poly(d) below delta1: growth to delta1 fits in t1
            gamma  = 1/2                 # a constant
            c1 = c2 = 1                  # t1 = d/(beta log d), t2 = (log 1/delta1 + log 1/lam)/beta

        and :meth:`theory_m` for the number of columns. With such tiny ``delta0`` the dynamics
        are slow; the default :class:`Schedule` is the practical choice. ``overrides`` replace
        fields (e.g. ``max_epochs``).
        """
        d = positive_int(d, "d", minimum=2)
        eps = real_number(eps, "eps", minimum=0.0, strict=True)
        lam = eps / math.sqrt(d)
        delta1 = lam / d
        params = dict(delta0=delta1 / d ** 2, delta1=delta1, alpha=math.sqrt(lam), gamma=0.5,
                      lam=lam, eps=eps, c1=1.0, c2=1.0)
        params.update(overrides)
        return cls(**params)

    @staticmethod
    def theory_m(d: int, eps: float) -> int:
        """Number of columns for :meth:`theory`: ``ceil(d^2 log(d/eps))`` (the theorem asks for
        ``poly(d/eps)``; this is our constant-1 stand-in)."""
        d = positive_int(d, "d", minimum=2)
        eps = real_number(eps, "eps", minimum=0.0, strict=True)
        return int(math.ceil(d * d * max(math.log(d / eps), 1.0)))

    def t1(self, beta: float, d: int) -> float:
        """Phase-1 length ``c1 · d / (beta · log d)``."""
        return self.c1 * d / (beta * math.log(max(d, 2)))

    def t2(self, beta: float) -> float:
        """Phase-2 length ``c2 · (log(1/delta1) + log(1/lam)) / beta`` (no lam term for lam = 0)."""
        logs = math.log(1.0 / self.delta1) + (math.log(1.0 / self.lam) if self.lam > 0 else 0.0)
        return self.c2 * max(logs, 1.0) / beta

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        if math.isinf(out["max_time"]):
            out["max_time"] = None  # JSON has no inf
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "Schedule":
        """From a mapping (e.g. a TOML table); unknown keys are an error."""
        if not isinstance(data, Mapping):
            raise TypeError(f"a schedule must be a mapping of parameters, got {show(data)}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(map(str, set(data) - names))
        if unknown:
            raise ValueError(f"unknown schedule parameters {unknown}; known: {sorted(names)}")
        data = dict(data)
        if data.get("max_time", 0) is None:
            data["max_time"] = math.inf
        return cls(**data)


# per-epoch records: name -> dtype
EPOCH_FIELDS = {
    "beta": float, "t_start": float, "t1": float, "t2": float, "t_end": float,
    "n_redrawn": np.int64, "n_joined": np.int64, "n_discovered": np.int64, "n_fitted": np.int64,
    "loss": float, "residual_norm": float,
    "n_good": np.int64, "n_potential": np.int64, "n_bad": np.int64,
    "prop_a": bool, "prop_b": bool, "prop_c": bool, "prop_d": bool,
    "min_member_alignment": float, "max_nonmember_norm": float, "max_excess": float,
    "n_unfitted_again": np.int64, "wall_time": float, "n_steps": np.int64, "n_rhs": np.int64,
}
# per-record arrays (trajectory), name -> trailing shape key
RECORD_FIELDS = ("t", "loss", "residual_norm", "directional_residual", "a_hat", "norms",
                 "record_epoch", "record_phase")
EVENT_FIELDS = {"column": np.int64, "direction": np.int64, "t": float, "epoch": np.int64,
                "phase": np.int64, "norm": float, "alignment": float}
# re-draws: kind 0 = initial draw, 1 = re-draw; previous = direction the column left (-1 none);
# label = Definition 2 (0 good, 1 potential, 2 bad); predicted direction; joined = direction it
# joined before its next re-draw (-1: none yet)
REDRAW_FIELDS = {"epoch": np.int64, "kind": np.int64, "column": np.int64, "t": float,
                 "previous": np.int64, "label": np.int64, "predicted": np.int64,
                 "joined": np.int64}
DIRECTION_FIELDS = ("discovered_t", "discovered_epoch", "fitted_t", "fitted_epoch")


STATUSES = ("running", "recovered", "stalled", "max-epochs", "max-time")
OPTION_NAMES = ("method", "rtol", "atol", "h", "n_records", "active_tol")


def _empty(fields) -> Dict[str, np.ndarray]:
    return {k: np.zeros(0, dtype=v) for k, v in fields.items()}


@dataclasses.dataclass
class DeflationResult:
    """A run of Algorithm 2: per-epoch records, the trajectory, the S_i events and the state.

    ``epochs[name]`` (one entry per completed epoch): ``beta, t_start, t1, t2, t_end,
    n_redrawn, n_joined`` (join events in the epoch), ``n_discovered, n_fitted`` (at the epoch
    end), ``loss, residual_norm`` (at the end), ``n_good, n_potential, n_bad`` (Definition 2 for
    the epoch's re-draw), ``prop_a..prop_d`` and their measured ``min_member_alignment,
    max_nonmember_norm, max_excess, n_unfitted_again`` (Proposition 1), ``wall_time, n_steps,
    n_rhs``.

    ``records[name]`` over all recording times of all phases (a phase boundary appears twice,
    before and after the re-draw): ``t, loss, residual_norm, directional_residual`` (n, r),
    ``a_hat`` (n, r), ``norms`` (n, m), ``record_epoch, record_phase`` (1 or 2).

    ``events[name]`` per join (column k joins S_i): ``column, direction, t, epoch, phase, norm,
    alignment``. ``redraws[name]`` per drawn column (see ``REDRAW_FIELDS``).
    ``directions[name]`` (r,): ``discovered_t, discovered_epoch, fitted_t, fitted_epoch`` (NaN /
    -1 when it never happened; "fitted" is the first time on the recording grid).

    State to continue from: ``W`` (d x m), ``member`` (direction of each column, -1 none),
    ``armed`` (watched for joining), ``beta`` (of the next epoch), ``epoch`` (next epoch index),
    ``t`` (simulated time), ``rng_state`` (``Generator.bit_generator.state``, JSON-able), ``status``
    ("running" while not finished) and ``warnings``.
    """

    target: Target
    m: int
    seed: int
    schedule: Schedule
    options: dict
    W: np.ndarray
    member: np.ndarray
    armed: np.ndarray
    beta: float
    epoch: int
    t: float
    rng_state: dict
    status: str = "running"
    warnings: List[str] = dataclasses.field(default_factory=list)
    epochs: Dict[str, np.ndarray] = dataclasses.field(default_factory=lambda: _empty(EPOCH_FIELDS))
    records: Dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    events: Dict[str, np.ndarray] = dataclasses.field(default_factory=lambda: _empty(EVENT_FIELDS))
    redraws: Dict[str, np.ndarray] = dataclasses.field(default_factory=lambda: _empty(REDRAW_FIELDS))
    directions: Dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    wall_time: float = 0.0

    # ---- summaries -------------------------------------------------------------------------
    @property
    def n_epochs(self) -> int:
        return int(self.epochs["beta"].size)

    @property
    def finished(self) -> bool:
        return self.status != "running"

    @property
    def recovered(self) -> bool:
        """``||T - T*||_F <= eps`` was reached."""
        return self.status == "recovered"

    @property
    def residual_norm(self) -> float:
        """``||T - T*||_F`` of the current state."""
        return GradientFlow(self.target, self.schedule.lam).residual_norm(self.W)

    @property
    def a_hat(self) -> np.ndarray:
        """``â_i`` of the current state."""
        return analysis.a_hat(self.W, self.member, self.target.rank)

    @property
    def fit_tol(self) -> np.ndarray:
        return analysis.fit_tolerance(self.target.a, self.schedule.lam, self.schedule.fit_tol,
                                       self.schedule.eps)

    @property
    def fitted_now(self) -> np.ndarray:
        """Directions fitted in the current state."""
        return analysis.fitted(self.target.a, self.a_hat, self.fit_tol)

    @property
    def all_fitted(self) -> bool:
        return bool(np.all(self.fitted_now))

    def S(self, i: int) -> np.ndarray:
        """Columns currently in ``S_i``."""
        return np.flatnonzero(self.member == i)

    @property
    def fit_order(self) -> np.ndarray:
        """Directions in the order they were first fitted (unfitted ones left out)."""
        return analysis.fit_order(self.directions["fitted_t"])

    @property
    def discovery_order(self) -> np.ndarray:
        return analysis.fit_order(self.directions["discovered_t"])

    @property
    def proposition1_ok(self) -> np.ndarray:
        """Per epoch: all four checks of Proposition 1 held."""
        e = self.epochs
        return e["prop_a"] & e["prop_b"] & e["prop_c"] & e["prop_d"]

    @property
    def trajectory(self) -> Trajectory:
        """The recorded trajectory (all phases) as a :class:`tdflow.Trajectory`."""
        rec = self.records
        return Trajectory(t=rec["t"], loss=rec["loss"], residual_norm=rec["residual_norm"],
                          directional_residual=rec["directional_residual"], W=self.W,
                          a=np.array(self.target.a), status="finished", t_final=self.t,
                          method=self.options["method"], n_steps=int(self.epochs["n_steps"].sum()),
                          n_rhs=int(self.epochs["n_rhs"].sum()), wall_time=self.wall_time,
                          norms=rec.get("norms"))

    def summary(self) -> str:
        """A table with one row per epoch, then the per-direction outcome."""
        e = self.epochs
        head = (f"{'epoch':>5} {'beta':>9} {'t1':>8} {'t2':>8} {'t_end':>9} {'redrawn':>7} "
                f"{'g/p/b':>11} {'joined':>6} {'disc':>4} {'fit':>4} {'||T-T*||':>10} {'prop1':>5}")
        rows = [head]
        for s in range(self.n_epochs):
            props = "".join(c if e[f"prop_{c}"][s] else "-" for c in "abcd")
            gpb = f"{e['n_good'][s]}/{e['n_potential'][s]}/{e['n_bad'][s]}"
            rows.append(f"{s:>5} {e['beta'][s]:9.3g} {e['t1'][s]:8.1f} {e['t2'][s]:8.1f} "
                        f"{e['t_end'][s]:9.1f} {e['n_redrawn'][s]:>7} {gpb:>11} {e['n_joined'][s]:>6} "
                        f"{e['n_discovered'][s]:>4} {e['n_fitted'][s]:>4} "
                        f"{e['residual_norm'][s]:10.3e} {props:>5}")
        dr = self.directions
        rows.append("direction   a_i      â_i     discovered (t, epoch)   fitted (t, epoch)")
        ah = self.a_hat
        for i in range(self.target.rank):
            disc = (f"{dr['discovered_t'][i]:9.1f} {dr['discovered_epoch'][i]:>4}"
                    if dr["discovered_epoch"][i] >= 0 else f"{'never':>14}")
            fit = (f"{dr['fitted_t'][i]:9.1f} {dr['fitted_epoch'][i]:>4}"
                   if dr["fitted_epoch"][i] >= 0 else f"{'never':>14}")
            rows.append(f"{i:>9} {self.target.a[i]:8.4f} {ah[i]:8.4f}   {disc}          {fit}")
        rows.append(f"status: {self.status}; ||T-T*||_F = {self.residual_norm:.3e} "
                    f"(eps = {self.schedule.eps:g}); fit order {self.fit_order.tolist()}; "
                    f"t = {self.t:.1f}; wall {self.wall_time:.2f} s")
        rows.extend(f"warning: {w}" for w in self.warnings)
        return "\n".join(rows)

    # ---- files -----------------------------------------------------------------------------
    def save(self, path) -> Path:
        """Write the whole result (state included, so it doubles as a checkpoint) atomically to
        ``path`` (``.npz`` appended unless the name ends with it; see :func:`tdflow.io.npz_path`).
        Returns the path written."""
        arrays = {"U": self.target.U, "a": self.target.a, "W": self.W, "member": self.member,
                  "armed": self.armed}
        for group in ("epochs", "records", "events", "redraws", "directions"):
            for k, v in getattr(self, group).items():
                arrays[f"{group}/{k}"] = v
        meta = dict(order=self.target.order, m=self.m, seed=self.seed,
                    schedule=self.schedule.to_dict(), options=self.options, beta=self.beta,
                    epoch=self.epoch, t=self.t, rng_state=self.rng_state, status=self.status,
                    warnings=list(self.warnings), wall_time=self.wall_time,
                    d=self.target.dim, r=self.target.rank)
        return io.save_npz(path, arrays, meta, kind=KIND)

    @classmethod
    def load(cls, path) -> "DeflationResult":
        """Read a file written by :meth:`save` (``path`` as there); ``ValueError`` naming the file
        when it is damaged, edited by hand (its checksum no longer matches), foreign or
        inconsistent, ``FileNotFoundError`` when it is missing."""
        path = io.npz_path(path)
        arrays, meta = io.load_npz(path, kind=KIND)
        try:
            d, r, m = int(meta["d"]), int(meta["r"]), int(meta["m"])
            for name, shape in (("U", (d, r)), ("a", (r,)), ("W", (d, m)), ("member", (m,)),
                                ("armed", (m,))):
                if name not in arrays:
                    raise ValueError(f"lacks the array {name!r}")
                if arrays[name].shape != shape:
                    raise ValueError(f"array {name!r} has shape {arrays[name].shape}, expected {shape}")
            groups = {g: {} for g in ("epochs", "records", "events", "redraws", "directions")}
            for k, v in arrays.items():
                if "/" in k:
                    g, name = k.split("/", 1)
                    if g in groups:
                        groups[g][name] = v
            for g, fields in (("epochs", EPOCH_FIELDS), ("events", EVENT_FIELDS),
                              ("redraws", REDRAW_FIELDS), ("directions", DIRECTION_FIELDS)):
                missing = [f for f in fields if f not in groups[g]]
                if missing:
                    raise ValueError(f"lacks the {g} arrays {missing}")
                sizes = {groups[g][f].shape[0] for f in fields}
                if len(sizes) > 1:
                    raise ValueError(f"{g} arrays disagree in length")
            if groups["directions"]["fitted_t"].shape != (r,):
                raise ValueError("direction records do not match the rank r")
            if groups["records"] and groups["records"]["norms"].shape[1:] != (m,):
                raise ValueError("recorded norms do not match m")
            target = Target(arrays["U"], arrays["a"], int(meta["order"]))
            schedule = Schedule.from_dict(meta["schedule"])
            _check_state(arrays, meta, groups, r)
            res = cls(target=target, m=m, seed=int(meta["seed"]), schedule=schedule,
                      options=dict(meta["options"]), W=real_array(arrays["W"], "W", 2, (d, m)),
                      member=arrays["member"].astype(np.int64), armed=arrays["armed"].astype(bool),
                      beta=float(meta["beta"]), epoch=int(meta["epoch"]), t=float(meta["t"]),
                      rng_state=meta["rng_state"], status=str(meta["status"]),
                      warnings=list(meta["warnings"]), wall_time=float(meta["wall_time"]),
                      **groups)
            _rng_from_state(res.rng_state)  # validates the state
        except ValueError as err:
            raise ValueError(f"{path} is not a valid deflation result: {err}") from None
        except (KeyError, TypeError) as err:
            raise ValueError(f"{path} is not a valid deflation result: missing or bad {err}") from None
        return res


def _check_state(arrays, meta, groups, r) -> None:
    """Consistency of a loaded run (a file that passed its checksum can still come from an older
    format or another program): ``ValueError`` saying what does not fit."""
    member = arrays["member"]
    if member.dtype.kind not in "iu" or np.any((member < -1) | (member >= r)):
        raise ValueError(f"member must hold directions -1..{r - 1}")
    if not isinstance(meta["epoch"], int) or meta["epoch"] != groups["epochs"]["beta"].size:
        raise ValueError(f"epoch {meta['epoch']!r} does not match the "
                         f"{groups['epochs']['beta'].size} epoch records")
    if not (math.isfinite(float(meta["beta"])) and float(meta["beta"]) > 0):
        raise ValueError(f"beta must be finite and > 0, got {meta['beta']!r}")
    if not (math.isfinite(float(meta["t"])) and float(meta["t"]) >= 0):
        raise ValueError(f"t must be finite and >= 0, got {meta['t']!r}")
    if meta["status"] not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {meta['status']!r}")
    options = meta["options"]
    if not isinstance(options, dict) or set(options) != set(OPTION_NAMES) or \
            options["method"] not in METHODS:
        raise ValueError(f"integrator options must be {OPTION_NAMES} with a method of {METHODS}")


def _append(group: Dict[str, np.ndarray], fields, rows: Dict[str, np.ndarray]) -> None:
    for k in fields:
        v = np.asarray(rows[k])
        if k in group and group[k].size:
            group[k] = np.concatenate([group[k], v.astype(group[k].dtype, copy=False)])
        else:
            group[k] = v.astype(fields[k]) if isinstance(fields, dict) else v


def _jsonable(state):
    """``Generator.bit_generator.state`` as JSON-able data (arrays, e.g. Philox's, tagged)."""
    if isinstance(state, dict):
        return {k: _jsonable(v) for k, v in state.items()}
    if isinstance(state, np.ndarray):
        return {"__ndarray__": state.tolist(), "dtype": state.dtype.str}
    if isinstance(state, np.integer):
        return int(state)
    return state


def _from_jsonable(state):
    if isinstance(state, dict):
        if "__ndarray__" in state:
            return np.array(state["__ndarray__"], dtype=np.dtype(state["dtype"]))
        return {k: _from_jsonable(v) for k, v in state.items()}
    return state


def _rng_from_state(state: dict) -> np.random.Generator:
    """A Generator whose bit generator (named in the state, e.g. PCG64) holds ``state``."""
    state = _from_jsonable(state)
    name = state.get("bit_generator") if isinstance(state, dict) else None
    bitgen = getattr(np.random, str(name), None)
    if not (isinstance(bitgen, type) and issubclass(bitgen, np.random.BitGenerator)):
        raise ValueError(f"unknown bit generator {name!r} in the RNG state")
    bg = bitgen()
    bg.state = state
    return np.random.Generator(bg)


def _draw(rng: np.random.Generator, d: int, n: int, radius: float) -> np.ndarray:
    X = rng.standard_normal((d, n))
    X /= np.linalg.norm(X, axis=0, keepdims=True)
    return radius * X


def deflate(
    target: Target,
    m: int,
    schedule: Optional[Schedule] = None,
    seed=0,
    *,
    method: str = "dopri5",
    rtol: float = 1e-7,
    atol: float = 0.0,
    h: Optional[float] = None,
    n_records: int = 41,
    active_tol: float = 1e-16,
    checkpoint=None,
    checkpoint_every: int = 1,
    resume: bool = False,
    progress: Optional[bool] = None,
    callback: Optional[Callable[[DeflationResult], None]] = None,
    backend: str = "cpu",
) -> DeflationResult:
    """Run Algorithm 2 (modified gradient flow) on ``target`` with ``m`` columns.

    Parameters
    ----------
    target : Target
        ``T* = sum a_i u_i^{(x)l}``.
    m : int
        Number of columns.
    schedule : Schedule, optional
        The algorithm's parameters (default: the practical ``Schedule()``).
    seed : int or numpy.random.Generator
        All randomness (the initial draw and every re-draw); an int makes the run reproducible.
        A Generator is consumed; its state is saved with the result.
    method, rtol, atol, h
        Integrator of each phase (as :meth:`GradientFlow.integrate`).
    n_records : int
        Recording times per phase (resolution of fit times and plots).
    checkpoint : path, optional
        Save the result there (atomically) every ``checkpoint_every`` epochs and at the end;
        ``.npz`` is appended unless the name ends with it (``"run"`` writes and resumes
        ``run.npz``). The folder is checked for writing before the run starts; a checkpoint that
        cannot be written later (disk full) gives a ``RuntimeWarning`` and the run goes on: the
        result is returned all the same.
    resume : bool
        If ``checkpoint`` exists, continue from it; it must hold the same target, ``m``, seed,
        schedule and integrator options (``ValueError`` otherwise). The schedule's
        ``max_epochs`` and ``max_time`` may differ: the new limits apply, and a run that
        stopped at its old limit goes on.
    progress : bool, optional
        A bar over epochs; by default only on a terminal.
    callback : callable, optional
        Called with the result after every epoch (e.g. to stop: raise an exception).
    backend : {"cpu", "cuda", "torch"}
        Where the phases' gradient flow runs (as :class:`GradientFlow`); re-draws and the
        analysis stay on the host. Not part of the run's identity: a checkpoint can be resumed
        on another backend (equal up to rounding, not bitwise).

    Returns
    -------
    DeflationResult
    """
    if not isinstance(target, Target):
        raise TypeError(f"target must be a tdflow.Target, got {type(target).__name__}")
    m = positive_int(m, "m")
    schedule = Schedule() if schedule is None else schedule
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a tdflow.Schedule, got {type(schedule).__name__}")
    method = choice(method, "method", METHODS)
    if method not in ADAPTIVE and h is None:
        raise ValueError(f"method {method!r} needs a step h")
    seed_value = seed if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) else -1
    rng = generator(seed, "seed")
    progress, callback = _run_args(progress, callback)
    options = dict(method=method, rtol=float(real_number(rtol, "rtol", minimum=0.0)),
                   atol=float(real_number(atol, "atol", minimum=0.0)),
                   h=None if h is None else float(real_number(h, "h", minimum=0.0, strict=True)),
                   n_records=positive_int(n_records, "n_records", minimum=2),
                   active_tol=float(real_number(active_tol, "active_tol", minimum=0.0)))
    checkpoint_every = positive_int(checkpoint_every, "checkpoint_every")
    resume = flag(resume, "resume")
    if checkpoint is not None:
        checkpoint = io.check_writable(io.npz_path(checkpoint, "checkpoint"), "checkpoint")
    if resume and checkpoint is not None and checkpoint.exists():
        res = DeflationResult.load(checkpoint)
        _check_same_run(res, target, m, int(seed_value), schedule, options, checkpoint)
        _set_limits(res, schedule)
    else:
        res = _start(target, m, int(seed_value), schedule, options, rng)
    return _run(res, checkpoint, checkpoint_every, progress, callback, backend)


def resume(path, *, max_epochs: Optional[int] = None, max_time: Optional[float] = None,
           checkpoint=None, checkpoint_every: int = 1, progress: Optional[bool] = None,
           callback: Optional[Callable[[DeflationResult], None]] = None,
           backend: str = "cpu") -> DeflationResult:
    """Continue the run saved in ``path`` (checkpointing to ``checkpoint``, default ``path``)
    until it finishes; a finished run is returned as it is. ``backend`` as in :func:`deflate`;
    file names as there (``"run"`` is ``run.npz``). A damaged or hand-edited file is a
    ``ValueError`` naming it.

    ``max_epochs`` / ``max_time`` replace the schedule's limits, so a run that stopped at a
    limit can be extended; the result equals a run started with the new limits.
    """
    path = io.npz_path(path, "path")
    checkpoint = path if checkpoint is None else io.npz_path(checkpoint, "checkpoint")
    checkpoint_every = positive_int(checkpoint_every, "checkpoint_every")
    progress, callback = _run_args(progress, callback)
    res = DeflationResult.load(path)
    changes = {k: v for k, v in (("max_epochs", max_epochs), ("max_time", max_time)) if v is not None}
    if changes:
        _set_limits(res, dataclasses.replace(res.schedule, **changes))
    if not res.finished:
        io.check_writable(checkpoint, "checkpoint")
    return _run(res, checkpoint, checkpoint_every, progress, callback, backend)


def _run_args(progress, callback):
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable or None, got {type(callback).__name__}")
    return (None if progress is None else flag(progress, "progress")), callback


def _set_limits(res: DeflationResult, schedule: Schedule) -> None:
    """Adopt the limits of ``schedule``; re-open a run that stopped only at an old limit."""
    res.schedule = schedule
    if res.status in ("max-epochs", "max-time"):
        cut = res.n_epochs and res.epochs["t_end"][-1] < (
            res.epochs["t_start"][-1] + res.epochs["t1"][-1] + res.epochs["t2"][-1]) - 1e-12
        if res.status == "max-time" and cut:
            return  # the last epoch was cut short: it cannot be continued bitwise
        if res.epoch < schedule.max_epochs and res.t < schedule.max_time:
            res.status = "running"
            res.warnings = [w for w in res.warnings if not w.startswith("stopped (max-")]


def _check_same_run(res, target, m, seed, schedule, options, path):
    diffs = []
    if res.target.order != target.order or res.target.U.shape != target.U.shape or \
            not np.array_equal(res.target.U, target.U) or not np.array_equal(res.target.a, target.a):
        diffs.append("target")
    if res.m != m:
        diffs.append(f"m ({res.m} vs {m})")
    if res.seed != seed:
        diffs.append(f"seed ({res.seed} vs {seed})")
    limits = dict(max_epochs=schedule.max_epochs, max_time=schedule.max_time)
    if dataclasses.replace(res.schedule, **limits) != schedule:
        diffs.append("schedule")
    if res.options != options:
        diffs.append("integrator options")
    if diffs:
        raise ValueError(f"the checkpoint {path} belongs to another run: it differs in "
                         + ", ".join(diffs))


def _start(target, m, seed, schedule, options, rng) -> DeflationResult:
    d, r = target.dim, target.rank
    W = np.asfortranarray(_draw(rng, d, m, schedule.delta0))
    flow = GradientFlow(target, schedule.lam, active_tol=options["active_tol"])
    beta0 = flow.residual_norm(W)
    if not beta0 > 0:
        raise ValueError("||T - T*||_F is 0 at the initial state: nothing to fit")
    res = DeflationResult(target=target, m=m, seed=seed, schedule=schedule, options=options, W=W,
                          member=np.full(m, -1, dtype=np.int64), armed=np.ones(m, dtype=bool),
                          beta=float(beta0), epoch=0, t=0.0,
                          rng_state=_jsonable(rng.bit_generator.state))
    res.directions = {"discovered_t": np.full(r, np.nan), "discovered_epoch": np.full(r, -1, np.int64),
                      "fitted_t": np.full(r, np.nan), "fitted_epoch": np.full(r, -1, np.int64)}
    unfitted = np.ones(r, dtype=bool)
    labels, pred = analysis.classify_fresh(W, target.U, target.a, unfitted,
                                           schedule.t1(beta0, d), order=target.order,
                                           margin=schedule.margin)
    _append(res.redraws, REDRAW_FIELDS, dict(
        epoch=np.zeros(m), kind=np.zeros(m), column=np.arange(m), t=np.zeros(m),
        previous=np.full(m, -1), label=labels, predicted=pred, joined=np.full(m, -1)))
    tol = analysis.fit_tolerance(target.a, schedule.lam, schedule.fit_tol, schedule.eps)
    if np.any(np.asarray(target.a) <= tol):
        res.warnings.append("some weights a_i are within fit_tol of 0: they count as fitted from "
                            "the start")
    return res


class _Runner:
    """One run's machinery (flow, RNG) around a DeflationResult."""

    def __init__(self, res: DeflationResult, backend: str = "cpu"):
        self.res = res
        self.flow = GradientFlow(res.target, res.schedule.lam, active_tol=res.options["active_tol"],
                                 backend=backend)
        self.rng = _rng_from_state(res.rng_state)
        self.tol = res.fit_tol
        self.steps = 0
        self.rhs = 0
        self.tick: Optional[Callable[[float], None]] = None  # progress: simulated time reached

    def phase(self, length: float, phase: int) -> None:
        res, opt = self.res, self.res.options
        t0, t1 = res.t, res.t + length
        t_eval = np.linspace(t0, t1, opt["n_records"])
        step = np.nan if opt["h"] is None else opt["h"]
        member_before = res.member.copy()
        args = (res.W, t0, t_eval, opt["method"], step, opt["rtol"], opt["atol"], np.inf, 0, True,
                False, res.armed, res.schedule.delta1, res.schedule.alpha, self.tick, 0.25)
        if self.flow._torch is not None:
            raw = self.flow._torch.integrate_joins(*args)
        else:
            raw = _core.integrate_joins(self.flow._core, *args)
        if raw["error"] is not None:
            raise raw["error"]
        if raw["status"] != "finished":
            traj = self.flow._trajectory(raw, opt["method"], 0.0)
            raise IntegrationError(f"phase {phase} of epoch {res.epoch} stopped at "
                                   f"t = {raw['t_final']:g}: {raw['status']}", traj)
        self.steps += int(raw["n_steps"])
        self.rhs += int(raw["n_rhs"])
        res.W = np.asfortranarray(raw["W"])
        res.t = float(t1)
        res.armed = raw["armed"].astype(bool)
        ev_col = raw["event_column"].astype(np.int64)
        ev_dir = raw["event_direction"].astype(np.int64)
        ev_t = raw["event_t"]
        n_ev = ev_col.size
        _append(res.events, EVENT_FIELDS, dict(
            column=ev_col, direction=ev_dir, t=ev_t, epoch=np.full(n_ev, res.epoch),
            phase=np.full(n_ev, phase), norm=raw["event_norm"], alignment=raw["event_alignment"]))
        res.member = res.member.copy()
        res.member[ev_col] = ev_dir
        # the latest draw of each joining column records where it went
        for k, i in zip(ev_col, ev_dir):
            last = np.flatnonzero(res.redraws["column"] == k)[-1]
            res.redraws["joined"][last] = i
        dr = res.directions
        for k, i, t in zip(ev_col, ev_dir, ev_t):
            if dr["discovered_epoch"][i] < 0:
                dr["discovered_t"][i] = t
                dr["discovered_epoch"][i] = res.epoch
        # â_i on the recording grid: members at each time = members before + joins so far
        norms = raw["norms"]
        n = norms.shape[0]
        r = res.target.rank
        ahat = np.zeros((n, r))
        for j, tj in enumerate(raw["t"]):
            mem = member_before.copy()
            done = ev_t <= tj
            mem[ev_col[done]] = ev_dir[done]
            ok = mem >= 0
            np.add.at(ahat[j], mem[ok], norms[j, ok] ** 2)
        fit = np.asarray(res.target.a)[None, :] - ahat <= self.tol[None, :]
        for i in range(r):
            hits = np.flatnonzero(fit[:, i])
            if hits.size and dr["fitted_epoch"][i] < 0:
                dr["fitted_t"][i] = raw["t"][hits[0]]
                dr["fitted_epoch"][i] = res.epoch
        rows = dict(t=raw["t"], loss=raw["loss"], residual_norm=raw["residual_norm"],
                    directional_residual=raw["directional_residual"], a_hat=ahat, norms=norms,
                    record_epoch=np.full(n, res.epoch, dtype=np.int64),
                    record_phase=np.full(n, phase, dtype=np.int64))
        for k in RECORD_FIELDS:
            v = rows[k]
            res.records[k] = np.concatenate([res.records[k], v]) if k in res.records else v

    def prop1(self, previously_fitted) -> analysis.Prop1Check:
        res, s = self.res, self.res.schedule
        return analysis.check_proposition1(
            res.W, res.target.U, res.target.a, res.member, delta1=s.delta1, alpha=s.alpha,
            lam=s.lam, fit_tol=s.fit_tol, eps=s.eps, previously_fitted=previously_fitted)

    def epoch(self) -> None:
        res, s = self.res, self.res.schedule
        start_wall = time.perf_counter()
        self.steps = self.rhs = 0
        d = res.target.dim
        beta, t_start = res.beta, res.t
        t1, t2 = s.t1(beta, d), s.t2(beta)
        cut = False
        if t_start + t1 >= s.max_time:
            t1, t2, cut = s.max_time - t_start, 0.0, True
        elif t_start + t1 + t2 >= s.max_time:
            t2, cut = s.max_time - t_start - t1, True
        fitted_before = res.fitted_now
        n_ev0 = res.events["column"].size
        self.phase(t1, 1)
        check = self.prop1(fitted_before)
        # re-draw every column below delta1
        norms = np.linalg.norm(res.W, axis=0)
        small = np.flatnonzero(norms < s.delta1)
        unfitted = ~res.fitted_now
        n_new = small.size
        if not cut or t2 > 0:
            fresh = _draw(self.rng, d, n_new, s.delta0)
            res.W = np.asfortranarray(res.W)
            res.W[:, small] = fresh
            previous = res.member[small].copy()
            res.member = res.member.copy()
            res.member[small] = -1
            res.armed = res.armed.copy()
            res.armed[small] = True
            horizon = t2 + s.t1(beta * (1.0 - s.gamma), d)
            labels, pred = analysis.classify_fresh(fresh, res.target.U, res.target.a, unfitted,
                                                   horizon, order=res.target.order,
                                                   margin=s.margin)
            _append(res.redraws, REDRAW_FIELDS, dict(
                epoch=np.full(n_new, res.epoch), kind=np.ones(n_new), column=small,
                t=np.full(n_new, res.t), previous=previous, label=labels, predicted=pred,
                joined=np.full(n_new, -1)))
        else:
            n_new, labels = 0, np.zeros(0, np.int64)
        if t2 > 0:
            self.phase(t2, 2)
        check = check.merge(self.prop1(fitted_before))
        now = res.fitted_now
        rn = float(res.records["residual_norm"][-1])
        stalled = n_new == 0 and not now.all() and not cut
        row = dict(
            beta=beta, t_start=t_start, t1=t1, t2=t2, t_end=res.t, n_redrawn=n_new,
            n_joined=res.events["column"].size - n_ev0,
            n_discovered=int(np.sum(res.directions["discovered_epoch"] >= 0)),
            n_fitted=int(now.sum()), loss=float(res.records["loss"][-1]), residual_norm=rn,
            n_good=int(np.sum(labels == analysis.GOOD)),
            n_potential=int(np.sum(labels == analysis.POTENTIAL)),
            n_bad=int(np.sum(labels == analysis.BAD)),
            prop_a=check.a, prop_b=check.b, prop_c=check.c, prop_d=check.d,
            min_member_alignment=check.min_member_alignment,
            max_nonmember_norm=check.max_nonmember_norm, max_excess=check.max_excess,
            n_unfitted_again=len(check.unfitted_again),
            wall_time=time.perf_counter() - start_wall, n_steps=self.steps, n_rhs=self.rhs)
        _append(res.epochs, EPOCH_FIELDS, {k: np.array([v]) for k, v in row.items()})
        res.wall_time += row["wall_time"]
        res.beta = beta * (1.0 - s.gamma)
        res.epoch += 1
        res.rng_state = _jsonable(self.rng.bit_generator.state)
        if rn <= s.eps:
            res.status = "recovered"
        elif stalled:
            res.status = "stalled"
            missing = np.flatnonzero(~now).tolist()
            res.warnings.append(
                f"epoch {res.epoch - 1}: no column below delta1 = {s.delta1:g} to re-draw, so no "
                f"fresh column is left to find the unfitted directions {missing}: all m = {res.m} "
                "columns were absorbed by the directions found so far. Increase m (or lower "
                "delta0 / raise delta1 so that fewer columns per direction cross delta1).")
        elif cut or res.t >= s.max_time:
            res.status = "max-time"
        elif res.epoch >= s.max_epochs:
            res.status = "max-epochs"
        if res.finished and res.status != "recovered":
            missing = np.flatnonzero(~now).tolist()
            if res.status != "stalled":
                res.warnings.append(
                    f"stopped ({res.status}) with ||T-T*||_F = {rn:.3g} > eps = {s.eps:g}; "
                    f"unfitted directions {missing}")
        if not check.ok:
            res.warnings.append(
                f"epoch {res.epoch - 1}: Proposition 1 check(s) "
                f"{''.join(c for c in 'abcd' if not getattr(check, c))} failed "
                f"(min member alignment {check.min_member_alignment:.4f}, max non-member norm "
                f"{check.max_nonmember_norm:.3g}, max excess {check.max_excess:.3g}, "
                f"unfitted again {list(check.unfitted_again)})")


def _run(res: DeflationResult, checkpoint, every, progress, callback,
         backend: str = "cpu") -> DeflationResult:
    from .progress import epoch_bar

    if res.finished:
        return res
    runner = _Runner(res, backend)
    if res.n_epochs == 0 and res.residual_norm <= res.schedule.eps:
        res.status = "recovered"
    saved = True  # warn at the first failed checkpoint and at a failed final one
    ran = False
    s = res.schedule
    with epoch_bar(res, enabled=progress) as bar:
        while not res.finished:
            bar.start(res, min(res.t + s.t1(res.beta, res.target.dim) + s.t2(res.beta), s.max_time))
            runner.tick = bar.tick if bar.shown else None
            runner.epoch()
            ran = True
            bar.done(res)
            if checkpoint is not None and (res.finished or res.epoch % every == 0):
                saved = _save(res, checkpoint, warn=saved or res.finished)
            if callback is not None:
                callback(res)
    if checkpoint is not None and not ran:
        _save(res, checkpoint, warn=True)
    return res


def _save(res: DeflationResult, path, warn: bool) -> bool:
    """Checkpoint; a failed write (disk full, folder gone) warns and the run goes on in memory."""
    try:
        res.save(path)
        return True
    except OSError as err:
        if warn:
            warnings.warn(f"{err}; the run goes on and its result is returned (save it elsewhere "
                          "with result.save(path))", RuntimeWarning, stacklevel=4)
        return False

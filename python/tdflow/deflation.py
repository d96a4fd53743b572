"""Algorithm 2 (modified gradient flow) of Ge, Ren, Wang, Zhou (2021), as printed, run by
:func:`deflate`:

1. Draw every column from ``delta0 · Unif(S^{d-1})``; ``beta^(0) = ||T - T*||_F`` at that state.
2. Epoch ``s = 0, 1, ...``:

   - phase 1: gradient flow of ``L = 1/2 ||T - T*||_F^2 + lam/2 ||W||_F^2`` for ``t1``;
   - re-draw every column with ``||w|| < delta1`` from ``delta0 · Unif(S^{d-1})``;
   - phase 2: gradient flow until ``t2`` (the epoch end; phase 2 lasts ``t2 - t1``);
   - ``beta^(s+1) = beta^(s) (1 - gamma)``

   (``t1``, ``t2``: :class:`Schedule`, Lemmas 4 and 6).
3. Stop at the end of the first epoch with ``||T - T*||_F <= eps`` (status ``"recovered"``; the
   paper tests ``||T^(s,0) - T*||_F > eps`` at the top of its loop, the same test), or after
   ``max_epochs`` epochs (``"max-epochs"``), or when the simulated time reaches ``max_time``
   (``"max-time"``; the last phase is cut there), or when a re-draw finds no column below
   ``delta1`` while some direction is still unfitted (``"stalled"``, tdflow's: every column has
   been absorbed by the directions found so far, the failure mode of a too small ``m``).

Along the run, in the C++ stepping loop on every accepted step: Definition 1's ``S_i`` (joins at
crossings of ``delta1`` located on the dense output) and the four conditions of Proposition 1
(worst margin per epoch); at each epoch start, Definition 2's partition of ``S_∅`` and, after
phase 1, Lemma 5's outcome (:mod:`tdflow.analysis`). :meth:`DeflationResult.theory_report`
shows them epoch by epoch. Everything needed to continue a run lives in
:class:`DeflationResult` (state, membership, ``beta``, the RNG state), so a run can be
checkpointed at every epoch boundary and resumed with :func:`resume`: the resumed run is
bitwise identical to an uninterrupted one.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import time
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Union

import numpy as np

from . import _core, analysis, io, theory
from ._checks import choice, flag, generator, positive_int, real_array, real_number, show
from .flow import ADAPTIVE, METHODS, GradientFlow, IntegrationError, Trajectory
from .target import Target

KIND = "deflation"
VERSION = 2  # of the per-epoch records (meta "deflation_version"); 1: before Proposition 1's margins


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Parameters of Algorithm 2 of Ge et al. 2021 (all explicit; roles in the module docstring).

    Phase lengths, measured from the start of epoch s (``beta = beta^(s)``)::

        t1  = t1' + t1'' + t1'''                       (Lemma 4)
        t1' = c1 d / (beta log d),  t1'' = c1pp d / (beta log^3 d),  t1''' = c1ppp log(d/alpha) / beta
        t2  = t1 + c2 (log(1/delta1) + log(1/lam)) / beta      (Lemma 6; t2 is the epoch end)

    (the ``log(1/lam)`` term is dropped when ``lam = 0``, and the bracket is floored at 1).
    ``c_rho`` is Definition 2's constant (``rho_i = c_rho Gamma_i``). ``fit_tol``: when a
    direction counts as fitted (``a_i - â_i <= tol``): ``None`` / ``"paper"``: ``2 lam``;
    ``"eps-floor"``: tdflow's ``max(2 lam, eps)``; or a number. ``margin`` is the factor of
    tdflow's escape-time labels of re-drawn columns (:func:`tdflow.analysis.classify_by_escape_time`).

    :meth:`theory` gives Theorem 1's parameters. The defaults are **tdflow's practical choice**
    (not the paper's): ``delta0 = 1e-3``, ``delta1 = 1e-2``, ``alpha = 0.3``, ``gamma = 0.3``,
    ``lam = 1e-4``, ``eps = 5e-4``, ``c1 = 1``, ``c1pp = c1ppp = 0`` (``t1 = t1'``), ``c2 = 1``,
    for targets with ``sum a_i = 1`` (the scale of :func:`tdflow.geometric_weights`). Where they
    work was measured: ``docs/deflation_table.md`` (``bench/table_deflation.py``): orthogonal
    targets with d from 10 to 50, r up to 20, weight spans 30 and 100, ``m >= 4 r`` recovered
    every direction in every case tried. Where they break:

    * ``m`` too small (``m = r`` always fails, ``m = 1.5 r`` mostly, ``m = 2 r`` mostly works):
      several fresh columns per epoch grow with the same large direction and stay in its
      ``S_i``; once every column has been absorbed the run stops with status ``"stalled"``.
    * weights at or below ``2 lam`` (or ``eps``) are not resolved (a warning says so).
    * the constants assume ``sum a_i ~ 1``: ``lam`` and ``eps`` are absolute; rescale them with
      the target (``t1, t2`` scale with ``1/beta`` by themselves).

    ``eps`` must exceed the weight-decay floor ``sqrt(r) lam / 2`` (each fitted direction keeps
    the gap ``a_i - â_i = lam/2``, see :mod:`tdflow.analysis`).
    """

    delta0: float = 1e-3
    delta1: float = 1e-2
    alpha: float = 0.3
    gamma: float = 0.3
    lam: float = 1e-4
    eps: float = 5e-4
    c1: float = 1.0
    c1pp: float = 0.0
    c1ppp: float = 0.0
    c2: float = 1.0
    c_rho: float = 0.1
    max_epochs: int = 100
    max_time: float = math.inf
    fit_tol: Union[None, str, float] = None
    margin: float = 1.0

    def __post_init__(self):
        for name in ("delta0", "delta1", "eps", "c1", "c2"):
            real_number(getattr(self, name), name, minimum=0.0, strict=True)
        real_number(self.alpha, "alpha", minimum=0.0, strict=True, maximum=1.0, strict_max=True)
        real_number(self.gamma, "gamma", minimum=0.0, maximum=1.0, strict_max=True)
        for name in ("lam", "margin", "c1pp", "c1ppp", "c_rho"):
            real_number(getattr(self, name), name, minimum=0.0)
        if not self.delta0 < self.delta1:
            raise ValueError(f"delta0 must be < delta1, got delta0={self.delta0}, delta1={self.delta1}")
        positive_int(self.max_epochs, "max_epochs")
        if not (isinstance(self.max_time, numbers.Real) and not isinstance(self.max_time, (bool, np.bool_))
                and self.max_time > 0):  # inf allowed: no limit
            raise (ValueError if isinstance(self.max_time, numbers.Real) else TypeError)(
                f"max_time must be a number > 0 (inf: no limit), got {show(self.max_time)}")
        if isinstance(self.fit_tol, str):
            if self.fit_tol not in analysis.FIT_RULES:
                raise ValueError(f"fit_tol must be one of {analysis.FIT_RULES} or a number, got "
                                 f"{self.fit_tol!r}")
        elif self.fit_tol is not None:
            real_number(self.fit_tol, "fit_tol", minimum=0.0)

    @classmethod
    def theory(cls, d: int, eps: float, m: int, *, gamma: float = 0.5, c1: float = 1.0,
               c1pp: float = 1.0, c1ppp: float = 1.0, c2: float = 1.0, c_rho: float = 0.1,
               **constants) -> "Schedule":
        """Theorem 1 of Ge et al. 2021: ``lam, alpha, delta1, delta0`` from
        :func:`tdflow.theory.theorem1_parameters` (its keywords ``c_lam_d, c_lam_eps, c_alpha_d,
        c_alpha_lam, c_alpha_eps, c_delta1, c_delta0`` go in ``constants``, default 1),
        ``gamma = Θ(1)`` (default 1/2), the Θ constants ``c1, c1pp, c1ppp`` of Lemma 4's
        ``t1', t1'', t1'''`` and ``c2`` of Lemma 6's ``t2 - t1`` (default 1), ``c_rho`` of
        Definition 2. ``m`` is the number of columns (the theorem: poly(d); see
        :func:`tdflow.theory.suggest_m`). Other keywords in ``constants`` that name a field
        (``max_epochs``, ``max_time``, ``fit_tol``, ...) replace it.

        Example, ``Schedule.theory(10, 1e-2, 200)``: ``lam = 3.162e-3``, ``alpha = 1e-8``,
        ``delta1 = 7.071e-14``, ``delta0 = 4.660e-22``, ``gamma = 0.5``; with ``beta = beta^(s)``:
        ``t1' = 4.343/beta``, ``t1'' = 0.819/beta``, ``t1''' = 20.72/beta`` (``t1 = 25.89/beta``)
        and ``t2 - t1 = 36.04/beta``. On Figure 1's target (d = 10, r = 5, ratio 1.2, sum 1;
        ``beta^(0) = ||T*||_F = 0.462``) epoch 0 is ``t1 = 56.1``, ``t2 = 134.1``, and every
        epoch is twice as long as the one before. What a run costs, measured
        (``deflate(target, 200, Schedule.theory(10, 1e-2, 200), rng=0)``, dopri5, rtol 1e-7, one
        thread): see the "Theorem 1's schedule" section of README.md.
        """
        fields = {f.name for f in dataclasses.fields(cls)}
        overrides = {k: constants.pop(k) for k in list(constants) if k in fields}
        p = theory.theorem1_parameters(d, eps, m, **constants)
        params = dict(p, gamma=gamma, eps=float(eps), c1=c1, c1pp=c1pp, c1ppp=c1ppp, c2=c2,
                      c_rho=c_rho)
        params.update(overrides)
        return cls(**params)

    def t1_parts(self, beta: float, d: int) -> tuple:
        """Lemma 4's ``(t1', t1'', t1''')``: ``c1 d/(beta log d)``, ``c1pp d/(beta log^3 d)``,
        ``c1ppp log(d/alpha)/beta``."""
        log_d = math.log(max(d, 2))
        return (self.c1 * d / (beta * log_d), self.c1pp * d / (beta * log_d ** 3),
                self.c1ppp * math.log(d / self.alpha) / beta)

    def t1(self, beta: float, d: int) -> float:
        """Phase-1 length ``t1 = t1' + t1'' + t1'''`` (Lemma 4)."""
        return sum(self.t1_parts(beta, d))

    def phase2(self, beta: float) -> float:
        """Phase-2 length ``t2 - t1 = c2 (log(1/delta1) + log(1/lam)) / beta`` (Lemma 6; no lam
        term for lam = 0; the bracket floored at 1)."""
        logs = math.log(1.0 / self.delta1) + (math.log(1.0 / self.lam) if self.lam > 0 else 0.0)
        return self.c2 * max(logs, 1.0) / beta

    def t2(self, beta: float, d: int) -> float:
        """The paper's ``t2``: the end of the epoch, ``t1 + (t2 - t1)``, from its start."""
        return self.t1(beta, d) + self.phase2(beta)

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


# per-epoch records: name -> dtype (times t1p, t1, t2 from the epoch start, as in the paper)
EPOCH_FIELDS = {
    "beta": float, "t_start": float, "t1p": float, "t1": float, "t2": float, "t_end": float,
    "n_redrawn": np.int64, "n_joined": np.int64, "n_crossed_unjoined": np.int64,
    "n_discovered": np.int64, "n_fitted": np.int64, "loss": float, "residual_norm": float,
    "n_good": np.int64, "n_potential": np.int64, "n_bad": np.int64,
    "lemma5_large_not_potential": np.int64, "lemma5_good_undiscovered": np.int64,
    "lemma5_large_unjoined": np.int64,
    **{f"prop1_{c}": float for c in analysis.PROP1_CONDITIONS},
    **{f"prop1_{c}_t": float for c in analysis.PROP1_CONDITIONS},
    "n_unfitted_again": np.int64, "wall_time": float, "n_steps": np.int64, "n_rhs": np.int64,
}
# per-record arrays (trajectory), name -> trailing shape key
RECORD_FIELDS = ("t", "loss", "residual_norm", "directional_residual", "a_hat", "norms",
                 "record_epoch", "record_phase")
# crossings of delta1 by columns of S_empty (Definition 1): joined ones put the column in S_i
EVENT_FIELDS = {"column": np.int64, "direction": np.int64, "t": float, "epoch": np.int64,
                "phase": np.int64, "norm": float, "misalignment": float, "upward": bool,
                "joined": bool}
# re-draws: kind 0 = initial draw, 1 = re-draw; previous = direction the column left (-1 none);
# escape_label / escape_predicted = tdflow's escape-time labels (0 good, 1 potential, 2 bad; not
# Definition 2); joined = direction it joined before its next re-draw (-1: none yet)
REDRAW_FIELDS = {"epoch": np.int64, "kind": np.int64, "column": np.int64, "t": float,
                 "previous": np.int64, "escape_label": np.int64, "escape_predicted": np.int64,
                 "joined": np.int64}
# Definition 2 at the start of each epoch, per column of S_empty: label 0 good, 1 potential
# (not good, not bad), 2 bad, 3 none of them; direction of the good / single potential set (-1)
PARTITION_FIELDS = {"epoch": np.int64, "column": np.int64, "label": np.int64,
                    "direction": np.int64}
DIRECTION_FIELDS = ("discovered_t", "discovered_epoch", "fitted_t", "fitted_epoch")
GROUPS = ("epochs", "records", "events", "redraws", "partitions", "directions")


STATUSES = ("running", "recovered", "stalled", "max-epochs", "max-time")
OPTION_NAMES = ("method", "rtol", "atol", "h", "n_records", "active_tol")


def _empty(fields) -> Dict[str, np.ndarray]:
    return {k: np.zeros(0, dtype=v) for k, v in fields.items()}


@dataclasses.dataclass
class DeflationResult:
    """A run of Algorithm 2: per-epoch records, the trajectory, the S_i events and the state.

    ``epochs[name]`` (one entry per completed epoch): ``beta`` (beta^(s)), ``t_start, t_end``
    (simulated time), ``t1p, t1, t2`` (Lemma 4's t1', the phase-1 end and the paper's t2, the
    epoch end, all from the epoch start), ``n_redrawn``, ``n_joined`` (joins in the epoch),
    ``n_crossed_unjoined`` (crossings of delta1 that did not join), ``n_discovered, n_fitted``
    (at the epoch end), ``loss, residual_norm`` (at the end); Definition 2 at (s, 0) over S_∅:
    ``n_good, n_potential, n_bad`` (-1: not applicable: order != 4 or a non-orthonormal target);
    Lemma 5: ``lemma5_large_not_potential, lemma5_good_undiscovered, lemma5_large_unjoined``
    (predicted 0; -1 not applicable); Proposition 1: ``prop1_a, prop1_b, prop1_c_lower,
    prop1_c_upper, prop1_d`` (worst margin over every accepted step of the epoch; inf: nothing
    to check) and ``prop1_*_t`` (when); ``n_unfitted_again`` (tdflow's "fitted stay fitted"
    check, :func:`tdflow.analysis.still_fitted`); ``wall_time, n_steps, n_rhs``.

    ``records[name]`` over all recording times of all phases (a phase boundary appears twice,
    before and after the re-draw): ``t, loss, residual_norm, directional_residual`` (n, r),
    ``a_hat`` (n, r), ``norms`` (n, m), ``record_epoch, record_phase`` (1 or 2).

    ``events[name]`` per crossing of delta1 by a column of S_∅ (``EVENT_FIELDS``; ``joined``
    marks the joins of Definition 1). ``redraws[name]`` per drawn column (``REDRAW_FIELDS``);
    ``partitions[name]`` per column of S_∅ at each epoch start (``PARTITION_FIELDS``).
    ``directions[name]`` (r,): ``discovered_t, discovered_epoch, fitted_t, fitted_epoch`` (NaN /
    -1 when it never happened; "fitted" is the first time on the recording grid).

    State to continue from: ``W`` (d x m), ``member`` (direction of each column, -1 none),
    ``armed`` (``member < 0``: watched for joining), ``beta`` (of the next epoch), ``epoch``
    (next epoch index), ``t`` (simulated time), ``rng_state`` (``Generator.bit_generator.state``,
    JSON-able), ``status`` ("running" while not finished) and ``warnings``.
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
    partitions: Dict[str, np.ndarray] = dataclasses.field(
        default_factory=lambda: _empty(PARTITION_FIELDS))
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
        """Per epoch: every condition of Proposition 1 held (all margins >= 0) at every step."""
        e = self.epochs
        return np.all([e[f"prop1_{c}"] >= 0 for c in analysis.PROP1_CONDITIONS], axis=0)

    def theory_report(self) -> str:
        """The per-epoch table of :func:`tdflow.theory.epoch_report`: beta, t1, t2, discovered,
        fitted, Proposition 1's margins, Definition 2's partition, Lemma 5's outcome."""
        return theory.epoch_report(self.epochs)

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
        """The run epoch by epoch, the theory report, then the per-direction outcome."""
        e = self.epochs
        rows = [f"{'epoch':>5} {'t_start':>9} {'t_end':>9} {'redrawn':>7} {'joined':>6} "
                f"{'crossed':>7} {'||T-T*||':>10}"]
        for s in range(self.n_epochs):
            rows.append(f"{s:>5} {e['t_start'][s]:9.1f} {e['t_end'][s]:9.1f} "
                        f"{e['n_redrawn'][s]:>7} {e['n_joined'][s]:>6} "
                        f"{e['n_crossed_unjoined'][s]:>7} {e['residual_norm'][s]:10.3e}")
        rows.append("theory (Section 5 of Ge et al. 2021; see DeflationResult.theory_report):")
        rows.append(self.theory_report())
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
        for group in GROUPS:
            for k, v in getattr(self, group).items():
                arrays[f"{group}/{k}"] = v
        meta = dict(order=self.target.order, m=self.m, seed=self.seed,
                    schedule=self.schedule.to_dict(), options=self.options, beta=self.beta,
                    epoch=self.epoch, t=self.t, rng_state=self.rng_state, status=self.status,
                    warnings=list(self.warnings), wall_time=self.wall_time,
                    d=self.target.dim, r=self.target.rank, deflation_version=VERSION)
        return io.save_npz(path, arrays, meta, kind=KIND)

    @classmethod
    def load(cls, path) -> "DeflationResult":
        """Read a file written by :meth:`save` (``path`` as there); ``ValueError`` naming the file
        when it is damaged, edited by hand (its checksum no longer matches), foreign or
        inconsistent, ``FileNotFoundError`` when it is missing."""
        path = io.npz_path(path)
        arrays, meta = io.load_npz(path, kind=KIND)
        try:
            if meta.get("deflation_version", 1) != VERSION:
                raise ValueError(f"its records are version {meta.get('deflation_version', 1)}, "
                                 f"this tdflow reads version {VERSION} (Proposition 1's margins, "
                                 "Definition 2's partitions): rerun it")
            d, r, m = int(meta["d"]), int(meta["r"]), int(meta["m"])
            for name, shape in (("U", (d, r)), ("a", (r,)), ("W", (d, m)), ("member", (m,)),
                                ("armed", (m,))):
                if name not in arrays:
                    raise ValueError(f"lacks the array {name!r}")
                if arrays[name].shape != shape:
                    raise ValueError(f"array {name!r} has shape {arrays[name].shape}, expected {shape}")
            groups = {g: {} for g in GROUPS}
            for k, v in arrays.items():
                if "/" in k:
                    g, name = k.split("/", 1)
                    if g in groups:
                        groups[g][name] = v
            for g, fields in (("epochs", EPOCH_FIELDS), ("events", EVENT_FIELDS),
                              ("redraws", REDRAW_FIELDS), ("partitions", PARTITION_FIELDS),
                              ("directions", DIRECTION_FIELDS)):
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
    rng=0,
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
    rng : int or numpy.random.Generator
        All randomness (the initial draw and every re-draw): an integer seed (recorded as the
        result's ``seed``) makes the run reproducible; a Generator is consumed (``seed`` -1), its
        state is saved with the result.
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
    seed = rng if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool) else -1
    rng = generator(rng, "rng")
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
        _check_same_run(res, target, m, int(seed), schedule, options, checkpoint)
        _set_limits(res, schedule)
    else:
        res = _start(target, m, int(seed), schedule, options, rng)
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
            res.epochs["t_start"][-1] + res.epochs["t2"][-1]) - 1e-12
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
    labels, pred = analysis.classify_by_escape_time(W, target.U, target.a, unfitted,
                                                    schedule.t1(beta0, d), order=target.order,
                                                    margin=schedule.margin)
    _append(res.redraws, REDRAW_FIELDS, dict(
        epoch=np.zeros(m), kind=np.zeros(m), column=np.arange(m), t=np.zeros(m),
        previous=np.full(m, -1), escape_label=labels, escape_predicted=pred,
        joined=np.full(m, -1)))
    tol = analysis.fit_tolerance(target.a, schedule.lam, schedule.fit_tol, schedule.eps)
    if np.any(np.asarray(target.a) <= tol):
        res.warnings.append("some weights a_i are within fit_tol of 0: they count as fitted from "
                            "the start")
    return res


def _partition(res: DeflationResult, t1p: float) -> Optional[analysis.Partition]:
    """Definition 2 at the epoch start, or None where it does not apply (order != 4 or a
    non-orthonormal target)."""
    tg, s = res.target, res.schedule
    U = tg.U
    if tg.order != 4 or (U.shape[1] and np.max(np.abs(U.T @ U - np.eye(U.shape[1]))) > 1e-10):
        return None
    discovered = np.zeros(tg.rank, bool)
    discovered[res.member[res.member >= 0]] = True
    return analysis.partition(res.W, U, tg.a, discovered, lam=s.lam, t1=t1p, c_rho=s.c_rho)


class _Runner:
    """One run's machinery (flow, RNG) around a DeflationResult."""

    def __init__(self, res: DeflationResult, backend: str = "cpu"):
        self.res = res
        self.flow = GradientFlow(res.target, res.schedule.lam, active_tol=res.options["active_tol"],
                                 backend=backend)
        self.rng = _rng_from_state(res.rng_state)
        self.tol = res.fit_tol
        self.n_steps = 0
        self.n_rhs = 0
        self.tick: Optional[Callable[[float], None]] = None  # progress: simulated time reached

    def phase(self, length: float, phase: int, beta: float) -> dict:
        """Run one phase; returns Proposition 1's worst margins and their times over it."""
        res, opt, s = self.res, self.res.options, self.res.schedule
        t0, t1 = res.t, res.t + length
        t_eval = np.linspace(t0, t1, opt["n_records"])
        step = np.nan if opt["h"] is None else opt["h"]
        member_before = res.member.copy()
        args = (res.W, t0, t_eval, opt["method"], step, opt["rtol"], opt["atol"], np.inf, 0, True,
                False, res.member, s.delta1, s.alpha, res.epoch, beta, s.gamma, self.tick, 0.25)
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
        self.n_steps += int(raw["n_steps"])
        self.n_rhs += int(raw["n_rhs"])
        res.W = np.asfortranarray(raw["W"])
        res.t = float(t1)
        n_ev = raw["crossing_column"].size
        ev = dict(column=raw["crossing_column"], direction=raw["crossing_direction"],
                  t=raw["crossing_t"], epoch=np.full(n_ev, res.epoch), phase=np.full(n_ev, phase),
                  norm=raw["crossing_norm"], misalignment=raw["crossing_misalignment"],
                  upward=raw["crossing_upward"], joined=raw["crossing_joined"])
        _append(res.events, EVENT_FIELDS, ev)
        res.member = raw["member"].astype(np.int64)
        res.armed = res.member < 0
        joined = np.asarray(ev["joined"], bool)
        ev_col = np.asarray(ev["column"], np.int64)[joined]
        ev_dir = np.asarray(ev["direction"], np.int64)[joined]
        ev_t = np.asarray(ev["t"], float)[joined]
        # the latest draw of each joining column records where it went
        for k, i in zip(ev_col, ev_dir):
            last = np.flatnonzero(res.redraws["column"] == k)[-1]
            res.redraws["joined"][last] = i
        dr = res.directions
        for i, t in zip(ev_dir, ev_t):
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
        return {c: (float(raw["prop1_margin"][c]), float(raw["prop1_t"][c]))
                for c in analysis.PROP1_CONDITIONS}

    def start_partition(self, t1p: float) -> tuple:
        """Definition 2 at (s, 0) over S_∅: recorded per column; returns (partition, fresh)."""
        res = self.res
        part = _partition(res, t1p)
        fresh = res.member < 0
        if part is None:
            return None, fresh
        cols = np.flatnonzero(fresh)
        good, pot = part.good[cols], part.potential[cols]
        label = np.where(good.any(axis=1), 0, np.where(part.bad[cols], 2,
                                                         np.where(pot.any(axis=1), 1, 3)))
        direction = np.where(good.any(axis=1), good.argmax(axis=1),
                             np.where(label == 1, pot.argmax(axis=1), -1))
        _append(res.partitions, PARTITION_FIELDS, dict(
            epoch=np.full(cols.size, res.epoch), column=cols, label=label, direction=direction))
        return part, fresh

    def epoch(self) -> None:
        res, s = self.res, self.res.schedule
        start_wall = time.perf_counter()
        self.n_steps = self.n_rhs = 0
        d = res.target.dim
        beta, t_start = res.beta, res.t
        t1p = s.t1_parts(beta, d)[0]
        t1, t2 = s.t1(beta, d), s.phase2(beta)
        cut = False
        if t_start + t1 >= s.max_time:
            t1, t2, cut = s.max_time - t_start, 0.0, True
        elif t_start + t1 + t2 >= s.max_time:
            t2, cut = s.max_time - t_start - t1, True
        fitted_before = res.fitted_now
        n_ev0 = res.events["column"].size
        part, fresh = self.start_partition(t1p)
        large0 = np.linalg.norm(res.W, axis=0) >= s.delta1
        margins = self.phase(t1, 1, beta)
        # Lemma 5 at t1, before the re-draw
        ev = {k: v[n_ev0:] for k, v in res.events.items()}
        reached = np.zeros(res.m, bool)
        reached[ev["column"][ev["upward"]]] = True
        reached |= fresh & large0
        discovered_t1 = np.zeros(res.target.rank, bool)
        discovered_t1[res.member[res.member >= 0]] = True
        l5 = None if part is None else analysis.lemma5_outcome(part, fresh, reached,
                                                                res.member >= 0, discovered_t1)
        # re-draw every column below delta1
        norms = np.linalg.norm(res.W, axis=0)
        small = np.flatnonzero(norms < s.delta1)
        unfitted = ~res.fitted_now
        n_new = small.size
        if not cut or t2 > 0:
            fresh_cols = _draw(self.rng, d, n_new, s.delta0)
            res.W = np.asfortranarray(res.W)
            res.W[:, small] = fresh_cols
            previous = res.member[small].copy()
            res.member = res.member.copy()
            res.member[small] = -1
            res.armed = res.member < 0
            horizon = t2 + s.t1(beta * (1.0 - s.gamma), d)
            labels, pred = analysis.classify_by_escape_time(
                fresh_cols, res.target.U, res.target.a, unfitted, horizon,
                order=res.target.order, margin=s.margin)
            _append(res.redraws, REDRAW_FIELDS, dict(
                epoch=np.full(n_new, res.epoch), kind=np.ones(n_new), column=small,
                t=np.full(n_new, res.t), previous=previous, escape_label=labels,
                escape_predicted=pred, joined=np.full(n_new, -1)))
        else:
            n_new = 0
        if t2 > 0:
            m2 = self.phase(t2, 2, beta)
            margins = {c: min(margins[c], m2[c], key=lambda v: v[0]) for c in margins}
        now = res.fitted_now
        lost = analysis.still_fitted(fitted_before, now)
        rn = float(res.records["residual_norm"][-1])
        stalled = n_new == 0 and not now.all() and not cut
        ev = {k: v[n_ev0:] for k, v in res.events.items()}
        counts = (-1, -1, -1) if part is None else part.counts(fresh)
        row = dict(
            beta=beta, t_start=t_start, t1p=t1p, t1=t1, t2=t1 + t2, t_end=res.t, n_redrawn=n_new,
            n_joined=int(ev["joined"].sum()), n_crossed_unjoined=int((~ev["joined"]).sum()),
            n_discovered=int(np.sum(res.directions["discovered_epoch"] >= 0)),
            n_fitted=int(now.sum()), loss=float(res.records["loss"][-1]), residual_norm=rn,
            n_good=counts[0], n_potential=counts[1], n_bad=counts[2],
            lemma5_large_not_potential=-1 if l5 is None else l5.large_not_potential,
            lemma5_good_undiscovered=-1 if l5 is None else l5.good_undiscovered,
            lemma5_large_unjoined=-1 if l5 is None else l5.large_unjoined,
            **{f"prop1_{c}": v[0] for c, v in margins.items()},
            **{f"prop1_{c}_t": v[1] for c, v in margins.items()},
            n_unfitted_again=len(lost),
            wall_time=time.perf_counter() - start_wall, n_steps=self.n_steps, n_rhs=self.n_rhs)
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
        failed = [c for c, v in margins.items() if v[0] < 0]
        if failed:
            res.warnings.append(
                f"epoch {res.epoch - 1}: Proposition 1 ({', '.join(failed)}) violated: worst "
                "margins " + ", ".join(f"{c} {margins[c][0]:.3g} at t = {margins[c][1]:.4g}"
                                       for c in failed))
        if lost:
            res.warnings.append(f"epoch {res.epoch - 1}: directions {list(lost)} were fitted "
                                "before and are not any more")


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
            bar.start(res, min(res.t + s.t2(res.beta, res.target.dim), s.max_time))
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

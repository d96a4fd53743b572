"""The result of Algorithm 2 (:func:`tdflow.deflate`): :class:`DeflationResult`, its record tables
and the summaries computed from them. Files: :mod:`tdflow.checkpoint`."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Dict, List

import numpy as np

from . import analysis, theory
from .flow import GradientFlow
from .options import SolverOptions
from .schedule import Schedule
from .display import Summarised
from .solution import Outcome, Status, Trajectory
from .target import Target

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

# the statuses of a run of Algorithm 2 (of the one vocabulary, tdflow.Status)
STATUSES = (Status.RUNNING, Status.RECOVERED, Status.STALLED, Status.MAX_EPOCHS, Status.MAX_TIME)
# the integrator options every deflation file holds (files since issue 17 add max_step, max_steps
# and t_eval: the fields of SolverOptions)
OPTION_NAMES = ("method", "rtol", "atol", "h", "n_records", "active_tol")


def append_rows(group: Dict[str, np.ndarray], fields, rows: Dict[str, np.ndarray]) -> None:
    for k in fields:
        v = np.asarray(rows[k])
        if k in group and group[k].size:
            group[k] = np.concatenate([group[k], v.astype(group[k].dtype, copy=False)])
        else:
            group[k] = v.astype(fields[k]) if isinstance(fields, dict) else v


def _empty(fields) -> Dict[str, np.ndarray]:
    return {k: np.zeros(0, dtype=v) for k, v in fields.items()}


@dataclasses.dataclass(repr=False)
class DeflationResult(Outcome, Summarised):
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
    JSON-able), ``status`` (:class:`Status`: ``RUNNING`` while not finished; ``success`` when recovered) and ``warnings``. The run's
    integrator: ``solver`` (the :class:`SolverOptions` of every phase) and ``active_tol``
    (``options``: both as one dict, as files hold them).
    """

    target: Target
    m: int
    seed: int
    schedule: Schedule
    solver: SolverOptions
    active_tol: float
    W: np.ndarray
    member: np.ndarray
    armed: np.ndarray
    beta: float
    epoch: int
    t: float
    rng_state: dict
    status: Status = Status.RUNNING
    warnings: List[str] = dataclasses.field(default_factory=list)
    epochs: Dict[str, np.ndarray] = dataclasses.field(default_factory=lambda: _empty(EPOCH_FIELDS))
    records: Dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    events: Dict[str, np.ndarray] = dataclasses.field(default_factory=lambda: _empty(EVENT_FIELDS))
    redraws: Dict[str, np.ndarray] = dataclasses.field(default_factory=lambda: _empty(REDRAW_FIELDS))
    partitions: Dict[str, np.ndarray] = dataclasses.field(
        default_factory=lambda: _empty(PARTITION_FIELDS))
    directions: Dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    wall_time: float = 0.0
    # not a field (never in files): set by deflate / resume, True when the checkpoint asked for
    # does not hold this result (its final write failed), so that the caller saves it elsewhere
    checkpoint_failed = False

    # ---- summaries -------------------------------------------------------------------------
    @property
    def options(self) -> dict:
        """The integrator options as files hold them: ``solver.to_dict()`` and ``active_tol``."""
        return dict(self.solver.to_dict(), active_tol=self.active_tol)

    @property
    def n_epochs(self) -> int:
        return int(self.epochs["beta"].size)

    @property
    def finished(self) -> bool:
        return self.status != Status.RUNNING

    @property
    def recovered(self) -> bool:
        """``||T - T*||_F <= eps`` was reached."""
        return self.status == Status.RECOVERED

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

    def epochs_frame(self, *, full: bool = False):
        """The per-epoch theory report as a pandas DataFrame (``pip install 'tdflow[pandas]'``).

        Parameters
        ----------
        full : bool
            False (the default): the columns of :meth:`theory_report`
            (:data:`tdflow.theory.REPORT_FIELDS`); True: every per-epoch record (``epochs``).

        Returns
        -------
        pandas.DataFrame
            One row per epoch, indexed by ``epoch``; see :func:`tdflow.theory.epoch_frame`.
        """
        return theory.epoch_frame(self.epochs, full=full)

    @property
    def trajectory(self) -> Trajectory:
        """The recorded trajectory (all phases) as a :class:`tdflow.Trajectory`."""
        rec = self.records
        return Trajectory(t=rec["t"], loss=rec["loss"], states=None, status=Status.FINISHED,
                          t_final=self.t, method=self.solver.method,
                          n_steps=int(self.epochs["n_steps"].sum()),
                          n_rhs=int(self.epochs["n_rhs"].sum()), n_rejected=0,
                          wall_time=self.wall_time, residual_norm=rec["residual_norm"],
                          directional_residual=rec["directional_residual"], W=self.W,
                          a=np.array(self.target.a), norms=rec.get("norms"))

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

    def _summary(self) -> list:
        return [("status", self.status), ("d", self.target.dim), ("r", self.target.rank),
                ("m", self.m), ("seed", self.seed), ("epochs", self.n_epochs), ("t", self.t),
                ("residual_norm", self.residual_norm), ("eps", self.schedule.eps),
                ("fitted", int(np.sum(self.fitted_now))), ("fit_order", self.fit_order),
                ("warnings", len(self.warnings)), ("wall_time", self.wall_time)]

    def _table(self):
        """One row per epoch: the start of the theory report and the residual."""
        e = self.epochs
        header = ("epoch", "beta", "t1", "t2", "discovered", "fitted", "Proposition 1 held",
                  "||T-T*||_F")
        ok = self.proposition1_ok
        return header, [(s, e["beta"][s], e["t1"][s], e["t2"][s], e["n_discovered"][s],
                         e["n_fitted"][s], ok[s], e["residual_norm"][s])
                        for s in range(self.n_epochs)]

    # ---- files (tdflow.checkpoint) ----------------------------------------------------------
    def save(self, path) -> Path:
        """Write the whole result (state included, so it doubles as a checkpoint) atomically to
        ``path`` (``.npz`` appended unless the name ends with it; see :func:`tdflow.io.npz_path`).
        Returns the path written."""
        from .checkpoint import save

        return save(self, path)

    @classmethod
    def load(cls, path) -> "DeflationResult":
        """Read a file written by :meth:`save` (``path`` as there); ``ValueError`` naming the file
        when it is damaged, edited by hand (its checksum no longer matches), foreign or
        inconsistent, ``FileNotFoundError`` when it is missing."""
        from .checkpoint import load

        return load(path)

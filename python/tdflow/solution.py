"""What an integration returns and how it ended: the one :class:`Status` vocabulary of tdflow,
the :class:`Solution` base of every integrator's result (:class:`Trajectory`,
:class:`LinearTrajectory`), :class:`IntegrationError` and the checks that raise it.

Modelled on diffrax's ``Solution`` (one ``RESULTS`` enumeration) and SciPy's ``OdeResult``
(``t``, ``y``, ``nfev``, ``status``, ``message``, ``success``).
"""
from __future__ import annotations

import dataclasses
import enum
import math
from typing import List, Optional, Tuple

import numpy as np

from ._checks import real_number
from .display import Summarised
from .options import ADAPTIVE
from .tables import Record, Tabular


class Status(str, enum.Enum):
    """How a run ended (or stands), one vocabulary for every layer of tdflow.

    A ``str`` too, so that files, sweep tables and comparisons keep their strings
    (``traj.status == "finished"``) and files written before the enum load unchanged.

    * an integration (:class:`Solution`, each phase of ``deflate``): ``FINISHED``,
      ``MAX_STEPS``, ``NON_FINITE``, ``STEP_TOO_SMALL``, ``STOPPED``;
    * Algorithm 2 (:class:`~tdflow.DeflationResult`): ``RUNNING``, ``RECOVERED``, ``STALLED``,
      ``MAX_EPOCHS``, ``MAX_TIME``;
    * a run of a sweep (its result file, the summary table): ``OK``, ``ERROR``, ``PENDING``.

    ``success`` is True for ``FINISHED``, ``RECOVERED`` and ``OK``; ``message`` says what the
    status means.
    """

    FINISHED = "finished"
    MAX_STEPS = "max-steps"
    NON_FINITE = "non-finite"
    STEP_TOO_SMALL = "step-too-small"
    STOPPED = "stopped"
    RUNNING = "running"
    RECOVERED = "recovered"
    STALLED = "stalled"
    MAX_EPOCHS = "max-epochs"
    MAX_TIME = "max-time"
    OK = "ok"
    ERROR = "error"
    PENDING = "pending"

    def __str__(self) -> str:  # the value, as a plain str would print (also on Python >= 3.11)
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @property
    def success(self) -> bool:
        return self in (Status.FINISHED, Status.RECOVERED, Status.OK)

    @property
    def message(self) -> str:
        return _MESSAGES[self]


_MESSAGES = {
    Status.FINISHED: "the integration reached the end of t_span",
    Status.MAX_STEPS: "the step budget max_steps ran out",
    Status.NON_FINITE: "the state became NaN/Inf; the last finite state is kept",
    Status.STEP_TOO_SMALL: "the adaptive step fell below the resolution of t",
    Status.STOPPED: "stopped by Ctrl-C or by an error in a callback",
    Status.RUNNING: "the run goes on (it can be resumed)",
    Status.RECOVERED: "||T - T*||_F <= eps was reached",
    Status.STALLED: "no column was left to re-draw while some direction was unfitted",
    Status.MAX_EPOCHS: "the run stopped at max_epochs",
    Status.MAX_TIME: "the run stopped at max_time",
    Status.OK: "the run finished and its result was recorded",
    Status.ERROR: "the run raised; its message and traceback are recorded",
    Status.PENDING: "the run has not run yet",
}


def status_arg(value, allowed=tuple(Status), name: str = "status") -> Status:
    """``value`` (a Status or its string) as a Status among ``allowed``; ``ValueError`` naming
    ``name`` else (a file with a foreign status)."""
    try:
        status = Status(value)
    except ValueError:
        status = None
    if status not in allowed:
        raise ValueError(f"{name} must be one of {tuple(s.value for s in allowed)}, got {value!r}")
    return status


class Outcome:
    """``success`` and ``message`` of anything with a ``status`` (:class:`Solution`,
    :class:`~tdflow.DeflationResult`)."""

    status: Status

    @property
    def success(self) -> bool:
        return Status(self.status).success

    @property
    def message(self) -> str:
        return Status(self.status).message


@dataclasses.dataclass(repr=False)
class Solution(Outcome, Tabular, Summarised):
    """What one integration returns (every integrator of tdflow; subclasses add what their
    flow records).

    ``t`` (n,) the recording times, ``loss`` (n,) the loss there, ``states`` (n, ...) the whole
    state at each record when asked for (else None); ``status`` (:class:`Status`), ``t_final``
    the time reached (``t_span[1]`` when ``success``), ``method`` the stepper, ``n_steps``
    accepted steps, ``n_rhs`` right-hand-side evaluations, ``n_rejected`` rejected adaptive
    steps, ``wall_time`` seconds; ``success`` and ``message`` from the status.

    The records as tables: :meth:`to_pandas` (pandas) and :meth:`to_xarray` (xarray); in a
    notebook the result shows a summary table.
    """

    t: np.ndarray
    loss: np.ndarray
    states: Optional[np.ndarray]
    status: Status
    t_final: float
    method: str
    n_steps: int
    n_rhs: int
    n_rejected: int
    wall_time: float

    def to_dict(self) -> dict:
        """The fields as a dict, those that are None left out."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    # ---- tables (to_pandas, to_xarray: tdflow.tables.Tabular) --------------------------------
    def _records(self) -> List[Record]:
        """What was recorded at each time (subclasses add their records)."""
        return [Record("loss", self.loss)]

    def _dataset_extras(self) -> Tuple[dict, dict]:
        """``(coords, data)``: coordinates and variables without the time axis for to_xarray."""
        return {}, {}

    def _attrs(self) -> dict:
        """The run's outcome as numbers and strings (a Dataset's attributes)."""
        return dict(status=str(self.status), message=self.message, method=str(self.method),
                    t_final=float(self.t_final), n_steps=int(self.n_steps), n_rhs=int(self.n_rhs),
                    n_rejected=int(self.n_rejected), wall_time=float(self.wall_time))

    # ---- display (tdflow.display) -----------------------------------------------------------
    def _summary(self) -> list:
        n = self.t.size
        span = [float(self.t[0]), float(self.t[-1])] if n else []
        return [("status", self.status), ("records", n), ("t", span), ("method", self.method),
                ("n_steps", self.n_steps), ("n_rhs", self.n_rhs), ("n_rejected", self.n_rejected),
                ("loss", float(self.loss[-1]) if n else None), *self._summary_records(),
                ("wall_time", self.wall_time)]

    def _summary_records(self) -> list:
        """What a subclass adds to the summary (its last records, its sizes)."""
        return []


@dataclasses.dataclass(repr=False)
class Trajectory(Solution):
    """What one integration of :class:`~tdflow.GradientFlow` recorded: :class:`Solution`'s
    fields and ``residual_norm`` (n,) = ``||T - T*||_F``, ``directional_residual`` (n, r) =
    ``(T* - T)(u_i^{(x)l})``, ``norms`` (n, m) column norms when asked for; ``states`` are
    (n, d, m); ``W`` the final state (at ``t_final``), ``a`` the target's weights.
    """

    residual_norm: np.ndarray
    directional_residual: np.ndarray
    W: np.ndarray
    a: np.ndarray
    norms: Optional[np.ndarray] = None

    def _records(self) -> List[Record]:
        out = super()._records() + [Record("residual_norm", self.residual_norm),
                                    Record("directional_residual", self.directional_residual,
                                           ("direction",))]
        if self.norms is not None:
            out.append(Record("norms", self.norms, ("column",)))
        if self.states is not None:
            out.append(Record("states", self.states, ("coordinate", "column")))
        return out

    def _dataset_extras(self) -> Tuple[dict, dict]:
        return {"a": ("direction", np.asarray(self.a))}, {"W": (("coordinate", "column"), self.W)}

    def _summary_records(self) -> list:
        d, m = np.shape(self.W)
        last = self.residual_norm[-1] if self.residual_norm.size else None
        return [("residual_norm", last), ("d", d), ("m", m), ("r", np.size(self.a)),
                ("fit_order", self.fit_order())]

    def fit_times(self, threshold: float = 0.5) -> np.ndarray:
        """Per direction, the first recorded time at which ``(T* - T)(u_i^l) <= threshold * a_i``
        (NaN if never). With a small initialisation this is when direction i gets fitted."""
        threshold = real_number(threshold, "threshold", minimum=0.0)
        below = self.directional_residual <= threshold * self.a[None, :]
        first = np.argmax(below, axis=0)
        times = self.t[first].astype(float)
        times[~below.any(axis=0)] = np.nan
        return times

    def fit_order(self, threshold: float = 0.5) -> np.ndarray:
        """Indices of the directions in the order they were fitted (unfitted ones left out)."""
        times = self.fit_times(threshold)
        fitted = np.flatnonzero(np.isfinite(times))
        return fitted[np.argsort(times[fitted], kind="stable")]


@dataclasses.dataclass(repr=False)
class LinearTrajectory(Solution):
    """What one integration of a deep linear model (:class:`~tdflow.DeepLinearFlow`) recorded:
    :class:`Solution`'s fields (``loss`` (n,) = ``f(W(t))``) and ``gap`` (n,) = ``f(W(t)) - f*`` (computed without
    cancellation), ``grad_norm_sq`` (n,) = ``||grad L||^2 = -dL/dt``; ``products`` (n, n_0, n_L)
    the end-to-end matrix ``W(t)``; ``imbalances`` a list of L-1 arrays (n, n_l, n_l) with
    ``D_l(t)``; ``states`` (n, P, L) the packed parameters when asked for; ``layers`` the final
    layers (at ``t_final``). ``imbalance_scale`` (L-1,) is
    ``||W_l^T W_l||_F + ||W_{l+1} W_{l+1}^T||_F`` at the start, the size rounding is relative to.
    """

    gap: np.ndarray
    grad_norm_sq: np.ndarray
    layers: List[np.ndarray]
    f_star: float
    imbalance_scale: np.ndarray
    products: Optional[np.ndarray] = None
    imbalances: Optional[List[np.ndarray]] = None

    def _records(self) -> List[Record]:
        out = super()._records() + [Record("gap", self.gap),
                                    Record("grad_norm_sq", self.grad_norm_sq),
                                    Record("rate", self.rate)]
        if self.products is not None:
            out.append(Record("products", self.products, ("product_row", "product_col")))
        for l, D in enumerate(self.imbalances or [], start=1):  # D_l, numbered as in the paper
            out.append(Record(f"imbalance_{l}", D, (f"imbalance_{l}_row", f"imbalance_{l}_col")))
        if self.states is not None:
            out.append(Record("states", self.states, ("packed", "layer")))
        return out

    def _dataset_extras(self) -> Tuple[dict, dict]:
        scale = np.asarray(self.imbalance_scale)  # of D_1, ..., D_{L-1}
        return ({"imbalance": ("imbalance", np.arange(1, scale.size + 1))},
                {"imbalance_scale": (("imbalance",), scale)})

    def _attrs(self) -> dict:
        return dict(super()._attrs(), f_star=float(self.f_star))

    def _summary_records(self) -> list:
        last = self.gap[-1] if self.gap.size else None
        return [("gap", last), ("f_star", self.f_star), ("depth", len(self.layers))]

    @property
    def rate(self) -> np.ndarray:
        """Instantaneous decay rate ``-d/dt log(L - f*) = ||grad L||^2 / (L - f*)`` at each record,
        evaluated exactly from the state (no finite differences); NaN where the gap is 0."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.gap > 0, self.grad_norm_sq / np.where(self.gap > 0, self.gap, 1.0), np.nan)

    def _resolved(self, floor: float) -> np.ndarray:
        floor = real_number(floor, "floor", minimum=0.0)
        return (self.gap > floor * self.gap[0]) & (self.gap > 0)

    def observed_rate(self, kind: str = "min", floor: float = 1e-10) -> float:
        """The observed exponential decay rate of the loss gap.

        Only records whose gap exceeds ``floor * gap[0]`` are used (below that the gap is
        dominated by rounding of the residual). ``kind``:

        * ``"min"``: the minimum over those records of the instantaneous rate
          ``||grad L||^2 / (L - f*)``. This is the quantity the rate bounds bound from below at
          every instant, so ``observed_rate("min") >= bound.rate`` is the sharp comparison.
        * ``"secant"``: ``log(gap(0)/gap(t_k)) / (t_k - t_0)`` at the last resolved record
          ``t_k`` (the average rate; also ``>= bound.rate``).
        * ``"final"``: the instantaneous rate at the last resolved record (the asymptotic rate).
        """
        ok = self._resolved(floor)
        if not ok.any():
            raise ValueError("no record has a gap above floor * gap[0]")
        if kind == "min":
            return float(np.min(self.rate[ok]))
        k = int(np.flatnonzero(ok)[-1])
        if kind == "final":
            return float(self.rate[k])
        if kind == "secant":
            if k == 0 or self.t[k] == self.t[0]:
                raise ValueError("the secant rate needs two resolved records at different times")
            return float(math.log(self.gap[0] / self.gap[k]) / (self.t[k] - self.t[0]))
        raise ValueError(f"kind must be 'min', 'secant' or 'final', got {kind!r}")

    def imbalance_drift(self) -> np.ndarray:
        """Per imbalance l, ``max_t ||D_l(t) - D_l(t_0)||_F / imbalance_scale[l]``: the relative
        drift of the conserved quantities (integrator accuracy)."""
        if self.imbalances is None:
            raise ValueError("the imbalances were not recorded (save_imbalances=False)")
        out = []
        for D, s in zip(self.imbalances, self.imbalance_scale):
            diff = np.linalg.norm((D - D[:1]).reshape(D.shape[0], -1), axis=1)
            out.append(float(diff.max() / s) if s > 0 else float(diff.max()))
        return np.array(out)


class IntegrationError(RuntimeError):
    """The integration could not go on (a non-finite state, or a step too small to resolve).

    ``trajectory`` holds everything recorded up to the failure, and its ``W`` is the last
    finite state, reached at ``trajectory.t_final``.
    """

    def __init__(self, message: str, trajectory: "Trajectory"):
        super().__init__(message)
        self.trajectory = trajectory

    def __reduce__(self):
        # the default (cls(*args), __dict__) would call __init__ without the trajectory, so an
        # error raised in a multiprocessing worker could not be unpickled and hung the pool
        return (_rebuild_error, (type(self), self.args, self.__dict__))


def _rebuild_error(cls, args, state):
    err = cls.__new__(cls)
    err.args = args
    err.__dict__.update(state)
    return err


# What a run records at each time (the first axis of each array is the record).
RECORD_KEYS = ("t", "loss", "residual_norm", "directional_residual", "norms", "states", "gap",
               "grad_norm_sq", "products", "imbalances")


def trim_records(raw: dict, n: int) -> dict:
    """``raw`` with only its first ``n`` records (drops the record at ``t1`` that
    :meth:`SolverOptions.grid` adds when ``t_eval`` ends early)."""
    if len(raw["t"]) > n:
        for key in RECORD_KEYS:
            if key in raw:
                raw[key] = raw[key][:n]
    return raw


def largest_column_norm(X) -> float:
    """``max_j ||X[:, j]||`` without overflow in the squares (0 for an empty array)."""
    X = np.asarray(X, dtype=float)
    if X.size == 0:
        return 0.0
    with np.errstate(all="ignore"):
        scale = np.abs(X).max(axis=0)
        safe = np.where(scale > 0, scale, 1.0)
        return float(np.max(scale * np.sqrt(((X / safe) ** 2).sum(axis=0))))


def check_outcome(traj, error: Optional[BaseException] = None, *, h_last: Optional[float] = None,
                  size: str = "", growth: str = "", rhs_overflows: bool = False) -> None:
    """Raise what stopped an integration: an error from Python during the run (Ctrl-C, a failing
    progress callback) with the partial trajectory attached, or IntegrationError on NaN/Inf or a
    collapsed step. ``traj`` is any trajectory with ``status``, ``t_final``, ``n_steps`` and
    ``method``. The message names the cause: ``size`` describes the last finite state (e.g. its
    largest column norm), ``rhs_overflows`` says that the right-hand side overflows there and
    ``growth`` how it grows; ``h_last`` is the last step tried."""
    if error is not None:
        try:
            error.trajectory = traj
        except AttributeError:
            pass
        raise error
    where = f" ({size})" if size else ""
    step = "" if h_last is None else f" h = {h_last:.3g}"
    if traj.status == Status.NON_FINITE:
        msg = (f"the state became NaN/Inf after t = {traj.t_final:g} (step {traj.n_steps}); the "
               f"trajectory holds the last finite state{where}.")
        grows = f" ({growth})" if growth else ""
        if rhs_overflows and traj.n_steps == 0:
            msg += (f" The right-hand side overflows double precision at the initial state"
                    f"{grows}, so no step size can help: start from a smaller state.")
        elif rhs_overflows:
            msg += f" The right-hand side overflows double precision there{grows}."
        elif traj.method in ADAPTIVE:  # tiny steps stay near a finite f: the stages overflow
            msg += (f" Every step from there gave NaN/Inf, down to{step}: the stages overflow "
                    f"double precision near this state{grows}.")
        if traj.method not in ADAPTIVE and traj.n_steps > 0:
            msg += " Try a smaller step h."
        raise IntegrationError(msg, traj)
    if traj.status == Status.STEP_TOO_SMALL:
        raise IntegrationError(
            f"the adaptive step fell to{step} at t = {traj.t_final:g}, below the resolution of t "
            f"(16 eps |t|): the flow is too fast there for double precision{where}",
            traj,
        )

"""Gradient flow of the over-parametrized deflation model towards a target.

``T = sum_k w_k^{(x)l} / ||w_k||^{l-2}``, ``L(W) = 1/2 ||T - T*||_F^2 + lam/2 ||W||_F^2`` and
``dW/dt = -grad L(W)``; the right-hand side and the steppers run in the compiled core, or with
``backend="cuda"``/``"torch"`` on PyTorch tensors (:mod:`tdflow.gpu`).
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import List, Optional, Sequence

import numpy as np

from . import _core, gpu
from ._checks import choice, positive_int, real_array, real_number
from .cp import CPTensor
from .progress import progress_bar, tqdm_replicas
from .target import Target

METHODS = ("euler", "rk4", "dopri5", "dop853")
ADAPTIVE = ("dopri5", "dop853")


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


@dataclasses.dataclass
class Trajectory:
    """What one integration recorded.

    ``t`` (n,), ``loss`` (n,), ``residual_norm`` (n,) = ``||T - T*||_F``,
    ``directional_residual`` (n, r) = ``(T* - T)(u_i^{(x)l})``; ``norms`` (n, m) column norms and
    ``states`` (n, d, m) when asked for; ``W`` the final state (at ``t_final``).
    """

    t: np.ndarray
    loss: np.ndarray
    residual_norm: np.ndarray
    directional_residual: np.ndarray
    W: np.ndarray
    a: np.ndarray
    status: str = "finished"
    t_final: float = 0.0
    method: str = "rk4"
    n_steps: int = 0
    n_rhs: int = 0
    n_rejected: int = 0
    wall_time: float = 0.0
    norms: Optional[np.ndarray] = None
    states: Optional[np.ndarray] = None

    @property
    def success(self) -> bool:
        return self.status == "finished"

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

    def to_dict(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


class GradientFlow:
    """Gradient flow of the deflation model ``T = sum_k w_k^{(x)l}/||w_k||^{l-2}`` towards ``target``.

    Parameters
    ----------
    target : Target
        The ground truth ``T*``; its order is the model's order ``l``.
    lam : float
        Weight-decay coefficient ``lambda >= 0`` of ``lam/2 ||W||_F^2``.
    active_tol : float
        The residual ``T* - T`` leaves out the smallest columns as long as their summed squared
        norms (a bound on how far they move ``T`` in Frobenius norm) stay below
        ``active_tol * ||T*||_F``. During a small-initialisation plateau almost every column is
        left out and one right-hand side costs ``O(m (r + active) d)`` instead of ``O(m^2 d)``.
        The default 1e-16 is below the rounding of ``||T*||_F``; 0 evaluates everything exactly.
    contraction : {"auto", "gram", "moment"}
        How the residual ``R = T* - T`` is contracted (CPU backend). "gram" goes through Gram
        blocks ``<z_j, w_k>``: ``O(m (r + active) d)`` per right-hand side, ``O(m^2 d)`` when every
        column is active. "moment" forms the ``d^{l-1} x d`` unfolding of ``R`` (its
        ``C(d+l-2, l-1) x d`` distinct rows) and contracts through it: ``O((m + active) d^l / (l-1)!)``
        time and ``O(m d + d^l)`` memory, the fast path when ``m >> d^{l-1}``; its loss is a sum of
        squares, accurate near ``T = T*``, where the Gram form's rounding floor on
        ``||T - T*||_F`` is about ``sqrt(l eps) ||T*||_F``. "auto" (default) takes the path with the
        smaller estimated cost at every evaluation (constants in ``cpp/include/tdflow/moment.hpp``).
        The two paths agree to rounding.
    backend : {"cpu", "cuda", "torch"}
        Where the right-hand side, the loss and the steppers run: "cpu" (the default) is the
        compiled C++ core; "cuda" the same model and steppers on PyTorch tensors on the GPU
        (needs ``pip install 'tdflow[gpu]'`` and a CUDA device); "torch" the PyTorch code on
        torch's default device (the CPU unless changed: for testing). See :mod:`tdflow.gpu`.

    States ``W`` are ``d x m`` float64 arrays, one component per column; Fortran order is used
    without a copy.
    """

    def __init__(self, target: Target, lam: float = 0.0, *, active_tol: float = 1e-16,
                 backend: str = "cpu", contraction: str = "auto"):
        if not isinstance(target, Target):
            raise TypeError(f"target must be a tdflow.Target, got {type(target).__name__}")
        if not isinstance(backend, str):
            raise TypeError(f"backend must be a string, got {type(backend).__name__}")
        if backend not in gpu.BACKENDS:
            raise ValueError(f"backend must be one of {gpu.BACKENDS}, got {backend!r}")
        self.target = target
        self.lam = real_number(lam, "lam", minimum=0.0)
        self.active_tol = real_number(active_tol, "active_tol", minimum=0.0)
        self.backend = backend
        self.contraction = choice(contraction, "contraction", ("auto", "gram", "moment"))
        if backend != "cpu" and self.contraction == "moment":
            raise ValueError(f"contraction='moment' needs backend='cpu', got backend={backend!r}")
        self._core = _core.DeflationFlow(target.U, target.a, target.order, self.lam, self.active_tol,
                                         self.contraction)
        self._torch = None
        if backend != "cpu":
            self._torch = gpu.TorchFlow(target.U, target.a, target.order, self.lam, self.active_tol,
                                        gpu.device_for(backend), basis=target.is_basis)

    def __getstate__(self):
        # the compiled core object does not pickle: rebuild it from the arguments
        return dict(target=self.target, lam=self.lam, active_tol=self.active_tol,
                    backend=self.backend, contraction=self.contraction)

    def __setstate__(self, state):
        self.__init__(**state)

    def exact(self) -> "GradientFlow":
        """The same flow with every column in the residual (``active_tol = 0``)."""
        return GradientFlow(self.target, self.lam, active_tol=0.0, backend=self.backend,
                            contraction=self.contraction)

    @property
    def order(self) -> int:
        return self.target.order

    def _state(self, W, name="W") -> np.ndarray:
        W = real_array(W, name, 2, (self.target.dim, None))
        if W.shape[1] < 1:
            raise ValueError(f"{name} must have m >= 1 columns")
        return W

    def rhs(self, W) -> np.ndarray:
        """``-grad L(W)`` (d x m).

        Raises ValueError when it overflows double precision (it grows like ``||w||^3``: from
        column norms of about 1e102), as :meth:`loss` and the other evaluations do."""
        if self._torch is not None:
            tf, W = self._torch, self._state(W)
            return _finite(tf.to_host(tf.rhs(tf.to_device(W))), "the right-hand side", W)
        return self._core.rhs(W)  # the core validates (same messages) without a second pass

    def loss(self, W) -> float:
        """``1/2 ||T - T*||_F^2 + lam/2 ||W||_F^2``."""
        if self._torch is not None:
            W = self._state(W)
            return _finite(self._torch.loss(self._torch.to_device(W)), "the loss", W)
        return float(self._core.loss(W))

    def residual_norm(self, W) -> float:
        """``||T - T*||_F``; never negative (rounding limits it to about ``sqrt(l eps) ||T*||_F``)."""
        if self._torch is not None:
            tf, W = self._torch, self._state(W)
            return _finite(math.sqrt(tf.residual_norm_squared(tf.to_device(W))), "||T - T*||_F", W)
        return float(self._core.residual_norm(W))

    def directional_residual(self, W) -> np.ndarray:
        """``(T* - T)(u_i^{(x)l})`` for each target direction ``i``."""
        if self._torch is not None:
            tf, W = self._torch, self._state(W)
            out = tf.directional_residual(tf.to_device(W)).cpu().numpy()
            return _finite(out, "the directional residual", W)
        return self._core.directional_residual(W)

    def model(self, W) -> CPTensor:
        """The model tensor ``T(W)`` as a :class:`CPTensor` (zero columns dropped)."""
        W = self._state(W)
        n = np.linalg.norm(W, axis=0)
        keep = n > 0
        return CPTensor(W[:, keep] / n[keep], n[keep] ** 2, self.order)

    def integrate(
        self,
        W0,
        t_span: Sequence[float] = (0.0, 1.0),
        *,
        method: str = "dopri5",
        h: Optional[float] = None,
        rtol: float = 1e-8,
        atol: float = 0.0,
        t_eval=None,
        n_records: int = 501,
        max_step: float = np.inf,
        max_steps: int = 0,
        save_norms: bool = False,
        save_states: bool = False,
        progress: Optional[bool] = None,
    ) -> Trajectory:
        """Integrate ``dW/dt = -grad L`` from ``W0`` over ``t_span = (t0, t1)``.

        Parameters
        ----------
        method : {"dopri5", "dop853", "rk4", "euler"}
            Adaptive Dormand-Prince 5(4) (the default) or DOP853 (order 8: fewer right-hand
            sides at tight tolerances, 7th-order dense output at 3 extra RHS per step that holds
            a recording time), both with error control ``||err_j|| <~ atol + rtol ||w_j||`` per
            column (``h``: first step, None = automatic); or fixed-step classic RK4 / explicit
            Euler with step ``h`` (required; shortened where needed so that every recording
            time is hit exactly).
        t_eval : array, optional
            Recording times inside ``t_span`` (default: ``n_records`` evenly spaced times). As
            in SciPy's ``solve_ivp``, the run always covers all of ``t_span``: when ``t_eval``
            ends before ``t1``, nothing is recorded after its last time, but ``W`` and
            ``t_final`` are those of ``t1``.
        max_step : float
            Upper bound on the adaptive step.
        max_steps : int
            Step budget (0: none); when exhausted the trajectory returns with
            ``status == "max-steps"``.
        save_norms, save_states : bool
            Also record the column norms (n, m) / the whole state (n, d, m) at each time.
        progress : bool, optional
            Show a progress bar; by default only when stderr is a terminal.

        Returns
        -------
        Trajectory

        Raises
        ------
        IntegrationError
            A step gave NaN/Inf (or the adaptive step collapsed); ``err.trajectory`` keeps the
            records so far and the last finite state. The message names the cause: a start so
            large that the right-hand side overflows (it grows like ``||w||^3``: from column
            norms of about 1e102), a fixed step too large, or a flow too fast to resolve.
        KeyboardInterrupt
            Re-raised with the partial trajectory as its ``trajectory`` attribute.
        """
        W0 = self._state(W0, "W0")
        t0, t1, args, n_rec = self._run_args(t_span, method, h, rtol, atol, t_eval, n_records,
                                             max_step, max_steps, save_norms, save_states)
        start = time.perf_counter()
        desc = f"{method} d={W0.shape[0]} m={W0.shape[1]}"
        with progress_bar(t0, t1, enabled=progress, desc=desc) as update:
            run = self._core.integrate if self._torch is None else self._torch.integrate
            raw = run(W0, t0, *args, update, 0.1)
        traj = self._trajectory(trim_records(raw, n_rec), method, time.perf_counter() - start)
        check_outcome(traj, raw["error"], **self._diagnosis(traj, raw))
        return traj

    def integrate_batch(
        self,
        W0s,
        t_span: Sequence[float] = (0.0, 1.0),
        *,
        method: str = "dopri5",
        h: Optional[float] = None,
        rtol: float = 1e-8,
        atol: float = 0.0,
        t_eval=None,
        n_records: int = 501,
        max_step: float = np.inf,
        max_steps: int = 0,
        save_norms: bool = False,
        save_states: bool = False,
        progress: Optional[bool] = None,
    ) -> List[Trajectory]:
        """Integrate independent replicas ``W0s`` (shape ``(n, d, m)``) in parallel.

        Each replica runs on one thread, the replicas spread over the OpenMP threads: the fast
        way to run many small problems (a Figure-1-sized right-hand side is too small to split).
        Results equal those of :meth:`integrate` replica by replica, bitwise. Options as in
        :meth:`integrate`; the progress bar counts finished replicas. Raises
        :class:`IntegrationError` for the first failed replica, with the others' trajectories in
        ``err.trajectories``. Ctrl-C (or an error in the progress bar) stops every replica at
        its next step and raises ``KeyboardInterrupt`` whose ``trajectories`` attribute holds
        each replica's trajectory: finished ones with ``status == "finished"``, interrupted ones
        ``"stopped"`` with what they recorded and their last state, and None for replicas that
        had not started.
        """
        if self._torch is not None:
            raise NotImplementedError(
                f"integrate_batch runs replicas on the CPU threads: use backend='cpu', or call "
                f"integrate per replica with backend={self.backend!r}")
        W0s = real_array(W0s, "W0s", 3, (None, self.target.dim, None), order="C")
        if W0s.shape[0] < 1 or W0s.shape[2] < 1:
            raise ValueError(f"W0s must hold n >= 1 replicas of m >= 1 columns, got shape {W0s.shape}")
        t0, t1, args, n_rec = self._run_args(t_span, method, h, rtol, atol, t_eval, n_records,
                                             max_step, max_steps, save_norms, save_states)
        n = W0s.shape[0]
        with tqdm_replicas(n, progress) as bar:
            def update(done: float) -> None:
                bar.update(int(done) - bar.n)

            start = time.perf_counter()
            raws, error = self._core.integrate_batch(W0s, t0, *args, update, 0.1)
            wall = (time.perf_counter() - start) / n
        trajs: List[Optional[Trajectory]] = [
            None if raw is None else self._trajectory(trim_records(raw, n_rec), method, wall)
            for raw in raws]
        if error is not None:
            error.trajectories = trajs
            raise error
        for k, (traj, raw) in enumerate(zip(trajs, raws)):
            try:
                check_outcome(traj, **self._diagnosis(traj, raw))
            except IntegrationError as err:
                err.args = (f"replica {k}: {err.args[0]}",)
                err.trajectories = trajs
                raise
        return trajs

    def _run_args(self, t_span, method, h, rtol, atol, t_eval, n_records, max_step, max_steps,
                  save_norms, save_states):
        t0, t1, args, n_rec = solver_args(t_span, method, h, rtol, atol, t_eval, n_records,
                                          max_step, max_steps)
        return t0, t1, args + (bool(save_norms), bool(save_states)), n_rec

    def _diagnosis(self, traj: "Trajectory", raw: dict) -> dict:
        """What check_outcome says about a run that failed in the core (NaN/Inf, tiny step)."""
        if raw.get("error") is not None or traj.status not in ("non-finite", "step-too-small"):
            return {}
        overflows = False
        if traj.status == "non-finite":
            try:
                self.rhs(traj.W)
            except ValueError:
                overflows = True
        return dict(h_last=raw.get("h_last"), rhs_overflows=overflows,
                    size=f"largest column norm {largest_column_norm(traj.W):.3g}",
                    growth="it grows like ||w||^3, from column norms of about 1e102 on")

    def _trajectory(self, raw: dict, method: str, wall_time: float) -> Trajectory:
        return Trajectory(
            t=raw["t"], loss=raw["loss"], residual_norm=raw["residual_norm"],
            directional_residual=raw["directional_residual"], W=raw["W"],
            a=np.array(self.target.a), status=raw["status"], t_final=raw["t_final"],
            method=method, n_steps=raw["n_steps"], n_rhs=raw["n_rhs"],
            n_rejected=raw["n_rejected"], wall_time=wall_time,
            norms=raw.get("norms"), states=raw.get("states"),
        )


# Longest step budget the core can count (a C long).
MAX_STEPS = 2**62


def _finite(x, what: str, W):
    """``x``, or the core's ValueError when it overflowed (for the torch backend)."""
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{what} overflows double precision (largest column norm of W "
                         f"{largest_column_norm(W):.3g})")
    return x


def solver_args(t_span, method, h, rtol, atol, t_eval, n_records, max_step, max_steps):
    """Validate the stepping options shared by every ``integrate``.

    Returns ``(t0, t1, (t_eval, method, h, rtol, atol, max_step, max_steps), n_records)``: the
    leading arguments of the core's integrate functions (``h`` NaN: chosen automatically) and
    how many records the caller asked for. A ``t_eval`` that ends before ``t1`` gets ``t1``
    appended, so that the run covers all of ``t_span`` as SciPy's ``solve_ivp`` does; the
    caller drops that record (:func:`trim_records`).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    t_span = real_array(t_span, "t_span", 1, (2,))
    t0, t1 = float(t_span[0]), float(t_span[1])
    if t1 < t0:
        raise ValueError(f"t_span must have t1 >= t0, got {tuple(t_span)}")
    if t_eval is None:
        t_eval = np.linspace(t0, t1, positive_int(n_records, "n_records", minimum=2))
    else:
        t_eval = real_array(t_eval, "t_eval", 1)
        if t_eval.size == 0 or t_eval[0] < t0 or t_eval[-1] > t1 or np.any(np.diff(t_eval) < 0):
            raise ValueError("t_eval must be non-empty, non-decreasing and inside t_span")
    n_rec = t_eval.size
    if t_eval[-1] < t1:
        t_eval = np.append(t_eval, t1)
    if method in ADAPTIVE:
        step = np.nan if h is None else real_number(h, "h", minimum=0.0, strict=True)
        real_number(rtol, "rtol", minimum=0.0)
        real_number(atol, "atol", minimum=0.0)
    else:
        if h is None:
            raise ValueError(f"method {method!r} needs a step h")
        step = real_number(h, "h", minimum=0.0, strict=True)
        n_steps = (t1 - t0) / step
        if n_steps > 2.0**53:
            raise ValueError(f"h = {step:g} over t_span ({t0:g}, {t1:g}) needs {n_steps:.3g} "
                             f"steps, more than 2^53 (9.0e15) can be counted: use a larger h")
    max_steps = positive_int(max_steps, "max_steps", minimum=0)
    if max_steps > MAX_STEPS:
        raise ValueError(f"max_steps must be <= 2**62 (0: no limit), got {max_steps}")
    max_step = float(max_step)
    if not max_step > 0:
        raise ValueError(f"max_step must be > 0, got {max_step}")
    return t0, t1, (t_eval, method, step, float(rtol), float(atol), max_step, max_steps), n_rec


# What a run records at each time (the first axis of each array is the record).
RECORD_KEYS = ("t", "loss", "residual_norm", "directional_residual", "norms", "states", "gap",
               "grad_norm_sq", "products", "imbalances")


def trim_records(raw: dict, n: int) -> dict:
    """``raw`` with only its first ``n`` records (drops the record at ``t1`` that
    :func:`solver_args` adds when ``t_eval`` ends early)."""
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
    if traj.status == "non-finite":
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
    if traj.status == "step-too-small":
        raise IntegrationError(
            f"the adaptive step fell to{step} at t = {traj.t_final:g}, below the resolution of t "
            f"(16 eps |t|): the flow is too fast there for double precision{where}",
            traj,
        )

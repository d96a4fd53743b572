"""Gradient flow of the over-parametrized deflation model towards a target.

``T = sum_k w_k^{(x)l} / ||w_k||^{l-2}``, ``L(W) = 1/2 ||T - T*||_F^2 + lam/2 ||W||_F^2`` and
``dW/dt = -grad L(W)``; the right-hand side and the steppers run in the compiled core, or with
``backend="cuda"``/``"torch"`` on PyTorch tensors (:mod:`tdflow.gpu`).
"""
from __future__ import annotations

import dataclasses
import time
from typing import List, Optional, Sequence

import numpy as np

from . import _core, gpu
from ._checks import positive_int, real_array, real_number
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
    backend : {"cpu", "cuda", "torch"}
        Where the right-hand side, the loss and the steppers run: "cpu" (the default) is the
        compiled C++ core; "cuda" the same model and steppers on PyTorch tensors on the GPU
        (needs ``pip install 'tdflow[gpu]'`` and a CUDA device); "torch" the PyTorch code on
        torch's default device (the CPU unless changed: for testing). See :mod:`tdflow.gpu`.

    States ``W`` are ``d x m`` float64 arrays, one component per column; Fortran order is used
    without a copy.
    """

    def __init__(self, target: Target, lam: float = 0.0, *, active_tol: float = 1e-16,
                 backend: str = "cpu"):
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
        self._core = _core.DeflationFlow(target.U, target.a, target.order, self.lam, self.active_tol)
        self._torch = None
        if backend != "cpu":
            self._torch = gpu.TorchFlow(target.U, target.a, target.order, self.lam, self.active_tol,
                                        gpu.device_for(backend), basis=target.is_basis)

    def __getstate__(self):
        # the compiled core object does not pickle: rebuild it from the arguments
        return dict(target=self.target, lam=self.lam, active_tol=self.active_tol,
                    backend=self.backend)

    def __setstate__(self, state):
        self.__init__(**state)

    def exact(self) -> "GradientFlow":
        """The same flow with every column in the residual (``active_tol = 0``)."""
        return GradientFlow(self.target, self.lam, active_tol=0.0, backend=self.backend)

    @property
    def order(self) -> int:
        return self.target.order

    def _state(self, W, name="W") -> np.ndarray:
        W = real_array(W, name, 2, (self.target.dim, None))
        if W.shape[1] < 1:
            raise ValueError(f"{name} must have m >= 1 columns")
        return W

    def rhs(self, W) -> np.ndarray:
        """``-grad L(W)`` (d x m)."""
        if self._torch is not None:
            tf = self._torch
            return tf.to_host(tf.rhs(tf.to_device(self._state(W))))
        return self._core.rhs(W)  # the core validates (same messages) without a second pass

    def loss(self, W) -> float:
        """``1/2 ||T - T*||_F^2 + lam/2 ||W||_F^2``."""
        if self._torch is not None:
            return self._torch.loss(self._torch.to_device(self._state(W)))
        return float(self._core.loss(W))

    def residual_norm(self, W) -> float:
        """``||T - T*||_F``; never negative (rounding limits it to about ``sqrt(l eps) ||T*||_F``)."""
        if self._torch is not None:
            tf = self._torch
            return float(np.sqrt(tf.residual_norm_squared(tf.to_device(self._state(W)))))
        return float(self._core.residual_norm(W))

    def directional_residual(self, W) -> np.ndarray:
        """``(T* - T)(u_i^{(x)l})`` for each target direction ``i``."""
        if self._torch is not None:
            tf = self._torch
            return tf.directional_residual(tf.to_device(self._state(W))).cpu().numpy()
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
            Recording times inside ``t_span`` (default: ``n_records`` evenly spaced times).
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
            records so far and the last finite state.
        KeyboardInterrupt
            Re-raised with the partial trajectory as its ``trajectory`` attribute.
        """
        W0 = self._state(W0, "W0")
        t0, t1, args = self._run_args(t_span, method, h, rtol, atol, t_eval, n_records, max_step,
                                      max_steps, save_norms, save_states)
        start = time.perf_counter()
        desc = f"{method} d={W0.shape[0]} m={W0.shape[1]}"
        with progress_bar(t0, t1, enabled=progress, desc=desc) as update:
            run = self._core.integrate if self._torch is None else self._torch.integrate
            raw = run(W0, t0, *args, update, 0.1)
        traj = self._trajectory(raw, method, time.perf_counter() - start)
        check_outcome(traj, raw["error"])
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
        ``err.trajectories``.
        """
        if self._torch is not None:
            raise NotImplementedError(
                f"integrate_batch runs replicas on the CPU threads: use backend='cpu', or call "
                f"integrate per replica with backend={self.backend!r}")
        W0s = real_array(W0s, "W0s", 3, (None, self.target.dim, None), order="C")
        if W0s.shape[0] < 1 or W0s.shape[2] < 1:
            raise ValueError(f"W0s must hold n >= 1 replicas of m >= 1 columns, got shape {W0s.shape}")
        t0, t1, args = self._run_args(t_span, method, h, rtol, atol, t_eval, n_records, max_step,
                                      max_steps, save_norms, save_states)
        chunk = max(1, 2 * _core.get_max_threads())  # progress and Ctrl-C between chunks
        trajs: List[Trajectory] = []
        with tqdm_replicas(W0s.shape[0], progress) as bar:
            for i in range(0, W0s.shape[0], chunk):
                start = time.perf_counter()
                raws = self._core.integrate_batch(W0s[i : i + chunk], t0, *args)
                wall = (time.perf_counter() - start) / len(raws)
                trajs.extend(self._trajectory(raw, method, wall) for raw in raws)
                bar.update(len(raws))
        for k, traj in enumerate(trajs):
            try:
                check_outcome(traj)
            except IntegrationError as err:
                err.args = (f"replica {k}: {err.args[0]}",)
                err.trajectories = trajs
                raise
        return trajs

    def _run_args(self, t_span, method, h, rtol, atol, t_eval, n_records, max_step, max_steps,
                  save_norms, save_states):
        t0, t1, args = solver_args(t_span, method, h, rtol, atol, t_eval, n_records, max_step, max_steps)
        return t0, t1, args + (bool(save_norms), bool(save_states))

    def _trajectory(self, raw: dict, method: str, wall_time: float) -> Trajectory:
        return Trajectory(
            t=raw["t"], loss=raw["loss"], residual_norm=raw["residual_norm"],
            directional_residual=raw["directional_residual"], W=raw["W"],
            a=np.array(self.target.a), status=raw["status"], t_final=raw["t_final"],
            method=method, n_steps=raw["n_steps"], n_rhs=raw["n_rhs"],
            n_rejected=raw["n_rejected"], wall_time=wall_time,
            norms=raw.get("norms"), states=raw.get("states"),
        )


def solver_args(t_span, method, h, rtol, atol, t_eval, n_records, max_step, max_steps):
    """Validate the stepping options shared by every ``integrate``.

    Returns ``(t0, t1, (t_eval, method, h, rtol, atol, max_step, max_steps))``, the leading
    arguments of the core's integrate functions (``h`` NaN: chosen automatically).
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
    if method in ADAPTIVE:
        step = np.nan if h is None else real_number(h, "h", minimum=0.0, strict=True)
        real_number(rtol, "rtol", minimum=0.0)
        real_number(atol, "atol", minimum=0.0)
    else:
        if h is None:
            raise ValueError(f"method {method!r} needs a step h")
        step = real_number(h, "h", minimum=0.0, strict=True)
    max_steps = positive_int(max_steps, "max_steps", minimum=0)
    max_step = float(max_step)
    if not max_step > 0:
        raise ValueError(f"max_step must be > 0, got {max_step}")
    return t0, t1, (t_eval, method, step, float(rtol), float(atol), max_step, max_steps)


def check_outcome(traj, error: Optional[BaseException] = None) -> None:
    """Raise what stopped an integration: an error from Python during the run (Ctrl-C, a failing
    progress callback) with the partial trajectory attached, or IntegrationError on NaN/Inf or a
    collapsed step. ``traj`` is any trajectory with ``status``, ``t_final`` and ``n_steps``."""
    if error is not None:
        try:
            error.trajectory = traj
        except AttributeError:
            pass
        raise error
    if traj.status == "non-finite":
        raise IntegrationError(
            f"the state became NaN/Inf after t = {traj.t_final:g} (step {traj.n_steps}); "
            "the trajectory holds the last finite state. Try a smaller step h.",
            traj,
        )
    if traj.status == "step-too-small":
        raise IntegrationError(
            f"the adaptive step fell below the resolution of t at t = {traj.t_final:g}", traj
        )

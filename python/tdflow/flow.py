"""Gradient flow of the over-parametrized deflation model towards a target.

``T = sum_k w_k^{(x)l} / ||w_k||^{l-2}``, ``L(W) = 1/2 ||T - T*||_F^2 + lam/2 ||W||_F^2`` and
``dW/dt = -grad L(W)``; the right-hand side and the steppers run in the compiled core, or with
``backend="cuda"``/``"torch"`` on PyTorch tensors (:mod:`tdflow.gpu`).
"""
from __future__ import annotations

import math
import time
from typing import List, Optional, Sequence

import numpy as np

from . import _core, gpu
from ._checks import choice, real_array, real_number
from .cp import CPTensor
from .options import SolverOptions
from .progress import progress_bar, tqdm_replicas
from .solution import (IntegrationError, Status, Trajectory, check_outcome,
                       largest_column_norm, trim_records)
from .target import Target

__all__ = ["GradientFlow", "IntegrationError", "Trajectory"]  # the last two: defined in tdflow.solution


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
        self._core = _core.GradientFlow(target.U, target.a, target.order, self.lam, self.active_tol,
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

    def integrate(self, W0, t_span: Sequence[float] = (0.0, 1.0), *,
                  options: Optional[SolverOptions] = None, save_norms: bool = False,
                  save_states: bool = False, progress: Optional[bool] = None,
                  **solver) -> Trajectory:
        """Integrate ``dW/dt = -grad L`` from ``W0`` over ``t_span = (t0, t1)``.

        Parameters
        ----------
        options : SolverOptions, optional
            The stepper and its recording times; the same fields can be given as keywords
            (``method="dop853", rtol=1e-8``), laid over ``options`` (default
            ``SolverOptions()``: dopri5, rtol 1e-8, 501 records). See :class:`SolverOptions`:
            ``method`` in {"dopri5", "dop853", "tsit5", "rk4", "euler"}, ``rtol``, ``atol``,
            ``h``, ``max_step``, ``max_steps``, ``t_eval``, ``n_records``. The run always covers all of
            ``t_span``, as SciPy's ``solve_ivp`` does, even when ``t_eval`` ends earlier; when
            ``max_steps`` runs out the trajectory returns with ``status == "max-steps"``.
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
        opts = SolverOptions.resolve(options, solver, where="integrate")
        W0 = self._state(W0, "W0")
        t0, t1, t_eval, n_rec = opts.grid(t_span)
        start = time.perf_counter()
        desc = f"{opts.method} d={W0.shape[0]} m={W0.shape[1]}"
        with progress_bar(t0, t1, enabled=progress, desc=desc) as update:
            run = self._core.integrate if self._torch is None else self._torch.integrate
            raw = run(W0, t0, t_eval, *opts.stepping(), bool(save_norms), bool(save_states),
                      update, 0.1)
        traj = self._trajectory(trim_records(raw, n_rec), opts.method, time.perf_counter() - start)
        check_outcome(traj, raw["error"], **self._diagnosis(traj, raw))
        return traj

    def integrate_batch(self, W0s, t_span: Sequence[float] = (0.0, 1.0), *,
                        options: Optional[SolverOptions] = None, save_norms: bool = False,
                        save_states: bool = False, progress: Optional[bool] = None,
                        **solver) -> List[Trajectory]:
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
        opts = SolverOptions.resolve(options, solver, where="integrate_batch")
        if self._torch is not None:
            raise NotImplementedError(
                f"integrate_batch runs replicas on the CPU threads: use backend='cpu', or call "
                f"integrate per replica with backend={self.backend!r}")
        W0s = real_array(W0s, "W0s", 3, (None, self.target.dim, None), order="C")
        if W0s.shape[0] < 1 or W0s.shape[2] < 1:
            raise ValueError(f"W0s must hold n >= 1 replicas of m >= 1 columns, got shape {W0s.shape}")
        t0, t1, t_eval, n_rec = opts.grid(t_span)
        n = W0s.shape[0]
        with tqdm_replicas(n, progress) as bar:
            def update(done: float) -> None:
                bar.update(int(done) - bar.n)

            start = time.perf_counter()
            raws, error = self._core.integrate_batch(W0s, t0, t_eval, *opts.stepping(),
                                                     bool(save_norms), bool(save_states), update,
                                                     0.1)
            wall = (time.perf_counter() - start) / n
        trajs: List[Optional[Trajectory]] = [
            None if raw is None else self._trajectory(trim_records(raw, n_rec), opts.method, wall)
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

    def _diagnosis(self, traj: "Trajectory", raw: dict) -> dict:
        """What check_outcome says about a run that failed in the core (NaN/Inf, tiny step)."""
        if raw.get("error") is not None or traj.status not in (Status.NON_FINITE, Status.STEP_TOO_SMALL):
            return {}
        overflows = False
        if traj.status == Status.NON_FINITE:
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
            a=np.array(self.target.a), status=Status(raw["status"]), t_final=raw["t_final"],
            method=method, n_steps=raw["n_steps"], n_rhs=raw["n_rhs"],
            n_rejected=raw["n_rejected"], wall_time=wall_time,
            norms=raw.get("norms"), states=raw.get("states"),
        )


def _finite(x, what: str, W):
    """``x``, or the core's ValueError when it overflowed (for the torch backend)."""
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{what} overflows double precision (largest column norm of W "
                         f"{largest_column_norm(W):.3g})")
    return x

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
from typing import Callable, Optional

import numpy as np

from . import io
from ._checks import flag, generator, positive_int, real_number
from .checkpoint import check_same_run, save_checkpoint, set_limits
from .deflation_result import DeflationResult
from .deflation_runner import Runner, start
from .options import SolverOptions
from .schedule import Schedule
from .solution import Status
from .target import Target

__all__ = ["deflate", "resume", "DeflationResult", "Schedule"]

# deflate's integrator defaults where they differ from SolverOptions() (per phase)
SOLVER = dict(rtol=1e-7, n_records=41)


def deflate(
    target: Target,
    m: int,
    schedule: Optional[Schedule] = None,
    rng=0,
    *,
    options: Optional[SolverOptions] = None,
    active_tol: float = 1e-16,
    checkpoint=None,
    checkpoint_every: int = 1,
    resume: bool = False,
    progress: Optional[bool] = None,
    callback: Optional[Callable[[DeflationResult], None]] = None,
    backend: str = "cpu",
    **solver,
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
    options : SolverOptions, optional
        The integrator of each phase; its fields can be given as keywords too (``method``,
        ``rtol``, ``atol``, ``h``, ``max_step``, ``max_steps``, ``n_records``), as in
        :meth:`GradientFlow.integrate`. Defaults: :data:`SOLVER` over ``SolverOptions()``
        (dopri5, ``rtol = 1e-7``, ``n_records = 41`` evenly spaced recording times per phase:
        the resolution of fit times and plots; ``t_eval`` does not apply).
    active_tol : float
        The flow's active-set tolerance (:class:`GradientFlow`).
    checkpoint : path, optional
        Save the result there (atomically) every ``checkpoint_every`` epochs and at the end;
        ``.npz`` is appended unless the name ends with it (``"run"`` writes and resumes
        ``run.npz``). The folder is checked for writing before the run starts; a checkpoint that
        cannot be written later (disk full) gives a ``RuntimeWarning`` and the run goes on: the
        result is returned all the same, with ``checkpoint_failed`` True when the file does not
        hold it (its final write failed: save it elsewhere).
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
    solver = SolverOptions.resolve(options, solver, SOLVER, where="deflate")
    if solver.t_eval is not None:
        raise ValueError("t_eval does not apply to deflate: each phase records n_records evenly "
                         "spaced times; give n_records")
    seed = rng if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool) else -1
    rng = generator(rng, "rng")
    progress, callback = _run_args(progress, callback)
    active_tol = real_number(active_tol, "active_tol", minimum=0.0)
    checkpoint_every = positive_int(checkpoint_every, "checkpoint_every")
    resume = flag(resume, "resume")
    if checkpoint is not None:
        checkpoint = io.check_writable(io.npz_path(checkpoint, "checkpoint"), "checkpoint")
    if resume and checkpoint is not None and checkpoint.exists():
        res = DeflationResult.load(checkpoint)
        check_same_run(res, target, m, int(seed), schedule, solver, active_tol, checkpoint)
        set_limits(res, schedule)
    else:
        res = start(target, m, int(seed), schedule, solver, active_tol, rng)
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
        set_limits(res, dataclasses.replace(res.schedule, **changes))
    if not res.finished:
        io.check_writable(checkpoint, "checkpoint")
    return _run(res, checkpoint, checkpoint_every, progress, callback, backend)


def _run_args(progress, callback):
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable or None, got {type(callback).__name__}")
    return (None if progress is None else flag(progress, "progress")), callback


def _run(res: DeflationResult, checkpoint, every, progress, callback,
         backend: str = "cpu") -> DeflationResult:
    from .progress import epoch_bar

    if res.finished:
        return res
    runner = Runner(res, backend)
    if res.n_epochs == 0 and res.residual_norm <= res.schedule.eps:
        res.status = Status.RECOVERED
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
                saved = save_checkpoint(res, checkpoint, warn=saved or res.finished)
            if callback is not None:
                callback(res)
    if checkpoint is not None and not ran:
        saved = save_checkpoint(res, checkpoint, warn=True)
    res.checkpoint_failed = checkpoint is not None and not saved
    return res

"""The compiled peer: the deflation model's gradient flow in JAX, solved by diffrax under ``jax.jit``.

This is what a demanding user writes today for speed in Python: the vector field in
``jax.numpy`` (unit directions and ``G*G*G``, as ``common.numpy_rhs``), ``diffrax.diffeqsolve``
with an adaptive Runge-Kutta solver (Dopri5, Dopri8, Tsit5), ``PIDController(rtol, atol)``,
``SaveAt(ts=...)``, float64, the whole solve under ``jax.jit`` (and ``jax.jit(jax.vmap(...))`` for
many replicas at once). Compile time is measured apart: the first call traces and compiles, the
later calls only run.

JAX and diffrax are optional (``pip install 'tdflow[bench]'`` installs them): without them
``AVAILABLE`` is False and the scripts print ``SKIPPED``.
"""
from __future__ import annotations

import time

import numpy as np

from common import gram_powers

try:  # optional peer
    import jax
    import jax.numpy as jnp
    import diffrax

    jax.config.update("jax_enable_x64", True)
    AVAILABLE = True
except ImportError:  # pragma: no cover
    jax = jnp = diffrax = None
    AVAILABLE = False

SKIPPED = "diffrax not installed: skipped"
SOLVERS = ("Dopri5", "Dopri8", "Tsit5")
# RHS evaluations per step, accepted or rejected (the stages less the one reused: all three are
# first-same-as-last), and those outside the steps (the automatic first step size): counted by
# a callback in the vector field of diffrax 0.7.2 (``python bench/peers_jax.py`` checks them)
STAGES_PER_STEP = {"Dopri5": 6, "Dopri8": 13, "Tsit5": 6}
EXTRA_RHS = {"Dopri5": 2, "Dopri8": 1, "Tsit5": 2}


def jax_rhs(U, a, W, order=4, lam=0.0):
    """-grad L in jax.numpy, written as common.numpy_rhs: unit directions, products, no powers."""
    n = jnp.sqrt(jnp.sum(W * W, axis=0))
    Wb = W / jnp.where(n > 0, n, 1.0)
    Pu, Pw = gram_powers(U.T @ Wb, Wb.T @ Wb, order)
    P = U @ (a[:, None] * Pu) - Wb @ ((n * n)[:, None] * Pw)
    s = jnp.sum(P * Wb, axis=0)
    return order * n * P - ((order - 2) * s + lam) * W


def solver_fn(U, a, solver, ts, rtol, atol=1e-30, *, order=4, lam=0.0, batch=False,
              max_steps=100_000, rhs=None):
    """A jitted ``W0 -> (states (n, d, m), n_steps, n_rejected)`` over ``[ts[0], ts[-1]]``.

    ``batch``: ``W0`` is (replicas, d, m) and the solve is ``jit(vmap(diffeqsolve))``.
    ``rhs``: the vector field ``(U, a, W) -> dW`` (default ``jax_rhs`` of ``order``, ``lam``).
    """
    U, a, ts = jnp.asarray(U), jnp.asarray(a), jnp.asarray(ts)
    rhs = rhs or (lambda U, a, W: jax_rhs(U, a, W, order, lam))
    term = diffrax.ODETerm(lambda t, W, args: rhs(U, a, W))
    stepper = getattr(diffrax, solver)()
    controller = diffrax.PIDController(rtol=rtol, atol=atol)
    saveat = diffrax.SaveAt(ts=ts)

    def solve(W0):
        sol = diffrax.diffeqsolve(term, stepper, t0=ts[0], t1=ts[-1], dt0=None, y0=W0,
                                  saveat=saveat, stepsize_controller=controller, max_steps=max_steps)
        return sol.ys, sol.stats["num_steps"], sol.stats["num_rejected_steps"]

    return jax.jit(jax.vmap(solve) if batch else solve)


def n_rhs(solver, n_steps):
    """RHS evaluations of a solve that took ``n_steps`` steps (accepted and rejected)."""
    return STAGES_PER_STEP[solver] * np.asarray(n_steps) + EXTRA_RHS[solver]


def time_jitted(fn, x, repeat):
    """``(out, first, best)``: the first call's wall time (trace, compile, run) and the best of
    ``repeat`` later calls; every call waits for the result (``block_until_ready``)."""
    x = jnp.asarray(x)
    start = time.perf_counter()
    out = jax.block_until_ready(fn(x))
    first = time.perf_counter() - start
    best = np.inf
    for _ in range(repeat):
        start = time.perf_counter()
        out = jax.block_until_ready(fn(x))
        best = min(best, time.perf_counter() - start)
    return jax.tree_util.tree_map(np.asarray, out), first, best


def solve_timed(U, a, W0, ts, solver, rtol, repeat, *, atol=1e-30, batch=False):
    """Solve from ``W0`` (or a stack of them, ``batch``) with diffrax ``solver`` under jit.

    Returns ``(states, n_rhs, seconds, compile)``: the recorded states as NumPy, (n, d, m) or
    (replicas, n, d, m); RHS evaluations (the most over replicas: a vmapped solve steps all of
    them until the last finishes); the best of ``repeat`` calls after the first; and the first
    call's excess over it (tracing and compilation).
    """
    fn = solver_fn(U, a, solver, ts, rtol, atol, batch=batch)
    (states, steps, _), first, best = time_jitted(fn, W0, repeat)
    return states, int(np.max(n_rhs(solver, steps))), best, first - best


def rhs_count_check(solver="Dopri5"):
    """Count the RHS calls of a short solve with a callback and compare with ``n_rhs``."""
    from jax.experimental import io_callback

    count = [0]

    def bump():
        count[0] += 1
        return np.zeros((), np.int32)

    def counted(U, a, W):
        token = io_callback(bump, jax.ShapeDtypeStruct((), jnp.int32), ordered=True)
        return jax_rhs(U, a, W) + 0.0 * token

    U = np.eye(3)[:, :2]
    W0 = np.random.default_rng(0).standard_normal((3, 4))
    fn = solver_fn(U, np.array([1.0, 0.5]), solver, np.linspace(0, 5, 11), 1e-8, rhs=counted)
    _, steps, _ = fn(jnp.asarray(W0))
    return count[0], int(n_rhs(solver, steps))


if __name__ == "__main__":
    if not AVAILABLE:
        raise SystemExit(SKIPPED)
    for name in SOLVERS:
        counted, formula = rhs_count_check(name)
        print(f"{name}: {counted} RHS counted, {formula} from the step count")

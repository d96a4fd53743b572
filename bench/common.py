"""Shared pieces of the benchmarks: timing, the machine's DGEMM peak, and the peers' RHS.

The peers are what users write today: the deflation-model right-hand side in NumPy (naive and
well written), in PyTorch (when installed), driven by hand-written RK4 or SciPy's solve_ivp.
Every benchmark checks tdflow's answer against a peer before it times anything.
"""
from __future__ import annotations

import resource
import time

import numpy as np

try:  # optional peer
    import torch
except ImportError:  # pragma: no cover
    torch = None


def best_time(fn, repeat: int = 5, number: int = 1) -> float:
    """Best wall time of ``number`` calls, over ``repeat`` tries, per call."""
    best = np.inf
    for _ in range(repeat):
        t = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - t) / number)
    return best


def best_run(fn, repeat: int = 3):
    """``(fn(), seconds)``: the last call's output and the least wall time of ``repeat`` calls
    (time-to-solution as the minimum of N runs)."""
    best, out = np.inf, None
    for _ in range(max(1, repeat)):
        out, seconds = timed(fn)
        best = min(best, seconds)
    return out, best


def timed(fn):
    """``(fn(), wall seconds)`` of one call."""
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def dgemm_peak(n: int = 2000) -> float:
    """GFLOP/s of NumPy's matmul on an n x n product (best of 3): the machine's reference rate."""
    A = np.random.default_rng(0).standard_normal((n, n))
    B = np.random.default_rng(1).standard_normal((n, n))
    A @ B
    return 2 * n**3 / best_time(lambda: A @ B, repeat=3) / 1e9


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def gram_powers(Gu, Gw, order):
    """``(Gu**(order-1), Gw**(order-1))`` by repeated products (NumPy or jax.numpy arrays)."""
    Pu, Pw = Gu, Gw
    for _ in range(order - 2):
        Pu = Pu * Gu
        Pw = Pw * Gw
    return Pu, Pw


def numpy_rhs(U, a, W, order=4, lam=0.0):
    """-grad L written well in NumPy: unit directions, G*G*G instead of G**3."""
    n = np.sqrt(np.einsum("ij,ij->j", W, W))
    Wb = W / np.where(n > 0, n, 1.0)
    Pu, Pw = gram_powers(U.T @ Wb, Wb.T @ Wb, order)
    P = U @ (a[:, None] * Pu) - Wb @ ((n * n)[:, None] * Pw)
    s = np.einsum("ij,ij->j", P, Wb)
    return order * n * P - ((order - 2) * s + lam) * W


def numpy_rhs_naive(U, a, W, order=4, lam=0.0):
    """The same as most scripts write it: w / ||w||^(l-2) and G ** (l-1)."""
    n = np.linalg.norm(W, axis=0)
    c = n ** (-(order - 2))
    G = W.T @ W
    Gu = U.T @ W
    Rw = U @ (a[:, None] * Gu ** (order - 1)) - W @ (c[:, None] * G ** (order - 1))
    Rww = np.sum(Rw * W, axis=0)
    return order * Rw / n ** (order - 2) - (order - 2) * Rww / n**order * W - lam * W


def torch_rhs(U, a, W, order=4, lam=0.0):
    """The well-written RHS in PyTorch (CPU, float64)."""
    n = torch.sqrt((W * W).sum(0))
    Wb = W / n
    Gu = U.T @ Wb
    Gw = Wb.T @ Wb
    P = U @ (a[:, None] * Gu ** (order - 1)) - Wb @ ((n * n)[:, None] * Gw ** (order - 1))
    s = (P * Wb).sum(0)
    return order * n * P - ((order - 2) * s + lam) * W


def rk4(f, W, h, n_steps):
    for _ in range(n_steps):
        k1 = f(W)
        k2 = f(W + 0.5 * h * k1)
        k3 = f(W + 0.5 * h * k2)
        k4 = f(W + h * k3)
        W = W + (h / 6) * (k1 + 2 * k2 + 2 * k3 + k4)
    return W


def fit_times(U, a, states, t):
    """First time the directional residual (T* - T)(u_i^4) of a peer's states drops below a_i / 2."""
    import tdflow

    flow = tdflow.GradientFlow(tdflow.Target(U, a), active_tol=0.0)
    res = np.array([flow.directional_residual(W) for W in states])
    below = res <= 0.5 * a
    out = np.asarray(t)[np.argmax(below, axis=0)].astype(float)
    out[~below.any(axis=0)] = np.nan
    return out


def table(rows, header):
    """A plain-text table."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = "  ".join(f"{{:>{w}}}" for w in widths)
    out = [line.format(*header), line.format(*["-" * w for w in widths])]
    out += [line.format(*map(str, r)) for r in rows]
    return "\n".join(out)

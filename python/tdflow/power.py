"""The tensor power method with deflation (Anandkumar, Ge, Hsu, Kakade, Telgarsky 2014).

Algorithm 1 of the deflation paper's baseline: repeat ``rank`` times — from ``n_starts`` random
unit vectors run ``n_iters`` iterations of ``w <- R(w^{l-1}, I) / ||R(w^{l-1}, I)||`` on the
current residual ``R`` (all starts batched in one contraction), keep the start with the largest
``R(w^l)``, polish it with ``n_iters`` more iterations, take ``lam = R(w^l)`` and deflate
``R <- R - lam w^{(x)l}``. The residual is never a dense array: it stays a :class:`CPTensor`, and
deflating appends the column ``w`` with coefficient ``-lam``. For odd ``l`` the sign of ``w`` is
chosen so that ``lam >= 0`` (``(-w)^{(x)l} = -w^{(x)l}``).

For an orthogonally decomposable tensor this recovers every component exactly (up to rounding);
for non-orthogonal components each deflation leaves a small error behind.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from ._checks import generator, positive_int, real_number
from .cp import CPTensor
from .sampling import sphere
from .target import Target


@dataclasses.dataclass
class PowerResult:
    """What the power method found.

    ``weights`` (k,) and ``components`` (d, k) unit columns, in the order found;
    ``residual_norm`` (k+1,) ``||T - sum_{j<=i} lam_j w_j^{(x)l}||_F`` after ``i`` deflations;
    ``relative_error`` the same divided by ``||T||_F``; ``n_contractions`` the number of vector
    contractions ``R(w^{l-1}, I)``; ``work`` their multiply-adds (``2 k_R d`` each, ``k_R`` the
    residual's CP rank at the time); ``wall_time`` seconds. The norms come from ``<R, R>`` of the
    CP residual, so relative errors below about 1e-8 are rounding.
    """

    weights: np.ndarray
    components: np.ndarray
    residual_norm: np.ndarray
    relative_error: np.ndarray
    n_contractions: int
    work: float
    wall_time: float

    @property
    def rank(self) -> int:
        return self.weights.size

    def tensor(self, order: int) -> CPTensor:
        """The fitted tensor ``sum_j lam_j w_j^{(x)l}``."""
        return CPTensor(self.components, self.weights, order)


def tensor_power_method(T, rank: int, *, n_starts: int = 20, n_iters: int = 30, rng=0,
                        tol: float = 1e-12) -> PowerResult:
    """Decompose ``T`` (a :class:`CPTensor` or a :class:`Target`) by power iterations with deflation.

    Parameters
    ----------
    rank : int
        Number of components to extract (at most).
    n_starts, n_iters : int
        Random starts per component and iterations per start (the winner gets ``n_iters`` more).
    rng : Generator or int
        Draws the starts.
    tol : float
        Stop early when the best ``lam`` is ``<= tol * ||T||_F`` (nothing left to extract).
    """
    if isinstance(T, Target):
        T = T.tensor
    if not isinstance(T, CPTensor):
        raise TypeError(f"T must be a CPTensor or a Target, got {type(T).__name__}")
    rank = positive_int(rank, "rank")
    n_starts = positive_int(n_starts, "n_starts")
    n_iters = positive_int(n_iters, "n_iters", minimum=0)
    tol = real_number(tol, "tol", minimum=0.0)
    g = generator(rng)
    d, l = T.dim, T.order
    start = time.perf_counter()
    tnorm = T.norm()
    R = T
    weights, comps, rnorms = [], [], [R.norm()]
    calls, work = 0, 0.0

    def iterate(V, n):
        nonlocal calls, work
        for _ in range(n):
            X = R.contract(V)
            calls += V.shape[1]
            work += 2.0 * R.rank * V.shape[1] * d
            norms = np.linalg.norm(X, axis=0)
            ok = norms > 0  # a start that R annihilates stays where it is
            V[:, ok] = X[:, ok] / norms[ok]
        return V

    for _ in range(rank):
        V = iterate(sphere(d, n_starts, 1.0, g), n_iters)
        vals = R.evaluate(V)
        work += R.rank * V.shape[1] * d
        score = np.abs(vals) if l % 2 else vals
        w = iterate(V[:, [int(np.argmax(score))]].copy(order="F"), n_iters)[:, 0]
        lam = R.evaluate(w)
        if l % 2 and lam < 0:
            w, lam = -w, -lam
        if not lam > tol * tnorm:
            break
        weights.append(lam)
        comps.append(w)
        R = R + CPTensor(w[:, None], [-lam], l)
        rnorms.append(R.norm())
    rnorms = np.asarray(rnorms)
    return PowerResult(
        weights=np.asarray(weights, dtype=float),
        components=np.asfortranarray(np.array(comps, dtype=float).reshape(len(comps), d).T),
        residual_norm=rnorms, relative_error=rnorms / tnorm if tnorm > 0 else rnorms,
        n_contractions=calls, work=work, wall_time=time.perf_counter() - start,
    )

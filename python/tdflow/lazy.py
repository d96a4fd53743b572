"""The lazy-training (linearised, NTK) baseline, for small d.

Wang, Wu, Lee, Ma, Ge (2020), Theorem 1 (quoted): "Suppose the ground truth tensor
T* = [u*]^{⊗l}, where u* is uniformly sampled from the unit sphere S^{d-1}. Lazy training
(defined as below) requires Ω(d^{l-1}) components to achieve o(1) error in expectation." Lazy
training there: "the model can only capture tensors in the linear subspace
S_U = span{P_sym vec(u_i^{⊗l-1} ⊗ δ_i)}_{i=1}^m" (u_i the initialisation, δ_i arbitrary), whose
dimension "is upperbounded by dm", while the symmetric tensors have dimension Ω(d^l).

This module computes that fit. For the deflation model ``sum_k w_k^{(x)l} / ||w_k||^{l-2}`` and
for the beyond-lazy variant ``sum_k s_k c_k^{l-2} w_k^{(x)l}`` alike, the derivative of component
k in direction ``δ`` lies in ``{P_sym(w_k^{(x)(l-1)} (x) δ) : δ in R^d}`` and spans all of it (the
radial part is the case ``δ = w_k``). Since ``T(W0)`` itself lies in that span, the best lazy fit
is the orthogonal projection of ``T*`` onto::

    S(W0) = span{ P_sym(w_k^{(x)(l-1)} (x) e_j) : k <= m, j <= d },

the paper's ``S_U``, which depends only on the directions of the columns (not on the
initialisation's scale or on which of the two models is linearised).

tdflow's exact-fit count (a consequence of the dimension bound, not the paper's theorem):
``dim S <= min(m d, C(d+l-1, l))``, so an exact fit of every target, and of a generic one
(even of rank 1), needs ``m >= C(d+l-1, l) / d ~ d^{l-1} / l!`` columns (:attr:`LazySweep.m_needed`).
For generic columns equality holds (Alexander-Hirschowitz: ``S`` is the tangent space of the
m-th secant variety of the Veronese variety) except in the defective cases ``(l, d, m)`` =
``(3, 5, 7)``, ``(4, 3, 5)``, ``(4, 4, 9)``, ``(4, 5, 14)``, where the span falls one short.
Theorem 1 says more: even an o(1) error, in expectation over a random rank-1 target, needs
Ω(d^{l-1}) columns. Measured (tests/test_lazy.py): for ``T* = [u*]^{(x)l}``, u* uniform, the
mean squared relative error of the fit falls roughly like ``1 - m d / C(d+l-1, l)``.

The least-squares problem is solved in the symmetric space: one row per multi-index
``i_1 <= ... <= i_l``, weighted by the square root of its number of permutations so that the
Euclidean norm of a row vector is the Frobenius norm of the tensor. This forms dense
``C(d+l-1, l) x m d`` arrays: it is meant for small d only.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import time
from typing import Sequence

import numpy as np

from ._checks import generator, positive_int, real_array
from .display import Summarised
from .sampling import sphere
from .target import Target

_LIMIT = 20_000_000  # entries of the feature matrix


def _target_arg(target) -> Target:
    if not isinstance(target, Target):
        raise TypeError(f"target must be a tdflow.Target, got {type(target).__name__}")
    return target


def symmetric_dim(d: int, order: int) -> int:
    """``C(d + l - 1, l)``: the dimension of symmetric order-``l`` tensors on R^d."""
    d = positive_int(d, "d")
    order = positive_int(order, "order")
    return math.comb(d + order - 1, order)


def _multi_indices(d, l):
    idx = np.array(list(itertools.combinations_with_replacement(range(d), l)), dtype=np.intp)
    counts = np.array([math.factorial(l) / np.prod([math.factorial(c) for c in np.bincount(row)])
                       for row in idx])
    return idx, np.sqrt(counts)


def _target_vector(target, idx, weight):
    P = np.ones((idx.shape[0], target.rank))
    for q in range(idx.shape[1]):
        P *= target.U[idx[:, q], :]
    return weight * (P @ target.a)


def lazy_features(W, order: int) -> np.ndarray:
    """The matrix (``C(d+l-1, l) x m d``) whose column ``(k, j)`` (index ``k d + j``) is
    ``P_sym(w_k^{(x)(l-1)} (x) e_j)`` in the weighted symmetric coordinates."""
    W = real_array(W, "W", 2)
    d, m = W.shape
    if d < 1 or m < 1:
        raise ValueError(f"W must have d >= 1 rows and m >= 1 columns, got shape {W.shape}")
    l = positive_int(order, "order", minimum=2)
    n_rows = symmetric_dim(d, l)
    if n_rows * m * d > _LIMIT:
        raise ValueError(
            f"the lazy fit would form a {n_rows} x {m * d} matrix; it is meant for small d and m"
        )
    idx, weight = _multi_indices(d, l)
    P = W[idx, :]  # (N, l, m)
    A = np.zeros((n_rows, m, d))
    rows = np.arange(n_rows)
    for p in range(l):
        others = np.prod(np.delete(P, p, axis=1), axis=1)  # (N, m)
        A[rows, :, idx[:, p]] += others / l
    A *= weight[:, None, None]
    return A.reshape(n_rows, m * d)


@dataclasses.dataclass(repr=False)
class LazyFit(Summarised):
    """One lazy fit: ``relative_error`` ``||T_fit - T*||_F / ||T*||_F``, ``span_dim`` the dimension
    of ``S(W0)``, ``sym_dim`` ``C(d+l-1, l)``, ``delta`` (d x m) the fitted directions
    (``T_fit = sum_k P_sym(w_k^{(x)(l-1)} (x) δ_k)``), ``work`` the least squares' multiply-adds
    (about ``N p min(N, p)`` for an ``N x p`` matrix), ``wall_time`` seconds."""

    m: int
    relative_error: float
    span_dim: int
    sym_dim: int
    delta: np.ndarray
    work: float
    wall_time: float

    def _summary(self) -> list:
        return [("m", self.m), ("relative_error", self.relative_error),
                ("span_dim", self.span_dim), ("sym_dim", self.sym_dim), ("work", self.work),
                ("wall_time", self.wall_time)]


def lazy_fit(target: Target, W0) -> LazyFit:
    """Least-squares fit of ``target`` within the linearisation around ``W0`` (d x m)."""
    target = _target_arg(target)
    W0 = real_array(W0, "W0", 2, (target.dim, None))
    if W0.shape[1] < 1:
        raise ValueError("W0 must have m >= 1 columns")
    start = time.perf_counter()
    d, m, l = target.dim, W0.shape[1], target.order
    A = lazy_features(W0, l)
    idx, weight = _multi_indices(d, l)
    b = _target_vector(target, idx, weight)
    x, _, rank, _ = np.linalg.lstsq(A, b, rcond=None)
    bnorm = float(np.linalg.norm(b))
    err = float(np.linalg.norm(A @ x - b))
    N, p = A.shape
    return LazyFit(
        m=m, relative_error=err / bnorm if bnorm > 0 else err, span_dim=int(rank),
        sym_dim=N, delta=np.asfortranarray(x.reshape(m, d).T), work=float(N) * p * min(N, p),
        wall_time=time.perf_counter() - start,
    )


@dataclasses.dataclass(repr=False)
class LazySweep(Summarised):
    """Lazy fits for growing ``m`` on nested initialisations (arrays over ``ms``; ``d`` the dimension)."""

    m: np.ndarray
    relative_error: np.ndarray
    span_dim: np.ndarray
    sym_dim: int
    work: np.ndarray
    wall_time: np.ndarray
    d: int

    def _summary(self) -> list:
        return [("d", self.d), ("m", self.m), ("relative_error", self.relative_error),
                ("span_dim", self.span_dim), ("sym_dim", self.sym_dim),
                ("m_needed", self.m_needed)]

    @property
    def m_needed(self) -> int:
        """``ceil(C(d+l-1, l) / d)``: the fewest columns whose span can hold every symmetric tensor
        (generic columns reach it outside the Alexander-Hirschowitz cases, see the module)."""
        return -(-self.sym_dim // self.d)


def lazy_sweep(target: Target, ms: Sequence[int], rng) -> LazySweep:
    """Lazy fits with the first ``m`` columns of one draw of ``max(ms)`` unit columns, for each
    ``m`` in ``ms``; the spans are nested, so the error does not grow with ``m``."""
    target = _target_arg(target)
    ms = [positive_int(m, "m") for m in ms]
    if not ms:
        raise ValueError("ms must not be empty")
    W = sphere(target.dim, max(ms), 1.0, generator(rng))
    fits = [lazy_fit(target, W[:, :m]) for m in ms]
    return LazySweep(
        m=np.array(ms), relative_error=np.array([f.relative_error for f in fits]),
        span_dim=np.array([f.span_dim for f in fits]), sym_dim=fits[0].sym_dim,
        work=np.array([f.work for f in fits]), wall_time=np.array([f.wall_time for f in fits]),
        d=target.dim,
    )

"""The tensor power method with deflation (Anandkumar, Ge, Hsu, Kakade, Telgarsky 2014).

Algorithm 1 of the deflation paper's baseline: repeat ``rank`` times — from ``n_starts`` random
unit vectors run ``n_iters`` iterations of ``w <- R(w^{l-1}, I) / ||R(w^{l-1}, I)||`` on the
current residual ``R`` (all starts batched in one contraction), keep the start with the largest
``R(w^l)``, polish it with ``n_iters`` more iterations, take ``lam = R(w^l)`` and deflate
``R <- R - lam w^{(x)l}``. The residual is never a dense array: it stays a :class:`CPTensor`, and
deflating appends the column ``w`` with coefficient ``-lam``. For odd ``l`` the sign of ``w`` is
chosen so that ``lam >= 0`` (``(-w)^{(x)l} = -w^{(x)l}``).

A dense symmetric array (TensorLy's input) is taken as it stands: the residual is that array
plus the CP columns found, and each contraction costs the array's ``d^l`` multiply-adds. It is not
converted first: an exact CP form of a general symmetric tensor is itself a decomposition (the
problem being solved), and the plain one by polarisation has ``2^(l-1)`` terms per monomial,
``C(d+l-1, l) 2^(l-1)`` in all: about ``2^(l-1) d^(l+1) / l!`` work a contraction. Measured (``bench/bench_tensorly.py``, d = 40, l = 4,
r = 3-5, one thread, loaded 2-core machine): 1.2-1.9 s from the dense array (memory-bound: one
pass over it per iteration, all starts batched), 4-12 ms from the CP form, 8.4-10.9 s for
TensorLy's ``symmetric_parafac_power_iteration`` with as many power steps.

For an orthogonally decomposable tensor this recovers every component exactly (up to rounding);
for non-orthogonal components each deflation leaves a small error behind.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from . import dense
from ._checks import generator, positive_int, real_number, show
from .cp import CPTensor
from .display import Summarised
from .sampling import sphere
from .target import Target
from .tensorly_interop import from_tensorly, is_tensorly_cp

# The exact residual of a CP input is formed in an s-dimensional basis (s <= d) when its s^l
# entries and the k s^l work of forming them stay below these; beyond, the Gram form.
_CORE_ENTRIES = 1 << 20
_CORE_WORK = 1 << 30


@dataclasses.dataclass(repr=False)
class PowerResult(Summarised):
    """What the power method found.

    ``weights`` (k,) and ``components`` (d, k) unit columns, in the order found;
    ``residual_norm`` (k+1,) ``||T - sum_{j<=i} lam_j w_j^{(x)l}||_F`` after ``i`` deflations;
    ``relative_error`` the same divided by ``residual_norm[0] = ||T||_F``; ``n_contractions``
    the number of vector contractions ``R(w^{l-1}, I)``; ``work`` their multiply-adds
    (``2 k_R d`` each, ``k_R`` the residual's CP rank at the time, plus ``d^l + ... + d^2`` for a
    dense input); ``wall_time`` seconds. ``residual_method`` says how the norms were computed:

    - ``"dense"`` (dense input): every entry of the difference formed, ``k d^l`` work;
    - ``"projected"`` (CP input ``T = sum_a c_a z_a^{(x)l}``, ``k_T`` columns): Householder QR
      ``[Z, W] = Q Y``, then the same entrywise differences for ``sum_a c_a y_a^{(x)l} -
      sum_j lam_j y_j^{(x)l}`` in the ``s = min(d, k_T + k)`` coordinates of ``Q`` (an
      orthonormal change of basis keeps the norm; QR is columnwise backward stable), about
      ``(2 k_T + k) s^l`` work once. Used when ``s^l <= 2^20`` and ``k_T s^l <= 2^30``;
    - ``"gram"`` (larger CP inputs): ``sqrt(c^T (G^{o l}) c)`` with ``G`` the Gram matrix of all
      columns, whose terms of size ``||T||^2`` cancel: its floor is about ``sqrt(eps) ||T||_F``
      (up to 3e-8 relative measured; a slightly negative ``<R, R>`` reads as 0).

    The first two agree with the dense residual to within ``2e-15 ||T||_F`` at every deflation,
    down to the last (measured over 100 random-rotation targets, d = 4..8, l = 3..5, in
    ``tests/test_power_interop.py``).
    """

    weights: np.ndarray
    components: np.ndarray
    residual_norm: np.ndarray
    relative_error: np.ndarray
    n_contractions: int
    work: float
    wall_time: float
    residual_method: str = "gram"

    @property
    def rank(self) -> int:
        return self.weights.size

    def _summary(self) -> list:
        return [("rank", self.rank), ("d", self.components.shape[0]), ("weights", self.weights),
                ("relative_error", self.relative_error[-1]),
                ("residual_method", self.residual_method),
                ("n_contractions", self.n_contractions), ("work", self.work),
                ("wall_time", self.wall_time)]

    def tensor(self, order: int) -> CPTensor:
        """The fitted tensor ``sum_j lam_j w_j^{(x)l}``."""
        return CPTensor(self.components, self.weights, order)


def tensor_power_method(T, rank: int, *, n_starts: int = 20, n_iters: int = 30, rng=0,
                        tol: float = 1e-12, symmetry_tol: float = dense.SYMMETRY_TOL) -> PowerResult:
    """Decompose ``T`` by power iterations with deflation.

    Parameters
    ----------
    T : CPTensor, Target, TensorLy CPTensor or dense array
        The symmetric tensor. TensorLy's ``CPTensor`` / ``(weights, factors)`` must have
        symmetric factors (column ``j`` of every factor matrix parallel to column ``j`` of the
        first within ``symmetry_tol``; see :func:`tdflow.tensorly_interop.from_tensorly`); its
        symmetric ``(weights, factor)`` pair goes through ``CPTensor.from_tensorly(T, order=l)``.
        A dense array of shape ``(d,)*l`` must be symmetric (``|T - T.swapaxes(i, i+1)| <=
        symmetry_tol * max|T|``); it is never modified (nor copied if C-ordered float64); every contraction
        then costs its ``d^l`` multiply-adds (one GEMM with its ``(d^(l-1), d)`` unfolding per
        batch of starts) against ``2 k d`` for a CP tensor of rank ``k``.
    rank : int
        Number of components to extract (at most).
    n_starts, n_iters : int
        Random starts per component and iterations per start (the winner gets ``n_iters`` more).
    rng : Generator or int
        Draws the starts.
    tol : float
        Stop early when the best ``lam`` is ``<= tol * ||T||_F`` (nothing left to extract).
    symmetry_tol : float
        Relative asymmetry allowed in a dense or TensorLy input.
    """
    symmetry_tol = real_number(symmetry_tol, "symmetry_tol", minimum=0.0)
    D, T = _as_input(T, symmetry_tol)
    rank = positive_int(rank, "rank")
    n_starts = positive_int(n_starts, "n_starts")
    n_iters = positive_int(n_iters, "n_iters", minimum=0)
    tol = real_number(tol, "tol", minimum=0.0)
    g = generator(rng)
    d, l = T.dim, T.order
    start = time.perf_counter()
    tnorm = T.norm() if D is None else _dense_norm(D)
    R = T  # a dense input's residual is D + R, R holding the deflations
    weights, comps = [], []
    calls, work = 0, 0.0
    dense_work = 0.0 if D is None else dense.contract_work(d, l)

    def contract(V):
        nonlocal calls, work
        calls += V.shape[1]
        work += (2.0 * R.rank * d + dense_work) * V.shape[1]
        if D is None:
            return R.contract(V)
        # NumPy for the few deflated columns too: interleaving OpenBLAS's and the core's OpenMP
        # thread pools (both spin-wait) made a d = 40, l = 3 run 9x slower on a loaded 2-core machine
        return dense.contract(D, V) + R.Z @ (R.c[:, None] * (R.Z.T @ V) ** (l - 1))

    def evaluate(V):
        nonlocal work
        if D is None:
            work += R.rank * V.shape[1] * d
            return R.evaluate(V)
        return np.einsum("ij,ij->j", V, contract(V))

    def iterate(V, n):
        for _ in range(n):
            X = contract(V)
            norms = np.linalg.norm(X, axis=0)
            ok = norms > 0  # a start that R annihilates stays where it is
            V[:, ok] = X[:, ok] / norms[ok]
        return V

    for _ in range(rank):
        V = iterate(sphere(d, n_starts, 1.0, g), n_iters)
        vals = evaluate(V)
        score = np.abs(vals) if l % 2 else vals
        w = iterate(V[:, [int(np.argmax(score))]].copy(order="F"), n_iters)
        lam = float(evaluate(w)[0])
        w = w[:, 0]
        if l % 2 and lam < 0:
            w, lam = -w, -lam
        if not lam > tol * tnorm:
            break
        weights.append(lam)
        comps.append(w)
        R = R + CPTensor(w[:, None], [-lam], l)
    lam = np.asarray(weights, dtype=float)
    W = np.asfortranarray(np.array(comps, dtype=float).reshape(len(comps), d).T)
    if D is not None:
        rnorms, method = dense.deflated_norms(D, W, lam), "dense"
    else:
        rnorms, method = _cp_residual_norms(T, W, lam)
    return PowerResult(
        weights=lam, components=W,
        residual_norm=rnorms, relative_error=rnorms / rnorms[0] if rnorms[0] > 0 else rnorms,
        n_contractions=calls, work=work, wall_time=time.perf_counter() - start,
        residual_method=method,
    )


def _as_input(T, symmetry_tol):
    """``(D, R)``: a dense symmetric array (or None) and the CP part of ``T``."""
    if isinstance(T, Target):
        return None, T.tensor
    if isinstance(T, CPTensor):
        return None, T
    if is_tensorly_cp(T):
        return None, from_tensorly(T, symmetry_tol=symmetry_tol, name="T")
    if isinstance(T, (np.ndarray, list, tuple)) or hasattr(T, "__array__"):
        D = dense.symmetric_array(T, "T", symmetry_tol)
        return D, CPTensor(np.zeros((D.shape[0], 0)), [], D.ndim)
    raise TypeError("T must be a CPTensor, a Target, TensorLy's CPTensor (weights, factors) or a "
                    f"dense symmetric array of shape (d,)*l, got {show(T)}")


def _dense_norm(D):
    """``||D||_F``, refused (like a CP tensor's) when its square overflows: the residual norms are
    sums of squares."""
    with np.errstate(over="ignore"):
        sq = float(np.vdot(D, D))
    if not np.isfinite(sq):
        raise ValueError(f"T's squared Frobenius norm overflows double precision (largest |T| "
                         f"{max(float(D.max()), -float(D.min())):.3g})")
    return float(np.sqrt(sq))


def _cp_residual_norms(T: CPTensor, W: np.ndarray, lam: np.ndarray):
    """``||T - sum_{j<i} lam_j w_j^{(x)l}||_F`` for ``i = 0..k`` and how they were computed (see
    :class:`PowerResult`)."""
    Z, l = np.hstack([T.Z, W]), T.order
    s = min(T.dim, Z.shape[1])
    if s == 0:
        return np.zeros(W.shape[1] + 1), "projected"
    if s ** l <= _CORE_ENTRIES and T.rank * s ** l <= _CORE_WORK:
        Y = np.linalg.qr(Z, mode="r")  # Z = Q Y, Q orthonormal: the norms are those of Y's tensors
        core = dense.from_cp(Y[:, :T.rank], T.c, l)
        return dense.deflated_norms(core, Y[:, T.rank:], lam), "projected"
    norms = [(T - CPTensor(W[:, :i], lam[:i], l)).norm() for i in range(W.shape[1] + 1)]
    return np.asarray(norms), "gram"

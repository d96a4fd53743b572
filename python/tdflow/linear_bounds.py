"""The convergence-rate bounds of Min, Vidal, Mallada (ICML 2023) for deep linear models.

Every function computes one definition or one statement of *On the Convergence of Gradient Flow
on Multi-layer Linear Models* (Min, Vidal, Mallada 2023; "MVM" below; the talk slides by Min,
Tarmoun, Vidal, Mallada call the two-layer bound "Proposition 2" and the scalar one
"Proposition 1"). The notes ``papers/min-vidal-mallada-2023-notes.md`` give the definitions the
slides leave out and say which printed version of each bound holds.

Conventions (MVM Sec. 3): ``lambda_i(M)`` is the i-th largest eigenvalue of a symmetric M;
``[x]_+ = max(x, 0)``. The layers are ``W_1`` (n x h_1), ..., ``W_L`` (h_{L-1} x m), the
imbalances ``D_l = W_l^T W_l - W_{l+1} W_{l+1}^T`` are conserved by gradient flow, and every
bound here is a lower bound ``alpha <= lambda_min(T)`` of the operator of MVM Lemma 1,
``T(E) = sum_l (W_1..W_{l-1})(..)^T E (W_{l+1}..W_L)^T(..)``; the loss gap then decays at rate
at least ``gamma * alpha`` (MVM eqs. 5-7; ``gamma`` is the PL constant of f).

Index convention (tdflow's, where the paper is silent): ``lambda_i`` of a k x k matrix is
``+inf`` for ``i <= 0`` (MVM Definition 1 says so) and ``-inf`` for ``i > k`` (needed when a
hidden width is below n or m, or when h_1 != h_2 in Definition 2; so ``[lambda_i]_+ = 0`` and
``min(x, lambda_i) = lambda_i`` there). The tests check every bound against ``lambda_min(T)`` with
this convention on random draws, including those shapes.
"""
from __future__ import annotations

import dataclasses
import math
from typing import List, Optional, Sequence

import numpy as np

__all__ = [
    "eigs", "delta_plus", "delta_minus", "delta_gap", "two_layer_alpha",
    "wedge", "imbalance_ceiling", "three_layer_deltas", "three_layer_alpha", "delta_star",
    "unimodal_indices", "is_homogeneous", "cumulative_imbalance", "deep_unimodal_alpha",
    "scalar_cumulative_imbalance", "scalar_alpha", "STATEMENTS", "FORMULAS", "RateBound",
]


@dataclasses.dataclass
class RateBound:
    """A lower bound on the exponential decay rate of the loss gap ``L(t) - f*``
    (:meth:`tdflow.DeepLinearFlow.rate_bound`).

    ``rate = 2 * mu * alpha``: for every t along the flow, ``-d/dt log(L(t) - f*) >= rate``, hence ``L(t) - f* <= exp(-rate t) (L(0) - f*)``.
    ``alpha`` lower-bounds ``lambda_min(T_W(t))``; ``margin`` lower-bounds ``sigma_min(W(t))``
    (``|w(t)|`` for scalars) over the whole trajectory (the current value with
    ``at_state=True``); ``imbalance`` holds the conserved quantities the bounds use; ``kind``
    names the statement applied and ``statement`` cites it; ``candidates`` maps every statement
    that applies to its alpha (``alpha`` is the largest).
    """

    rate: float
    alpha: float
    mu: float
    K: float
    margin: float
    kind: str
    imbalance: dict
    formula: str
    statement: str = ""
    candidates: dict = dataclasses.field(default_factory=dict)


def eigs(M) -> np.ndarray:
    """Eigenvalues of the symmetric part of ``M``, largest first (``lambda_1 >= lambda_2 >= ...``)."""
    M = np.asarray(M, dtype=float)
    if not np.all(np.isfinite(M)):
        raise ValueError("an imbalance matrix contains NaN or Inf")
    return np.linalg.eigvalsh(0.5 * (M + M.T))[::-1]


def _lam(e: np.ndarray, i: int) -> float:
    """``lambda_i`` from the decreasing eigenvalues ``e``: +inf for i <= 0, -inf for i > len(e)."""
    if i <= 0:
        return math.inf
    return float(e[i - 1]) if i <= e.size else -math.inf


def _pos(x: float) -> float:
    return max(x, 0.0)


# -- two layers: MVM Lemma 3 and Theorem 1 (slides: Proposition 2) ----------------------------
def delta_plus(D, n: int) -> float:
    """``Delta_+ = [lambda_1(D)]_+ - [lambda_n(D)]_+`` (MVM Lemma 3): the spread of the positive
    spectrum of the two-layer imbalance ``D = W_1^T W_1 - W_2 W_2^T`` (the slides' "Spread")."""
    e = eigs(D)
    return _pos(_lam(e, 1)) - _pos(_lam(e, n))


def delta_minus(D, m: int) -> float:
    """``Delta_- = [lambda_1(-D)]_+ - [lambda_m(-D)]_+`` (MVM Lemma 3): the spread of the
    negative spectrum of ``D``."""
    e = eigs(-np.asarray(D, dtype=float))
    return _pos(_lam(e, 1)) - _pos(_lam(e, m))


def delta_gap(D, n: int, m: int) -> float:
    """``Delta_underbar = [lambda_n(D)]_+ + [lambda_m(-D)]_+`` (MVM Lemma 3): the imbalance-spectrum
    gap (the slides' "Gap"; Min et al. 2022 call it the effective level of imbalance). On its own
    it is MVM Theorem 1's rate under the PL assumption only: ``lambda_min(T) >= Delta_underbar``."""
    return _pos(_lam(eigs(D), n)) + _pos(_lam(eigs(-np.asarray(D, dtype=float)), m))


def two_layer_alpha(D, n: int, m: int, sigma_n: float, sigma_m: float) -> float:
    """MVM Theorem 1 / Lemma 3 (slides: Proposition 2), in the version that holds::

        lambda_min(T) >= 1/2 [ -Delta_+ + sqrt((Delta_+ + Delta_underbar)^2 + 4 sigma_m^2)
                               -Delta_- + sqrt((Delta_- + Delta_underbar)^2 + 4 sigma_n^2) ]

    for ``W_1`` (n x h), ``W_2`` (h x m), ``D = W_1^T W_1 - W_2 W_2^T``; ``sigma_n, sigma_m`` are
    (lower bounds on) the n-th and m-th singular values of ``W = W_1 W_2`` (0 when the index
    exceeds min(n, m)). The paper prints two versions: ICML eq. 9 pairs Delta_+ with sigma_n and
    has ``2 lambda_min(T)`` on the left; the slides (and Min et al. 2022, eq. 17) pair Delta_+
    with sigma_m and have no factor 1/2. The notes found, and the tests re-check on random
    draws, that the one that holds is 1/2 x (the slides' pairing): the ICML pairing fails for
    n != m, the slides' version without the 1/2 fails almost everywhere (both coincide when
    n = m). The slides add "Equality holds when n != m" (the bound is the minimum of
    lambda_min(T) over the weights with this D and this W); a test shows equality on a spectral
    family. With ``sigma`` replaced by the margins ``nu_n, nu_m`` it is MVM Theorem 1's rate.
    For ``n = h = m = 1`` it is the scalar warm-up ``sqrt(d^2 + 4 w^2)``.
    """
    dp, dm, dg = delta_plus(D, n), delta_minus(D, m), delta_gap(D, n, m)
    return 0.5 * (-dp + math.hypot(dp + dg, 2.0 * sigma_m) - dm + math.hypot(dm + dg, 2.0 * sigma_n))


# -- three layers: MVM Definitions 1-2, Theorem 2 --------------------------------------------
def _ext(e: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``lambda_idx`` from decreasing eigenvalues ``e`` for an index array (module convention)."""
    out = np.where(idx <= 0, math.inf, -math.inf)
    ok = (idx >= 1) & (idx <= e.size)
    out[ok] = e[idx[ok] - 1]
    return out


def _wedge(a: np.ndarray, b: np.ndarray, r: int) -> np.ndarray:
    return np.minimum(a, _ext(b, np.arange(1, a.size + 1) + 1 - r))


def _ceiling(e21: np.ndarray, e23: np.ndarray, size: int) -> np.ndarray:
    i = np.arange(1, size + 1)
    return np.maximum(np.maximum(_ext(e21, i), _ext(e23, i)), 0.0)


def wedge(A, B, r: int) -> np.ndarray:
    """``A wedge_r B = diag{min(lambda_i(A), lambda_{i+1-r}(B))}_{i=1..k}`` (MVM Definition 1),
    k the size of A, with ``lambda_j = +inf`` for ``j <= 0``. Returns the k x k diagonal matrix."""
    return np.diag(_wedge(eigs(A), eigs(B), int(r)))


def imbalance_ceiling(D21, D23, size: int) -> np.ndarray:
    """``Dbar_size = diag{max(lambda_i(D21), lambda_i(D23), 0)}_{i=1..size}`` (MVM Definition 2;
    ``size`` is h_1 or h_2)."""
    return np.diag(_ceiling(eigs(D21), eigs(D23), int(size)))


def three_layer_deltas(D21, D23, n: int, m: int):
    """``(Delta_21, Delta_21^(2), Delta_23, Delta_23^(2))`` of MVM Definition 2::

        Delta_21     = tr Dbar_h1   - tr(Dbar_h1 wedge_n D21)
        Delta_21^(2) = tr Dbar_h1^2 - tr((Dbar_h1 wedge_n D21)^2)
        Delta_23     = tr Dbar_h2   - tr(Dbar_h2 wedge_m D23)
        Delta_23^(2) = tr Dbar_h2^2 - tr((Dbar_h2 wedge_m D23)^2)

    with ``D21 = W_2 W_2^T - W_1^T W_1 = -D_1`` (h_1 x h_1) and ``D23 = W_2^T W_2 - W_3 W_3^T = D_2``
    (h_2 x h_2). ``Delta^(2)`` can be negative (the wedge keeps negative eigenvalues of D21)."""
    e21, e23 = eigs(D21), eigs(D23)
    out = []
    for e, r in ((e21, n), (e23, m)):
        bar = _ceiling(e21, e23, e.size)
        low = _wedge(bar, e, r)
        out += [float(bar.sum() - low.sum()), float(np.sum(bar * bar) - np.sum(low * low))]
    return tuple(out)


def three_layer_alpha(D21, D23, n: int, m: int) -> float:
    """MVM Theorem 2 (eq. 15; Corollary 1 makes it the rate under the PL assumption only)::

        lambda_min(T) >= Delta*(D21, D23) = 1/2 (Delta_21^(2) + Delta_21^2) + Delta_21 Delta_23
                                            + 1/2 (Delta_23^(2) + Delta_23^2)

    for ``W_1`` (n x h_1), ``W_2`` (h_1 x h_2), ``W_3`` (h_2 x m), any initialisation. The squares
    ``Delta_21^2, Delta_23^2`` are the paper's (ICML eq. 15, per the notes); the slides print
    ``1/2 (Delta_21^(2) + Delta_21)`` unsquared. tdflow follows the paper: the squared version
    reduces to the product of cumulative imbalances for scalar layers (App. H; tested) and holds
    on random draws, the unsquared one exceeds lambda_min(T) on some (tested). It is the exact
    minimum of ``lambda_n(W_1W_2W_2^TW_1^T) + lambda_n(W_1W_1^T) lambda_m(W_3^TW_3)
    + lambda_m(W_3^TW_2^TW_2W_3)`` over weights with these imbalances (Theorem G.2)."""
    return delta_star(*three_layer_deltas(D21, D23, n, m))


def delta_star(d21: float, d21_2: float, d23: float, d23_2: float) -> float:
    """Theorem 2's ``Delta* = 1/2 (d21_2 + d21^2) + d21 d23 + 1/2 (d23_2 + d23^2)`` from the four
    quantities of :func:`three_layer_deltas` (see :func:`three_layer_alpha`)."""
    return 0.5 * (d21_2 + d21 * d21) + d21 * d23 + 0.5 * (d23_2 + d23 * d23)


# -- deep models: MVM Definition 3, Theorem 3, Corollary 2 ------------------------------------
def _scale(D) -> float:
    return float(np.abs(eigs(D)).max(initial=0.0))


def unimodal_indices(Ds: Sequence, rtol: float = 1e-12, scales: Optional[Sequence[float]] = None) -> List[int]:
    """Every ``l*`` in 1..L for which the imbalances ``Ds = (D_1, ..., D_{L-1})`` are unimodal
    (MVM Definition 3): ``D_l >= 0`` for ``l < l*`` and ``D_l <= 0`` for ``l >= l*``. Several
    indices qualify when some ``D_l = 0``. A sign is accepted up to ``rtol * scales[l]`` (default
    scale: ``max |lambda(D_l)|``; pass ``||W_l||^2 + ||W_{l+1}||^2`` to absorb rounding of D)."""
    scales = [_scale(D) for D in Ds] if scales is None else list(scales)
    ext = [eigs(D)[[0, -1]] for D in Ds]
    lo = [e[1] >= -rtol * s for e, s in zip(ext, scales)]   # D_l >= 0
    hi = [e[0] <= rtol * s for e, s in zip(ext, scales)]    # D_l <= 0
    L = len(Ds) + 1
    return [ls for ls in range(1, L + 1) if all(lo[:ls - 1]) and all(hi[ls - 1:])]


def is_homogeneous(Ds: Sequence, rtol: float = 1e-12, scales: Optional[Sequence[float]] = None) -> bool:
    """Homogeneous imbalance (MVM Sec. 4.2): every ``D_l = d_l I``, up to ``rtol * scales[l]``."""
    scales = [_scale(D) for D in Ds] if scales is None else list(scales)
    for D, s in zip(Ds, scales):
        e = eigs(D)
        if e.size and e[0] - e[-1] > 2 * rtol * s:
            return False
    return True


def cumulative_imbalance(Ds: Sequence, l_star: int, n: int, m: int) -> np.ndarray:
    """The cumulative imbalances ``dtilde_(i)``, i = 1..L-1, of MVM Theorem 3 for a unimodal
    model with index ``l_star``::

        dtilde_(i) = sum_{l=i}^{l*-1} lambda_n(D_l)     for i < l*,
        dtilde_(i) = sum_{l=l*}^{i}   lambda_m(-D_l)    for i >= l*.

    ``lambda_n(D_l)`` of an h_l x h_l matrix with h_l < n is -inf (module convention)."""
    L = len(Ds) + 1
    lam = [_lam(eigs(D), n) if l < l_star else _lam(eigs(-np.asarray(D, dtype=float)), m)
           for l, D in enumerate(Ds, start=1)]  # lambda_n(D_l) before l*, lambda_m(-D_l) after
    return np.array([sum(lam[i - 1:l_star - 1]) if i < l_star else sum(lam[l_star - 1:i])
                     for i in range(1, L)])


def deep_unimodal_alpha(Ds: Sequence, l_star: int, n: int, m: int,
                        sigma_min: Optional[float] = None) -> float:
    """MVM Theorem 3 for a model with unimodal imbalance of index ``l_star`` (Definition 3)::

        lambda_min(T) >= prod_{i=1}^{L-1} dtilde_(i)

    and, with homogeneous imbalance (every ``D_l = d_l I``) and ``sigma_min`` given::

        lambda_min(T) >= sqrt( (prod_i dtilde_(i))^2 + (L sigma_min^(2-2/L))^2 )

    with ``sigma_min`` (a lower bound on) the least singular value of ``W``, in the paper's
    convention ``sigma_k := 0`` for ``k > min(n, m)``: ``sigma_max(n,m)(W)``, so 0 unless
    ``n = m``. With ``sigma_min(n,m)(W)`` instead, the bound fails for ``n != m``: balanced layers
    have ``lambda_min(T) = sigma^(2-2/L)``, not ``L sigma^(2-2/L)`` (tested). With the margin
    ``nu_min`` in its place it is Corollary 2's rate (printed there as ``(L nu_min)^2``, which the
    notes read as a typo for ``(L nu_min^(2-2/L))^2``: the balanced case with ``n = m`` gives
    exactly ``L sigma^(2-2/L)``, tested). The caller checks the hypotheses (:func:`unimodal_indices`,
    :func:`is_homogeneous`). A cumulative imbalance that is -inf (a layer narrower than n or m:
    the theorem's lambda_n is undefined) gives the trivial bound 0; one that is negative by
    rounding (the caller's tolerance) counts as 0."""
    c = cumulative_imbalance(Ds, l_star, n, m)
    if not np.all(np.isfinite(c)):
        return 0.0
    prod = float(np.prod(np.maximum(c, 0.0)))
    if sigma_min is None:
        return prod
    L = len(Ds) + 1
    return math.hypot(prod, L * sigma_min ** (2.0 - 2.0 / L))


def scalar_cumulative_imbalance(weights: Sequence[float]) -> np.ndarray:
    """For scalar layers ``w_1, ..., w_L``: ``w_(i)^2 - w_(L)^2``, i = 1..L-1, with
    ``w_(1)^2 >= ⋯ >= w_(L)^2`` sorted (slides' Proposition 1; MVM Lemma I.2). These are
    conserved: the differences ``w_i^2 - w_j^2`` are sums of imbalances ``d_l = w_l^2 - w_{l+1}^2``."""
    a = np.sort(np.square(np.asarray(weights, dtype=float)))[::-1]
    return a[:-1] - a[-1]


def scalar_alpha(weights: Sequence[float], w: float) -> float:
    """Slides' Proposition 1 (MVM Theorem 3 with homogeneous imbalance, applied to the sorted
    layers as in Lemma I.2; scalar layers commute, so the sorted model has the same
    ``lambda_min(T) = sum_l prod_{i != l} w_i^2``)::

        alpha*({d_l}, w) >= sqrt( (prod_i (w_(i)^2 - w_(L)^2))^2 + (L |w|^(2-2/L))^2 )

    with ``w`` (a lower bound on) ``|w_1 ... w_L|``. For L = 2 it is ``sqrt(d^2 + 4 w^2)``."""
    L = len(weights)
    prod = float(np.prod(scalar_cumulative_imbalance(weights)))
    return math.hypot(prod, L * abs(w) ** (2.0 - 2.0 / L))


# the statement behind each kind of RateBound, and its formula
STATEMENTS = {
    "single-layer": "L = 1: T is the identity (MVM Lemma 1), lambda_min(T) = 1",
    "two-layer": "MVM Theorem 1 / Lemma 3 (slides: Proposition 2), the valid version: 1/2 x the "
                 "slides' pairing (Delta_+ with sigma_m, Delta_- with sigma_n)",
    "three-layer": "MVM Theorem 2 (eq. 15) and Corollary 1: Delta*(D21, D23)",
    "deep-unimodal": "MVM Theorem 3 (unimodal imbalance, Definition 3): product of the "
                     "cumulative imbalances",
    "deep-unimodal-homogeneous": "MVM Theorem 3 with homogeneous imbalance, Corollary 2",
    "scalar-multilayer": "Proposition 1 of the slides (MVM Theorem 3 on the sorted layers, "
                         "Lemma I.2)",
}
FORMULAS = {
    "single-layer": "rate = 2 mu",
    "two-layer": "rate = 2 mu 1/2 [-Delta_+ + sqrt((Delta_+ + Delta_gap)^2 + 4 s_m^2) "
                 "- Delta_- + sqrt((Delta_- + Delta_gap)^2 + 4 s_n^2)]",
    "three-layer": "rate = 2 mu [1/2 (Delta21^(2) + Delta21^2) + Delta21 Delta23 "
                   "+ 1/2 (Delta23^(2) + Delta23^2)]",
    "deep-unimodal": "rate = 2 mu prod_i dtilde_(i)",
    "deep-unimodal-homogeneous": "rate = 2 mu sqrt((prod_i dtilde_(i))^2 + (L s_min^(2-2/L))^2)",
    "scalar-multilayer": "rate = 2 mu sqrt((prod_i (w_(i)^2 - w_(L)^2))^2 + (L s^(2-2/L))^2)",
}

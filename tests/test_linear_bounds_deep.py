"""MVM Theorem 3 and Definition 3 (Min, Vidal, Mallada 2023, deep unimodal models) against a
slow literal transcription of the printed statement, for L = 4 and 5 with every cumulative
imbalance strictly positive (so the product is not 0), l* at both ends and inside, and the bound
below lambda_min(T).

As printed (``shared/papers/min-vidal-mallada-2023-notes.md``, "Deep case"): unimodal with index
l*: ``D_l >= 0`` for ``l < l*`` and ``D_l <= 0`` for ``l >= l*``; cumulative imbalance
``dtilde_(i) = sum_{l=l*}^{i} lambda_m(-D_l)`` for ``i >= l*`` and ``sum_{l=i}^{l*-1}
lambda_n(D_l)`` for ``i < l*``; Theorem 3: ``lambda_min >= prod_{i=1}^{L-1} dtilde_(i)``, and
with homogeneous imbalance ``sqrt((prod dtilde_(i))^2 + (L sigma_min^(2-2/L)(W))^2)``.

sigma_min(W) of an n x m W with n != m: the paper's convention ``sigma_k := 0`` for
``k > min(n, m)`` (its Theorem 1) makes it 0; read as sigma_min(n,m)(W), the homogeneous bound
exceeds lambda_min(T) (L times it for balanced layers), which these tests show."""
import math

import numpy as np
import pytest

from tdflow import linear_bounds as lb
from tdflow.linear import DeepLinearFlow
from test_linear_bounds import literal_cumulative, sv, unimodal_layers


def literal_theorem3(Ds, l_star, n, m, sigma_min=None):
    """Theorem 3 as printed: the product of the cumulative imbalances dtilde_(1..L-1) (each the
    printed sum, :func:`literal_cumulative`); with sigma_min (homogeneous imbalance)
    sqrt(prod^2 + (L sigma_min^(2-2/L))^2)."""
    L = len(Ds) + 1
    prod = 1.0
    for d in literal_cumulative(Ds, l_star, n, m):
        prod *= d
    if sigma_min is None:
        return prod
    return math.sqrt(prod ** 2 + (L * sigma_min ** (2 - 2 / L)) ** 2)


def orthonormal(rng, h, k):
    return np.linalg.qr(rng.standard_normal((h, k)))[0]


def low_rank_unimodal_layers(rng, n, hidden, m, l_star, c=0.2):
    """Layers W_1 (n x h_1), ..., W_L (h_{L-1} x m), h_l >= max(n, m), with D_l = V_l P_l V_l^T
    for l < l* (V_l: h_l x n orthonormal, P_l = G G^T + c I positive definite) and
    -D_l = Z_l Q_l Z_l^T for l >= l* (Z_l: h_l x m): unimodal with index l*, D_l of rank n
    (resp. -D_l of rank m) below its width, so lambda_n(D_l) >= c > 0 = lambda_{h_l}(D_l): the
    index n (resp. m) of the print matters. Built outward from W_{l*}: a layer before l* has
    its row space in span V_{l-1} and W_l^T W_l = W_{l+1} W_{l+1}^T + V_l P_l V_l^T; after l*,
    the mirror image."""
    dims = [n, *hidden, m]
    L = len(dims) - 1
    V = {l: orthonormal(rng, dims[l], n) for l in range(l_star)}       # V_0 .. V_{l*-1}
    Z = {l: orthonormal(rng, dims[l], m) for l in range(l_star, L + 1)}  # Z_{l*} .. Z_L
    W = {l_star: V[l_star - 1] @ rng.standard_normal((n, m)) @ Z[l_star].T}

    def sqrt_pd(M):
        e, Q = np.linalg.eigh((M + M.T) / 2)
        return (Q * np.sqrt(e)) @ Q.T

    def gap(k):
        G = 0.7 * rng.standard_normal((k, k))
        return G @ G.T + c * np.eye(k)

    for l in range(l_star - 1, 0, -1):
        A = V[l].T @ W[l + 1] @ W[l + 1].T @ V[l] + gap(n)
        W[l] = V[l - 1] @ sqrt_pd(A) @ V[l].T
    for l in range(l_star, L):
        A = Z[l].T @ W[l].T @ W[l] @ Z[l] + gap(m)
        W[l + 1] = Z[l] @ sqrt_pd(A) @ Z[l + 1].T
    return [W[l] for l in range(1, L + 1)]


CASES = [(4, 1), (4, 2), (4, 4), (5, 1), (5, 3), (5, 5)]  # (L, l*): both ends and inside


@pytest.mark.parametrize("L,l_star", CASES)
def test_theorem3_product_is_the_printed_formula_with_every_imbalance_positive(L, l_star):
    rng = np.random.default_rng(100 * L + l_star)
    n, m = 2, 3  # n != m and hidden widths above both: lambda_n, lambda_m are not lambda_min
    hidden = (4, 5, 4, 5)[:L - 1]
    flow = DeepLinearFlow(np.zeros((n, m)), hidden)
    for _ in range(3):
        layers = low_rank_unimodal_layers(rng, n, hidden, m, l_star)
        Ds = flow.imbalances(layers)
        assert l_star in lb.unimodal_indices(Ds, 1e-10)
        for l, D in enumerate(Ds, start=1):  # rank n (resp. m) below the width: the index matters
            e = np.linalg.eigvalsh(D if l < l_star else -D)[::-1]
            k = n if l < l_star else m
            assert e[k - 1] >= 0.2 - 1e-9 and abs(e[-1]) < 1e-9
        want = literal_cumulative(Ds, l_star, n, m)
        assert min(want) >= 0.2 - 1e-9  # every dtilde_(i) > 0: the product is not 0
        np.testing.assert_allclose(lb.cumulative_imbalance(Ds, l_star, n, m), want, rtol=1e-12)
        alpha = lb.deep_unimodal_alpha(Ds, l_star, n, m)
        assert alpha == pytest.approx(literal_theorem3(Ds, l_star, n, m), rel=1e-12)
        assert alpha >= 0.2 ** (L - 1)
        assert alpha <= flow.ntk_min_eig(layers) * (1 + 1e-9)  # Theorem 3 holds
        # rate_bound applies it (l* is the only unimodal index: no D_l is 0)
        assert lb.unimodal_indices(Ds, 1e-10) == [l_star]
        b = flow.rate_bound(layers, at_state=True)
        assert b.kind == "deep-unimodal" and b.alpha == pytest.approx(alpha, rel=1e-12)


@pytest.mark.parametrize("n,m", [(3, 3), (3, 2)])
@pytest.mark.parametrize("L,l_star", CASES)
def test_theorem3_homogeneous_is_the_printed_formula(L, l_star, n, m):
    """D_l = d_l I (MVM Sec. 4.2) needs the widths before l* equal to n and those from l* on
    equal to m (else lambda_n(D_l) is not defined, or d_l I has too large a rank). sigma_min(W)
    is taken in the paper's convention sigma_k = 0 for k > min(n, m) (its two-layer Theorem 1):
    sigma_max(n,m)(W), 0 unless n = m. Read as sigma_min(n,m)(W) the bound fails for n != m."""
    rng = np.random.default_rng(200 * L + 10 * l_star + m)
    dims = tuple([n] * l_star + [m] * (L + 1 - l_star))
    flow = DeepLinearFlow(np.zeros((n, m)), dims[1:-1])
    exceed = 0
    for _ in range(3):
        layers = unimodal_layers(rng, dims, l_star, homogeneous=True)
        Ds = flow.imbalances(layers)
        assert lb.unimodal_indices(Ds, 1e-10) == [l_star] and lb.is_homogeneous(Ds, 1e-10)
        assert min(literal_cumulative(Ds, l_star, n, m)) >= 0.1 - 1e-9  # d_l ~ U(0.1, 2)
        W, lmin = flow.product(layers), flow.ntk_min_eig(layers)
        s_min = sv(W, max(n, m))
        assert (s_min > 0.01) == (n == m)
        prod = lb.deep_unimodal_alpha(Ds, l_star, n, m)
        assert prod == pytest.approx(literal_theorem3(Ds, l_star, n, m), rel=1e-12)
        alpha = lb.deep_unimodal_alpha(Ds, l_star, n, m, s_min)
        assert alpha == pytest.approx(literal_theorem3(Ds, l_star, n, m, s_min), rel=1e-12)
        assert prod <= alpha <= lmin * (1 + 1e-9)  # Theorem 3 holds
        b = flow.rate_bound(layers, at_state=True)
        assert b.kind == "deep-unimodal-homogeneous" and b.alpha == pytest.approx(alpha, rel=1e-12)
        exceed += literal_theorem3(Ds, l_star, n, m, sv(W, min(n, m))) > lmin * (1 + 1e-6)
    assert exceed == 0 if n == m else exceed >= 1  # the other reading of sigma_min fails


@pytest.mark.parametrize("L", [3, 4, 5])
def test_balanced_layers_with_n_unlike_m_have_lambda_min_sigma_to_the_2_minus_2_over_L(L):
    """Why sigma_min(W) is 0 for n != m: balanced layers (every D_l = 0, homogeneous and
    unimodal) with n = 3 > m = 2 have lambda_min(T) = sigma_2^(2-2/L) exactly (E = u v^T with
    u orthogonal to the range of W sees only the l = L term), not the L sigma_2^(2-2/L) of
    MVM's balanced case, which needs n = m (tested in test_deep_bounds_are_attained)."""
    rng = np.random.default_rng(L)
    s = np.array([2.0, 0.4])
    Qs = [np.linalg.qr(rng.standard_normal((3, 2)))[0]] + [
        np.linalg.qr(rng.standard_normal((2, 2)))[0] for _ in range(L)]
    layers = [Qs[l] @ np.diag(s ** (1 / L)) @ Qs[l + 1].T for l in range(L)]
    flow = DeepLinearFlow(np.zeros((3, 2)), (2,) * (L - 1))
    lmin = flow.ntk_min_eig(layers)
    assert lmin == pytest.approx(0.4 ** (2 - 2 / L), rel=1e-9)
    b = flow.rate_bound(layers, at_state=True)
    assert b.candidates["deep-unimodal-homogeneous"] == pytest.approx(0.0, abs=1e-12)
    assert b.alpha <= lmin * (1 + 1e-9)

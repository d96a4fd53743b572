"""The lazy (linearised) baseline."""
import itertools
import math

import numpy as np
import pytest

import reference as ref
import tdflow
from tdflow.lazy import lazy_features, lazy_fit, lazy_sweep, symmetric_dim


def psym_dense(w, delta, order):
    """P_sym(w^{(x)(l-1)} (x) delta) as a dense d^l array."""
    T = ref.dense(w[:, None], np.ones(1), order - 1)
    T = np.multiply.outer(T, delta)
    return sum(np.transpose(T, p) for p in itertools.permutations(range(order))) / math.factorial(order)


def to_dense(vec, d, order):
    """A weighted symmetric-coordinate vector back to the dense symmetric array."""
    out = np.zeros((d,) * order)
    for k, idx in enumerate(itertools.combinations_with_replacement(range(d), order)):
        count = math.factorial(order) / np.prod([math.factorial(c) for c in np.bincount(idx)])
        for p in set(itertools.permutations(idx)):
            out[p] = vec[k] / np.sqrt(count)
    return out


@pytest.mark.parametrize("order", [3, 4])
def test_features_are_symmetrised_tangents(rng, order):
    d, m = 3, 2
    W = rng.standard_normal((d, m))
    A = lazy_features(W, order)
    assert A.shape == (symmetric_dim(d, order), m * d)
    for k in range(m):
        for j in range(d):
            want = psym_dense(W[:, k], np.eye(d)[j], order)
            np.testing.assert_allclose(to_dense(A[:, k * d + j], d, order), want, atol=1e-14)
            # the weighted coordinates carry the Frobenius norm
            assert np.linalg.norm(A[:, k * d + j]) == pytest.approx(np.linalg.norm(want), rel=1e-12)


def test_fit_is_the_least_squares_projection(rng):
    tgt = tdflow.Target.random_unit(4, np.array([1.0, 0.5]), rng, 3)
    W0 = rng.standard_normal((4, 3))
    fit = lazy_fit(tgt, W0)
    Tfit = sum(psym_dense(W0[:, k], fit.delta[:, k], 3) for k in range(3))
    Tstar = ref.dense(tgt.U, tgt.a, 3)
    assert fit.relative_error == pytest.approx(np.linalg.norm(Tfit - Tstar) / np.linalg.norm(Tstar), rel=1e-10)
    # the residual is orthogonal to every feature (normal equations), checked densely
    for k in range(3):
        for j in range(4):
            assert np.sum(psym_dense(W0[:, k], np.eye(4)[j], 3) * (Tfit - Tstar)) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("d,order", [(4, 3), (6, 4)])
def test_error_falls_as_m_grows_toward_d_to_the_l_minus_1(rng, d, order):
    tgt = tdflow.Target.random_unit(d, np.array([1.0, 0.8]), rng, order)
    need = -(-symmetric_dim(d, order) // d)
    ms = list(range(1, need + 3))
    sweep = lazy_sweep(tgt, ms, 0)
    assert sweep.m_needed == need <= d ** (order - 1)
    # nested spans: the error never grows, and it falls a lot before reaching zero
    assert np.all(np.diff(sweep.relative_error) <= 1e-12)
    assert sweep.relative_error[0] > 0.8  # far more than r = 2 columns are needed
    assert sweep.relative_error[need - 2] > 1e-3
    assert np.all(sweep.relative_error[need - 1:] < 1e-12)
    np.testing.assert_array_equal(sweep.span_dim, np.minimum(np.array(ms) * d, sweep.sym_dim))


def test_alexander_hirschowitz_defective_case(rng):
    # cubics in 5 variables: 7 generic columns span 34 < 35 = min(7 * 5, 35) dimensions
    tgt = tdflow.Target.random_unit(5, np.array([1.0, 0.8]), rng, 3)
    sweep = lazy_sweep(tgt, [6, 7, 8], 0)
    np.testing.assert_array_equal(sweep.span_dim, [30, 34, 35])
    assert sweep.relative_error[1] > 1e-6 and sweep.relative_error[2] < 1e-12


def test_validation(rng):
    tgt = tdflow.Target.orthogonal(4, [1.0], 3)
    with pytest.raises(ValueError, match=r"W0 must have shape \(4, \*\)"):
        lazy_fit(tgt, np.ones((3, 2)))
    with pytest.raises(TypeError, match="target must be a tdflow.Target"):
        lazy_fit(np.ones(3), np.ones((3, 2)))
    with pytest.raises(ValueError, match="meant for small d"):
        lazy_features(np.ones((60, 200)), 4)
    with pytest.raises(ValueError, match="ms must not be empty"):
        lazy_sweep(tgt, [], 0)


@pytest.mark.parametrize("d,order", [(6, 3), (6, 4)])
def test_theorem_1_setting_error_stays_order_one_until_m_d_nears_the_symmetric_dimension(d, order):
    # Wang et al. 2020, Theorem 1: T* = [u*]^{(x)l}, u* uniform on the sphere; lazy training needs
    # Omega(d^{l-1}) columns for o(1) error in expectation. With half the exact-fit count the mean
    # squared error is still order one; at the exact-fit count it vanishes.
    need = -(-symmetric_dim(d, order) // d)
    errs = []
    for seed in range(20):
        u = np.random.default_rng(seed).standard_normal((d, 1))
        tgt = tdflow.Target(u / np.linalg.norm(u), np.ones(1), order)
        errs.append(lazy_sweep(tgt, [need // 2, need], 1000 + seed).relative_error ** 2)
    half, full = np.mean(errs, axis=0)
    assert half > 0.25
    assert half > 0.5 * (1 - (need // 2) * d / symmetric_dim(d, order))
    assert full < 1e-20

"""CP contractions against the NumPy reference and brute-force d^l arrays."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import reference as ref
import tdflow
from tdflow import _core

ORDERS = [3, 4, 5]


def random_cp(rng, d, k):
    return rng.standard_normal((d, k)), rng.standard_normal(k)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("d,k,m", [(1, 1, 1), (3, 4, 5), (5, 7, 3)])
def test_small_against_dense_arrays(rng, order, d, k, m):
    Z, c = random_cp(rng, d, k)
    V, U = rng.standard_normal((d, m)), rng.standard_normal((d, m))
    T = tdflow.CPTensor(Z, c, order)
    D = ref.dense(Z, c, order)
    np.testing.assert_allclose(T.dense(), D, rtol=1e-12, atol=1e-12)
    for j in range(m):
        v, u = V[:, j], U[:, j]
        np.testing.assert_allclose(T.contract(v), ref.dense_apply(D, [v] * (order - 1)), rtol=1e-11, atol=1e-11)
        np.testing.assert_allclose(T.contract_mixed(v, u), ref.dense_apply(D, [v] * (order - 2) + [u]), rtol=1e-11, atol=1e-11)
        assert T.evaluate(v) == pytest.approx(float(ref.dense_apply(D, [v] * order)), rel=1e-11, abs=1e-11)
    Z2, c2 = random_cp(rng, d, 3)
    D2 = ref.dense(Z2, c2, order)
    assert T.inner(tdflow.CPTensor(Z2, c2, order)) == pytest.approx(float(np.sum(D * D2)), rel=1e-10, abs=1e-10)
    assert T.norm() == pytest.approx(float(np.linalg.norm(D)), rel=1e-10)


@pytest.mark.parametrize("order", ORDERS + [6, 9])
def test_large_against_reference(rng, order):
    # sizes beyond one 1024 x 256 Gram block exercise the blocking and the OpenMP split
    d, k, m = 12, 1100, 300
    Z, c = random_cp(rng, d, k)
    Z /= np.linalg.norm(Z, axis=0)
    V, U = rng.standard_normal((d, m)), rng.standard_normal((d, m))
    V /= np.linalg.norm(V, axis=0)
    T = tdflow.CPTensor(Z, c, order)
    np.testing.assert_allclose(T.contract(V), ref.contract(Z, c, V, order), rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(T.contract_mixed(V, U), ref.contract_mixed(Z, c, V, U, order), rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(T.evaluate(V), ref.evaluate(Z, c, V, order), rtol=1e-11, atol=1e-11)
    T2 = tdflow.CPTensor(V, np.ones(m), order)
    assert T.inner(T2) == pytest.approx(ref.inner(Z, c, V, np.ones(m), order), rel=1e-11)


@given(
    d=st.integers(1, 6), k=st.integers(1, 9), m=st.integers(1, 9), order=st.integers(3, 7),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_matches_reference(d, k, m, order, seed):
    r = np.random.default_rng(seed)
    Z, c = random_cp(r, d, k)
    V = r.standard_normal((d, m))
    np.testing.assert_allclose(_core.contract(Z, c, V, order), ref.contract(Z, c, V, order), rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(_core.evaluate(Z, c, V, order), ref.evaluate(Z, c, V, order), rtol=1e-10, atol=1e-9)


def test_contraction_is_linear_in_coefficients_and_symmetric(rng):
    Z, c = random_cp(rng, 4, 6)
    T = tdflow.CPTensor(Z, c, 4)
    v, u = rng.standard_normal(4), rng.standard_normal(4)
    # T(v, v, u, I) . w is symmetric in u and w
    w = rng.standard_normal(4)
    assert T.contract_mixed(v, u) @ w == pytest.approx(T.contract_mixed(v, w) @ u, rel=1e-12)
    # T(v^3, I) . v = T(v^4); 2T - T = T
    assert T.contract(v) @ v == pytest.approx(T.evaluate(v), rel=1e-12)
    np.testing.assert_allclose((2 * T - T).contract(v), T.contract(v), rtol=1e-12)


def test_norm_of_difference_never_negative(rng):
    Z, c = random_cp(rng, 6, 5)
    T = tdflow.CPTensor(Z, c, 4)
    # exact cancellation: the rounding of <T,T> - 2<T,T> + <T,T> must not give a negative or NaN norm
    assert (T - T).norm() >= 0.0
    assert (T - T).norm() < 1e-6 * T.norm()
    assert np.isfinite((T - T).norm())


def test_validation_messages(rng):
    Z, c = random_cp(rng, 3, 2)
    with pytest.raises(ValueError, match="order must be >= 3"):
        tdflow.CPTensor(Z, c, 2)
    with pytest.raises(ValueError, match=r"c must have shape \(2,\)"):
        tdflow.CPTensor(Z, np.ones(3), 4)
    with pytest.raises(ValueError, match="Z contains NaN or Inf"):
        tdflow.CPTensor(np.full((3, 2), np.nan), c, 4)
    with pytest.raises(TypeError, match="must hold real numbers"):
        tdflow.CPTensor(Z.astype(complex), c, 4)
    T = tdflow.CPTensor(Z, c, 4)
    with pytest.raises(ValueError, match=r"V must have shape \(3, \*\)"):
        T.contract(np.ones((4, 2)))
    with pytest.raises(ValueError, match="dense"):
        tdflow.CPTensor(np.ones((100, 1)), [1.0], 4).dense()
    # the private core validates on its own too
    with pytest.raises(ValueError, match=r"V must have shape \(3, \*\)"):
        _core.contract(Z, c, np.ones((4, 2)), 4)
    with pytest.raises(ValueError, match="c must have shape"):
        _core.evaluate(Z, np.ones(5), np.ones((3, 2)), 4)
    with pytest.raises(ValueError, match="V contains NaN or Inf"):
        _core.contract(Z, c, np.full((3, 2), np.inf), 4)
    with pytest.raises(TypeError, match="must hold real numbers"):
        _core.contract(Z, c, np.array([["a"]]), 4)


@pytest.mark.parametrize("order", [3, 4, 5])
def test_norm_over_several_blocks_matches_reference(rng, order):
    # k > 2 column blocks: the symmetric (upper-triangle) evaluation of <T, T> against the full one
    Z, c = random_cp(rng, 9, 600)
    Z /= np.linalg.norm(Z, axis=0)
    T = tdflow.CPTensor(Z, c, order)
    assert T.norm() ** 2 == pytest.approx(ref.inner(Z, c, Z, c, order), rel=1e-11)
    with tdflow.num_threads(1):
        one = T.norm()
    with tdflow.num_threads(2):
        assert T.norm() == one

"""The power method on dense arrays and TensorLy CP tensors, conversions to and from TensorLy, and
the accuracy of the reported residual near zero (issue 14, item 6)."""
import sys

import numpy as np
import pytest

import reference as ref
import tdflow
from tdflow import dense, power
from tdflow.power import tensor_power_method
from tdflow.tensorly_interop import from_tensorly, to_tensorly


def near_orthogonal(rng, d, a, order, eps=1e-2):
    Q = np.linalg.qr(rng.standard_normal((d, len(a))))[0] + eps * rng.standard_normal((d, len(a)))
    return tdflow.Target(Q / np.linalg.norm(Q, axis=0), a, order)


def dense_residuals(D, res, order):
    return np.array([np.linalg.norm(D - ref.dense(res.components[:, :i], res.weights[:i], order))
                     for i in range(res.rank + 1)])


@pytest.mark.parametrize("order", [3, 4])
@pytest.mark.parametrize("kind", ["rotation", "near-orthogonal"])
def test_dense_input_gives_the_cp_result(rng, order, kind):
    a = np.array([1.0, 0.6, 0.35])
    tgt = (tdflow.Target.random_rotation(7, a, rng, order) if kind == "rotation"
           else near_orthogonal(rng, 7, a, order))
    D = ref.dense(tgt.U, tgt.a, order)
    cp = tensor_power_method(tgt, 3, n_starts=8, n_iters=20, rng=3)
    de = tensor_power_method(D, 3, n_starts=8, n_iters=20, rng=3)
    assert de.residual_method == "dense" and cp.residual_method == "projected"
    assert de.rank == cp.rank == 3
    np.testing.assert_allclose(de.weights, cp.weights, rtol=1e-12)
    # for even l the starts +w and -w tie to rounding, so either sign may win
    sign = np.sign(np.sum(de.components * cp.components, axis=0))
    assert order % 2 == 0 or np.all(sign == 1)
    np.testing.assert_allclose(de.components * sign, cp.components, atol=1e-10)
    np.testing.assert_allclose(de.residual_norm, cp.residual_norm, atol=1e-13)
    # the dense array's contractions are counted at d^l + ... + d^2 each
    assert de.work > cp.work and de.n_contractions >= cp.n_contractions
    # a nested list is a dense array too; the input is read, not modified
    before = D.copy()
    lst = tensor_power_method(D.tolist(), 3, n_starts=8, n_iters=20, rng=3)
    np.testing.assert_array_equal(lst.components, de.components)
    np.testing.assert_array_equal(D, before)


@pytest.mark.parametrize("block", [dense._BLOCK, 7])  # 7: blocks smaller than one row
def test_dense_kernels_against_the_reference(rng, monkeypatch, block):
    monkeypatch.setattr(dense, "_BLOCK", block)
    for d, order in [(1, 3), (4, 3), (5, 4), (3, 6)]:
        Z, c = rng.standard_normal((d, 3)), rng.standard_normal(3)
        D = ref.dense(Z, c, order)
        np.testing.assert_allclose(dense.from_cp(Z, c, order), D, rtol=1e-12, atol=1e-12)
        V = rng.standard_normal((d, 5))
        want = np.stack([ref.dense_apply(D, [v] * (order - 1)) for v in V.T], axis=1)
        np.testing.assert_allclose(dense.contract(D, V), want, rtol=1e-11, atol=1e-11)
        W, lam = rng.standard_normal((d, 2)), rng.standard_normal(2)
        want = [np.linalg.norm(D - ref.dense(W[:, :i], lam[:i], order)) for i in range(3)]
        np.testing.assert_allclose(dense.deflated_norms(D, W, lam), want, rtol=1e-12)


@pytest.mark.parametrize("block", [dense._BLOCK, 7])  # 7: the check runs row by row
def test_asymmetric_dense_input_is_refused_with_the_largest_asymmetry(rng, monkeypatch, block):
    monkeypatch.setattr(dense, "_BLOCK", block)
    tgt = tdflow.Target.random_rotation(5, [1.0, 0.5], rng, 4)
    D = ref.dense(tgt.U, tgt.a, 4)
    bad = D.copy()
    bad[1, 2, 3, 3] += 1e-3
    bad[3, 2, 1, 0] += 1e-6
    with pytest.raises(ValueError, match=r"T must be symmetric: \|T\[1, 2, 3, 3\] - T\[2, 1, 3, 3\]\| = 0\.001, "
                                         r".* the largest asymmetry, exceeds symmetry_tol = 1e-10"):
        tensor_power_method(bad, 2)
    # within the tolerance it is accepted (and the tolerance is the caller's)
    D2 = D.copy()
    D2[0, 1, 2, 3] += 1e-13
    assert tensor_power_method(D2, 2, rng=0).rank == 2
    with pytest.raises(ValueError, match="exceeds symmetry_tol = 1e-15"):
        tensor_power_method(D2, 2, symmetry_tol=1e-15)
    assert tensor_power_method(bad, 2, symmetry_tol=1e-2).rank == 2
    for shape in [(3, 3), (3, 3, 4), (0, 0, 0), ()]:
        with pytest.raises(ValueError, match=r"T must be a dense symmetric array of shape \(d,\)\*l"):
            tensor_power_method(np.ones(shape), 1)
    with pytest.raises(TypeError, match="T must hold real numbers"):
        tensor_power_method(D.astype(complex), 1)
    nan = D.copy()
    nan[1, 1, 1, 1] = np.nan
    with pytest.raises(ValueError, match="T contains NaN or Inf"):
        tensor_power_method(nan, 1)
    with pytest.raises(ValueError, match="T's squared Frobenius norm overflows double precision"):
        tensor_power_method(D * 1e300, 1)
    with pytest.raises(ValueError, match="symmetry_tol must be >= 0"):
        tensor_power_method(D, 1, symmetry_tol=-1.0)


def test_tensorly_pairs_give_the_cp_result(rng):
    tgt = near_orthogonal(rng, 6, [1.0, 0.5, 0.3], 3)
    want = tensor_power_method(tgt, 3, rng=5)
    for T in [(tgt.a, [tgt.U] * 3), [tgt.a, (tgt.U, tgt.U, tgt.U)],
              tdflow.CPTensor.from_tensorly((tgt.a, tgt.U), order=3)]:
        got = tensor_power_method(T, 3, rng=5)
        np.testing.assert_array_equal(got.components, want.components)
        np.testing.assert_array_equal(got.residual_norm, want.residual_norm)
    with pytest.raises(ValueError, match=r"order must be given for T = \(weights, factor\)"):
        tensor_power_method((tgt.a, tgt.U), 3)
    # weights None: all ones
    T = from_tensorly((None, [tgt.U] * 3))
    np.testing.assert_array_equal(T.c, np.ones(3))


def test_scaled_and_sign_flipped_factors_fold_into_the_weights(rng):
    U, a = rng.standard_normal((5, 3)), np.array([1.0, -0.5, 2.0])
    s = np.array([2.0, -1.0, 0.5])  # per-column scale of the second factor
    T = from_tensorly((a, [U, -U * s, -U]))
    np.testing.assert_array_equal(T.Z, U)
    np.testing.assert_allclose(T.c, a * s, rtol=1e-15)
    full = np.einsum("j,aj,bj,cj->abc", a, U, -U * s, -U)
    np.testing.assert_allclose(T.dense(), full, rtol=1e-12, atol=1e-12)
    # a zero column is a zero term
    Z0 = U.copy()
    Z0[:, 1] = 0
    T0 = from_tensorly((a, [U, Z0, U]))
    assert T0.c[1] == 0 and T0.c[0] == a[0]


def test_asymmetric_tensorly_factors_are_refused(rng):
    U, a = rng.standard_normal((5, 3)), np.ones(3)
    V = U.copy()
    V[:, 2] += 1e-3 * rng.standard_normal(5)
    with pytest.raises(ValueError, match=r"T must be symmetric: column 2 of factors\[2\] deviates from "
                                         r"column 2 of factors\[0\] by [0-9.e-]+ .* symmetry_tol = 1e-10"):
        tensor_power_method((a, [U, U, V]), 2)
    assert from_tensorly((a, [U, U, V]), symmetry_tol=1e-2).rank == 3
    with pytest.raises(ValueError, match="factors\\[1\\] must have the shape of factors\\[0\\]"):
        from_tensorly((a, [U, U[:, :2], U]))
    with pytest.raises(ValueError, match="must have at least 3 factor matrices"):
        from_tensorly((a, [U, U]))
    with pytest.raises(ValueError, match="order must match the 3 factor matrices"):
        from_tensorly((a, [U, U, U]), order=4)
    with pytest.raises(ValueError, match=r"cp's weights must have shape \(3,\)"):
        from_tensorly((np.ones(2), [U] * 3))
    with pytest.raises(TypeError, match="cp must be TensorLy's CPTensor or a pair"):
        from_tensorly(U)


def test_round_trip_through_tensorly(rng):
    tl = pytest.importorskip("tensorly")
    from tensorly.cp_tensor import CPTensor as TLCPTensor, cp_to_tensor
    T = tdflow.CPTensor(rng.standard_normal((5, 4)), rng.standard_normal(4), 4)
    cp = T.to_tensorly()
    assert isinstance(cp, TLCPTensor) and len(cp.factors) == 4 and cp.rank == 4
    np.testing.assert_allclose(tl.to_numpy(cp_to_tensor(cp)), T.dense(), rtol=1e-12, atol=1e-12)
    back = tdflow.CPTensor.from_tensorly(cp)
    np.testing.assert_array_equal(back.Z, T.Z)
    np.testing.assert_array_equal(back.c, T.c)
    assert back.order == 4
    # the factors are separate copies: changing one in TensorLy leaves T alone
    cp.factors[0][0, 0] += 1.0
    assert cp.factors[1][0, 0] == T.Z[0, 0]
    # TensorLy's dense tensor of a symmetric CP tensor passes the symmetry check as it stands
    tgt = tdflow.Target.random_rotation(6, [1.0, 0.5], rng, 4)
    D = tl.to_numpy(cp_to_tensor(tgt.tensor.to_tensorly()))
    np.testing.assert_allclose(tensor_power_method(D, 2, rng=0).weights, [1.0, 0.5], rtol=1e-12)
    # TensorLy's CPTensor and its symmetric power iteration's output are accepted as they come
    res = tensor_power_method(tgt.tensor.to_tensorly(), 2, rng=0)
    np.testing.assert_array_equal(res.components, tensor_power_method(tgt, 2, rng=0).components)
    from tensorly.decomposition import symmetric_parafac_power_iteration
    np.random.seed(0)  # TensorLy draws its starts from NumPy's global generator
    pair = symmetric_parafac_power_iteration(tl.tensor(D), 2, n_repeat=5, n_iteration=20)
    fit = tdflow.CPTensor.from_tensorly(pair, order=4)
    np.testing.assert_allclose(fit.dense(), D, atol=1e-10)


def test_missing_tensorly_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorly", None)  # import tensorly raises ImportError
    T = tdflow.CPTensor(np.eye(3), [1.0, 2.0, 3.0], 3)
    with pytest.raises(ImportError, match=r"CPTensor.to_tensorly\(\) needs TensorLy.*pip install 'tdflow\[tensorly\]'"):
        T.to_tensorly()
    # reading NumPy pairs needs no TensorLy
    assert tdflow.CPTensor.from_tensorly((T.c, [T.Z] * 3)).rank == 3


@pytest.mark.parametrize("d,order", [(4, 3), (6, 3), (6, 4), (8, 4), (5, 5)])
def test_residual_is_accurate_near_zero(d, order):
    """Measured against the dense residual: the reported norms are within 1e-14 ||T|| at every
    deflation, down to the last one (~1e-15); the Gram form, forced, only within 1e-7 ||T||."""
    worst, worst_gram = 0.0, 0.0
    for seed in range(6):
        r = np.random.default_rng(seed)
        a = np.sort(r.uniform(0.3, 1.0, 3))[::-1]
        tgt = tdflow.Target.random_rotation(d, a, r, order)
        D = ref.dense(tgt.U, tgt.a, order)
        for T in (tgt, D):
            res = tensor_power_method(T, 3, rng=seed)
            true = dense_residuals(D, res, order)
            assert res.rank == 3 and true[-1] < 1e-14 * true[0]
            worst = max(worst, np.max(np.abs(res.residual_norm - true)) / true[0])
            assert res.relative_error[-1] < 1e-14
        keep = power._CORE_ENTRIES
        try:
            power._CORE_ENTRIES = 0
            res = tensor_power_method(tgt, 3, rng=seed)
        finally:
            power._CORE_ENTRIES = keep
        assert res.residual_method == "gram"
        worst_gram = max(worst_gram, np.max(np.abs(res.residual_norm - dense_residuals(D, res, order))) / true[0])
    assert worst < 1e-14
    assert worst_gram < 1e-7


def test_results_with_nothing_to_extract():
    zero = tdflow.CPTensor(np.zeros((3, 0)), [], 3)
    res = tensor_power_method(zero, 2)
    assert res.rank == 0 and res.residual_norm.tolist() == [0.0]
    res = tensor_power_method(np.zeros((3, 3, 3)), 2)
    assert res.rank == 0 and res.residual_method == "dense" and res.residual_norm.tolist() == [0.0]

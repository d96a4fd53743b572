"""The tensor power method with deflation on the implicit CP residual."""
import numpy as np
import pytest

import reference as ref
import tdflow
from tdflow.power import tensor_power_method


@pytest.mark.parametrize("order", [3, 4])
@pytest.mark.parametrize("kind", ["basis", "rotation"])
def test_recovers_an_orthogonal_target_exactly(rng, order, kind):
    a = np.array([1.0, 0.7, 0.45, 0.3])
    tgt = (tdflow.Target.orthogonal(9, a, order) if kind == "basis"
           else tdflow.Target.random_rotation(9, a, rng, order))
    res = tensor_power_method(tgt, 6, n_starts=10, n_iters=25, rng=0)
    # the largest weight first; four components, then nothing left (early stop)
    assert res.rank == 4
    np.testing.assert_allclose(res.weights, a, rtol=1e-12)
    overlap = res.components.T @ tgt.U
    np.testing.assert_allclose(np.abs(overlap), np.eye(4), atol=1e-10)
    if order % 2:  # odd order: the sign is fixed by lam > 0
        np.testing.assert_allclose(np.diag(overlap), 1.0, atol=1e-12)
    # the fitted tensor equals the target (checked on dense arrays)
    np.testing.assert_allclose(res.tensor(order).dense(), ref.dense(tgt.U, tgt.a, order), atol=1e-12)
    assert res.relative_error[0] == 1.0
    assert np.all(np.diff(res.relative_error) < 0)
    # exact to rounding (the Gram form <R,R> would bottom out near sqrt(eps) = 1.5e-8)
    assert res.residual_method == "projected" and res.relative_error[-1] < 1e-14
    # batched contractions counted: starts and polishing iterations for each component found
    assert res.n_contractions >= 4 * (10 * 25 + 25)


def test_works_on_any_cp_tensor_and_finds_the_dominant_component(rng):
    tgt = tdflow.Target.random_unit(12, np.array([1.0, 0.5, 0.25]), rng, 3)
    T = tgt.tensor
    res = tensor_power_method(T, 3, rng=1)
    assert res.rank == 3
    assert abs(res.components[:, 0] @ tgt.U[:, 0]) > 0.95
    assert res.relative_error[-1] < 0.2
    # the residual after k deflations is T minus the first k found terms
    R = T - tdflow.CPTensor(res.components[:, :2], res.weights[:2], 3)
    assert R.norm() / T.norm() == pytest.approx(res.relative_error[2], rel=1e-8)


def test_reproducible_and_validated(rng):
    tgt = tdflow.Target.orthogonal(5, [1.0, 0.5], 3)
    a = tensor_power_method(tgt, 2, rng=7)
    b = tensor_power_method(tgt, 2, rng=7)
    np.testing.assert_array_equal(a.components, b.components)
    with pytest.raises(ValueError, match=r"T must be a dense symmetric array .* got shape \(3, 3\)"):
        tensor_power_method(np.eye(3), 2)
    with pytest.raises(TypeError, match="T must be a CPTensor, a Target, TensorLy's CPTensor"):
        tensor_power_method(object(), 2)
    with pytest.raises(ValueError, match="rank must be >= 1"):
        tensor_power_method(tgt, 0)
    with pytest.raises(TypeError, match="n_starts must be an integer"):
        tensor_power_method(tgt, 1, n_starts=2.5)

"""The deflation model's loss and gradient-flow right-hand side."""
import numpy as np
import pytest

import reference as ref
import tdflow


def targets(rng, d=5, r=3, order=4):
    a = np.array([1.0, 0.6, 0.3])[:r]
    return {
        "basis": tdflow.Target.orthogonal(d, a, order),
        "rotation": tdflow.Target.random_rotation(d, a, rng, order),
        "general": tdflow.Target.random_unit(d, a, rng, order),
    }


@pytest.mark.parametrize("order", [3, 4, 5])
@pytest.mark.parametrize("kind", ["basis", "rotation", "general"])
@pytest.mark.parametrize("lam", [0.0, 0.1])
def test_rhs_against_reference_and_dense(rng, order, kind, lam):
    tgt = targets(rng, order=order)[kind]
    flow = tdflow.GradientFlow(tgt, lam=lam)
    W = rng.standard_normal((5, 6))
    W[:, 1] *= 1e-9  # a tiny column
    expected = ref.rhs(tgt.U, tgt.a, W, order, lam)
    np.testing.assert_allclose(flow.rhs(W), expected, rtol=1e-10, atol=1e-11)
    np.testing.assert_allclose(flow.rhs(W), ref.rhs_dense(tgt.U, tgt.a, W, order, lam), rtol=1e-10, atol=1e-11)
    assert flow.loss(W) == pytest.approx(ref.loss(tgt.U, tgt.a, W, order, lam), rel=1e-11)
    assert flow.residual_norm(W) == pytest.approx(ref.residual_norm(tgt.U, tgt.a, W, order), rel=1e-10)
    np.testing.assert_allclose(flow.directional_residual(W), ref.directional_residual(tgt.U, tgt.a, W, order), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("order", [3, 4, 5])
@pytest.mark.parametrize("lam", [0.0, 0.05])
def test_rhs_is_minus_gradient_of_loss(rng, order, lam):
    tgt = targets(rng, d=4, order=order)["general"]
    flow = tdflow.GradientFlow(tgt, lam=lam)
    W = rng.standard_normal((4, 3))
    eps = 1e-6
    fd = np.zeros_like(W)
    for idx in np.ndindex(*W.shape):
        E = np.zeros_like(W)
        E[idx] = eps
        fd[idx] = -(flow.loss(W + E) - flow.loss(W - E)) / (2 * eps)
    np.testing.assert_allclose(flow.rhs(W), fd, rtol=1e-6, atol=1e-8)


def test_residual_of_dense_difference(rng):
    tgt = targets(rng)["general"]
    flow = tdflow.GradientFlow(tgt)
    W = rng.standard_normal((5, 4))
    Zw, cw = ref.model_parts(W, 4)
    R = ref.dense(tgt.U, tgt.a, 4) - ref.dense(Zw, cw, 4)
    assert flow.residual_norm(W) == pytest.approx(np.linalg.norm(R), rel=1e-10)
    assert (flow.target.tensor - flow.model(W)).norm() == pytest.approx(np.linalg.norm(R), rel=1e-10)


def test_zero_columns_have_zero_velocity(rng):
    tgt = targets(rng)["basis"]
    flow = tdflow.GradientFlow(tgt, lam=0.1)
    W = rng.standard_normal((5, 4))
    W[:, 2] = 0.0
    dW = flow.rhs(W)
    assert np.all(np.isfinite(dW))
    assert np.all(dW[:, 2] == 0.0)
    # a zero column contributes nothing to the model
    assert flow.loss(W) == pytest.approx(flow.loss(np.delete(W, 2, axis=1)) , rel=1e-12)
    traj = flow.integrate(np.zeros((5, 3)), (0, 1), method="rk4", h=0.1)
    assert np.all(traj.W == 0.0)
    assert np.all(np.isfinite(traj.loss))
    assert traj.loss[-1] == pytest.approx(0.5 * tgt.norm ** 2, rel=1e-12)


def test_extremely_small_columns_stay_finite(rng):
    tgt = targets(rng)["basis"]
    flow = tdflow.GradientFlow(tgt)
    W = 1e-200 * rng.standard_normal((5, 3))
    dW = flow.rhs(W)
    assert np.all(np.isfinite(dW))
    # the flow is 1-homogeneous in a tiny column: dW scales with W
    np.testing.assert_allclose(flow.rhs(1e5 * W) / 1e5, dW, rtol=1e-9)


def test_exact_fit_is_a_stationary_point():
    a = np.array([0.5, 0.3])
    tgt = tdflow.Target.orthogonal(4, a)
    flow = tdflow.GradientFlow(tgt)
    W = np.zeros((4, 2))
    W[0, 0], W[1, 1] = np.sqrt(a)
    assert flow.residual_norm(W) < 1e-12
    np.testing.assert_allclose(flow.rhs(W), 0.0, atol=1e-15)
    np.testing.assert_allclose(flow.directional_residual(W), 0.0, atol=1e-15)


def test_targets_and_weights(rng):
    a = tdflow.geometric_weights(5, 1.2)
    assert a.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(a[:-1] / a[1:], 1.2)
    np.testing.assert_allclose(tdflow.geometric_weights(3, 2.0, normalize=False), [1, 0.5, 0.25])
    np.testing.assert_allclose(tdflow.power_law_weights(3, 1.0, normalize=False), [1, 0.5, 1 / 3])
    np.testing.assert_allclose(tdflow.uniform_weights(4), 0.25)
    t = tdflow.Target.random_rotation(6, a, rng)
    assert t.is_orthogonal and not t.is_basis
    assert t.norm == pytest.approx(np.linalg.norm(a), rel=1e-12)  # orthogonal: ||T*||^2 = sum a_i^2
    assert tdflow.Target.orthogonal(6, a).is_basis
    g = tdflow.Target.random_unit(6, a, rng)
    np.testing.assert_allclose(np.linalg.norm(g.U, axis=0), 1.0)
    assert tdflow.Target(np.eye(3), [2.0, 1.0, 1.0], normalize=True).a.sum() == pytest.approx(1.0)


def test_target_validation():
    with pytest.raises(ValueError, match="unit norm"):
        tdflow.Target(2 * np.eye(3), [1, 1, 1])
    with pytest.raises(ValueError, match="a must have shape"):
        tdflow.Target(np.eye(3), [1, 1])
    with pytest.raises(ValueError, match=">= 0"):
        tdflow.Target(np.eye(2), [1, -1])
    with pytest.raises(ValueError, match="order must be >= 3"):
        tdflow.Target(np.eye(2), [1, 1], order=2)
    with pytest.raises(ValueError, match="at most d = 2"):
        tdflow.Target.orthogonal(2, [1, 1, 1])
    with pytest.raises(TypeError, match="rng must be"):
        tdflow.Target.random_unit(3, [1.0], rng="seed")
    with pytest.raises(TypeError, match="target must be a tdflow.Target"):
        tdflow.GradientFlow("T*")
    with pytest.raises(ValueError, match="lam must be >= 0"):
        tdflow.GradientFlow(tdflow.Target.orthogonal(3, [1.0]), lam=-1)


def test_state_validation():
    flow = tdflow.GradientFlow(tdflow.Target.orthogonal(3, [1.0]))
    with pytest.raises(ValueError, match=r"W must have shape \(3, \*\)"):
        flow.rhs(np.ones((4, 2)))
    with pytest.raises(ValueError, match="W must be 2-D"):
        flow.loss(np.ones(3))
    with pytest.raises(ValueError, match="W contains NaN or Inf"):
        flow.rhs(np.array([[np.nan], [0.0], [0.0]]))
    with pytest.raises(ValueError, match="m >= 1"):
        flow.rhs(np.ones((3, 0)))


def test_sphere(rng):
    W = tdflow.sphere(7, 40, 1e-3, 0)
    assert W.shape == (7, 40) and W.flags.f_contiguous
    np.testing.assert_allclose(np.linalg.norm(W, axis=0), 1e-3, rtol=1e-12)
    np.testing.assert_array_equal(W, tdflow.sphere(7, 40, 1e-3, np.random.default_rng(0)))
    assert not np.array_equal(W, tdflow.sphere(7, 40, 1e-3, 1))
    with pytest.raises(ValueError, match="radius must be >= 0"):
        tdflow.sphere(3, 2, -1.0, 0)
    with pytest.raises(TypeError, match="m must be an integer"):
        tdflow.sphere(3, 2.5, 1.0, 0)

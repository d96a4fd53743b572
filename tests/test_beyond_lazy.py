"""The beyond-lazy-training variant (Wang, Wu, Lee, Ma, Ge 2020)."""
import numpy as np
import pytest

import reference as ref
import tdflow
from tdflow.beyond_lazy import BeyondLazy, variant_gradient, variant_loss, variant_model


def random_parts(rng, d=4, m=3):
    U = rng.standard_normal((d, m))
    signs = rng.choice([-1.0, 1.0], size=m)
    c = rng.uniform(0.5, 2.0, size=m)
    c_hat = rng.uniform(0.5, 2.0, size=m)
    return U, signs, c, c_hat


@pytest.mark.parametrize("order", [3, 4, 5])
@pytest.mark.parametrize("lam", [0.0, 0.3])
def test_gradient_matches_central_differences(rng, order, lam):
    tgt = tdflow.Target.random_unit(4, np.array([1.0, 0.6]), rng, order)
    U, signs, c, c_hat = random_parts(rng)
    G = variant_gradient(tgt, U, signs, c, c_hat, lam)
    eps = 1e-6
    fd = np.zeros_like(U)
    for idx in np.ndindex(*U.shape):
        E = np.zeros_like(U)
        E[idx] = eps
        fd[idx] = (variant_loss(tgt, U + E, signs, c, c_hat, lam)
                   - variant_loss(tgt, U - E, signs, c, c_hat, lam)) / (2 * eps)
    np.testing.assert_allclose(G, fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("order", [3, 4])
def test_loss_and_model_against_dense_arrays(rng, order):
    tgt = tdflow.Target.random_unit(4, np.array([1.0, 0.6]), rng, order)
    U, signs, c, c_hat = random_parts(rng)
    dense_model = ref.dense(U, signs * c ** (order - 2), order)
    np.testing.assert_allclose(variant_model(tgt, U, signs, c).dense(), dense_model, rtol=1e-12, atol=1e-13)
    R = dense_model - ref.dense(tgt.U, tgt.a, order)
    lam = 0.2
    want = 0.5 * np.sum(R * R) + lam * np.sum(c_hat ** (order - 2) * np.linalg.norm(U, axis=0) ** order)
    assert variant_loss(tgt, U, signs, c, c_hat, lam) == pytest.approx(want, rel=1e-11)
    # the gradient of the data term is l s_i c_i^{l-2} R(u_i^{l-1}, I), read off the dense array
    G = variant_gradient(tgt, U, signs, c, c_hat, 0.0)
    for i in range(U.shape[1]):
        want_i = order * signs[i] * c[i] ** (order - 2) * ref.dense_apply(R, [U[:, i]] * (order - 1))
        np.testing.assert_allclose(G[:, i], want_i, rtol=1e-10, atol=1e-12)


def test_zero_column_has_zero_gradient(rng):
    tgt = tdflow.Target.random_unit(4, np.array([1.0]), rng, 3)
    U, signs, c, c_hat = random_parts(rng)
    U[:, 1] = 0.0
    G = variant_gradient(tgt, U, signs, c, c_hat, 0.1)
    assert np.all(G[:, 1] == 0.0)


@pytest.fixture
def problem(rng):
    tgt = tdflow.Target.random_unit(10, np.array([1.0, 0.8]), rng, 3)
    return BeyondLazy(tgt, 6, epochs=8, steps=60, delta=1e-3, lam=1e-4)


def test_initial_state_and_scalars(problem):
    s = problem.init_state(0)
    n = np.linalg.norm(s.U, axis=0)
    np.testing.assert_allclose(n, 1e-3, rtol=1e-14)
    assert problem.kappa == pytest.approx(np.sqrt(10 * (6 + 8)))
    np.testing.assert_allclose(s.c * n, problem.kappa, rtol=1e-14)
    np.testing.assert_allclose(s.c_hat * n, 1.0, rtol=1e-14)
    assert set(np.unique(s.signs)) <= {-1.0, 1.0}
    assert not s.scalar_mode.any() and s.drawn == 6
    assert problem.threshold == pytest.approx(2 * np.sqrt(14) * 1e-3)


def test_rescaling_keeps_two_homogeneity(problem, rng):
    s = problem.init_state(1)
    for _ in range(20):
        s = problem.step(s)
    vec = ~s.scalar_mode
    assert vec.any()
    n = np.linalg.norm(s.U, axis=0)
    np.testing.assert_allclose((s.c * n)[vec], problem.kappa, rtol=1e-12)
    np.testing.assert_allclose((s.c_hat * n)[vec], 1.0, rtol=1e-12)
    # scale column 0 by alpha and rescale: its component and its regulariser scale by alpha^2
    i = int(np.flatnonzero(vec)[0])
    alpha = 3.7
    U2 = s.U.copy()
    U2[:, i] *= alpha
    s2 = problem.rescale(s, U2)
    l = problem.order
    w1 = s.signs[i] * s.c[i] ** (l - 2) * n[i] ** l
    w2 = s2.signs[i] * s2.c[i] ** (l - 2) * (alpha * n[i]) ** l
    assert w2 == pytest.approx(alpha ** 2 * w1, rel=1e-12)
    r1 = s.c_hat[i] ** (l - 2) * n[i] ** l
    r2 = s2.c_hat[i] ** (l - 2) * (alpha * n[i]) ** l
    assert r2 == pytest.approx(alpha ** 2 * r1, rel=1e-12)
    # the other columns are untouched
    others = np.arange(s.U.shape[1]) != i
    np.testing.assert_array_equal(s2.c[others], s.c[others])


def test_scalar_mode_switch_freezes_the_scalars(problem):
    s = problem.init_state(2)
    U2 = s.U.copy()
    U2[:, 0] *= 1.5 * problem.threshold / np.linalg.norm(U2[:, 0])  # past the threshold
    s2 = problem.rescale(s, U2)
    assert s2.scalar_mode[0] and not s2.scalar_mode[1:].any()
    n2 = np.linalg.norm(U2[:, 0])
    assert s2.c[0] * n2 == pytest.approx(problem.kappa, rel=1e-12)  # rescaled once more at the switch
    # afterwards the scalars stay fixed however the column changes
    U3 = s2.U.copy()
    U3[:, 0] *= 0.5
    s3 = problem.rescale(s2, U3)
    assert s3.c[0] == s2.c[0] and s3.c_hat[0] == s2.c_hat[0] and s3.scalar_mode[0]
    # re-drawing the smallest column puts it back into vector mode with fresh scalars
    s4 = problem.redraw(s3, 0)
    i = int(np.argmin(np.linalg.norm(s3.U, axis=0)))
    assert s4.drawn == s3.drawn + 1
    assert np.linalg.norm(s4.U[:, i]) == pytest.approx(1e-3, rel=1e-14)
    assert s4.c[i] == pytest.approx(problem.kappa / 1e-3) and not s4.scalar_mode[i]


def test_run_fits_a_nonorthogonal_target_within_the_bound(problem):
    res = problem.run(0, progress=False)
    assert res.loss.shape == (9,) and res.proj_B.shape == (9,)
    assert res.loss[0] == pytest.approx(0.5 * problem.target.norm ** 2, rel=1e-3)
    assert res.relative_error[-1] < 1e-3
    assert res.loss[-1] < 1e-4 * res.loss[0]
    assert res.within_bound and np.all(res.proj_B <= res.bound)
    assert res.bound == pytest.approx(14 * 1e-6)
    assert res.state.drawn == 6 + 8 and res.n_steps == 8 * 60
    assert res.n_scalar[-1] >= 2  # at least one column per target direction
    again = problem.run(0, progress=False)
    np.testing.assert_array_equal(again.loss, res.loss)
    assert "bound" in res.summary()


def test_order_four_runs_with_the_automatic_step(rng):
    tgt = tdflow.Target.random_unit(8, np.array([1.0, 0.7]), rng, 4)
    res = BeyondLazy(tgt, 5, epochs=6, steps=100).run(3, progress=False)
    assert res.relative_error[-1] < 1e-2
    assert res.within_bound


def test_validation(problem, rng):
    tgt = problem.target
    U, signs, c, c_hat = random_parts(rng, d=10)
    with pytest.raises(ValueError, match=r"U must have shape \(10, \*\)"):
        variant_loss(tgt, U[:4], signs, c, c_hat)
    with pytest.raises(ValueError, match="signs must hold only"):
        variant_loss(tgt, U, 2 * signs, c, c_hat)
    with pytest.raises(ValueError, match="c must be > 0"):
        variant_gradient(tgt, U, signs, -c, c_hat)
    with pytest.raises(ValueError, match=r"c_hat must have shape \(3,\)"):
        variant_gradient(tgt, U, signs, c, c_hat[:2])
    with pytest.raises(TypeError, match="target must be a tdflow.Target"):
        BeyondLazy("T", 3)
    with pytest.raises(ValueError, match="eta must be > 0"):
        BeyondLazy(tgt, 3, eta=0.0)
    with pytest.raises(TypeError, match="state must be a VariantState"):
        problem.step(U)
    with pytest.raises(TypeError, match="rng must be"):
        problem.run("seed")
    with pytest.raises(FloatingPointError, match="smaller eta"):
        BeyondLazy(tgt, 6, epochs=3, steps=200, eta=10.0).run(0, progress=False)

"""Algorithm 1 of Wang, Wu, Lee, Ma, Ge (2020), held against a literal dense transcription."""
import math

import numpy as np
import pytest

import reference as ref
import tdflow
from tdflow.beyond_lazy import BeyondLazy, VariantState, variant_gradient, variant_loss, variant_model


# ---- a slow, literal transcription of Section 4 and Algorithm 1 on dense d^l arrays ----------

def literal_f(Tstar, U, a, c, c_hat, lam, l):
    """f(U, C, Ĉ, A) = 1/2 ||sum_i a_i c_i^{l-2} u_i^{(x)l} - T*||_F^2 + λ sum_i ĉ_i^{l-2} ||u_i||^l."""
    T = sum(a[i] * c[i] ** (l - 2) * ref.dense(U[:, [i]], np.ones(1), l) for i in range(U.shape[1]))
    reg = sum(c_hat[i] ** (l - 2) * np.linalg.norm(U[:, i]) ** l for i in range(U.shape[1]))
    return 0.5 * np.sum((T - Tstar) ** 2) + lam * reg


def literal_grad(Tstar, U, a, c, c_hat, lam, l):
    """∇_U f with c, ĉ treated as constants: column i is l a_i c_i^{l-2} R(u_i, ..., u_i, ·)
    + λ l ĉ_i^{l-2} ||u_i||^{l-2} u_i, R = T - T* (symmetric), read off the dense array."""
    T = sum(a[i] * c[i] ** (l - 2) * ref.dense(U[:, [i]], np.ones(1), l) for i in range(U.shape[1]))
    R = T - Tstar
    G = np.zeros_like(U)
    for i in range(U.shape[1]):
        u = U[:, i]
        G[:, i] = (l * a[i] * c[i] ** (l - 2) * ref.dense_apply(R, [u] * (l - 1))
                   + lam * l * c_hat[i] ** (l - 2) * np.linalg.norm(u) ** (l - 2) * u)
    return G


def literal_iteration(Tstar, U, a, c, c_hat, switched, *, lam, eta, delta, m, K, l):
    """One iteration t of Algorithm 1, line by line."""
    d = U.shape[0]
    Up = U - eta * literal_grad(Tstar, U, a, c, c_hat, lam, l)
    cp, chp, sw = c.copy(), c_hat.copy(), switched.copy()
    for i in range(m):
        ratio = np.linalg.norm(U[:, i]) / np.linalg.norm(Up[:, i])
        cp[i] = ratio * c[i]
        chp[i] = ratio * c_hat[i]
        if np.linalg.norm(U[:, i]) <= 2 * math.sqrt(m + K) * delta < np.linalg.norm(Up[:, i]) and not sw[i]:
            sw[i] = True  # "holds for the first time since it was (re)-initialized"
            cp[i] = cp[i] / math.sqrt(d * (m + K))  # Scalar Mode Switch
    return Up, cp, chp, sw


def literal_algorithm1(target, m, K, H, *, eta, delta, lam, draw):
    """Algorithm 1; ``draw(n)`` returns n columns from δ Unif(S^{d-1}) and n signs."""
    d, l = target.dim, target.order
    Tstar = ref.dense(target.U, target.a, l)
    U, a = draw(m)
    c = np.array([math.sqrt(d * (m + K)) / np.linalg.norm(U[:, i]) for i in range(m)])
    c_hat = np.array([1 / np.linalg.norm(U[:, i]) for i in range(m)])
    switched = np.zeros(m, bool)
    losses = [literal_f(Tstar, U, a, c, c_hat, lam, l)]
    for _ in range(K):
        # "any vector with the smallest norm": right after the initialisation all norms are δ up
        # to rounding, so break ties on the same rounding as BeyondLazy
        j = int(np.argmin(np.linalg.norm(U, axis=0)))
        u, s = draw(1)
        U[:, j], a[j] = u[:, 0], s[0]
        c[j] = math.sqrt(d * (m + K)) / np.linalg.norm(U[:, j])
        c_hat[j] = 1 / np.linalg.norm(U[:, j])
        switched[j] = False
        for _ in range(H):
            U, c, c_hat, switched = literal_iteration(Tstar, U, a, c, c_hat, switched, lam=lam,
                                                      eta=eta, delta=delta, m=m, K=K, l=l)
        losses.append(literal_f(Tstar, U, a, c, c_hat, lam, l))
    return U, a, c, c_hat, switched, np.array(losses)


def literal_proj_B_squared(target, U):
    """||P_B U||_F^2 with P_B = I - U*(U*^T U*)^+ U*^T."""
    Us = target.U
    P_B = np.eye(target.dim) - Us @ np.linalg.pinv(Us.T @ Us) @ Us.T
    return float(np.sum((P_B @ U) ** 2))


def random_parts(rng, d=4, m=3):
    U = rng.standard_normal((d, m))
    signs = rng.choice([-1.0, 1.0], size=m)
    c = rng.uniform(0.5, 2.0, size=m)
    c_hat = rng.uniform(0.5, 2.0, size=m)
    return U, signs, c, c_hat


# ---- the objective and its gradient ---------------------------------------------------------

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
def test_model_loss_gradient_against_the_literal_formulas(rng, order):
    tgt = tdflow.Target.random_unit(4, np.array([1.0, 0.6]), rng, order)
    U, signs, c, c_hat = random_parts(rng)
    Tstar = ref.dense(tgt.U, tgt.a, order)
    dense_model = sum(signs[i] * c[i] ** (order - 2) * ref.dense(U[:, [i]], np.ones(1), order) for i in range(3))
    np.testing.assert_allclose(variant_model(tgt, U, signs, c).dense(), dense_model, rtol=1e-12, atol=1e-13)
    lam = 0.2
    want = literal_f(Tstar, U, signs, c, c_hat, lam, order)
    assert variant_loss(tgt, U, signs, c, c_hat, lam) == pytest.approx(want, rel=1e-11)
    G = literal_grad(Tstar, U, signs, c, c_hat, lam, order)
    np.testing.assert_allclose(variant_gradient(tgt, U, signs, c, c_hat, lam), G, rtol=1e-10, atol=1e-12)
    # the literal gradient is the derivative of the literal f (scalars fixed)
    E = np.zeros_like(U)
    E[1, 2] = 1e-6
    fd = (literal_f(Tstar, U + E, signs, c, c_hat, lam, order)
          - literal_f(Tstar, U - E, signs, c, c_hat, lam, order)) / 2e-6
    assert G[1, 2] == pytest.approx(fd, rel=1e-6)


def test_zero_column_has_zero_gradient(rng):
    tgt = tdflow.Target.random_unit(4, np.array([1.0]), rng, 3)
    U, signs, c, c_hat = random_parts(rng)
    U[:, 1] = 0.0
    G = variant_gradient(tgt, U, signs, c, c_hat, 0.1)
    assert np.all(G[:, 1] == 0.0)


# ---- Algorithm 1 ----------------------------------------------------------------------------

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
    assert problem.bound == pytest.approx(14 * 1e-6)
    # tdflow's practical step: 0.3 / (l max(||T*||_F, l kappa^{2(l-2)} threshold^2))
    curvature = max(problem.target.norm, 3 * 10 * 14 * (2 * np.sqrt(14) * 1e-3) ** 2)
    assert problem.eta == pytest.approx(0.3 / (3 * curvature))


def crafted_state(problem, rng):
    """Column 0 just below the threshold and pushed across it by the step, column 1 already
    switched, the rest fresh."""
    s = problem.init_state(rng)
    U = s.U.copy()
    u_star = problem.target.U[:, 0]
    U[:, 0] = 0.999 * problem.threshold * u_star
    U[:, 1] = 0.3 * u_star + 1e-4 * rng.standard_normal(problem.target.dim)
    n = np.linalg.norm(U, axis=0)
    scalar = np.zeros(problem.m, bool)
    scalar[1] = True
    c = np.where(scalar, 1.0, problem.kappa) / n
    signs = s.signs.copy()
    signs[:2] = 1.0
    return VariantState(np.asfortranarray(U), signs, c, 1.0 / n, scalar, s.drawn)


@pytest.mark.parametrize("order", [3, 4])
def test_one_iteration_equals_the_literal_transcription(rng, order):
    tgt = tdflow.Target.random_unit(4, np.array([1.0, 0.7]), rng, order)
    bl = BeyondLazy(tgt, 4, epochs=3, steps=1, eta=0.05, delta=1e-2, lam=0.05)
    s = crafted_state(bl, rng)
    got = bl.step(s)
    U, c, c_hat, sw = literal_iteration(ref.dense(tgt.U, tgt.a, order), s.U, s.signs, s.c, s.c_hat,
                                        s.scalar_mode, lam=0.05, eta=0.05, delta=1e-2, m=4, K=3, l=order)
    assert sw[0] and sw[1] and not sw[2:].any()  # column 0 switched in this step
    np.testing.assert_allclose(got.U, U, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(got.c, c, rtol=1e-12)
    np.testing.assert_allclose(got.c_hat, c_hat, rtol=1e-12)
    np.testing.assert_array_equal(got.scalar_mode, sw)


@pytest.mark.parametrize("order,eta", [(3, 0.02), (4, 0.004)])
def test_run_equals_the_literal_algorithm(order, eta):
    tgt = tdflow.Target.random_unit(4, np.array([1.0, 0.7]), 7, order)
    bl = BeyondLazy(tgt, 3, epochs=3, steps=40, eta=eta, delta=1e-2, lam=0.01)
    res = bl.run(11, progress=False)
    g = np.random.default_rng(11)
    U, a, c, c_hat, sw, losses = literal_algorithm1(tgt, 3, 3, 40, eta=eta, delta=1e-2, lam=0.01,
                                                    draw=lambda n: bl._draw(n, g))
    assert res.n_switches.sum() >= 2  # the run crosses the threshold, so the switch is exercised
    np.testing.assert_allclose(res.state.U, U, rtol=1e-9, atol=1e-13)
    np.testing.assert_allclose(res.state.c, c, rtol=1e-9)
    np.testing.assert_allclose(res.state.c_hat, c_hat, rtol=1e-9)
    np.testing.assert_array_equal(res.state.signs, a)
    np.testing.assert_array_equal(res.state.scalar_mode, sw)
    np.testing.assert_allclose(res.loss, losses, rtol=1e-9, atol=1e-15)


def test_switch_divides_c_once_and_both_scalars_keep_rescaling(problem, rng):
    s = crafted_state(problem, rng)
    kappa, thr = problem.kappa, problem.threshold
    U2 = s.U.copy()
    U2[:, 0] *= 1.5  # crosses 2 sqrt(m+K) delta
    U2[:, 1] *= 2.0  # already switched: rescaled, never divided again
    U2[:, 2] *= 1.1  # stays below
    s2 = problem.rescale(s, U2)
    assert s2.scalar_mode[:2].all() and not s2.scalar_mode[2:].any()
    assert s2.c[0] == pytest.approx(s.c[0] / 1.5 / kappa, rel=1e-14)
    assert s2.c_hat[0] == pytest.approx(s.c_hat[0] / 1.5, rel=1e-14)
    assert s2.c[0] == pytest.approx(s2.c_hat[0], rel=1e-14)  # c_i = ĉ_i from then on
    assert s2.c[1] == pytest.approx(s.c[1] / 2.0, rel=1e-14)
    assert s2.c_hat[1] == pytest.approx(s.c_hat[1] / 2.0, rel=1e-14)
    assert s2.c[2] == pytest.approx(s.c[2] / 1.1, rel=1e-14)
    # falling back below the threshold and crossing again does not switch a second time
    U3 = s2.U.copy()
    U3[:, 0] *= 0.5 * thr / np.linalg.norm(U3[:, 0])
    s3 = problem.rescale(s2, U3)
    U4 = s3.U.copy()
    U4[:, 0] *= 3.0
    s4 = problem.rescale(s3, U4)
    assert s4.c[0] * np.linalg.norm(U4[:, 0]) == pytest.approx(1.0, rel=1e-13)
    # the component's weight scales by alpha^2 under u -> alpha u in either mode
    l = problem.order
    for i in (0, 2):
        w3 = s3.c[i] ** (l - 2) * np.linalg.norm(s3.U[:, i]) ** l
        w4 = s4.c[i] ** (l - 2) * np.linalg.norm(s4.U[:, i]) ** l
        alpha = np.linalg.norm(s4.U[:, i]) / np.linalg.norm(s3.U[:, i])
        assert w4 == pytest.approx(alpha ** 2 * w3, rel=1e-12)
    # re-drawing the smallest column re-arms its switch with fresh scalars
    s5 = problem.redraw(s4, 0)
    j = int(np.argmin(np.linalg.norm(s4.U, axis=0)))
    n = np.linalg.norm(s5.U[:, j])
    assert n == pytest.approx(1e-3, rel=1e-14) and s5.drawn == s4.drawn + 1
    assert s5.c[j] == kappa / n and s5.c_hat[j] == 1.0 / n and not s5.scalar_mode[j]
    others = np.arange(problem.m) != j
    np.testing.assert_array_equal(s5.U[:, others], s4.U[:, others])


def check_invariants(bl, s):
    n = np.linalg.norm(s.U, axis=0)
    np.testing.assert_allclose(s.c_hat * n, 1.0, rtol=1e-12)
    np.testing.assert_allclose(s.c * n, np.where(s.scalar_mode, 1.0, bl.kappa), rtol=1e-12)


def test_invariants_and_lemma_5_hold_at_every_step(problem):
    """ĉ_i ||u_i|| = 1 always; c_i ||u_i|| = sqrt(d(m+K)) before the switch and 1 after; and
    ||P_B U||_F^2 <= (m+K) δ^2 (Lemma 5), after every step of a run."""
    g = np.random.default_rng(0)
    s = problem.init_state(g)
    check_invariants(problem, s)
    worst = [literal_proj_B_squared(problem.target, s.U)]
    seen_vector = seen_scalar = False
    for _ in range(problem.epochs):
        s = problem.redraw(s, g)
        epoch_worst = literal_proj_B_squared(problem.target, s.U)
        for _ in range(problem.steps):
            s = problem.step(s)
            check_invariants(problem, s)
            seen_vector |= (~s.scalar_mode).any()
            seen_scalar |= s.scalar_mode.any()
            epoch_worst = max(epoch_worst, literal_proj_B_squared(problem.target, s.U))
        worst.append(epoch_worst)
    assert seen_vector and seen_scalar
    res = problem.run(0, progress=False)
    np.testing.assert_array_equal(res.state.U, s.U)  # run is exactly this loop
    assert res.invariant_error < 1e-12
    np.testing.assert_allclose(res.proj_B_max, worst, rtol=1e-10)
    assert res.worst_proj_B == pytest.approx(max(worst), rel=1e-10)
    assert res.within_bound and res.worst_proj_B <= res.bound
    assert np.all(res.proj_B <= res.proj_B_max)


def test_run_fits_a_nonorthogonal_target(problem):
    res = problem.run(0, progress=False)
    assert res.loss.shape == (9,) and res.proj_B_max.shape == (9,) and res.n_switches.shape == (9,)
    assert res.loss[0] == pytest.approx(0.5 * problem.target.norm ** 2, rel=1e-3)
    assert res.relative_error[-1] < 1e-3
    assert res.loss[-1] < 1e-3 * res.loss[0]
    assert res.state.drawn == 6 + 8 and res.n_steps == 8 * 60
    assert res.n_scalar[-1] >= 2  # at least one column per target direction
    assert res.n_switches.sum() >= res.n_scalar[-1]
    again = problem.run(0, progress=False)
    np.testing.assert_array_equal(again.loss, res.loss)
    text = res.summary()
    assert "Lemma 5" in text and "held" in text and "invariants" in text


def test_order_four_runs_with_the_automatic_step(rng):
    tgt = tdflow.Target.random_unit(6, np.array([1.0, 0.7]), rng, 4)
    res = BeyondLazy(tgt, 4, epochs=4, steps=150).run(3, progress=False)
    assert res.relative_error[-1] < 1e-2
    assert res.within_bound and res.invariant_error < 1e-12


# ---- Theorem 3 ------------------------------------------------------------------------------

def unit_norm_target(d=10, r=2, order=3, seed=0):
    tgt = tdflow.Target.random_unit(d, np.array([1.0, 0.8][:r]), seed, order)
    return tdflow.Target(tgt.U, tgt.a / tgt.norm, order)


def test_theory_parameters_of_theorem_3():
    tgt = unit_norm_target()
    d, r, l, eps = 10, 2, 3, 0.1
    bl = BeyondLazy.theory(tgt, eps)
    L = math.log(d / eps)
    assert bl.m == math.ceil(r ** 7.5 / eps ** 5 * L) == 83_362_485
    assert bl.lam == pytest.approx(eps / r ** 1.5)
    assert bl.epochs == math.ceil(r ** 6 / eps ** 4 * L) == 2_947_309
    assert bl.kappa == pytest.approx(math.sqrt(d * (bl.m + bl.epochs)))
    theta = 2 * math.sqrt(bl.m + bl.epochs) * bl.delta
    assert bl.eta == pytest.approx(0.3 / (l * max(1.0, l * bl.kappa ** 2 * theta ** 2)), rel=1e-12)
    assert bl.delta == pytest.approx(eps ** 2 * math.sqrt(bl.lam) / (l * math.sqrt(bl.m + bl.epochs)))
    assert bl.steps == math.ceil(r ** 1.5 / eps * L / bl.eta)  # η H = r^{0.5 l}/ε log(d/ε)
    # the docstring's example
    assert (bl.delta, bl.eta, bl.steps) == (pytest.approx(6.746e-08, rel=1e-3),
                                           pytest.approx(2.458e-05, rel=1e-3), 5_299_618)
    # each constant scales its own quantity
    scaled = BeyondLazy.theory(tgt, eps, c_m=0.5, c_lam=2.0, c_K=0.25, c_H=3.0, m=50, delta=1e-4, eta=1e-3)
    assert scaled.m == 50 and scaled.lam == pytest.approx(2 * bl.lam)
    assert scaled.epochs == math.ceil(0.25 * r ** 6 / eps ** 4 * L)
    assert scaled.delta == 1e-4 and scaled.eta == 1e-3
    assert scaled.steps == math.ceil(3.0 * r ** 1.5 / eps * L / 1e-3)
    assert BeyondLazy.theory(tgt, eps, c_m=0.5).m == math.ceil(0.5 * r ** 7.5 / eps ** 5 * L)
    with pytest.raises(ValueError, match=r"assumes \|\|T\*\|\|_F = 1"):
        BeyondLazy.theory(tdflow.Target.random_unit(10, np.array([1.0, 0.8]), 0, 3), eps)
    with pytest.raises(ValueError, match="eps must be < "):
        BeyondLazy.theory(tgt, 1.5)
    with pytest.raises(ValueError, match="too small: Theorem 3's m or K overflows"):
        BeyondLazy.theory(tgt, 1e-70)
    with pytest.raises(ValueError, match="c_K must be > 0"):
        BeyondLazy.theory(tgt, eps, c_K=0.0)


# ---- validation -----------------------------------------------------------------------------

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

"""Every fast path against the exact one: the active set, the basis-target path, the adaptive
stepper, batched replicas."""
import numpy as np
import pytest

import reference as ref
import tdflow


@pytest.fixture(scope="module")
def fig1_setting():
    target = tdflow.Target.orthogonal(10, tdflow.geometric_weights(5, 1.2))
    W0 = tdflow.sphere(10, 50, 1e-15, 0)
    return target, W0


def mixed_state(rng, d=8, m=40):
    """Columns from 1e-15 to 1: the plateau situation, part fitted, part still tiny."""
    W = rng.standard_normal((d, m))
    W /= np.linalg.norm(W, axis=0)
    return np.asfortranarray(W * np.logspace(-15, 0, m))


@pytest.mark.parametrize("tol", [1e-16, 1e-12])
def test_active_set_moves_the_rhs_by_at_most_its_budget(rng, tol):
    target = tdflow.Target.random_unit(8, [1.0, 0.5, 0.25], rng)
    W = mixed_state(rng)
    fast = tdflow.GradientFlow(target, lam=0.01, active_tol=tol)
    exact = fast.exact()
    assert exact.active_tol == 0.0
    d_fast, d_exact = fast.rhs(W), exact.rhs(W)
    n_active = fast._core.n_active
    assert 0 < n_active < W.shape[1]
    exact.rhs(W)
    assert exact._core.n_active == W.shape[1]
    # the dropped columns move T by at most tol * ||T*||, column j's velocity by at most
    # (l + l - 2) ||w_j|| times that; plus rounding (the GEMMs have other shapes)
    bound = 6 * tol * target.norm * np.linalg.norm(W, axis=0) + 1e-14 * np.linalg.norm(d_exact, axis=0)
    assert np.all(np.linalg.norm(d_fast - d_exact, axis=0) <= bound)
    np.testing.assert_allclose(d_exact, ref.rhs(target.U, target.a, W, 4, 0.01), rtol=1e-9, atol=1e-14)
    assert fast.loss(W) == pytest.approx(exact.loss(W), rel=1e-12)
    np.testing.assert_allclose(fast.directional_residual(W), exact.directional_residual(W), rtol=1e-12, atol=1e-15)


def test_active_set_is_empty_in_the_plateau_and_full_at_the_end(fig1_setting):
    target, W0 = fig1_setting
    flow = tdflow.GradientFlow(target)
    flow.rhs(W0)
    assert flow._core.n_active == 0
    tr = flow.integrate(W0, (0, 250), method="dopri5", n_records=3)
    flow.rhs(tr.W)
    assert flow._core.n_active > 5


def test_active_set_run_equals_exact_run(fig1_setting):
    target, W0 = fig1_setting
    fast = tdflow.GradientFlow(target).integrate(W0, (0, 250), method="rk4", h=0.05, n_records=251)
    exact = tdflow.GradientFlow(target, active_tol=0.0).integrate(W0, (0, 250), method="rk4", h=0.05, n_records=251)
    np.testing.assert_allclose(fast.W, exact.W, rtol=0, atol=1e-12 * np.abs(exact.W).max())
    np.testing.assert_array_equal(fast.fit_times(), exact.fit_times())


def test_basis_path_equals_general_path(rng):
    # the same tensor twice: on e_1, e_2 (basis fast path) and on e_2, e_1 (general GEMM path)
    a = np.array([0.7, 0.3])
    basis = tdflow.Target.orthogonal(5, a)
    swapped = tdflow.Target(np.eye(5)[:, [1, 0]], a[::-1])
    assert basis.is_basis and not swapped.is_basis
    fb, fs = tdflow.GradientFlow(basis), tdflow.GradientFlow(swapped)
    assert fb._core.basis_target and not fs._core.basis_target
    W = rng.standard_normal((5, 300))
    np.testing.assert_allclose(fb.rhs(W), fs.rhs(W), rtol=1e-12, atol=1e-12)
    assert fb.loss(W) == pytest.approx(fs.loss(W), rel=1e-12)
    np.testing.assert_allclose(fb.directional_residual(W), fs.directional_residual(W)[::-1], rtol=1e-12)


def test_adaptive_matches_fine_rk4_on_figure1(fig1_setting):
    target, W0 = fig1_setting
    flow = tdflow.GradientFlow(target)
    fine = flow.integrate(W0, (0, 250), method="rk4", h=0.01, n_records=2)
    adaptive = flow.integrate(W0, (0, 250), method="dopri5", rtol=1e-9, n_records=2)
    rel = np.abs(adaptive.W - fine.W).max() / np.abs(fine.W).max()
    assert rel < 1e-6
    assert adaptive.n_rhs * 10 < fine.n_rhs


@pytest.mark.parametrize("method,h", [("rk4", 0.1), ("dopri5", None), ("dop853", None)])
def test_batch_equals_single_runs_bitwise(rng, method, h):
    target = tdflow.Target.random_unit(6, [1.0, 0.5], rng)
    flow = tdflow.GradientFlow(target, lam=1e-3)
    W0s = np.stack([tdflow.sphere(6, 20, 1e-6, s) for s in range(5)])
    batch = flow.integrate_batch(W0s, (0, 30), method=method, h=h, n_records=7, save_norms=True)
    assert len(batch) == 5
    for W0, tr in zip(W0s, batch):
        single = flow.integrate(W0, (0, 30), method=method, h=h, n_records=7, save_norms=True)
        np.testing.assert_array_equal(tr.W, single.W)
        np.testing.assert_array_equal(tr.loss, single.loss)
        np.testing.assert_array_equal(tr.norms, single.norms)
        assert tr.n_rhs == single.n_rhs and tr.success


def test_batch_reads_every_memory_order_of_the_stack(rng):
    """The core reads each replica of W0s (one copy, straight from a C-ordered stack) alike for
    a C-ordered, a Fortran-ordered and a strided stack: the same runs, bitwise."""
    flow = tdflow.GradientFlow(tdflow.Target.random_unit(5, [1.0, 0.5], rng), lam=1e-3)
    W0s = rng.standard_normal((3, 5, 4))
    args = (0.0, np.linspace(0, 1, 3), "rk4", 0.1, 1e-8, 0.0, np.inf, 0, False, False, None, 0.1)
    ref, _ = flow._core.integrate_batch(W0s, *args)
    single = flow._core.integrate(W0s[1], *args)
    np.testing.assert_array_equal(ref[1]["W"], single["W"])
    strided = np.repeat(W0s, 2, axis=2)[:, :, ::2]
    for stack in (np.asfortranarray(W0s), strided):
        runs, _ = flow._core.integrate_batch(stack, *args)
        for a, b in zip(runs, ref):
            np.testing.assert_array_equal(a["W"], b["W"])
            np.testing.assert_array_equal(a["loss"], b["loss"])


def test_batch_validation_and_failure(rng):
    flow = tdflow.GradientFlow(tdflow.Target.orthogonal(3, [1.0]))
    with pytest.raises(ValueError, match="W0s must be 3-D"):
        flow.integrate_batch(np.ones((3, 2)))
    with pytest.raises(ValueError, match=r"W0s must have shape \(\*, 3, \*\)"):
        flow.integrate_batch(np.ones((2, 4, 2)))
    W0s = np.zeros((3, 3, 1))
    W0s[1, 0, 0] = 3.0  # this replica blows up with a huge Euler step
    with pytest.raises(tdflow.IntegrationError, match="replica 1") as info:
        flow.integrate_batch(W0s, (0, 50), method="euler", h=1.0, t_eval=np.arange(51.0))
    assert len(info.value.trajectories) == 3 and info.value.trajectories[0].success


@pytest.mark.parametrize("order,m,left_out", [(4, 1200, 0), (3, 1333, 0), (5, 2100, 0), (4, 1500, 150),
                                              (4, 1300, 100)])
def test_symmetric_self_contraction_equals_reference(rng, order, m, left_out):
    """With at least 1200 columns in the residual their model part is contracted with itself in
    symmetric block pairs (contract_self_add, above d = 16, where the register kernels of small d
    stop); columns left out of the residual (``left_out`` tiny ones) are contracted against it
    apart and gathered back. The RHS must equal the plain reference and not depend on threads."""
    d = 17
    target = tdflow.Target.random_unit(d, [1.0, 0.6], rng, order=order)
    W = np.asfortranarray(rng.standard_normal((d, m)) * rng.uniform(0.1, 1.0, m))
    tiny = rng.choice(m, left_out, replace=False)
    W[:, tiny] *= 1e-12
    flow = tdflow.GradientFlow(target, lam=0.01)
    runs = []
    for n in (1, 2):
        with tdflow.num_threads(n):
            runs.append(flow.rhs(W))
    assert flow._core.n_active == m - left_out
    np.testing.assert_array_equal(runs[0], runs[1])
    expected = ref.rhs(target.U, target.a, W, order, 0.01)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(runs[0], expected, rtol=1e-10, atol=1e-12 * scale)
    if left_out:  # the tiny columns' velocities, relative to their own size
        np.testing.assert_allclose(runs[0][:, tiny], expected[:, tiny], rtol=1e-10,
                                   atol=1e-12 * np.abs(expected[:, tiny]).max())


@pytest.mark.parametrize("nb", range(1, 14))
def test_pair_rounds_meet_every_pair_once(nb):
    rounds = tdflow._core._pair_rounds(nb)
    pairs = [p for r in rounds for p in r]
    assert sorted(pairs) == sorted((k, j) for j in range(nb) for k in range(j))
    for r in rounds:  # a block is in at most one pair of a round: rounds run in parallel
        blocks = [b for p in r for b in p]
        assert len(blocks) == len(set(blocks))
    assert len(rounds) == (0 if nb < 2 else nb - 1 + nb % 2)


@pytest.mark.parametrize("k", [3072, 3333, 8000, 100000])
def test_self_block_edge(k):
    b = tdflow._core._self_block(k)
    assert b % 8 == 0 and b & (b - 1) != 0 and 256 <= b <= 400

"""The register kernels for small d (cpp/include/tdflow/small_contract.hpp) against the GEMM path
of the same contractions, and the flow that uses them against the NumPy reference."""
import numpy as np
import pytest

import reference as ref
import tdflow
from tdflow import _core


def parts(rng, d, k):
    Z = np.asfortranarray(rng.standard_normal((d, k)))
    return Z, rng.standard_normal(k)


@pytest.mark.parametrize("d", [1, 2, 3, 7, 8, 10, 16])
@pytest.mark.parametrize("order", [3, 4, 7])
@pytest.mark.parametrize("k,m", [(1, 1), (5, 9), (50, 50), (40, 300), (3, 517)])
def test_small_kernels_equal_the_gemm_path(rng, d, order, k, m):
    Z, c = parts(rng, d, k)
    V = np.asfortranarray(rng.standard_normal((d, m)))
    out = _core._small(Z, c, V, order, "contract")
    full = _core.contract(Z, c, V, order)
    np.testing.assert_allclose(out, full, rtol=1e-12, atol=1e-13 * np.abs(full).max())
    vals = _core._small(Z, c, V, order, "evaluate")
    exact = _core.evaluate(Z, c, V, order)
    np.testing.assert_allclose(vals, exact, rtol=1e-12, atol=1e-13 * np.abs(exact).max())
    n2 = _core._small(Z, c, None, order, "norm")
    assert n2 == pytest.approx(_core.norm_squared(Z, c, order), rel=1e-11)
    if d <= 3 and k <= 5 and m <= 9:  # brute force on d^l arrays
        T = ref.dense(Z, c, order)
        brute = np.stack([ref.dense_apply(T, [v] * (order - 1)) for v in V.T], axis=1)
        np.testing.assert_allclose(out, brute, rtol=1e-10, atol=1e-12 * np.abs(brute).max())


def test_small_kernels_serve_d_up_to_16_only(rng):
    Z, c = parts(rng, 17, 4)
    assert _core._small(Z, c, Z, 4, "contract") is None
    Z, c = parts(rng, 16, 4)
    assert _core._small(Z, c, Z, 4, "contract") is not None


@pytest.mark.parametrize("d,m", [(10, 50), (16, 37), (3, 600)])
@pytest.mark.parametrize("order", [3, 4, 6])
def test_small_flow_equals_reference_and_threads(rng, d, m, order):
    """rhs, loss and directional residual of a flow at small d (register kernels, fused velocity)
    against the NumPy reference, for basis and general targets, equal for 1 and 2 threads."""
    for target in (tdflow.Target.orthogonal(d, tdflow.geometric_weights(min(d, 4), 1.2), order=order),
                   tdflow.Target.random_unit(d, [1.0, 0.5], rng, order=order)):
        flow = tdflow.GradientFlow(target, lam=0.01, active_tol=0.0)
        W = np.asfortranarray(rng.standard_normal((d, m)) * rng.uniform(0.1, 1.0, m))
        W[:, 0] = 0.0  # a zero column has zero velocity
        runs = []
        for n in (1, 2):
            with tdflow.num_threads(n):
                runs.append(flow.rhs(W))
        np.testing.assert_array_equal(runs[0], runs[1])
        expected = ref.rhs(target.U, target.a, W, order, 0.01)
        np.testing.assert_allclose(runs[0], expected, rtol=1e-10, atol=1e-12 * np.abs(expected).max())
        assert np.all(runs[0][:, 0] == 0.0)
        assert flow.loss(W) == pytest.approx(ref.loss(target.U, target.a, W, order, 0.01), rel=1e-10)
        np.testing.assert_allclose(flow.directional_residual(W),
                                   ref.directional_residual(target.U, target.a, W, order), rtol=1e-10,
                                   atol=1e-12)
        # a C-ordered (strided) state takes the same path
        np.testing.assert_array_equal(flow.rhs(np.ascontiguousarray(W)), runs[0])


@pytest.mark.parametrize("d", [1, 4, 10, 16])
@pytest.mark.parametrize("order", [3, 4, 6, 9])
@pytest.mark.parametrize("k", [1, 7, 8, 9, 17, 1100])
def test_small_norm_by_half_gram_equals_the_full_sum(rng, d, order, k):
    """||T||_F^2 by the upper half of the Gram matrix (lanes masked on the diagonal) against the
    plain double sum over every pair, brute-force d^l arrays where small, and bitwise equal for
    1 and 2 threads (k = 1100 runs its lanes in parallel)."""
    Z, c = parts(rng, d, k)
    full = float(c @ ((Z.T @ Z) ** order) @ c)
    runs = []
    for n in (1, 2):
        with tdflow.num_threads(n):
            runs.append(_core._small(Z, c, None, order, "norm"))
    assert runs[0] == runs[1]
    scale = float(np.abs(c) @ (np.abs(Z.T @ Z) ** order) @ np.abs(c))
    assert runs[0] == pytest.approx(max(full, 0.0), abs=1e-13 * scale)
    if d ** order <= 5000:
        assert runs[0] == pytest.approx(float(np.sum(ref.dense(Z, c, order) ** 2)), abs=1e-12 * scale)


def test_recorded_loss_and_residuals_equal_the_separate_evaluations(rng):
    """A run records ||T* - T|| and (T* - T)(u_i^l) with one preparation of each state: the same
    numbers, bitwise, as flow.residual_norm and flow.directional_residual at the saved states (the
    loss adds lam/2 ||W||^2, whose sum Eigen orders by the array's alignment)."""
    target = tdflow.Target.random_unit(10, [1.0, 0.6, 0.3], rng)
    flow = tdflow.GradientFlow(target, lam=0.01)
    W0 = np.asfortranarray(rng.standard_normal((10, 37)) * 0.2)
    tr = flow.integrate(W0, (0.0, 5.0), method="dop853", t_eval=np.linspace(0, 5, 7), save_states=True)
    for W, loss, rnorm, dirs in zip(tr.states, tr.loss, tr.residual_norm, tr.directional_residual):
        assert rnorm == flow.residual_norm(W)
        assert loss == pytest.approx(flow.loss(W), rel=1e-15)
        np.testing.assert_array_equal(dirs, flow.directional_residual(W))

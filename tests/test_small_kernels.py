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

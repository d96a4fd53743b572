"""The moment-tensor contraction (contraction="moment", cpp/include/tdflow/moment.hpp) against the
Gram path, the NumPy reference and brute-force d^l arrays; thread independence; the automatic
choice; whole runs; accuracy of ||T - T*||_F near T = T*."""
import pickle

import numpy as np
import pytest

import reference as ref
import tdflow

LAM = 0.03


def flows(target, lam=LAM, **kw):
    return {c: tdflow.GradientFlow(target, lam, contraction=c, **kw) for c in ("gram", "moment")}


def make_target(kind, d, order, rng):
    a = [1.0, 0.6, 0.3]
    if kind == "basis":
        return tdflow.Target.orthogonal(d, a, order=order)
    if kind == "rotated":
        return tdflow.Target.random_rotation(d, a, rng, order=order)
    return tdflow.Target.random_unit(d, a, rng, order=order)


def awkward_state(rng, d, m):
    """Column norms 1e-3..3, column 1 zero, columns 3 and 7 of norm 1e-200 (directions returned)."""
    W = rng.standard_normal((d, m))
    W *= np.logspace(-3, 0.5, m) / np.linalg.norm(W, axis=0)
    W[:, 1] = 0.0
    tiny = rng.standard_normal((d, 2))
    tiny /= np.linalg.norm(tiny, axis=0)
    W[:, [3, 7]] = 1e-200 * tiny
    return np.asfortranarray(W), tiny


@pytest.mark.parametrize("order", [3, 4, 5])
@pytest.mark.parametrize("kind", ["basis", "rotated", "unit"])
def test_both_paths_equal_reference_and_dense_arrays(rng, order, kind):
    d, m = 4, 30
    target = make_target(kind, d, order, rng)
    W, tiny = awkward_state(rng, d, m)
    f = flows(target)
    out = {c: fl.rhs(W) for c, fl in f.items()}
    assert f["moment"]._core.last_contraction == "moment" and f["gram"]._core.last_contraction == "gram"
    # the reference divides by ||w||^(l-2): hold it against the state without the tiny columns,
    # which change T by 1e-400 (nothing in double precision)
    W0 = W.copy(order="F")
    W0[:, [3, 7]] = 0.0
    big = [k for k in range(m) if k not in (3, 7)]
    expected = ref.rhs(target.U, target.a, W0, order, LAM)
    np.testing.assert_allclose(expected, ref.rhs_dense(target.U, target.a, W0, order, LAM), rtol=1e-10, atol=1e-12)
    scale = np.abs(expected).max()
    for c in out:
        np.testing.assert_allclose(out[c][:, big], expected[:, big], rtol=1e-10, atol=1e-13 * scale, err_msg=c)
        assert np.all(out[c][:, 1] == 0.0)
    # a tiny column moves as 1e-200 times the velocity of its unit direction (l R(v^{l-1}) - ...)
    Z, c = ref.residual_parts(target.U, target.a, W0, order)
    for col, v in zip((3, 7), tiny.T):
        Rv = ref.contract(Z, c, v[:, None], order)[:, 0]
        unit = order * Rv - (order - 2) * (Rv @ v) * v - LAM * v
        for path in out:
            np.testing.assert_allclose(out[path][:, col], 1e-200 * unit, rtol=1e-10, atol=1e-212, err_msg=path)
    # loss, ||T - T*|| and (T - T*)(u_i^l): reference, dense array, both paths
    T = ref.dense(target.U, target.a, order) - ref.dense(*ref.model_parts(W0, order), order)
    loss = 0.5 * np.sum(T * T) + 0.5 * LAM * np.sum(W * W)
    assert loss == pytest.approx(ref.loss(target.U, target.a, W0, order, LAM), rel=1e-12)
    dirs = np.array([ref.dense_apply(T, [u] * order) for u in target.U.T])
    for c, fl in f.items():
        assert fl.loss(W) == pytest.approx(loss, rel=1e-12), c
        assert fl.residual_norm(W) == pytest.approx(np.sqrt(np.sum(T * T)), rel=1e-12), c
        np.testing.assert_allclose(fl.directional_residual(W), dirs, rtol=1e-12, atol=1e-13, err_msg=c)


@pytest.mark.parametrize("order,d,m", [(4, 9, 33000), (3, 12, 5000), (5, 5, 3000)])
def test_moment_path_is_thread_independent_and_equals_reference(rng, order, d, m):
    """Large enough for several build tasks (row blocks of 128 monomials, column chunks of
    4096) and many contraction blocks, all run in parallel: 1 and 2 threads agree bitwise."""
    target = tdflow.Target.random_rotation(d, [1.0, 0.5], rng, order=order)
    W = np.asfortranarray(rng.standard_normal((d, m)) * rng.uniform(0.1, 1.0, m))
    flow = tdflow.GradientFlow(target, LAM, contraction="moment")
    runs = []
    for n in (1, 2):
        with tdflow.num_threads(n):
            runs.append((flow.rhs(W), flow.loss(W), flow.directional_residual(W)))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1]
    np.testing.assert_array_equal(runs[0][2], runs[1][2])
    cols = rng.choice(m, size=6, replace=False)
    expected = ref.rhs(target.U, target.a, W, order, LAM, columns=cols)
    np.testing.assert_allclose(runs[0][0][:, cols], expected, rtol=1e-9, atol=1e-12 * np.abs(expected).max())


def test_residual_norm_is_accurate_near_zero(rng):
    """T = T* + eps^2 v^(x)l exactly (one extra column of norm eps): ||T - T*||_F = eps^2. The
    moment path's sum of squares gets it to rounding; the Gram form cannot go below ~1e-8."""
    d, eps = 6, 1e-5
    target = tdflow.Target.random_rotation(d, [1.0, 0.7, 0.4], rng)
    v = rng.standard_normal(d)
    W = np.asfortranarray(np.column_stack([target.U * np.sqrt(target.a), eps * v / np.linalg.norm(v)]))
    flow = tdflow.GradientFlow(target, contraction="moment")
    assert flow.residual_norm(W) == pytest.approx(eps**2, rel=1e-5)
    assert flow.loss(W) == pytest.approx(0.5 * eps**4 + 0.0, rel=1e-5)


def test_auto_takes_the_cheaper_path(rng):
    target = tdflow.Target.orthogonal(5, [1.0, 0.5])
    flow = tdflow.GradientFlow(target)  # auto; 35 monomials of degree 3 in 5 variables
    assert flow.contraction == "auto"
    for m, path in [(20, "gram"), (2000, "moment")]:
        W = np.asfortranarray(rng.standard_normal((5, m)))
        flow.rhs(W)
        assert flow._core.last_contraction == path
    flow.rhs(tdflow.sphere(5, 2000, 1e-15, 0))  # plateau: no column in the residual
    assert flow._core.last_contraction == "gram"
    big = tdflow.GradientFlow(tdflow.Target.orthogonal(50, [1.0]))  # 22100 monomials
    big.rhs(np.asfortranarray(rng.standard_normal((50, 2000))))
    assert big._core.last_contraction == "gram"


def test_whole_runs_agree(rng):
    """A small-initialisation run (plateau, then the directions fitted one by one) by both paths:
    same fit times, states equal to the integration's accuracy."""
    target = tdflow.Target.orthogonal(5, tdflow.geometric_weights(3, 1.5))
    W0 = tdflow.sphere(5, 300, 1e-12, 1)
    runs, paths = {}, {}
    for c in ("gram", "moment", "auto"):
        fl = tdflow.GradientFlow(target, contraction=c)
        fl.rhs(W0)
        paths[c] = [fl._core.last_contraction]
        runs[c] = fl.integrate(W0, (0, 120), method="dopri5", rtol=1e-10, n_records=241)
        fl.rhs(runs[c].W)
        paths[c].append(fl._core.last_contraction)
    # auto: Gram blocks in the plateau (no column in the residual), the moment tensor at the end
    assert paths == {"gram": ["gram"] * 2, "moment": ["moment"] * 2, "auto": ["gram", "moment"]}
    times = runs["gram"].fit_times()
    assert np.all(np.isfinite(times))
    for c in ("moment", "auto"):
        np.testing.assert_array_equal(runs[c].fit_times(), times)
        np.testing.assert_allclose(runs[c].W, runs["gram"].W, rtol=0, atol=1e-7 * np.abs(runs["gram"].W).max())
        np.testing.assert_allclose(runs[c].loss, runs["gram"].loss, rtol=1e-6, atol=1e-12)


def test_contraction_argument():
    target = tdflow.Target.orthogonal(3, [1.0])
    with pytest.raises(ValueError, match="contraction must be one of"):
        tdflow.GradientFlow(target, contraction="dense")
    with pytest.raises(ValueError, match="contraction must be one of"):
        tdflow.GradientFlow(target, contraction=None)
    with pytest.raises(ValueError, match="contraction='moment' needs a moment tensor of .* entries at d = 2000, order 4"):
        tdflow.GradientFlow(tdflow.Target.orthogonal(2000, [1.0]), contraction="moment")
    tdflow.GradientFlow(tdflow.Target.orthogonal(2000, [1.0]))  # auto: Gram only, no error
    with pytest.raises(ValueError, match="contraction='moment' needs backend='cpu', got backend='torch'"):
        tdflow.GradientFlow(target, contraction="moment", backend="torch")
    flow = tdflow.GradientFlow(target, contraction="moment")
    again = pickle.loads(pickle.dumps(flow))
    assert again.contraction == "moment" and flow.exact().contraction == "moment"

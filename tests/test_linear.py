"""Deep linear models: the flow, the conserved imbalances and the convergence-rate bounds."""
import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

import tdflow
from tdflow import cli
from tdflow.linear import DeepLinearFlow
from tdflow.linear_examples import LinearCase, run_linear_comparison


def make_flow(rng, dims, regression):
    n0, hidden, nL = dims[0], tuple(dims[1:-1]), dims[-1]
    if regression:
        X = rng.standard_normal((n0 + 4, n0))
        return DeepLinearFlow(rng.standard_normal((n0 + 4, nL)), hidden, X=X)
    return DeepLinearFlow(rng.standard_normal((n0, nL)), hidden)


def reference_rhs(flow, layers):
    """-dL/dW_l = -A_l^T G B_l^T in plain NumPy."""
    W = np.linalg.multi_dot(layers) if len(layers) > 1 else layers[0]
    G = flow.X.T @ (flow.X @ W - flow.Y) if flow.regression else W - flow.Y
    out = []
    for l in range(len(layers)):
        A = np.eye(flow.dims[0])
        for M in layers[:l]:
            A = A @ M
        B = np.eye(flow.dims[-1])
        for M in reversed(layers[l + 1:]):
            B = M @ B
        out.append(-A.T @ G @ B.T)
    return out


def factor(W0, h, rng, c=1.0):
    """Random W_1 (n x h, h >= n, singular values c * [0.5, 1.5]) and W_2 = pinv(W_1) W0, so
    that W_1 W_2 = W0; c sets the imbalance."""
    n = W0.shape[0]
    Q1, _ = np.linalg.qr(rng.standard_normal((n, n)))
    Q2, _ = np.linalg.qr(rng.standard_normal((h, h)))
    W1 = c * (Q1 * rng.uniform(0.5, 1.5, n)) @ Q2[:n, :]
    return [W1, np.linalg.pinv(W1) @ W0]


@pytest.mark.parametrize("regression", [False, True])
@pytest.mark.parametrize("dims", [(3, 2), (3, 4, 2), (2, 3, 4, 3), (1, 1, 1, 1)])
def test_rhs_against_reference_and_finite_differences(rng, dims, regression):
    flow = make_flow(rng, dims, regression)
    layers = flow.random_layers(rng)
    got = flow.rhs(layers)
    for g, r in zip(got, reference_rhs(flow, layers)):
        np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-12)
    theta = flow.pack(layers)
    fd = np.zeros_like(theta)
    eps = 1e-6
    for idx in np.ndindex(*theta.shape):
        if idx[0] >= layers[idx[1]].size:
            continue  # padding
        E = np.zeros_like(theta)
        E[idx] = eps
        fd[idx] = -(flow.loss(flow.unpack(theta + E)) - flow.loss(flow.unpack(theta - E))) / (2 * eps)
    np.testing.assert_allclose(flow.pack(got), fd, rtol=1e-6, atol=1e-7)
    assert flow.loss(layers) - flow.f_star == pytest.approx(flow.gap(layers), rel=1e-9, abs=1e-12)


def test_pack_unpack_and_shapes(rng):
    flow = DeepLinearFlow(rng.standard_normal((3, 2)), (4, 5))
    assert flow.depth == 3 and flow.dims == (3, 4, 5, 2)
    assert flow.size == 12 + 20 + 10 and flow.packed_shape == (20, 3)
    layers = flow.random_layers(7)
    theta = flow.pack(layers)
    assert theta.shape == (20, 3) and np.all(theta[12:, 0] == 0) and np.all(theta[10:, 2] == 0)
    for a, b in zip(flow.unpack(theta), layers):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(flow.product(layers), layers[0] @ layers[1] @ layers[2])
    D = flow.imbalances(layers)
    assert [d.shape for d in D] == [(4, 4), (5, 5)]
    np.testing.assert_allclose(D[0], layers[0].T @ layers[0] - layers[1] @ layers[1].T)


@pytest.mark.parametrize("regression,method", [(False, "dopri5"), (True, "dopri5"), (True, "dop853"),
                                               (False, "tsit5")])
def test_imbalances_conserved_by_adaptive_steppers(rng, regression, method):
    flow = make_flow(rng, (3, 4, 2, 3), regression)
    layers0 = flow.random_layers(rng, 0.7)
    tr = flow.integrate(layers0, (0, 5), method=method, rtol=1e-10, n_records=51, progress=False)
    assert tr.success and tr.gap[-1] < 0.1 * tr.gap[0]  # it really moved (rank 2 < 3: f* not reached)
    moved = np.linalg.norm(tr.layers[0] - layers0[0]) / np.linalg.norm(layers0[0])
    assert moved > 0.05
    drift = tr.imbalance_drift()
    assert drift.shape == (2,) and np.all(drift < 1e-9)
    # the records are the imbalances/products of the states
    for D_rec, D_fin in zip(tr.imbalances, flow.imbalances(tr.layers)):
        np.testing.assert_allclose(D_rec[-1], D_fin, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(tr.products[-1], flow.product(tr.layers), rtol=1e-12, atol=1e-12)
    assert np.all(np.diff(tr.loss) <= 1e-12 * tr.loss[0])  # gradient flow decreases the loss
    np.testing.assert_allclose(tr.loss - flow.f_star, tr.gap, rtol=1e-6, atol=1e-12)


def test_imbalances_conserved_by_rk4_at_fourth_order(rng):
    flow = make_flow(rng, (2, 3, 2), False)
    layers0 = flow.random_layers(rng)
    drifts = [flow.integrate(layers0, (0, 2), method="rk4", h=h, n_records=5,
                             progress=False).imbalance_drift()[0] for h in (0.04, 0.02)]
    assert drifts[0] < 1e-3
    assert 8 < drifts[0] / drifts[1] < 40  # error ~ h^4
    ad = flow.integrate(layers0, (0, 2), rtol=1e-11, n_records=5, progress=False)
    fx = flow.integrate(layers0, (0, 2), method="rk4", h=0.005, n_records=5, progress=False)
    np.testing.assert_allclose(fx.products, ad.products, rtol=1e-8, atol=1e-9)


def test_scalar_two_factor_bound_is_the_theorem_and_tight_at_start():
    # f = 1/2 ||Y - X w||^2 with X = (1, 1)^T: mu = K = 2, w* = 2; u0 = 1, v0 = 1/2
    flow = DeepLinearFlow([[2.0], [2.0]], (1,), X=[[1.0], [1.0]])
    layers0 = [np.array([[1.0]]), np.array([[0.5]])]
    b = flow.rate_bound(layers0)
    # Theorem 1 at n = h = m = 1 is the scalar warm-up: d = u^2 - v^2 = 0.75 is the gap, no spread
    assert b.kind == "two-layer" and b.mu == 2.0 and b.K == 2.0 and "Theorem 1" in b.statement
    assert b.imbalance["delta_gap"] == 0.75 and b.imbalance["delta_plus"] == b.imbalance["delta_minus"] == 0
    assert b.margin == pytest.approx(0.5) == flow.margin(layers0)  # 2 - |2 - 0.5|
    assert b.rate == pytest.approx(2 * 2 * math.sqrt(0.75 ** 2 + 4 * 0.5 ** 2))  # = 5
    tr = flow.integrate(layers0, (0, 4), rtol=1e-11, n_records=81, progress=False)
    # at t = 0, ||grad L||^2 / gap = 9 (u^2 + v^2) / 2.25 = 5: the bound is attained
    assert tr.rate[0] == pytest.approx(5.0, rel=1e-12)
    assert tr.observed_rate("min") == pytest.approx(b.rate, rel=1e-10)
    assert tr.observed_rate("secant") > b.rate
    # at the end u^2 + v^2 = sqrt(d^2 + 4 w*^2), so the rate tends to 2 mu sqrt(d^2 + 16)
    assert tr.observed_rate("final") == pytest.approx(4 * math.sqrt(0.75 ** 2 + 16), rel=1e-4)


def random_scalar_layers(rng, L):
    """Random scalar layers whose product has a positive margin for the target 1."""
    while True:
        w = rng.uniform(0.05, 1.6, L) * rng.choice([-1, 1], L)
        w[-1] = abs(w[-1]) * np.sign(np.prod(w[:-1]))  # product > 0
        if 0 < np.prod(w) < 1.8 and abs(1 - np.prod(w)) < 0.95:
            return [np.array([[x]]) for x in w]


def assert_rate_above_bound(flow, layers0):
    b = flow.rate_bound(layers0)
    assert b.rate > 0, b
    t_end = min(40.0 / b.rate, 100.0)  # by the bound, gap(t_end) <= e^-40 gap(0)
    t_eval = np.concatenate([[0.0], np.geomspace(1e-4 * t_end, t_end, 200)])
    tr = flow.integrate(layers0, (0, t_end), t_eval=t_eval, rtol=1e-10, save_states=True,
                        progress=False)
    assert tr.gap[-1] < 1e-6 * tr.gap[0]
    assert tr.observed_rate("min") >= b.rate * (1 - 1e-8)
    assert tr.observed_rate("secant") >= b.rate * (1 - 1e-8)
    # pointwise: the instantaneous rate is at least 2 mu alpha(current state) >= the uniform bound
    for k in range(0, tr.t.size, 20):
        if tr.gap[k] > 1e-10 * tr.gap[0]:
            local = flow.rate_bound(flow.unpack(tr.states[k]), at_state=True)
            assert tr.rate[k] >= local.rate * (1 - 1e-8)
            assert local.rate >= b.rate * (1 - 1e-8)
    return b, tr


@pytest.mark.parametrize("seed", range(4))
def test_observed_rate_never_below_bound_scalar(seed):
    rng = np.random.default_rng(seed)
    for L in (2, 3, 4):
        flow = DeepLinearFlow([[1.0]], (1,) * (L - 1))
        layers0 = random_scalar_layers(rng, L)
        b, _ = assert_rate_above_bound(flow, layers0)
        assert b.kind == ("two-layer" if L == 2 else "scalar-multilayer")


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("shape", [(3, 3, 3), (2, 4, 3), (3, 3, 2)])
@pytest.mark.parametrize("regression", [False, True])
def test_observed_rate_never_below_bound_two_layer(seed, shape, regression):
    rng = np.random.default_rng(100 + seed)
    n, h, m = shape
    flow = make_flow(rng, shape, regression)
    Ws = flow.W_star
    # initial product inside the margin ball, random factorisation with a random imbalance
    E = rng.standard_normal(Ws.shape)
    s_min = np.linalg.svd(Ws, compute_uv=False)[-1]
    W0 = Ws + rng.uniform(0.2, 0.8) * s_min * math.sqrt(flow.mu / flow.K) * E / np.linalg.norm(E)
    layers0 = factor(W0, h, rng, c=rng.uniform(0.3, 2.0))
    b, _ = assert_rate_above_bound(flow, layers0)
    assert b.kind == "two-layer" and b.margin > 0


@given(st.integers(1, 4), st.integers(1, 5), st.integers(1, 4), st.integers(0, 2 ** 31),
       st.floats(0.1, 3.0))
def test_two_layer_alpha_below_smallest_eigenvalue(n, h, m, seed, c):
    rng = np.random.default_rng(seed)
    flow = DeepLinearFlow(rng.standard_normal((n, m)), (h,))
    layers = flow.random_layers(rng)
    layers[0] *= c
    b = flow.rate_bound(layers, at_state=True)
    scale = 1.0 + sum(np.sum(M * M) for M in layers)
    assert b.alpha <= flow.ntk_min_eig(layers) + 1e-12 * scale


@given(st.integers(2, 6), st.integers(0, 2 ** 31))
def test_scalar_multilayer_alpha_below_rate_operator(L, seed):
    rng = np.random.default_rng(seed)
    flow = DeepLinearFlow([[1.0]], (1,) * (L - 1))
    layers = [np.array([[x]]) for x in rng.standard_normal(L) * np.exp(rng.uniform(-3, 1.5, L))]
    b = flow.rate_bound(layers, at_state=True)
    a = np.array([M[0, 0] ** 2 for M in layers])
    T = sum(np.prod(np.delete(a, l)) for l in range(L))
    assert flow.ntk_min_eig(layers) == pytest.approx(T, rel=1e-12)
    assert b.alpha <= T * (1 + 1e-12)
    # the balanced case attains the bound: T = L |w|^(2 - 2/L)
    if L > 2:
        bal = [np.array([[0.7]])] * L
        assert flow.rate_bound(bal, at_state=True).alpha == pytest.approx(flow.ntk_min_eig(bal), rel=1e-12)


def test_imbalance_speeds_convergence_scalar():
    """Same initial product w0 = 0.01, target 1: the unbalanced factorisations converge faster,
    and the bound orders them the same way."""
    flow = DeepLinearFlow([[1.0]], (1,))
    runs = {}
    for name, (u, v) in {"balanced": (0.1, 0.1), "d=1": (1.0, 0.01), "d=4": (2.0, 0.005)}.items():
        layers0 = [np.array([[u]]), np.array([[v]])]
        tr = flow.integrate(layers0, (0, 3), rtol=1e-10, n_records=31, progress=False)
        runs[name] = (flow.rate_bound(layers0), tr)
    gaps = [runs[k][1].gap[-1] for k in ("balanced", "d=1", "d=4")]
    bounds = [runs[k][0].rate for k in ("balanced", "d=1", "d=4")]
    assert gaps[0] > 1e3 * gaps[1] > 1e6 * gaps[2]
    assert bounds == sorted(bounds) and bounds[0] == pytest.approx(0.04) and bounds[2] > 7.9
    # balanced: the loss stays near its start for a while (saddle), unbalanced: no plateau
    assert runs["balanced"][1].gap[10] > 0.8 * runs["balanced"][1].gap[0]  # t = 1
    assert runs["d=4"][1].gap[10] < 1e-3 * runs["d=4"][1].gap[0]


@pytest.mark.parametrize("regression", [False, True])
def test_imbalance_speeds_convergence_matrix(rng, regression):
    flow = make_flow(rng, (3, 3, 3), regression)
    Ws = flow.W_star
    W0 = Ws + 0.3 * np.linalg.svd(Ws, compute_uv=False)[-1] * math.sqrt(flow.mu / flow.K) * np.eye(3)
    U, s, Vt = np.linalg.svd(W0)
    results = []
    for c in (1.0, 2.0, 4.0):  # D = (c^2 - c^-2) diag(s): positive definite, growing with c
        layers0 = [c * U * np.sqrt(s), np.sqrt(s)[:, None] * Vt / c]
        D = flow.imbalances(layers0)[0]
        assert np.linalg.eigvalsh(D)[0] >= (c * c - 1 / (c * c)) * s[-1] - 1e-9
        tr = flow.integrate(layers0, (0, 0.5), rtol=1e-10, n_records=11, progress=False)
        results.append((flow.rate_bound(layers0).rate, tr.gap[-1], tr.observed_rate("min", floor=0)))
    bounds, gaps, rates = zip(*results)
    assert bounds[0] < bounds[1] < bounds[2]
    assert gaps[0] > gaps[1] > gaps[2]
    assert rates[0] < rates[1] < rates[2]
    assert all(r >= b * (1 - 1e-8) for r, b in zip(rates, bounds))


def test_unbalanced_multilayer_scalar_beats_balanced():
    flow = DeepLinearFlow([[1.0]], (1, 1))
    bal = [np.array([[0.3]])] * 3
    unb = [np.array([[1.5]]), np.array([[0.3]]), np.array([[0.06]])]  # same product 0.027
    tb = flow.integrate(bal, (0, 4), rtol=1e-10, n_records=9, progress=False)
    tu = flow.integrate(unb, (0, 4), rtol=1e-10, n_records=9, progress=False)
    assert tu.gap[-1] < 1e-4 * tb.gap[-1]
    assert flow.rate_bound(unb).rate > 5 * flow.rate_bound(bal).rate
    assert flow.rate_bound(bal).rate == pytest.approx(2 * 3 * 0.027 ** (4 / 3))


def test_validation_messages(rng):
    with pytest.raises(TypeError, match="hidden must be a sequence"):
        DeepLinearFlow(np.ones((2, 2)), 3)
    with pytest.raises(ValueError, match="hidden width must be >= 1"):
        DeepLinearFlow(np.ones((2, 2)), (0,))
    with pytest.raises(TypeError, match="Y must hold real numbers"):
        DeepLinearFlow(np.array([["a", "b"]]), (2,))
    with pytest.raises(ValueError, match=r"Y must have shape \(5, \*\)"):
        DeepLinearFlow(np.ones((4, 2)), (2,), X=np.ones((5, 3)))
    with pytest.raises(ValueError, match="Y must be 2-D"):
        DeepLinearFlow(np.ones(3), (2,))
    with pytest.raises(ValueError, match="X contains NaN"):
        DeepLinearFlow(np.ones((2, 2)), (2,), X=np.array([[np.nan], [1.0]]))
    flow = DeepLinearFlow(np.ones((3, 2)), (4,))
    good = flow.random_layers(0)
    with pytest.raises(ValueError, match=r"must hold 2 layers of shapes \[\(3, 4\), \(4, 2\)\]"):
        flow.rhs(good[:1])
    with pytest.raises(ValueError, match=r"layers0\[1\] must have shape \(4, 2\)"):
        flow.integrate([good[0], np.ones((2, 4))], (0, 1))
    with pytest.raises(TypeError, match="must be a list of 2 arrays"):
        flow.loss(np.ones((3, 4)))
    with pytest.raises(ValueError, match="method must be one of"):
        flow.integrate(good, (0, 1), method="rk45")
    with pytest.raises(ValueError, match="needs a step h"):
        flow.integrate(good, (0, 1), method="rk4")
    with pytest.raises(ValueError, match="t_span must have t1 >= t0"):
        flow.integrate(good, (1, 0))
    with pytest.raises(ValueError, match=r"theta must have shape \(12, 2\)"):
        flow.unpack(np.zeros((12, 3)))
    deep = DeepLinearFlow(np.ones((2, 2)), (2, 2, 2))  # four random matrix layers: no theorem
    with pytest.raises(ValueError, match=r"no rate bound of Min, Vidal, Mallada applies to dims \(2, 2, 2, 2, 2\)"):
        deep.rate_bound(deep.random_layers(0))
    huge = flow.random_layers(0)
    huge[0][0, 0] = 1e300
    with pytest.raises(ValueError, match="layers: the product, the imbalances or the bounds' squares"):
        flow.rate_bound(huge)
    three = DeepLinearFlow(np.ones((2, 2)), (2, 2))  # D ~ 1e160 is finite, Delta*'s squares are not
    big = three.random_layers(0)
    big[1] *= 1e80
    with pytest.raises(ValueError, match=r"overflow float64 \(largest entry 1.3e\+80\)"):
        three.rate_bound(big)
    scalar = DeepLinearFlow([[1.0]], (1, 1))  # only Theorem 2 overflows: Proposition 1 remains
    assert scalar.rate_bound([np.array([[1e80]]), np.array([[1.0]]), np.array([[0.5]])]).kind == "scalar-multilayer"
    with pytest.raises(ValueError, match="kind must be"):
        flow.integrate(good, (0, 1), progress=False).observed_rate("mean")


def test_blow_up_raises_with_partial_trajectory():
    flow = DeepLinearFlow([[1.0]], (1, 1))
    layers0 = [np.array([[30.0]])] * 3
    with pytest.raises(tdflow.IntegrationError, match="NaN/Inf") as err:
        flow.integrate(layers0, (0, 10), method="euler", h=0.5, progress=False)
    tr = err.value.trajectory
    assert tr.status == "non-finite" and all(np.all(np.isfinite(M)) for M in tr.layers)


def test_single_layer_rate_is_exact(rng):
    X = rng.standard_normal((6, 2))
    flow = DeepLinearFlow(rng.standard_normal((6, 1)), (), X=X)
    layers0 = [0.1 * rng.standard_normal((2, 1))]
    b = flow.rate_bound(layers0)
    assert b.kind == "single-layer" and b.rate == pytest.approx(2 * np.linalg.eigvalsh(X.T @ X)[0])
    tr = flow.integrate(layers0, (0, 3), rtol=1e-11, n_records=31, progress=False)
    assert tr.observed_rate("min") >= b.rate * (1 - 1e-10)


def test_linear_job_and_cli(tmp_path, capsys):
    flow = DeepLinearFlow([[1.0]], (1,))
    cases = [LinearCase("bal", flow, [np.array([[0.1]]), np.array([[0.1]])], 10.0),
             LinearCase("unb", flow, [np.array([[2.0]]), np.array([[0.005]])], 3.0)]
    res = run_linear_comparison(cases, n_records=101, progress=False)
    rows = res.rows()
    assert res.holds() and rows[0]["bound"] < rows[1]["bound"]
    assert rows[1]["rate_min"] == pytest.approx(rows[1]["bound"], rel=1e-9)
    assert max(r["drift_dopri5"] for r in rows) < 1e-9 and max(r["drift_rk4"] for r in rows) < 1e-9
    assert cli.main(["linear", "--out", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "scalar L=2 d=4" in out and "holds in every case" in out
    assert (tmp_path / "linear.npz").exists() and (tmp_path / "linear.png").stat().st_size > 10000
    arrays, meta = tdflow.io.load_npz(tmp_path / "linear.npz", kind="linear-rates")
    assert np.all(arrays["rate_min"] >= arrays["bound"] * (1 - 1e-8))
    assert len(meta["cases"]) == arrays["bound"].size == 10

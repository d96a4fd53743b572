"""The steppers as data (cpp/include/tdflow/tableaux.hpp): every tableau's consistency, and
Tsitouras' 5(4) pair (Tsit5), added as data only, against its published coefficients, its
orders, a literal NumPy transcription of the published method and diffrax's Tsit5; and Tsit5 as
a user method (SolverOptions, the command line, GradientFlow, DeepLinearFlow, deflate)."""
import math

import numpy as np
import pytest

import tdflow
from tdflow import _core

METHODS = _core.methods()
ADAPTIVE = [m for m in METHODS if _core.tableau(m)["adaptive"]]


@pytest.fixture
def small_problem(rng):
    tgt = tdflow.Target.random_unit(4, [1.0, 0.7, 0.4], rng)
    flow = tdflow.GradientFlow(tgt, lam=0.01)
    W0 = np.asfortranarray(0.5 * rng.standard_normal((4, 3)))
    return flow, W0


def run(flow, W0, t_eval, method, *, h=math.nan, rtol=1e-8, atol=0.0, max_step=math.inf,
        save_states=False):
    """One run through the core (the raw dict of GradientFlow.integrate)."""
    return flow._core.integrate(W0, 0.0, np.asarray(t_eval, dtype=float), method, h, rtol, atol,
                                max_step, 0, False, save_states, None, 1.0)


def test_every_method_is_listed_with_its_tableau():
    assert METHODS == ["euler", "rk4", "dopri5", "dop853", "tsit5"]
    assert ADAPTIVE == ["dopri5", "dop853", "tsit5"]
    orders = {m: (_core.tableau(m)["order"], _core.tableau(m)["error_order"]) for m in METHODS}
    assert orders == {"euler": (1, 0), "rk4": (4, 0), "dopri5": (5, 4), "dop853": (8, 7),
                      "tsit5": (5, 4)}


def order_conditions(A, b, c):
    """sum_j b_j Phi_j(tree) - 1/gamma(tree) for the 17 rooted trees of order <= 5 (Butcher;
    Hairer, Norsett, Wanner I, II.2, Table 2.2), by order."""
    Ac, Ac2, Ac3 = A @ c, A @ c**2, A @ c**3
    return {
        1: [b.sum() - 1],
        2: [b @ c - 1 / 2],
        3: [b @ c**2 - 1 / 3, b @ Ac - 1 / 6],
        4: [b @ c**3 - 1 / 4, b @ (c * Ac) - 1 / 8, b @ Ac2 - 1 / 12, b @ (A @ Ac) - 1 / 24],
        5: [b @ c**4 - 1 / 5, b @ (c**2 * Ac) - 1 / 10, b @ (c * Ac2) - 1 / 15,
            b @ (c * (A @ Ac)) - 1 / 30, b @ Ac**2 - 1 / 20, b @ Ac3 - 1 / 20,
            b @ (A @ (c * Ac)) - 1 / 40, b @ (A @ Ac2) - 1 / 60, b @ (A @ (A @ Ac)) - 1 / 120],
    }


def square(t):
    """A (stages x stages), b, c of a tableau dict."""
    s = t["stages"]
    A = np.zeros((s, s))
    for i in range(s):
        A[i, :i] = t["A"][i]
    return A, np.array(t["b"]), np.array(t["c"][:s])


@pytest.mark.parametrize("method", ["euler", "rk4", "dopri5", "dop853", "tsit5"])
def test_tableau_consistency(method):
    """Row sums of A are the nodes c, the weights satisfy every order condition up to
    min(order, 5), error weights sum to 0, an FSAL method's last row is b, and a 'weights' dense
    output equals the step at theta = 1."""
    t = _core.tableau(method)
    s, n = t["stages"], t["dense_stages"]
    A, b, c = t["A"], np.array(t["b"]), np.array(t["c"])
    assert len(A) == n and all(len(A[i]) == i for i in range(n)) and len(c) == n and b.size == s
    for i in range(n):
        assert math.fsum(A[i]) == pytest.approx(c[i], abs=1e-14), i
    conditions = order_conditions(*square(t))
    for order in range(1, min(t["order"], 5) + 1):
        np.testing.assert_allclose(conditions[order], 0.0, atol=1e-14, err_msg=f"order {order}")
    if t["fsal"]:
        np.testing.assert_array_equal(A[s - 1], b[: s - 1])
        assert b[s - 1] == 0.0
    if t["adaptive"]:
        assert math.fsum(t["e"]) == pytest.approx(0.0, abs=1e-15)
        assert t["controller"]["exponent"] == -1.0 / (t["error_order"] + 1)
    if t["dense"] == "weights":
        P = np.array(t["P"])
        np.testing.assert_allclose([math.fsum(r) for r in P[:s]], b, rtol=0, atol=1e-14)
        np.testing.assert_allclose([math.fsum(r) for r in P[s:]], 0.0, rtol=0, atol=1e-14)


@pytest.mark.parametrize("method", ["dopri5", "tsit5"])
def test_embedded_pair_is_fourth_order(method):
    """bhat = b - e meets every condition up to order 4 and misses order 5: a 5(4) pair."""
    t = _core.tableau(method)
    A, b, c = square(t)
    conditions = order_conditions(A, b - np.array(t["e"]), c)
    for order in range(1, 5):
        np.testing.assert_allclose(conditions[order], 0.0, atol=1e-14, err_msg=f"order {order}")
    assert np.max(np.abs(conditions[5])) > 1e-4


def test_tsit5_against_its_published_coefficients():
    """Tsitouras (2011), Table 1: the nodes as printed, the rows of A summing to them, and the
    first weights; e = b - bhat with bhat_7 = 1/66 printed exactly."""
    t = _core.tableau("tsit5")
    printed_c = [0.0, 0.161, 0.327, 0.9, 0.9800255409045096857, 1.0, 1.0]
    np.testing.assert_allclose(t["c"], printed_c, rtol=0, atol=1e-16)
    for i, row in enumerate(t["A"]):
        assert math.fsum(row) == pytest.approx(printed_c[i], abs=2e-15), i
    assert t["A"][1] == [0.161] and t["b"][1] == 0.01
    assert t["b"][0] == pytest.approx(0.09646076681806522951816731316512876, rel=1e-15)
    assert t["e"][6] == pytest.approx(-1 / 66, rel=1e-15)
    assert t["controller"] == _core.tableau("dopri5")["controller"]  # one controller for all


def test_dop853_keeps_its_dop853f_names():
    t = _core.tableau("dop853")
    assert t["C"] == t["c"] and t["E5"] == t["e"][:12] and t["E3"] == t["e2"][:12]
    assert t["dense"] == "hermite" and len(t["D"]) == 4 and t["stages"] == 13


def test_tsit5_converges_like_dopri5(small_problem):
    """Fixed steps h (first step h, max_step h, a tolerance that accepts every step): the error
    at t = 0.5 falls like h^5 (steeper at these h, as dopri5's, whose leading error terms are
    as small: the slopes approach 5 from above)."""
    flow, W0 = small_problem
    exact = run(flow, W0, [0.0, 0.5], "dop853", rtol=1e-15, atol=1e-17)["W"]
    hs = [0.025, 0.0125, 0.00625]
    slopes = {}
    for method in ("tsit5", "dopri5"):
        errs = []
        for h in hs:
            raw = run(flow, W0, [0.0, 0.5], method, h=h, max_step=h, rtol=1e3)
            assert raw["n_rejected"] == 0 and raw["n_steps"] == round(0.5 / h)
            errs.append(np.abs(raw["W"] - exact).max())
        slopes[method] = np.diff(np.log(errs)) / np.diff(np.log(hs))
    assert np.all(slopes["tsit5"] > 4.6) and slopes["tsit5"][-1] < 6.2, slopes
    np.testing.assert_allclose(slopes["tsit5"], slopes["dopri5"], atol=0.4)


def test_tsit5_dense_output_is_fourth_order(small_problem):
    """Inside one step of size h the continuous extension is off by O(h^5)."""
    flow, W0 = small_problem
    errs, hs = [], [0.4, 0.2, 0.1]
    for h in hs:
        t_eval = [0.0, 0.37 * h, 0.81 * h, h]
        raw = run(flow, W0, t_eval, "tsit5", h=h, max_step=h, rtol=1e3, save_states=True)
        ref = run(flow, W0, t_eval, "dop853", rtol=1e-14, atol=1e-16, save_states=True)
        assert raw["n_steps"] == 1
        errs.append(np.abs(raw["states"][1:3] - ref["states"][1:3]).max())
    slopes = np.diff(np.log(errs)) / np.diff(np.log(hs))
    assert np.all(slopes > 4.5), (errs, slopes)


def test_tsit5_adaptive_run(small_problem):
    """Error control and dense records: the same trajectory as dopri5 within the tolerance,
    6 RHS per attempted step (FSAL) plus the first one and one to choose the first step."""
    flow, W0 = small_problem
    t_eval = np.linspace(0, 2, 41)
    ts = run(flow, W0, t_eval, "tsit5", rtol=1e-10, save_states=True)
    dp = run(flow, W0, t_eval, "dop853", rtol=1e-13, save_states=True)
    assert ts["status"] == "finished" and ts["t_final"] == 2.0
    assert ts["n_rhs"] == 6 * (ts["n_steps"] + ts["n_rejected"]) + 2
    np.testing.assert_allclose(ts["states"], dp["states"], rtol=1e-7, atol=1e-9)
    dp5 = run(flow, W0, t_eval, "dopri5", rtol=1e-10)
    assert 0.5 * dp5["n_rhs"] < ts["n_rhs"] < 2 * dp5["n_rhs"]


def test_tsit5_sees_definition1_crossings():
    """The watch of Definition 1 locates crossings on any method's dense output: Tsit5 finds the
    same joins as DOP853, at the same times within the tolerance."""
    tgt = tdflow.Target.orthogonal(10, tdflow.geometric_weights(5, 1.2))
    flow = tdflow.GradientFlow(tgt, lam=1e-4)
    W0 = np.asfortranarray(tdflow.sphere(10, 40, 1e-3, 5))
    out = {}
    for method in ("tsit5", "dop853"):
        out[method] = _core.integrate_joins(
            flow._core, W0, 0.0, np.linspace(0, 120, 41), method, math.nan, 1e-9, 0.0, math.inf,
            0, True, False, np.full(40, -1.0), 1e-2, 0.3, 1, 1.0, 0.3, None, 1.0)
    a, b = out["tsit5"], out["dop853"]
    assert a["crossing_joined"].sum() > 0
    np.testing.assert_array_equal(a["member"], b["member"])
    ia, ib = (np.lexsort((r["crossing_t"], r["crossing_column"])) for r in (a, b))  # by column
    np.testing.assert_array_equal(a["crossing_column"][ia], b["crossing_column"][ib])
    np.testing.assert_array_equal(a["crossing_joined"][ia], b["crossing_joined"][ib])
    np.testing.assert_allclose(a["crossing_t"][ia], b["crossing_t"][ib], rtol=1e-6)


def test_unknown_method_names_every_method(small_problem):
    flow, W0 = small_problem
    with pytest.raises(ValueError, match="'dop853' or 'tsit5', got 'rk45'"):
        run(flow, W0, [0.0, 1.0], "rk45")


# Tsitouras (2011), Table 1, as printed (to 20 digits; diffrax's tsit5.py carries the same
# values): the rows of A, the weights b (b_7 = 0) and bhat; and the continuous extension
# b_i(theta) of section 4 in its printed factored form.
TSIT5_A = [
    [],
    [0.161],
    [-0.0084806554923569885444, 0.33548065549235698854],
    [2.8971530571054934321, -6.3594484899750748431, 4.3622954328695814110],
    [5.3258648284392566044, -11.748883564062827878, 7.4955393428898362083,
     -0.092495066361755249257],
    [5.8614554429464200287, -12.920969317847109292, 8.1593678985761586432,
     -0.071584973281400997225, -0.028269050394068382909],
    [0.096460766818065229518, 0.01, 0.47988965041449957478, 1.3790085741037418932,
     -3.2900695154360806799, 2.3247105240997739824],
]
TSIT5_B = TSIT5_A[6] + [0.0]
TSIT5_BHAT = [0.094680755765839458075, 0.0091835655403432530968, 0.48777052842476157079,
              1.2342975669304789857, -2.7077123499835254549, 1.8666284181705870358, 1 / 66]


def tsit5_dense_weights(t):
    """b_i(theta) of Tsitouras (2011), section 4, in the printed factored form."""
    return [
        -1.0530884977290216 * t * (t - 1.3299890189751412)
        * (t**2 - 1.4364028541716351 * t + 0.7139816917074209),
        0.1017 * t**2 * (t**2 - 2.1966568338249754 * t + 1.2949852507374631),
        2.490627285651252793 * t**2 * (t**2 - 2.38535645472061657 * t + 1.57803468208092486),
        -16.54810288924490272 * (t - 1.21712927295533244) * (t - 0.61620406037800089) * t**2,
        47.37952196281928122 * (t - 1.203071208372362603) * (t - 0.658047292653547382) * t**2,
        -34.87065786149660974 * (t - 1.2) * (t - 0.666666666666666667) * t**2,
        2.5 * (t - 1) * (t - 0.6) * t**2,
    ]


def tsit5_one_step_literal(f, y0, h, thetas):
    """One Tsit5 step written out from the printed tableau: y1 and the continuous extension at
    ``thetas``."""
    K = []
    for row in TSIT5_A:
        K.append(f(y0 + h * sum((a * k for a, k in zip(row, K)), np.zeros_like(y0))))
    y1 = y0 + h * sum(b * k for b, k in zip(TSIT5_B, K))
    K.append(f(y1))  # FSAL: the 7th stage is f(y1)
    dense = [y0 + h * sum(w * k for w, k in zip(tsit5_dense_weights(th), K)) for th in thetas]
    return y1, dense


THETAS = (0.23, 0.61, 0.94)


def one_core_step(flow, W0, method, h):
    """One step of size h through the core, recorded at THETAS * h and h."""
    raw = run(flow, W0, [0.0, *(th * h for th in THETAS), h], method, h=h, max_step=h, rtol=1e3,
              save_states=True)
    assert raw["n_steps"] == 1 and raw["n_rejected"] == 0
    return raw


def test_tsit5_one_step_against_the_printed_method(small_problem):
    """The core's step and dense output equal a literal transcription of the paper to rounding,
    and its error weights are the printed b - bhat."""
    flow, W0 = small_problem
    h = 0.05
    y1, dense = tsit5_one_step_literal(flow.rhs, np.array(W0), h, THETAS)
    raw = one_core_step(flow, W0, "tsit5", h)
    scale = np.abs(W0).max()
    assert np.abs(raw["W"] - W0).max() > 0.01 * scale  # the step moves W
    np.testing.assert_allclose(raw["W"], y1, rtol=0, atol=1e-14 * scale)
    for got, want in zip(raw["states"][1:4], dense):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-14 * scale)
    e = _core.tableau("tsit5")["e"]
    np.testing.assert_allclose(e, np.subtract(TSIT5_B, TSIT5_BHAT), rtol=0, atol=5e-16)


def test_tsit5_one_step_against_diffrax(small_problem):
    """One step of diffrax's Tsit5 (an independent implementation, jax in float64) on the same
    right-hand side: the same state and dense output to rounding."""
    jax = pytest.importorskip("jax")
    diffrax = pytest.importorskip("diffrax")
    jax.config.update("jax_enable_x64", True)
    flow, W0 = small_problem
    h = 0.05
    shape = jax.ShapeDtypeStruct(W0.shape, np.float64)

    def field(t, y, args):
        return jax.pure_callback(lambda w: flow.rhs(np.asarray(w)), shape, y)

    ts = [th * h for th in THETAS] + [h]
    sol = diffrax.diffeqsolve(diffrax.ODETerm(field), diffrax.Tsit5(), t0=0.0, t1=h, dt0=h,
                              y0=np.array(W0), saveat=diffrax.SaveAt(ts=ts),
                              stepsize_controller=diffrax.ConstantStepSize())
    assert int(sol.stats["num_steps"]) == 1
    raw = one_core_step(flow, W0, "tsit5", h)
    scale = np.abs(W0).max()
    np.testing.assert_allclose(raw["states"][1:], np.asarray(sol.ys), rtol=0, atol=1e-14 * scale)


def test_tsit5_is_a_user_method(small_problem):
    """Tsit5 is offered wherever a method is chosen, because the method list is the core's."""
    import argparse

    from tdflow import options
    from tdflow.cli.common import add_solver_arguments, solver_options

    assert options.METHODS == tuple(METHODS) and options.ADAPTIVE == tuple(ADAPTIVE)
    opts = tdflow.SolverOptions(method="tsit5", rtol=1e-9, n_records=5)  # adaptive: no h needed
    assert opts.adaptive and tdflow.SolverOptions.from_params({"method": "tsit5"}) == \
        tdflow.SolverOptions(method="tsit5")
    parser = argparse.ArgumentParser()
    add_solver_arguments(parser, {})
    assert solver_options(parser.parse_args(["--method", "tsit5"]), {}).method == "tsit5"
    flow, W0 = small_problem
    traj = flow.integrate(W0, (0, 2), options=opts)
    raw = run(flow, W0, np.linspace(0, 2, 5), "tsit5", rtol=1e-9)
    assert traj.method == "tsit5" and traj.status == "finished"
    assert (traj.n_steps, traj.n_rhs) == (raw["n_steps"], raw["n_rhs"])
    np.testing.assert_array_equal(traj.W, raw["W"])


def test_deflate_runs_with_tsit5():
    """Algorithm 2 with Tsit5 phases finds the same directions in the same order as dopri5."""
    tgt = tdflow.Target.orthogonal(10, tdflow.geometric_weights(5, ratio=1.5))
    a = tdflow.deflate(tgt, m=20, rng=1)
    b = tdflow.deflate(tgt, m=20, rng=1, options=tdflow.SolverOptions(method="tsit5", rtol=1e-7))
    assert b.status == a.status == "recovered" and b.n_epochs == a.n_epochs
    np.testing.assert_array_equal(b.fit_order, a.fit_order)

"""Steppers: convergence order, recording, failure handling, threads, interrupts."""
import numpy as np
import pytest

import reference as ref
import tdflow


@pytest.fixture
def small_problem(rng):
    tgt = tdflow.Target.random_unit(4, [1.0, 0.7, 0.4], rng)
    flow = tdflow.GradientFlow(tgt, lam=0.01)
    W0 = 0.5 * rng.standard_normal((4, 3))
    return flow, W0


def final_state(flow, W0, method, h, t1=1.0):
    return flow.integrate(W0, (0.0, t1), method=method, h=h, n_records=2).W


@pytest.mark.parametrize("method,order", [("euler", 1), ("rk4", 4)])
def test_convergence_order(small_problem, method, order):
    flow, W0 = small_problem
    exact = flow.integrate(W0, (0.0, 1.0), method="dopri5", rtol=1e-13, atol=1e-15, n_records=2).W
    hs = [0.04, 0.02, 0.01]
    errs = [np.abs(final_state(flow, W0, method, h) - exact).max() for h in hs]
    slopes = np.diff(np.log(errs)) / np.diff(np.log(hs))
    assert np.all(np.abs(slopes - order) < 0.3), (errs, slopes)


@pytest.mark.parametrize("method,stepper", [("euler", ref.euler), ("rk4", ref.rk4)])
def test_fixed_steps_match_reference(small_problem, method, stepper):
    flow, W0 = small_problem
    tgt = flow.target
    expected = stepper(lambda W: ref.rhs(tgt.U, tgt.a, W, 4, 0.01), W0, 0.02, 50)
    np.testing.assert_allclose(final_state(flow, W0, method, 0.02), expected, rtol=1e-12, atol=1e-14)


def test_recording_times_and_records(small_problem):
    flow, W0 = small_problem
    t_eval = np.array([0.0, 0.013, 0.5, 0.5, 1.0])
    tr = flow.integrate(W0, (0, 1), method="rk4", h=0.1, t_eval=t_eval, save_norms=True, save_states=True)
    np.testing.assert_array_equal(tr.t, t_eval)
    assert tr.success and tr.t_final == 1.0
    assert tr.states.shape == (5, 4, 3) and tr.norms.shape == (5, 3)
    np.testing.assert_array_equal(tr.states[0], W0)
    np.testing.assert_array_equal(tr.states[-1], tr.W)
    np.testing.assert_allclose(tr.norms, np.linalg.norm(tr.states, axis=1), rtol=1e-14)
    for k in range(5):
        assert tr.loss[k] == pytest.approx(flow.loss(tr.states[k]), rel=1e-13)
        np.testing.assert_allclose(tr.directional_residual[k], flow.directional_residual(tr.states[k]), rtol=1e-12, atol=1e-15)
    # steps land on every recording time: 0.013 is reached by one short step
    assert tr.n_steps == 1 + 5 + 5
    # a state recorded mid-run equals a run that stops there
    part = flow.integrate(W0, (0, 0.5), method="rk4", h=0.1, t_eval=[0.0, 0.013, 0.5])
    np.testing.assert_array_equal(part.W, tr.states[2])


def test_dopri5_dense_output(small_problem):
    flow, W0 = small_problem
    t_eval = np.linspace(0, 2, 41)
    tr = flow.integrate(W0, (0, 2), method="dopri5", rtol=1e-10, t_eval=t_eval, save_states=True)
    fine = flow.integrate(W0, (0, 2), method="rk4", h=1e-3, t_eval=t_eval, save_states=True)
    # FSAL: 6 evaluations per attempted step, plus the first one and one to choose the first step
    assert tr.n_rhs == 6 * (tr.n_steps + tr.n_rejected) + 2
    assert tr.n_rhs < fine.n_rhs / 10
    np.testing.assert_allclose(tr.states, fine.states, rtol=1e-7, atol=1e-9)


def test_dop853_local_error_is_eighth_order(small_problem):
    """One DOP853 step of size h has error O(h^9); the embedded estimate drives it, so the
    final state at a fixed first step (max_step = h, loose tolerance) converges with order 8."""
    flow, W0 = small_problem
    exact = flow.integrate(W0, (0.0, 1.0), method="dopri5", rtol=1e-14, atol=1e-16, n_records=2).W
    hs = [0.5, 0.25, 0.125]
    errs = [np.abs(flow.integrate(W0, (0.0, 1.0), method="dop853", h=h, max_step=h, rtol=1.0,
                                  n_records=2).W - exact).max() for h in hs]
    slopes = np.diff(np.log(errs)) / np.diff(np.log(hs))
    assert np.all(slopes > 7.0), (errs, slopes)


def test_dop853_dense_output_and_counts(small_problem):
    flow, W0 = small_problem
    t_eval = np.linspace(0, 2, 41)
    tr = flow.integrate(W0, (0, 2), method="dop853", rtol=1e-10, t_eval=t_eval, save_states=True)
    fine = flow.integrate(W0, (0, 2), method="rk4", h=1e-3, t_eval=t_eval, save_states=True)
    np.testing.assert_allclose(tr.states, fine.states, rtol=1e-7, atol=1e-9)
    # 12 evaluations per attempted step, 3 more on each accepted step that interpolates a
    # record, plus the first one and one to choose the first step
    attempts = tr.n_steps + tr.n_rejected
    extra = tr.n_rhs - 12 * attempts - 2
    assert extra % 3 == 0 and 0 < extra <= 3 * tr.n_steps
    # records only at step ends cost nothing extra
    ends = flow.integrate(W0, (0, 2), method="dop853", rtol=1e-10, t_eval=[0.0, 2.0])
    assert ends.n_rhs == 12 * (ends.n_steps + ends.n_rejected) + 2
    # an 8th-order method needs far fewer evaluations than dopri5 at a tight tolerance
    dp5 = flow.integrate(W0, (0, 2), method="dopri5", rtol=1e-12, t_eval=[0.0, 2.0])
    dp8 = flow.integrate(W0, (0, 2), method="dop853", rtol=1e-12, t_eval=[0.0, 2.0])
    assert dp8.n_rhs < 0.6 * dp5.n_rhs
    np.testing.assert_allclose(dp8.W, dp5.W, rtol=1e-10, atol=1e-12)


def test_dop853_figure1_fit_times():
    tgt = tdflow.Target.orthogonal(10, tdflow.geometric_weights(5, 1.2))
    flow = tdflow.GradientFlow(tgt)
    W0 = tdflow.sphere(10, 50, 1e-15, 0)
    a = flow.integrate(W0, (0, 250), method="dopri5", rtol=1e-8)
    b = flow.integrate(W0, (0, 250), method="dop853", rtol=1e-8)
    np.testing.assert_array_equal(b.fit_times(), a.fit_times())
    np.testing.assert_allclose(b.W, a.W, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(b.loss, a.loss, rtol=1e-6, atol=1e-8 * a.loss[0])
    assert b.n_rhs < 0.75 * a.n_rhs


def test_dop853_step_and_dense_output_equal_scipy(small_problem):
    """One step of size h, interpolated inside: SciPy's DOP853 on the same RHS gives the same
    numbers (an independent implementation of the same method)."""
    integrate = pytest.importorskip("scipy.integrate")
    flow, W0 = small_problem
    d, m = W0.shape
    h = 0.2
    t_eval = np.array([0.0, 0.3 * h, 0.5 * h, 0.9 * h, h])

    def f(t, y):
        return flow.rhs(y.reshape(d, m, order="F")).ravel(order="F")

    sol = integrate.solve_ivp(f, (0, h), W0.ravel(order="F"), method="DOP853", first_step=h,
                              max_step=h, rtol=1e3, atol=1e3, t_eval=t_eval)
    tr = flow.integrate(W0, (0, h), method="dop853", h=h, max_step=h, rtol=1.0, t_eval=t_eval,
                        save_states=True)
    assert tr.n_steps == 1 and tr.n_rhs == sol.nfev == 1 + 12 + 3  # f(W0), stages, dense stages
    ours = np.stack([s.ravel(order="F") for s in tr.states], axis=1)
    np.testing.assert_allclose(ours, sol.y, rtol=1e-13, atol=1e-14)


def test_tableaux_are_consistent():
    """Row sums of A are the nodes c, the weights sum to 1, error weights to 0."""
    dp = tdflow._core.tableau("dopri5")
    assert sum(dp["b"]) == pytest.approx(1.0, abs=1e-15)
    assert sum(dp["e"]) == pytest.approx(0.0, abs=1e-15)
    t = tdflow._core.tableau("dop853")
    for s in range(1, 16):
        assert sum(t["A"][s]) == pytest.approx(t["C"][s], abs=1e-14), s
    assert sum(t["A"][12]) == pytest.approx(1.0, abs=1e-14)
    assert sum(t["E5"]) == pytest.approx(0.0, abs=1e-14)
    assert sum(t["E3"]) == pytest.approx(0.0, abs=1e-14)
    with pytest.raises(ValueError, match="no tableau"):
        tdflow._core.tableau("rk45")


def test_unknown_method_has_one_message(small_problem):
    """The tableau lookup and the integrate entry points refuse an unknown method alike."""
    flow, W0 = small_problem
    names = tdflow._core.methods()
    expected = ("method must be " + ", ".join(f"'{m}'" for m in names[:-1])
                + f" or '{names[-1]}', got 'rk45'")
    with pytest.raises(ValueError) as run:
        flow._core.integrate(W0, 0.0, [0.0, 1.0], "rk45", 0.1, 1e-8, 0.0, np.inf, 0, False, False,
                             None, 0.1)
    assert str(run.value) == expected
    with pytest.raises(ValueError) as tab:
        tdflow._core.tableau("rk45")
    assert str(tab.value) == "no tableau: " + expected


def test_nonfinite_state_raises_and_keeps_last_finite_state():
    flow = tdflow.GradientFlow(tdflow.Target.orthogonal(3, [1.0]))
    W0 = np.array([[3.0], [0.0], [0.0]])
    with pytest.raises(tdflow.IntegrationError, match=r"NaN/Inf after t = 5 ") as info:
        flow.integrate(W0, (0, 50), method="euler", h=1.0, t_eval=np.arange(51.0))
    tr = info.value.trajectory
    assert tr.status == "non-finite" and tr.t_final == 5.0
    assert np.all(np.isfinite(tr.W)) and abs(tr.W[0, 0]) > 1e100
    np.testing.assert_array_equal(tr.t, np.arange(6.0))


def test_max_steps_returns_partial_result(small_problem):
    flow, W0 = small_problem
    tr = flow.integrate(W0, (0, 1), method="rk4", h=0.01, max_steps=30, n_records=2)
    assert tr.status == "max-steps" and not tr.success
    assert tr.n_steps == 30 and tr.t_final == pytest.approx(0.3)
    assert tr.t[-1] <= tr.t_final


def test_progress_callback_error_is_raised_with_partial_trajectory(small_problem, monkeypatch):
    flow, W0 = small_problem

    class Boom(Exception):
        pass

    calls = []

    def update(t):
        calls.append(t)
        if len(calls) >= 2:
            raise Boom("stop here")

    # run with a callback that fails on its 2nd call; the interval 0 calls it after every step
    raw = flow._core.integrate(W0, 0.0, np.linspace(0, 1, 11), "rk4", 0.01, 1e-8, 0.0, np.inf, 0,
                               False, False, update, 0.0)
    assert raw["status"] == "stopped" and isinstance(raw["error"], Boom)
    assert raw["t_final"] == pytest.approx(0.02)


def _core_runs(rng):
    """The three integrate entry points of the core (they share common.hpp's run_released):
    each as a function of (progress, progress_interval) running rk4 with h = 0.01 to t = 0.1."""
    flow = tdflow.GradientFlow(tdflow.Target.random_unit(4, [1.0, 0.7], rng), lam=0.01)
    W0 = 0.5 * rng.standard_normal((4, 3))
    lin = tdflow.DeepLinearFlow(np.diag([2.0, 1.0]), (2,))
    theta0 = lin.pack(lin.random_layers(0, 0.3))
    step = (0.0, np.linspace(0, 0.1, 3), "rk4", 0.01, 1e-8, 0.0, np.inf, 0)
    return {
        "integrate": lambda cb, dt: flow._core.integrate(W0, *step, False, False, cb, dt),
        "integrate_joins": lambda cb, dt: tdflow._core.integrate_joins(
            flow._core, W0, *step, False, False, np.full(3, -1), 0.1, 0.3, 1, 0.4, 0.5, cb, dt),
        "linear": lambda cb, dt: lin._core.integrate(theta0, *step, False, False, False, cb, dt),
    }


@pytest.mark.parametrize("entry", ["integrate", "integrate_joins", "linear"])
def test_end_of_run_is_the_same_in_every_entry_point(rng, entry):
    """A finished run reports progress last at t_final; an error in the callback stops the run
    at that step and comes back in the result (status 'stopped'), as does none without one."""
    run = _core_runs(rng)[entry]
    seen = []
    raw = run(seen.append, 0.0)  # interval 0: a report after every step, then the final one
    assert raw["status"] == "finished" and raw["error"] is None
    assert raw["t_final"] == pytest.approx(0.1) and seen[-1] == raw["t_final"]
    assert len(seen) == raw["n_steps"] + 1
    assert run(None, 0.0)["error"] is None

    class Boom(Exception):
        pass

    def fail_third(t):
        seen.append(t)
        if len(seen) == 3:
            raise Boom("stop")

    seen.clear()
    raw = run(fail_third, 0.0)
    assert raw["status"] == "stopped" and isinstance(raw["error"], Boom)
    assert raw["n_steps"] == 3 and raw["t_final"] == pytest.approx(0.03) and len(seen) == 3


def test_integrate_validation(small_problem):
    flow, W0 = small_problem
    with pytest.raises(ValueError, match="method must be one of"):
        flow.integrate(W0, (0, 1), method="rk45")
    with pytest.raises(ValueError, match="h must be > 0"):
        flow.integrate(W0, (0, 1), method="rk4", h=0.0)
    with pytest.raises(ValueError, match="needs a step h"):
        flow.integrate(W0, (0, 1), method="euler", h=None)
    with pytest.raises(ValueError, match="t1 >= t0"):
        flow.integrate(W0, (1, 0), method="rk4", h=0.1)
    with pytest.raises(ValueError, match="inside t_span"):
        flow.integrate(W0, (0, 1), t_eval=[0.5, 2.0], method="rk4", h=0.1)
    with pytest.raises(ValueError, match="W0 must have shape"):
        flow.integrate(np.ones((5, 2)), (0, 1))
    with pytest.raises(ValueError, match="rtol must be >= 0"):
        flow.integrate(W0, (0, 1), method="dopri5", rtol=-1.0)
    with pytest.raises(ValueError, match="rtol and atol"):
        flow._core.integrate(W0, 0.0, np.array([0.0, 1.0]), "dop853", np.nan, 0.0, 0.0, np.inf, 0,
                             False, False, None, 0.1)


@pytest.mark.parametrize("method", ["rk4", "dopri5", "dop853"])
def test_one_and_two_threads_agree_bitwise(rng, method):
    # large enough for several column blocks and the parallel path
    tgt = tdflow.Target.random_rotation(12, tdflow.geometric_weights(4), rng)
    flow = tdflow.GradientFlow(tgt, lam=1e-3)
    W0 = tdflow.sphere(12, 700, 0.05, 3)
    runs = []
    for n in (1, 2):
        with tdflow.num_threads(n):
            assert tdflow.get_num_threads() == n
            runs.append(flow.integrate(W0, (0, 2), method=method, h=0.05, n_records=5))
            runs.append(flow.rhs(W0))
    np.testing.assert_array_equal(runs[0].W, runs[2].W)
    np.testing.assert_array_equal(runs[0].loss, runs[2].loss)
    np.testing.assert_array_equal(runs[1], runs[3])

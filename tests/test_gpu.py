"""The PyTorch backend (tdflow.gpu) against the C++ core, on torch's CPU device.

Skipped as a whole without torch; the CUDA test is skipped without a CUDA device.
"""
import re
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tdflow  # noqa: E402
from tdflow import gpu, torch_kernels, torch_stepper  # noqa: E402


def make_target(rng, kind, order, d=6):
    a = np.array([1.0, 0.6, 0.3])
    if kind == "basis":
        return tdflow.Target.orthogonal(d, a, order)
    return tdflow.Target.random_unit(d, a, rng, order)


def mixed_state(rng, d=6, m=40):
    """Large, tiny (1e-9, 1e-200) and zero columns: the active set leaves some out."""
    W = rng.standard_normal((d, m))
    W[:, 3:20] *= 1e-9
    W[:, 5] = 0.0
    W[:, 7] *= 1e-200
    return W


def pair(target, lam=0.0, active_tol=1e-16, block=None):
    cpu = tdflow.GradientFlow(target, lam, active_tol=active_tol)
    tor = tdflow.GradientFlow(target, lam, active_tol=active_tol, backend="torch")
    if block is not None:
        tor._torch.block = block
    return cpu, tor


def assert_rel(actual, expected, rtol):
    actual, expected = np.asarray(actual), np.asarray(expected)
    scale = np.max(np.abs(expected))
    assert np.max(np.abs(actual - expected)) <= rtol * scale


@pytest.mark.parametrize("order", [3, 4, 5])
@pytest.mark.parametrize("kind", ["basis", "general"])
@pytest.mark.parametrize("active_tol", [0.0, 1e-16, 1e-3])
def test_model_agrees_with_core(rng, order, kind, active_tol):
    tgt = make_target(rng, kind, order)
    cpu, tor = pair(tgt, lam=0.1, active_tol=active_tol)
    W = mixed_state(rng)
    got = tor.rhs(W)
    assert got.shape == W.shape and got.dtype == np.float64
    assert_rel(got, cpu.rhs(W), 1e-10)
    assert tor._torch.n_active == cpu._core.n_active
    if active_tol > 0:
        assert cpu._core.n_active < W.shape[1]  # the active set matters here
    assert tor.loss(W) == pytest.approx(cpu.loss(W), rel=1e-10)
    assert tor.residual_norm(W) == pytest.approx(cpu.residual_norm(W), rel=1e-10)
    assert_rel(tor.directional_residual(W), cpu.directional_residual(W), 1e-10)


def test_kernels_share_the_core_constants():
    """The active set's buckets and the underflow threshold of torch_kernels are flow.hpp's,
    read through _core; the buckets hold the exponent of every finite square (0 at the bottom)."""
    src = (Path(__file__).resolve().parents[1] / "cpp/include/tdflow/flow.hpp").read_text()
    min_exp, buckets = map(int, re.search(r"kMinExp = (-?\d+), kBuckets = (\d+);", src).groups())
    underflow = float(re.search(r"kUnderflowNorm = ([-+.0-9e]+);", src).group(1))
    core = tdflow._core
    assert (core.ACTIVE_SET_MIN_EXP, core.ACTIVE_SET_BUCKETS, core.UNDERFLOW_NORM) == (
        min_exp, buckets, underflow)
    assert (torch_kernels._MIN_EXP, torch_kernels._N_BUCKETS, torch_kernels._UNDERFLOW) == (
        min_exp, buckets, underflow)
    _, exps = np.frexp([np.nextafter(0.0, 1.0), np.finfo(float).max])
    assert min_exp < exps[0] and exps[1] <= min_exp + buckets - 1


@pytest.mark.parametrize("kind", ["basis", "general"])
def test_tiny_blocks_change_nothing(rng, monkeypatch, kind):
    """Every Gram block is at most block x block: no m x m matrix, and the same results."""
    tgt = make_target(rng, kind, 4)
    W = mixed_state(rng, m=45)
    cpu, big = pair(tgt, lam=0.05, active_tol=0.0)
    _, small = pair(tgt, lam=0.05, active_tol=0.0, block=7)
    shapes = []
    real_gram, real_power = torch_kernels._gram, torch_kernels._power

    def gram(Z, V):
        shapes.append((Z.shape[1], V.shape[1]))
        return real_gram(Z, V)

    def power(G, q):
        shapes.append(tuple(G.shape))
        return real_power(G, q)

    monkeypatch.setattr(torch_kernels, "_gram", gram)
    monkeypatch.setattr(torch_kernels, "_power", power)
    out = small.rhs(W)
    loss = small.loss(W)
    dirs = small.directional_residual(W)
    assert shapes and max(max(s) for s in shapes) <= 7
    shapes.clear()
    ref = big.rhs(W)
    assert max(max(s) for s in shapes) == 45  # one block holds every column
    assert_rel(out, ref, 1e-13)
    assert_rel(out, cpu.rhs(W), 1e-10)
    assert loss == pytest.approx(big.loss(W), rel=1e-13)
    assert_rel(dirs, big.directional_residual(W), 1e-13)


def test_rk4_run_agrees_with_core(rng):
    tgt = tdflow.Target.orthogonal(8, tdflow.geometric_weights(3, 1.5))
    cpu, tor = pair(tgt, lam=0.01)
    W0 = tdflow.sphere(8, 12, 1e-3, 0)
    kw = dict(method="rk4", h=0.1, n_records=31, save_norms=True, save_states=True)
    a, b = cpu.integrate(W0, (0, 30), **kw), tor.integrate(W0, (0, 30), **kw)
    assert (b.status, b.n_steps, b.n_rhs, b.method) == (a.status, a.n_steps, a.n_rhs, "rk4")
    assert b.t_final == a.t_final == 30.0
    np.testing.assert_array_equal(b.t, a.t)
    assert np.max(np.abs(a.W)) > 0.3  # something was fitted
    assert_rel(b.W, a.W, 1e-12)
    assert_rel(b.states, a.states, 1e-12)
    assert_rel(b.norms, a.norms, 1e-12)
    np.testing.assert_allclose(b.loss, a.loss, rtol=1e-11)
    np.testing.assert_allclose(b.residual_norm, a.residual_norm, rtol=1e-11)
    assert_rel(b.directional_residual, a.directional_residual, 1e-11)
    assert set(b.to_dict()) == set(a.to_dict())
    e = tor.integrate(W0, (0, 1), method="euler", h=0.1)
    np.testing.assert_allclose(e.W, cpu.integrate(W0, (0, 1), method="euler", h=0.1).W, rtol=1e-12, atol=1e-16)


def test_dopri5_figure1_run_agrees_with_core():
    """A small Figure-1 run (d=10, m=50, radius 1e-15, t to 250): same fit times."""
    tgt = tdflow.Target.orthogonal(10, tdflow.geometric_weights(5, 1.2))
    cpu, tor = pair(tgt)
    W0 = tdflow.sphere(10, 50, 1e-15, 0)
    a = cpu.integrate(W0, (0, 250), method="dopri5", rtol=1e-8)
    b = tor.integrate(W0, (0, 250), method="dopri5", rtol=1e-8)
    assert b.status == "finished" and b.t_final == 250.0
    assert np.all(np.isfinite(a.fit_times()))
    np.testing.assert_array_equal(b.fit_times(), a.fit_times())
    # step counts may differ by a few: one accept/reject decision near err = 1 flips on rounding
    assert abs(b.n_steps - a.n_steps) <= 0.05 * a.n_steps
    assert_rel(b.W, a.W, 3e-8)
    # the last losses (~1e-12) differ by rounding that depends on the core's SIMD width (seen:
    # 3.8e-12 with the x86-64-v3 core); compare them to the scale of the start
    np.testing.assert_allclose(b.loss, a.loss, rtol=1e-7, atol=1e-10 * a.loss[0])
    # the first steps (same step sizes, up to rounding) agree far more closely
    a = cpu.integrate(W0, (0, 250), method="dopri5", rtol=1e-8, max_steps=50)
    b = tor.integrate(W0, (0, 250), method="dopri5", rtol=1e-8, max_steps=50)
    assert b.status == a.status == "max-steps"
    assert b.t_final == pytest.approx(a.t_final, rel=1e-10)
    assert_rel(b.W, a.W, 1e-10)


def test_dopri5_options(rng):
    tgt = make_target(rng, "general", 3)
    cpu, tor = pair(tgt, lam=0.01)
    W0 = 0.3 * rng.standard_normal((6, 5))
    t_eval = np.array([0.0, 0.0, 0.37, 1.0, 1.0, 2.5])
    kw = dict(method="dopri5", rtol=1e-9, atol=1e-12, h=0.01, max_step=0.2, t_eval=t_eval)
    a, b = cpu.integrate(W0, (0, 2.5), **kw), tor.integrate(W0, (0, 2.5), **kw)
    np.testing.assert_array_equal(b.t, t_eval)
    assert (b.n_steps, b.n_rejected, b.n_rhs) == (a.n_steps, a.n_rejected, a.n_rhs)
    assert_rel(b.W, a.W, 1e-11)
    np.testing.assert_allclose(b.loss, a.loss, rtol=1e-10)
    # t_eval ending before t_span[1]: records at t_eval, runs to t_span[1] (solve_ivp's rule)
    only_t0, core_t0 = (f.integrate(W0, (0, 1), t_eval=[0.0]) for f in (tor, cpu))
    assert only_t0.t.tolist() == [0.0] and only_t0.t_final == core_t0.t_final == 1.0
    assert only_t0.n_steps == core_t0.n_steps > 0
    assert_rel(only_t0.W, core_t0.W, 1e-11)


def test_dop853_agrees_with_core(rng):
    """Same steps, rejections and RHS count (extra dense stages included) as the C++ DOP853."""
    tgt = make_target(rng, "general", 3)
    cpu, tor = pair(tgt, lam=0.01)
    W0 = 0.3 * rng.standard_normal((6, 5))
    t_eval = np.array([0.0, 0.0, 0.37, 1.0, 1.0, 2.5])
    kw = dict(method="dop853", rtol=1e-9, atol=1e-12, max_step=0.7, t_eval=t_eval)
    a, b = cpu.integrate(W0, (0, 2.5), **kw), tor.integrate(W0, (0, 2.5), **kw)
    np.testing.assert_array_equal(b.t, t_eval)
    assert (b.n_steps, b.n_rejected, b.n_rhs) == (a.n_steps, a.n_rejected, a.n_rhs)
    assert_rel(b.W, a.W, 1e-11)
    np.testing.assert_allclose(b.loss, a.loss, rtol=1e-10)
    tgt = tdflow.Target.orthogonal(10, tdflow.geometric_weights(5, 1.2))
    cpu, tor = pair(tgt)
    W0 = tdflow.sphere(10, 50, 1e-15, 0)
    a = cpu.integrate(W0, (0, 250), method="dop853", rtol=1e-8)
    b = tor.integrate(W0, (0, 250), method="dop853", rtol=1e-8)
    np.testing.assert_array_equal(b.fit_times(), a.fit_times())
    # the last losses (~1e-12) differ by rounding that depends on the core's SIMD width (seen:
    # 3.8e-12 with the x86-64-v3 core); compare them to the scale of the start
    np.testing.assert_allclose(b.loss, a.loss, rtol=1e-7, atol=1e-10 * a.loss[0])


def test_non_finite_state_raises_with_partial_trajectory(rng, monkeypatch):
    tgt = tdflow.Target.orthogonal(5, [1.0, 0.5])
    cpu, tor = pair(tgt)
    W0 = 10.0 * rng.standard_normal((5, 4))
    with pytest.raises(tdflow.IntegrationError, match="NaN/Inf") as info:
        tor.integrate(W0, (0, 10), method="euler", h=5.0, n_records=11)
    traj = info.value.trajectory
    assert traj.status == "non-finite"
    assert np.all(np.isfinite(traj.W)) and traj.t_final < 10
    assert len(traj.t) >= 1 and traj.t[0] == 0.0
    # dopri5 rejects a non-finite step and shrinks it, as the core does
    a = cpu.integrate(W0, (0, 10), method="dopri5", h=5.0, rtol=1e-6, n_records=3)
    b = tor.integrate(W0, (0, 10), method="dopri5", h=5.0, rtol=1e-6, n_records=3)
    assert b.status == a.status == "finished" and b.n_rejected == a.n_rejected > 0
    # ... and reports non-finite when every step size gives NaN
    real_rhs, calls = tor._torch.rhs, []

    def rhs(W):
        calls.append(1)
        return real_rhs(W) * (np.nan if len(calls) > 30 else 1.0)

    monkeypatch.setattr(tor._torch, "rhs", rhs)
    with pytest.raises(tdflow.IntegrationError, match="NaN/Inf") as info:
        tor.integrate(W0, (0, 10), method="dopri5", rtol=1e-6, n_records=3)
    traj = info.value.trajectory
    assert traj.status == "non-finite" and traj.n_steps >= 1 and traj.n_rejected > 0
    assert np.all(np.isfinite(traj.W)) and 0 < traj.t_final < 10


def test_max_steps_and_progress_error(rng):
    tgt = tdflow.Target.orthogonal(5, [1.0, 0.5])
    cpu, tor = pair(tgt)
    W0 = 0.1 * rng.standard_normal((5, 4))
    a = cpu.integrate(W0, (0, 1), method="rk4", h=0.01, max_steps=7)
    b = tor.integrate(W0, (0, 1), method="rk4", h=0.01, max_steps=7)
    assert b.status == a.status == "max-steps" and b.n_steps == 7
    assert b.t_final == pytest.approx(a.t_final)
    assert_rel(b.W, a.W, 1e-12)

    class Stop(Exception):
        pass

    def update(t):
        raise Stop

    run = torch_stepper.Run(tor._torch, tor._torch.to_device(W0), 0.0, [1.0], lambda t, W: None,
                            update, 0.0)
    run.fixed("rk4", 0.1, 0)
    assert run.status == "stopped" and isinstance(run.error, Stop) and run.n_steps == 1


def test_validation(rng):
    tgt = tdflow.Target.orthogonal(5, [1.0, 0.5])
    with pytest.raises(ValueError, match="backend must be one of"):
        tdflow.GradientFlow(tgt, backend="gpu")
    with pytest.raises(TypeError, match="backend must be a string"):
        tdflow.GradientFlow(tgt, backend=1)
    tor = tdflow.GradientFlow(tgt, backend="torch")
    assert tor.backend == "torch" and tor.exact().backend == "torch"
    with pytest.raises(ValueError, match="W must have shape"):
        tor.rhs(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="W contains NaN"):
        tor.loss(np.full((5, 3), np.nan))
    with pytest.raises(ValueError, match="m >= 1"):
        tor.residual_norm(np.zeros((5, 0)))
    with pytest.raises(TypeError, match="W must hold real numbers"):
        tor.directional_residual(np.zeros((5, 2), dtype=complex))
    with pytest.raises(ValueError, match="needs a step h"):
        tor.integrate(np.ones((5, 2)), (0, 1), method="rk4")
    with pytest.raises(NotImplementedError, match="integrate_batch"):
        tor.integrate_batch(np.ones((2, 5, 2)), (0, 1))
    with pytest.raises(ValueError, match="block must be >= 1"):
        gpu.TorchFlow(tgt.U, tgt.a, 4, 0.0, 0.0, "cpu", block=0)
    W = np.asfortranarray(rng.standard_normal((5, 3)))
    W.flags.writeable = False
    tor.integrate(W, (0, 0.5), method="rk4", h=0.1)  # the caller's (read-only) array is not written


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_cuda_backend_without_cuda_is_a_clear_error():
    tgt = tdflow.Target.orthogonal(5, [1.0, 0.5])
    with pytest.raises(RuntimeError, match="needs a CUDA device"):
        tdflow.GradientFlow(tgt, backend="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_backend_agrees_with_core(rng):
    tgt = make_target(rng, "general", 4)
    cpu = tdflow.GradientFlow(tgt, 0.1)
    gpu_flow = tdflow.GradientFlow(tgt, 0.1, backend="cuda")
    assert gpu_flow._torch.device.type == "cuda"
    W = mixed_state(rng)
    assert_rel(gpu_flow.rhs(W), cpu.rhs(W), 1e-10)
    assert gpu_flow.loss(W) == pytest.approx(cpu.loss(W), rel=1e-10)
    assert_rel(gpu_flow.directional_residual(W), cpu.directional_residual(W), 1e-10)
    W0 = tdflow.sphere(6, 12, 1e-3, 0)
    a = cpu.integrate(W0, (0, 5), method="rk4", h=0.05)
    b = gpu_flow.integrate(W0, (0, 5), method="rk4", h=0.05)
    assert_rel(b.W, a.W, 1e-12)


def test_interrupt_keeps_partial_trajectory(rng, monkeypatch):
    tgt = tdflow.Target.orthogonal(5, [1.0, 0.5])
    _, tor = pair(tgt)
    W0 = 0.1 * rng.standard_normal((5, 4))
    real_rhs, calls = tor._torch.rhs, []

    def rhs(W):
        calls.append(1)
        if len(calls) > 41:
            raise KeyboardInterrupt
        return real_rhs(W)

    monkeypatch.setattr(tor._torch, "rhs", rhs)
    with pytest.raises(KeyboardInterrupt) as info:
        tor.integrate(W0, (0, 1), method="rk4", h=0.01, n_records=11, progress=True)
    traj = info.value.trajectory
    assert traj.status == "stopped" and traj.n_steps == 10
    assert traj.t_final == pytest.approx(0.1) and np.all(np.isfinite(traj.W))


def test_missing_torch_is_a_clear_error(monkeypatch):
    import sys

    monkeypatch.setattr(gpu, "torch", None)
    monkeypatch.setitem(sys.modules, "torch", None)
    tgt = tdflow.Target.orthogonal(5, [1.0, 0.5])
    for backend in ("cuda", "torch"):
        with pytest.raises(ImportError, match=r"pip install 'tdflow\[gpu\]'"):
            tdflow.GradientFlow(tgt, backend=backend)


def test_deflate_on_torch_backend_agrees_with_core():
    """Algorithm 2 with the flow on torch: same S_i events, epochs and fit order."""
    tgt = tdflow.Target.orthogonal(10, tdflow.geometric_weights(5, ratio=1.5))
    a = tdflow.deflate(tgt, m=20, rng=1)
    b = tdflow.deflate(tgt, m=20, rng=1, backend="torch")
    assert b.status == a.status == "recovered" and b.n_epochs == a.n_epochs
    np.testing.assert_array_equal(b.fit_order, a.fit_order)
    for key in a.events:
        np.testing.assert_allclose(b.events[key], a.events[key], rtol=1e-8)
    for key in a.directions:
        np.testing.assert_allclose(b.directions[key], a.directions[key], rtol=1e-8)
    assert_rel(b.W, a.W, 1e-8)
    with pytest.raises(ValueError, match="backend must be one of"):
        tdflow.deflate(tgt, m=20, rng=1, backend="gpu")


def test_watch_general_target(rng):
    """Definition 1's crossings and Proposition 1's margins on torch equal the core's."""
    tgt = tdflow.Target.random_rotation(8, tdflow.geometric_weights(3, 1.5), rng)
    cpu, tor = pair(tgt, lam=1e-3)
    W0 = tdflow.sphere(8, 10, 1e-2, 3)
    member = np.full(10, -1)
    member[4] = 1
    for method, h in (("dopri5", np.nan), ("dop853", np.nan), ("rk4", 0.05)):
        args = (W0, 0.0, np.linspace(0, 40, 9), method, h, 1e-8, 0.0, np.inf, 0, False, False,
                member, 0.1, 0.3, 1, 0.4, 0.5, None, 0.25)
        a = tdflow._core.integrate_joins(cpu._core, *args)
        b = tor._torch.integrate_joins(*args)
        assert a["crossing_joined"].sum() >= 2 and 4 not in a["crossing_column"]
        for key in ("crossing_column", "crossing_direction", "crossing_joined", "crossing_upward",
                    "member"):
            np.testing.assert_array_equal(b[key], a[key])
        for key in ("crossing_t", "crossing_norm"):
            np.testing.assert_allclose(b[key], a[key], rtol=1e-7)
        np.testing.assert_allclose(b["crossing_misalignment"], a["crossing_misalignment"],
                                   rtol=1e-6, atol=1e-12)
        for c in a["prop1_margin"]:
            # margins are differences of near-equal numbers: compare on the scale of W (1e-8)
            assert b["prop1_margin"][c] == pytest.approx(a["prop1_margin"][c], abs=1e-8), c
        assert b["n_checks"] == a["n_checks"]
    with pytest.raises(ValueError, match="alpha must lie in"):
        tor._torch.integrate_joins(*args[:13], 1.5, 1, 0.4, 0.5, None, 0.25)
    with pytest.raises(ValueError, match="member must have shape"):
        tor._torch.integrate_joins(*args[:11], np.ones(3), *args[12:])


@pytest.mark.parametrize("method", tdflow._core.methods())
def test_every_core_method_runs_on_torch(rng, method):
    """Every tableau of the core (tsit5 included) runs on torch through the one generic stepper:
    the same steps, rejections and RHS count as the core, records with the dense output."""
    tgt = make_target(rng, "general", 4)
    cpu, tor = pair(tgt, lam=0.01)
    W0 = 0.3 * rng.standard_normal((6, 5))
    adaptive = tdflow._core.tableau(method)["adaptive"]
    kw = dict(method=method, rtol=1e-9, atol=1e-12, max_step=0.7) if adaptive else \
        dict(method=method, h=0.05)
    t_eval = np.array([0.0, 0.37, 1.0, 2.5])
    a = cpu.integrate(W0, (0, 2.5), t_eval=t_eval, **kw)
    b = tor.integrate(W0, (0, 2.5), t_eval=t_eval, **kw)
    assert (b.status, b.method) == (a.status, method) == ("finished", method)
    assert (b.n_steps, b.n_rejected, b.n_rhs) == (a.n_steps, a.n_rejected, a.n_rhs)
    assert a.n_steps >= 5
    assert_rel(b.W, a.W, 1e-11)
    np.testing.assert_allclose(b.loss, a.loss, rtol=1e-10)


@pytest.mark.parametrize("method", tdflow._core.methods())
def test_dense_output_of_a_few_columns_is_theirs_bitwise(rng, method):
    """RungeKutta.columns (the stages indexed once, as Watch.locate uses them): the dense output
    of columns idx equals those columns of the whole dense output, bitwise, for either form."""
    _, tor = pair(make_target(rng, "general", 4), lam=0.01)
    rk = torch_stepper.RungeKutta(torch_stepper.tableau(method), tor._torch.rhs)
    W = tor._torch.to_device(0.3 * rng.standard_normal((6, 9)))
    h = 0.1
    Wn = rk.step(W, h)
    rk.prepare_dense(W, h)
    for idx in (torch.tensor([4]), torch.tensor([0, 5, 8]), torch.arange(9)):
        sub = rk.columns(idx)
        for th in (0.0, 0.23, 0.5, 0.91, 1.0):
            got = sub.dense(th, W[:, idx], Wn[:, idx], h)
            assert torch.equal(got, rk.dense(th, W, Wn, h)[:, idx]), (idx, th)


def test_tsit5_figure1_run_agrees_with_core():
    """The small Figure-1 run of the dopri5 test with Tsit5: same fit times and steps."""
    tgt = tdflow.Target.orthogonal(10, tdflow.geometric_weights(5, 1.2))
    cpu, tor = pair(tgt)
    W0 = tdflow.sphere(10, 50, 1e-15, 0)
    a, b = (f.integrate(W0, (0, 250), method="tsit5", rtol=1e-8) for f in (cpu, tor))
    assert b.status == a.status == "finished"
    assert np.all(np.isfinite(a.fit_times()))
    np.testing.assert_array_equal(b.fit_times(), a.fit_times())
    assert abs(b.n_steps - a.n_steps) <= 0.05 * a.n_steps
    np.testing.assert_allclose(b.loss, a.loss, rtol=1e-7, atol=1e-10 * a.loss[0])


def test_torch_stepper_reads_its_controller_from_the_tableau(rng, monkeypatch):
    """The controller's constants are data of _core.tableau: a smaller safety factor handed in
    there (and nowhere else) makes the torch run take more, smaller steps."""
    tgt = make_target(rng, "general", 3)
    _, tor = pair(tgt, lam=0.01)
    W0 = 0.3 * rng.standard_normal((6, 5))
    kw = dict(method="dopri5", rtol=1e-9, n_records=3)
    base = tor.integrate(W0, (0, 2.5), **kw)
    data = dict(tdflow._core.tableau("dopri5"))
    data["controller"] = dict(data["controller"], safety=0.5)
    monkeypatch.setattr(torch_stepper, "tableau", lambda method: data)
    slow = tor.integrate(W0, (0, 2.5), **kw)
    assert slow.n_steps > 1.3 * base.n_steps
    assert_rel(slow.W, base.W, 1e-7)

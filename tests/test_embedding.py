"""tdflow embedded in other tools (issue 13): one object shared by threads, no hang on huge
starts, fork after a multithreaded call, a process-wide thread count, Ctrl-C in batches, step
counts and recording times. Code that could hang runs in a subprocess or under a watchdog
(tests/isolation.py), so a hang fails instead of blocking; no assertion is about speed."""
import json
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import numpy as np
import pytest

import tdflow
from isolation import hang_report, run_python, watchdog  # noqa: F401 (fixtures)


def _arrays(result):
    """The numbers a call returned, as a list of arrays (compared bitwise)."""
    if isinstance(result, (list, tuple)):
        return [a for r in result for a in _arrays(r)]
    if isinstance(result, tdflow.Trajectory):
        return [result.t, result.W, result.loss, result.directional_residual]
    if isinstance(result, tdflow.LinearTrajectory):
        return [result.t, result.loss, *result.layers]
    return [np.asarray(result)]


# -- item 1: one object, many threads ----------------------------------------------------------
def test_objects_shared_by_8_threads_give_the_serial_results_bitwise(watchdog):
    rng = np.random.default_rng(7)
    flow = tdflow.GradientFlow(tdflow.Target.random_unit(12, [1.0, 0.6, 0.3], rng), lam=1e-3)
    # sizes that take the parallel path, the active-set path and the tiny-column path
    states = [np.asfortranarray(tdflow.sphere(12, m, r, s))
              for s, (m, r) in enumerate([(400, 1.0), (40, 1e-6), (300, 0.3), (3, 1e-14)])]
    W0s = np.stack([tdflow.sphere(12, 20, 1e-3, s) for s in range(4)])
    lin = tdflow.DeepLinearFlow(rng.standard_normal((5, 4)), (3,))
    layers = lin.random_layers(1, 0.5)
    T = tdflow.CPTensor(rng.standard_normal((12, 30)), rng.standard_normal(30), 4)
    V = rng.standard_normal((12, 500))
    calls = [partial(f, W) for W in states
             for f in (flow.rhs, flow.loss, flow.residual_norm, flow.directional_residual)]
    calls += [
        partial(flow.integrate, states[0], (0, 0.3), method="rk4", h=0.05, n_records=3),
        partial(flow.integrate, states[1], (0, 5), method="dopri5", n_records=4),
        partial(flow.integrate, states[2], (0, 1), method="dop853", n_records=4),
        partial(flow.integrate_batch, W0s, (0, 5), method="dopri5", n_records=3),
        partial(lin.rhs, layers), partial(lin.integrate, layers, (0, 1), n_records=5),
        partial(T.contract, V), partial(T.evaluate, V), T.norm,
        partial(T.contract_mixed, V, V[:, ::-1]),
    ]
    with tdflow.num_threads(2):  # the core's own threads run inside the callers' threads too
        expected = [_arrays(call()) for call in calls]
        order = [i for i in range(len(calls)) for _ in range(4)]
        random.Random(0).shuffle(order)
        with ThreadPoolExecutor(8) as pool:
            futures = [(i, pool.submit(calls[i])) for i in order]
            for i, fut in futures:
                got = _arrays(fut.result())
                assert len(got) == len(expected[i])
                for a, b in zip(got, expected[i]):
                    np.testing.assert_array_equal(a, b)


# -- item 2: huge starts ---------------------------------------------------------------------------
HUGE_STARTS = """
import json, numpy as np, tdflow
tdflow.set_num_threads(2)
flow = tdflow.GradientFlow(tdflow.Target.orthogonal(5, [1.0, 0.5]))
lin = tdflow.DeepLinearFlow(np.eye(3), (3,))
out = []
def attempt(name, run):
    try:
        run()
        out.append([name, "no error", "", False])
    except tdflow.IntegrationError as err:
        tr = err.trajectory
        state = tr.W if hasattr(tr, "W") else np.concatenate([x.ravel() for x in tr.layers])
        out.append([name, str(err), tr.status, bool(np.all(np.isfinite(state)))])
for scale in (1e103, 1e154, 1e200, 1e300):
    W0 = np.full((5, 3), scale)
    for method in ("dopri5", "dop853", "rk4"):
        h = 0.01 if method == "rk4" else None
        attempt(f"{method} {scale:g}", lambda: flow.integrate(W0, (0, 1), method=method, h=h))
    attempt(f"batch {scale:g}", lambda: flow.integrate_batch(np.stack([W0 / scale, W0]), (0, 1)))
    attempt(f"linear {scale:g}", lambda: lin.integrate([np.full((3, 3), scale)] * 2, (0, 1)))
print(json.dumps(out))
"""


def test_starts_whose_rhs_overflows_raise_at_once_naming_the_overflow():
    results = json.loads(run_python(HUGE_STARTS))
    assert len(results) == 20
    for name, message, status, finite in results:
        assert status == "non-finite" and finite, (name, message)
        assert "after t = 0 (step 0)" in message, (name, message)
        assert "overflows double precision at the initial state" in message, (name, message)
        assert "start from a smaller state" in message, (name, message)
        if name.startswith("batch"):
            assert message.startswith("replica 1: "), message


@pytest.mark.parametrize("scale", [1e8, 1e50, 1e100])
def test_huge_but_representable_starts_integrate(scale, watchdog):
    """The flow's rate grows like ||w||^2 (1e200 here): the step floor is relative to t, as in
    Hairer's dopri5 and SciPy, so such a start resolves its fast transient instead of failing."""
    flow = tdflow.GradientFlow(tdflow.Target.orthogonal(5, [1.0, 0.5]))
    W0 = scale * tdflow.sphere(5, 3, 1.0, 0)
    a = flow.integrate(W0, (0, 1), method="dopri5", rtol=1e-10)
    b = flow.integrate(W0, (0, 1), method="dop853", rtol=1e-10)
    assert a.success and b.success
    assert np.max(np.abs(a.W)) < 10  # the transient is over
    np.testing.assert_allclose(a.W, b.W, rtol=0, atol=1e-9)


def test_huge_start_agrees_with_solve_ivp():
    from scipy.integrate import solve_ivp

    flow = tdflow.GradientFlow(tdflow.Target.orthogonal(5, [1.0, 0.5]))
    W0 = 1e8 * tdflow.sphere(5, 3, 1.0, 0)
    ours = flow.integrate(W0, (0, 1), method="dop853", rtol=1e-10)
    fun = lambda t, y: flow.rhs(y.reshape(5, 3, order="F")).ravel(order="F")  # noqa: E731
    ref = solve_ivp(fun, (0, 1), W0.ravel(order="F"), method="DOP853", rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(ours.W, ref.y[:, -1].reshape(5, 3, order="F"), atol=1e-10)


TORCH_HUGE = """
import json, numpy as np, tdflow
target = tdflow.Target.orthogonal(5, [1.0, 0.5])
tor, cpu = (tdflow.GradientFlow(target, backend=b) for b in ("torch", "cpu"))
out = []
for method in ("dopri5", "dop853"):
    for scale in (1e103, 1e154):
        try:
            tor.integrate(np.full((5, 3), scale), (0, 1), method=method)
            out.append("no error")
        except tdflow.IntegrationError as err:
            out.append(str(err))
    W0 = 1e50 * tdflow.sphere(5, 3, 1.0, 0)
    a, b = (f.integrate(W0, (0, 1), method=method, rtol=1e-10) for f in (tor, cpu))
    out.append([a.status, float(np.max(np.abs(a.W - b.W)))])
print(json.dumps(out))
"""


def test_torch_backend_follows_the_same_rules_on_huge_starts():
    pytest.importorskip("torch")
    res = json.loads(run_python(TORCH_HUGE))
    for message in res[0:2] + res[3:5]:
        assert "overflows double precision at the initial state" in message, message
    for status, diff in (res[2], res[5]):
        assert status == "finished" and diff < 1e-9


# -- item 3: fork after a multithreaded call -----------------------------------------------------
FORK = """
import hashlib, json, multiprocessing as mp, os, numpy as np, tdflow
def work(seed):
    flow = tdflow.GradientFlow(tdflow.Target.orthogonal(20, [1.0, 0.5]))
    W = np.asfortranarray(tdflow.sphere(20, 1500, 1.0, seed))  # large: a parallel region
    digest = hashlib.sha256(flow.rhs(W).tobytes()).hexdigest()
    return [tdflow.get_num_threads(), tdflow._core._team_size(), digest]
tdflow.set_num_threads(2)
parent = work(0)  # builds GNU OpenMP's thread pool in this process
with mp.get_context("fork").Pool(2) as pool:
    children = pool.map(work, [0, 1, 0])
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.write(w, json.dumps(work(0)).encode())
    os._exit(0)
os.close(w)
forked = json.loads(os.read(r, 1 << 16))
os.waitpid(pid, 0)
print(json.dumps({"parent": parent, "pool": children, "fork": forked, "after": work(0)}))
"""


@pytest.mark.skipif(not tdflow._core.has_openmp, reason="built without OpenMP")
def test_forked_children_run_parallel_regions_after_a_multithreaded_call():
    res = json.loads(run_python(FORK))
    parent = res["parent"]
    assert parent[:2] == [2, 2]
    for child in (res["pool"][0], res["pool"][2], res["fork"], res["after"]):
        assert child == parent  # two threads in the child's regions, the same bits
    assert res["pool"][1][:2] == [2, 2] and res["pool"][1][2] != parent[2]


# -- item 9: the thread count is process-wide ------------------------------------------------------
@pytest.mark.skipif(not tdflow._core.has_openmp, reason="built without OpenMP")
def test_thread_count_is_process_wide(watchdog):
    seen = {}

    def probe(key):
        seen[key] = (tdflow.get_num_threads(), tdflow._core._team_size())

    def in_thread(fn, *args):
        t = threading.Thread(target=fn, args=args)
        t.start()
        t.join()

    before = tdflow.get_num_threads()
    try:
        tdflow.set_num_threads(3)
        in_thread(probe, "set in the main thread")
        in_thread(tdflow.set_num_threads, 1)
        probe("set in another thread")
    finally:
        tdflow.set_num_threads(before)
    assert seen == {"set in the main thread": (3, 3), "set in another thread": (1, 1)}


# -- item 12: Ctrl-C in integrate_batch ---------------------------------------------------------
class _StopAfter:
    """A stand-in for the replica progress bar that raises KeyboardInterrupt, as Ctrl-C does,
    once `k` replicas have finished."""

    def __init__(self, k):
        self.k, self.n = k, 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, k):
        self.n += k
        if self.n >= self.k:
            raise KeyboardInterrupt


def test_interrupted_batch_keeps_finished_replicas(monkeypatch, watchdog):
    flow = tdflow.GradientFlow(tdflow.Target.orthogonal(10, tdflow.geometric_weights(5, 1.2)))
    W0s = np.stack([tdflow.sphere(10, 50, 1e-15, s) for s in range(8)])
    monkeypatch.setattr(tdflow.flow, "tqdm_replicas", lambda n, progress: _StopAfter(2))
    kw = dict(method="rk4", h=0.05, n_records=11)
    with tdflow.num_threads(2), pytest.raises(KeyboardInterrupt) as info:
        flow.integrate_batch(W0s, (0, 250), **kw)
    trajs = info.value.trajectories
    assert len(trajs) == 8
    done = [i for i, tr in enumerate(trajs) if tr is not None and tr.success]
    rest = [tr for tr in trajs if tr is None or not tr.success]
    assert len(done) >= 2 and rest
    for tr in rest:
        if tr is not None:
            assert tr.status == "stopped" and tr.t_final < 250 and tr.t[-1] <= tr.t_final
            assert np.all(np.isfinite(tr.W))
    single = flow.integrate(W0s[done[0]], (0, 250), **kw)
    np.testing.assert_array_equal(trajs[done[0]].W, single.W)
    np.testing.assert_array_equal(trajs[done[0]].loss, single.loss)


SIGINT = """
import json, os, signal, threading, numpy as np, tdflow
tdflow.set_num_threads(2)
flow = tdflow.GradientFlow(tdflow.Target.orthogonal(10, tdflow.geometric_weights(5, 1.2)))
W0s = np.stack([tdflow.sphere(10, 50, 1e-15, s) for s in range(40)])
out = {}
def interrupted(run):
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        run()
        return "not interrupted"
    except KeyboardInterrupt as err:
        return err
err = interrupted(lambda: flow.integrate_batch(W0s, (0, 250), method="rk4", h=0.01))
out["batch"] = [None if tr is None else tr.status for tr in err.trajectories]
err = interrupted(lambda: flow.integrate(W0s[0], (0, 1e6), method="rk4", h=0.01))
out["single"] = [err.trajectory.status, err.trajectory.t_final]
print(json.dumps(out))
"""


def test_ctrl_c_stops_batch_and_single_runs_promptly():
    """A real SIGINT one second in: the batch of 40 replicas (minutes of work) stops with
    replicas never started, a single run with its partial trajectory; a run that ignored the
    signal would exceed the hang guard."""
    res = json.loads(run_python(SIGINT))
    assert len(res["batch"]) == 40 and None in res["batch"]
    assert set(res["batch"]) <= {None, "stopped", "finished"}
    assert res["single"][0] == "stopped" and 0 < res["single"][1] < 1e6


# -- item 6: step counts -------------------------------------------------------------------------
def test_step_counts_that_do_not_fit_are_refused(watchdog):
    flow = tdflow.GradientFlow(tdflow.Target.orthogonal(3, [1.0]))
    W0 = np.full((3, 2), 0.1)
    msg = r"h = 1e-20 over t_span \(0, 1\) needs 1e\+20 steps, more than 2\^53"
    with pytest.raises(ValueError, match=msg):
        flow.integrate(W0, (0, 1), method="rk4", h=1e-20)
    with pytest.raises(ValueError, match=msg):
        flow.integrate_batch(W0[None], (0, 1), method="euler", h=1e-20)
    lin = tdflow.DeepLinearFlow(np.eye(2))
    with pytest.raises(ValueError, match=msg):
        lin.integrate([np.eye(2)], (0, 1), method="rk4", h=1e-20)
    with pytest.raises(ValueError, match=r"h = 1e-20 over t in \[0, 1\] needs 1e\+20 steps"):
        flow._core.integrate(W0, 0.0, np.array([0.0, 1.0]), "rk4", 1e-20, 1e-8, 0.0, np.inf, 0,
                             False, False, None, 0.1)
    with pytest.raises(ValueError, match=r"max_steps must be <= 2\*\*62"):
        flow.integrate(W0, (0, 1), max_steps=2**70)


# -- item 8: t_eval ending before t_span[1] ------------------------------------------------------
@pytest.mark.parametrize("method,h", [("rk4", 0.05), ("dopri5", None), ("dop853", None)])
def test_t_eval_ending_early_still_runs_to_the_end_of_t_span(method, h, watchdog):
    """solve_ivp's rule: records only at t_eval, the run covers all of t_span."""
    rng = np.random.default_rng(3)
    flow = tdflow.GradientFlow(tdflow.Target.random_unit(4, [1.0, 0.5], rng), lam=1e-3)
    W0 = tdflow.sphere(4, 6, 0.3, 1)
    kw = dict(method=method, h=h)
    tr = flow.integrate(W0, (0, 2), t_eval=[0.0, 0.5, 1.0], **kw)
    full = flow.integrate(W0, (0, 2), t_eval=[0.0, 0.5, 1.0, 2.0], **kw)
    assert tr.t.tolist() == [0.0, 0.5, 1.0] and tr.t_final == 2.0 and tr.success
    np.testing.assert_array_equal(tr.W, full.W)
    np.testing.assert_array_equal(tr.loss, full.loss[:3])
    assert tr.directional_residual.shape == (3, 2)
    batch = flow.integrate_batch(W0[None], (0, 2), t_eval=[0.0, 0.5, 1.0], **kw)
    np.testing.assert_array_equal(batch[0].W, full.W)
    assert batch[0].t.tolist() == [0.0, 0.5, 1.0]
    lin = tdflow.DeepLinearFlow(np.diag([2.0, 1.0]), (2,))
    layers = lin.random_layers(0, 0.3)
    a = lin.integrate(layers, (0, 2), t_eval=[0.0, 1.0], **kw)
    b = lin.integrate(layers, (0, 2), t_eval=[0.0, 1.0, 2.0], **kw)
    assert a.t.tolist() == [0.0, 1.0] and a.products.shape[0] == 2 and a.t_final == 2.0
    for x, y in zip(a.layers, b.layers):
        np.testing.assert_array_equal(x, y)

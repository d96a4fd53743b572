"""tdflow inside other tools: pickling, multiprocessing pools, file names, file modes, unwritable
folders, concurrent sweeps (issue 13, items 4, 5, 10, 14, 15)."""
import dataclasses
import errno
import inspect
import multiprocessing
import os
import pickle
import stat
import sys
from pathlib import Path

import numpy as np
import pytest

import tdflow
from tdflow import cli, io
from tdflow.deflation import DeflationResult, Schedule, deflate
from tdflow.figure1 import run_figure1
from tdflow.sweeps import SweepResult

TARGET = tdflow.Target.orthogonal(6, [0.6, 0.4])


def _flow_error():
    """A real IntegrationError: a start at 1e200 overflows in the first step."""
    flow = tdflow.GradientFlow(tdflow.Target.orthogonal(4, [1.0]))
    with pytest.raises(tdflow.IntegrationError) as info:
        flow.integrate(np.full((4, 2), 1e200), (0.0, 1.0), method="rk4", h=0.5, progress=False)
    return info.value


# -- item 4: every exception class and every public object pickles ------------------------------


def _tdflow_exceptions():
    import tdflow.io
    import tdflow.sweeps

    found = set()
    for mod in list(sys.modules.values()):
        if getattr(mod, "__name__", "").startswith("tdflow"):
            for obj in vars(mod).values():
                if inspect.isclass(obj) and issubclass(obj, BaseException) \
                        and obj.__module__.startswith("tdflow"):
                    found.add(obj)
    return found


def test_every_exception_class_round_trips_through_pickle():
    err = _flow_error()
    examples = {tdflow.IntegrationError: err,
                io.FolderLockedError: io.FolderLockedError("out: /x is in use by pid 1")}
    assert _tdflow_exceptions() == set(examples)  # a new exception class needs an example here
    for cls, e in examples.items():
        back = pickle.loads(pickle.dumps(e))
        assert type(back) is cls and str(back) == str(e) and back.args == e.args
    back = pickle.loads(pickle.dumps(err))
    assert back.trajectory.status == "non-finite" and back.trajectory.t_final == err.trajectory.t_final
    np.testing.assert_array_equal(back.trajectory.W, err.trajectory.W)
    err.trajectories = [err.trajectory]  # as integrate_batch attaches them
    assert len(pickle.loads(pickle.dumps(err)).trajectories) == 1


def _same(x, y, where="result"):
    """x and y hold the same values (arrays bitwise, NaN equal to NaN), recursively."""
    assert type(x) is type(y), where
    if isinstance(x, np.ndarray):
        np.testing.assert_array_equal(x, y, err_msg=where)
    elif isinstance(x, dict):
        assert x.keys() == y.keys(), where
        for k in x:
            _same(x[k], y[k], f"{where}[{k!r}]")
    elif isinstance(x, (list, tuple)):
        assert len(x) == len(y), where
        for i, (u, v) in enumerate(zip(x, y)):
            _same(u, v, f"{where}[{i}]")
    elif dataclasses.is_dataclass(x):
        for f in dataclasses.fields(x):
            _same(getattr(x, f.name), getattr(y, f.name), f"{where}.{f.name}")
    elif isinstance(x, (tdflow.Target, tdflow.CPTensor)):
        _same((x.U, x.a, x.order) if isinstance(x, tdflow.Target) else (x.Z, x.c, x.order),
              (y.U, y.a, y.order) if isinstance(y, tdflow.Target) else (y.Z, y.c, y.order), where)
    else:
        assert x == y or (x != x and y != y), where


def test_flows_targets_tensors_and_schedules_pickle(rng):
    W = tdflow.sphere(6, 5, 0.7, rng)
    flow = tdflow.GradientFlow(TARGET, 0.01, active_tol=0.0)
    back = pickle.loads(pickle.dumps(flow))
    assert (back.lam, back.active_tol, back.backend) == (0.01, 0.0, "cpu")
    np.testing.assert_array_equal(back.rhs(W), flow.rhs(W))  # the rebuilt core, bitwise
    assert back.loss(W) == flow.loss(W)
    lin = tdflow.DeepLinearFlow(rng.standard_normal((5, 2)), [3], X=rng.standard_normal((5, 4)))
    layers = lin.random_layers(rng)
    lback = pickle.loads(pickle.dumps(lin))
    assert lback.dims == lin.dims and lback.regression
    for a, b in zip(lback.rhs(layers), lin.rhs(layers)):
        np.testing.assert_array_equal(a, b)
    tback = pickle.loads(pickle.dumps(TARGET))
    np.testing.assert_array_equal(tback.U, TARGET.U)
    assert not tback.U.flags.writeable and not tback.a.flags.writeable  # still read-only
    T = tdflow.CPTensor(rng.standard_normal((6, 3)), [1.0, -2.0, 0.5], 3)
    assert pickle.loads(pickle.dumps(T)).evaluate(W[:, 0]) == T.evaluate(W[:, 0])
    s = Schedule(gamma=0.4, max_epochs=7)
    assert pickle.loads(pickle.dumps(s)) == s


def test_results_pickle(rng):
    flow = tdflow.GradientFlow(TARGET)
    traj = flow.integrate(tdflow.sphere(6, 4, 1e-3, rng), (0, 5), n_records=5, progress=False)
    lin = tdflow.DeepLinearFlow(rng.standard_normal((3, 3)), [3])
    layers = lin.random_layers(rng, 0.5)
    results = [
        traj,
        deflate(TARGET, 8, Schedule(max_epochs=2), 0, progress=False),
        lin.integrate(layers, (0, 1), n_records=5, progress=False),
        lin.rate_bound(layers),
        tdflow.tensor_power_method(TARGET, 2, n_starts=3, n_iters=5),
        tdflow.BeyondLazy(tdflow.Target.random_unit(5, [1.0, 0.5], 0, order=3), 4, epochs=2,
                          steps=3).run(0, progress=False),
        tdflow.lazy_fit(TARGET, tdflow.sphere(6, 3, 1.0, rng)),
        tdflow.lazy_sweep(tdflow.Target.orthogonal(3, [1.0], order=3), [2, 3], 0),
        tdflow.run_comparison(d=4, r=1, ms=[2], methods=["power", "lazy"]),
        tdflow.BeyondLazy(tdflow.Target.random_unit(5, [1.0], 0, order=3), 3).init_state(0),
        run_figure1(seeds=[0], t_end=1.0, progress=False),
        SweepResult(Path("out"), [{"id": "x", "status": "ok"}], 1, 0, 0, 0, [Path("s.csv")], 0.1),
    ]
    for res in results:
        back = pickle.loads(pickle.dumps(res))
        _same(res, back, type(res).__name__)
    defl = pickle.loads(pickle.dumps(results[1]))
    assert defl.summary() == results[1].summary()


# -- item 4: a real pool, spawn and fork ---------------------------------------------------------


def _raises_in_worker(seed):
    tdflow.set_num_threads(1)
    flow = tdflow.GradientFlow(tdflow.Target.orthogonal(4, [1.0]))
    return flow.integrate(np.full((4, 2), 1e200 * (seed + 1)), (0.0, 1.0), method="rk4", h=0.5,
                          progress=False)


def _rhs_in_worker(flow, W):
    return flow.rhs(W), flow.integrate(W, (0, 2), n_records=3, progress=False)


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_pool_worker_that_raises_integration_error(method):
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {method} start method on this platform")
    ctx = multiprocessing.get_context(method)
    W = tdflow.sphere(6, 3, 1e-2, 1)
    flow = tdflow.GradientFlow(TARGET, 1e-3)
    with ctx.Pool(2) as pool:
        bad = pool.apply_async(_raises_in_worker, (0,))
        good = pool.apply_async(_rhs_in_worker, (flow, W))  # a flow travels to the worker
        with pytest.raises(tdflow.IntegrationError, match="NaN/Inf") as info:
            bad.get(timeout=60)  # before the fix: the pool hung here
        rhs, traj = good.get(timeout=120)
        # the pool survives the error: a map over further work completes
        errors = [r for r in (pool.apply_async(_raises_in_worker, (k,)) for k in range(3))]
        for r in errors:
            with pytest.raises(tdflow.IntegrationError):
                r.get(timeout=120)
    assert info.value.trajectory.status == "non-finite"
    np.testing.assert_array_equal(rhs, flow.rhs(W))
    ref = flow.integrate(W, (0, 2), n_records=3, progress=False)
    np.testing.assert_array_equal(traj.W, ref.W)


# -- item 5: one rule for file names --------------------------------------------------------------


@pytest.mark.parametrize("given, written", [
    ("run", "run.npz"), ("run.npz", "run.npz"), ("run.v2", "run.v2.npz"), ("a.b/run", "a.b/run.npz"),
])
def test_one_name_rule(tmp_path, given, written):
    assert io.npz_path(tmp_path / given) == tmp_path / written
    assert io.npz_path(str(tmp_path / given)) == tmp_path / written
    res = deflate(TARGET, 8, Schedule(max_epochs=1), 0, progress=False)
    assert res.save(tmp_path / given) == tmp_path / written
    assert DeflationResult.load(tmp_path / given).summary() == res.summary()
    assert DeflationResult.load(tmp_path / written).summary() == res.summary()


def test_checkpoint_without_suffix_is_resumed_not_recomputed(tmp_path):
    epochs = []
    count = lambda r: epochs.append(r.epoch)  # noqa: E731
    full = deflate(TARGET, 8, Schedule(max_epochs=3, eps=1e-9), 0, progress=False)
    ck = tmp_path / "run"
    first = deflate(TARGET, 8, Schedule(max_epochs=1, eps=1e-9), 0, checkpoint=ck, progress=False)
    assert first.n_epochs == 1 and (tmp_path / "run.npz").exists() and not ck.exists()
    again = deflate(TARGET, 8, Schedule(max_epochs=3, eps=1e-9), 0, checkpoint=str(ck),
                    resume=True, progress=False, callback=count)
    assert epochs == [2, 3]  # only epochs 1 and 2 were computed
    assert again.summary().split("wall")[0] == full.summary().split("wall")[0]
    np.testing.assert_array_equal(again.W, full.W)
    assert tdflow.resume(ck, progress=False).n_epochs == 3  # finished: returned as it is
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.npz"]


def test_cli_out_without_suffix(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["deflate", "--d", "8", "--r", "2", "--m", "12", "--out", str(out), "--quiet"]
    cli.main(args + ["--max-epochs", "1", "--eps", "1e-9"])
    assert f"result: {out}.npz" in capsys.readouterr().out
    before = (tmp_path / "run.npz").read_bytes()
    cli.main(args + ["--max-epochs", "2", "--eps", "1e-9", "--resume"])
    res = DeflationResult.load(out)
    assert res.n_epochs == 2 and (tmp_path / "run.npz").read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.npz"]
    assert cli.main(["plot", str(out)]) == 0 and (tmp_path / "run.png").exists()


# -- item 14: files respect the umask -------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_files_respect_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        paths = [io.save_npz(tmp_path / "a", {"x": np.ones(2)}, kind="test"),
                 io.atomic_write(tmp_path / "b.txt", lambda fh: fh.write(b"hi"))]
        paths.append(deflate(TARGET, 8, Schedule(max_epochs=1), 0, progress=False).save(tmp_path / "c"))
        from tdflow.sweeps import write_summary

        paths += write_summary(tmp_path / "sweep", [{"id": "x", "status": "ok"}])
    finally:
        os.umask(old)
    for p in paths:
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask, p
    assert not list(tmp_path.rglob(".*.tmp"))


# -- item 10: unwritable folders are refused before the work; results are never lost --------------


@pytest.fixture
def refuse_writes(monkeypatch):
    """Make one folder unwritable (chmod does not stop root, so os.open refuses instead) or
    make every write fail with ENOSPC."""
    real_open, real_fsync = os.open, os.fsync
    state = {"folder": None, "full": False}

    def fake_open(path, flags, *args, **kw):
        p = os.fspath(path)
        if state["folder"] and p.startswith(state["folder"]) and flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, "Permission denied", p)
        return real_open(path, flags, *args, **kw)

    def fake_fsync(fd):  # where a full disk (or NFS quota) shows up at the latest
        if state["full"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "fsync", fake_fsync)
    return state


def test_read_only_checkpoint_folder_fails_before_the_run(tmp_path, refuse_writes):
    refuse_writes["folder"] = str(tmp_path / "ro")
    (tmp_path / "ro").mkdir()
    called = []
    with pytest.raises(PermissionError, match=r"checkpoint: cannot write to the folder .*ro"):
        deflate(TARGET, 8, Schedule(max_epochs=2), 0, checkpoint=tmp_path / "ro" / "run",
                progress=False, callback=called.append)
    assert called == []  # nothing was computed
    assert cli.main(["deflate", "--d", "8", "--r", "2", "--m", "12", "--quiet",
                     "--out", str(tmp_path / "ro" / "run")]) == 2
    assert cli.main(["fig1", "--seeds", "1", "--t-end", "1", "--no-plot", "--quiet",
                     "--out", str(tmp_path / "ro")]) == 2


def test_full_disk_keeps_the_result(tmp_path, refuse_writes):
    ref = deflate(TARGET, 8, Schedule(max_epochs=3, eps=1e-9), 0, progress=False)

    def fill(res):
        refuse_writes["full"] = res.epoch >= 1  # the disk fills up after the first checkpoint

    with pytest.warns(RuntimeWarning, match="No space left on device.*the run goes on") as rec:
        res = deflate(TARGET, 8, Schedule(max_epochs=3, eps=1e-9), 0, checkpoint=tmp_path / "run",
                      progress=False, callback=fill)
    assert len(rec) == 2  # the first failed checkpoint and the final one
    np.testing.assert_array_equal(res.W, ref.W)  # the result is all there
    assert DeflationResult.load(tmp_path / "run").n_epochs == 1  # the last good checkpoint
    assert not list(tmp_path.glob(".*.tmp"))
    refuse_writes["full"] = False
    np.testing.assert_array_equal(DeflationResult.load(res.save(tmp_path / "later")).W, ref.W)


def test_cli_deflate_writes_the_result_once(tmp_path, capsys, monkeypatch):
    real_write, writes = io.atomic_write, []

    def write(path, fill):
        writes.append(Path(path))
        return real_write(path, fill)

    monkeypatch.setattr(io, "atomic_write", write)
    args = ["deflate", "--d", "8", "--r", "2", "--m", "12", "--quiet", "--max-epochs", "2",
            "--checkpoint-every", "5", "--out", str(tmp_path / "run")]
    cli.main(args)
    assert writes == [tmp_path / "run.npz"]  # deflate's final checkpoint, not a second copy
    assert f"result: {tmp_path / 'run.npz'}" in capsys.readouterr().out
    assert DeflationResult.load(tmp_path / "run").n_epochs == 2
    cli.main(args + ["--resume"])  # finished already: the file holds it, nothing is written
    assert writes == [tmp_path / "run.npz"]
    assert f"result: {tmp_path / 'run.npz'}" in capsys.readouterr().out


def test_cli_writes_elsewhere_when_the_result_cannot_be_written(tmp_path, capsys, monkeypatch):
    real_save = DeflationResult.save

    def save(self, path):  # the final write of the CLI fails like a full disk
        if os.fspath(path).startswith(str(tmp_path)) and self.finished:
            raise OSError(errno.ENOSPC, f"cannot write {path}: No space left on device")
        return real_save(self, path)

    monkeypatch.setattr(DeflationResult, "save", save)
    with pytest.warns(RuntimeWarning):
        cli.main(["deflate", "--d", "8", "--r", "2", "--m", "12", "--quiet", "--max-epochs", "2",
                  "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert "No space left on device; the result was written to" in err
    saved = err.split("written to ")[1].split(" instead")[0]
    assert DeflationResult.load(saved).n_epochs == 2
    os.remove(saved)
    os.rmdir(os.path.dirname(saved))

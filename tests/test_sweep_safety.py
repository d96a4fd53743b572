"""Sweeps that share a folder, are interrupted, cannot write, or return objects (issue 13,
items 10, 11, 15)."""
import errno
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("distributed")

from tdflow import cli, io  # noqa: E402
from tdflow.sweeps import FILE_KIND, KINDS, local_cluster, register_kind, run_one, sweep  # noqa: E402

SPEC = {"kind": "flow", "seeds": 3, "fixed": dict(d=5, r=2, m=8, radius=1e-3, t_end=20.0,
                                                   n_records=11)}


@pytest.fixture(scope="module")
def client():
    import distributed

    with local_cluster(2) as cluster, distributed.Client(cluster) as c:
        yield c


def _env():
    return dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))


# -- item 15: one sweep per folder; Ctrl-C says one line -----------------------------------------


def test_a_second_sweep_on_the_same_folder_is_refused(client, tmp_path, capsys):
    code = ("import sys, time\nfrom tdflow import io\nwith io.folder_lock(sys.argv[1]):\n"
            "    print('held', flush=True)\n    time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE,
                              env=_env())
    try:
        assert holder.stdout.readline() == b"held\n"
        with pytest.raises(io.FolderLockedError, match=rf"out: {tmp_path} is in use by tdflow, "
                                                       rf"pid {holder.pid} on "):
            sweep(SPEC, tmp_path, client=client, verbose=False)
        spec = tmp_path.parent / f"{tmp_path.name}.toml"
        spec.write_text('kind = "flow"\n[fixed]\nd = 4\n')
        assert cli.main(["sweep", str(spec), "--out", str(tmp_path),
                         "--scheduler", client.scheduler.address]) == 2
        assert "is in use by tdflow, pid" in capsys.readouterr().err
        assert not list((tmp_path / "runs").glob("*.npz"))  # nothing was run twice
    finally:
        holder.kill()  # a killed holder releases its lock: no stale lock to clean up
        holder.wait()
        holder.stdout.close()
    res = sweep(SPEC, tmp_path, client=client, verbose=False)
    assert res.ran == 3 and res.errors == 0


def test_ctrl_c_prints_one_line_and_keeps_the_finished_runs(tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text('kind = "flow"\nseeds = 8\n[fixed]\nd = 20\nm = 150\nr = 5\nt_end = 250\n'
                    'n_records = 51\n')
    out = tmp_path / "s"
    cmd = [sys.executable, "-m", "tdflow", "sweep", str(spec), "--workers", "2", "--quiet",
           "--no-dashboard"]
    # its own process group: Ctrl-C in a terminal sends SIGINT to the whole group, workers included
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, env=_env())
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and not list((out / "runs").glob("*.npz")):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    lines = err.decode().splitlines()
    assert proc.returncode == 130, err.decode()
    assert len(lines) == 2 and lines[0].startswith("tdflow sweep: local cluster"), "\n".join(lines)
    kept = int(lines[1].split("interrupted, ")[1].split(" runs kept")[0])
    assert lines[1].endswith(f"{8 - kept} pending; run the same command to resume"), lines
    assert 1 <= kept == len(list((out / "runs").glob("*.npz"))) < 8
    for f in (out / "runs").glob("*.npz"):
        io.load_npz(f, kind=FILE_KIND)


# -- item 10: unwritable output -------------------------------------------------------------------


def test_unwritable_out_fails_before_any_run(tmp_path, monkeypatch):
    real_open = os.open
    ro = str(tmp_path / "ro")

    def fake_open(path, flags, *args, **kw):  # a read-only folder (chmod does not stop root)
        if os.fspath(path).startswith(ro) and flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_open(path, flags, *args, **kw)

    monkeypatch.setattr(os, "open", fake_open)
    started = []
    monkeypatch.setattr(sys.modules["tdflow.sweeps.driver"], "_run_on_dask", lambda *a, **k: started.append(1))
    with pytest.raises(PermissionError, match=r"out: cannot write to the folder .*ro/runs"):
        sweep(SPEC, tmp_path / "ro", verbose=False)
    assert not started


def test_results_that_cannot_be_written_are_kept(client, tmp_path, monkeypatch, capsys):
    real = io.save_npz

    def full(path, *args, **kw):
        if "runs" in str(path):
            raise OSError(errno.ENOSPC, f"cannot write {path}: No space left on device")
        return real(path, *args, **kw)

    monkeypatch.setattr(io, "save_npz", full)
    res = sweep(SPEC, tmp_path, client=client)
    assert res.ran == 3 and len(res.unsaved) == 3 and res.counts() == {"ok": 3}
    for rid, kept in res.unsaved.items():
        assert kept["status"] == "ok" and kept["arrays"]["W"].shape == (5, 8)
    err = capsys.readouterr().err
    assert err.count("No space left on device; finished runs are kept in memory") == 1
    assert "3 finished runs could not be written" in res.report()
    monkeypatch.setattr(io, "save_npz", real)
    again = sweep(SPEC, tmp_path, client=client, verbose=False)
    assert again.ran == 3 and not again.unsaved  # written now


# -- item 11: object arrays never reach pickle ----------------------------------------------------


def test_kinds_returning_object_arrays(client, tmp_path, monkeypatch):
    monkeypatch.setitem(KINDS, "objects", KINDS["flow"])  # restored after the test
    monkeypatch.setitem(KINDS, "convertible", KINDS["flow"])

    def objects(params, seed):  # local functions travel to the workers by value
        return {"x": 1}, {"ok": np.arange(3), "bad": np.array([{"a": 1}, None], dtype=object)}

    def convertible(params, seed):
        return {"x": 1}, {"ok": np.array([1, 2.5], dtype=object)}

    register_kind("objects", objects)
    register_kind("convertible", convertible)
    res = run_one("objects", {}, 0)
    assert res["status"] == "error" and "arrays['bad'] holds Python objects" in res["error"]
    assert run_one("convertible", {}, 0)["arrays"]["ok"].dtype == np.float64
    out = sweep({"kind": "objects", "seeds": 2}, tmp_path, client=client, verbose=False)
    assert out.errors == 2 and "arrays['bad'] holds Python objects" in out.rows[0]["error"]
    for f in (tmp_path / "runs").glob("*.npz"):
        with np.load(f, allow_pickle=False) as data:  # never a pickle inside
            assert all(data[k].dtype != object for k in data.files)

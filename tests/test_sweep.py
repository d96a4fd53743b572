"""Parameter sweeps on a real dask.distributed LocalCluster (2 worker processes, 127.0.0.1 only)."""
import csv
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("distributed")

import tdflow  # noqa: E402
from tdflow import io  # noqa: E402
from tdflow.cli import main  # noqa: E402
from tdflow.sweeps import (  # noqa: E402
    FILE_KIND, KINDS, local_cluster, parse_spec, register_kind, run_id, run_one, sweep,
)

# tiny flows: fitted in well under 0.1 s each
FIXED = dict(d=6, r=3, radius=1e-3, t_end=20.0, n_records=41, method="dopri5")
SPEC = {
    "kind": "flow",
    "seeds": 2,
    "fixed": FIXED,
    "grid": {"m": [10, 20], "lam": [0.0, 1e-3]},
    "runs": [{"m": 15, "spectrum": "uniform"}, {"d": 5, "m": 12, "radius": -1.0}],  # the last raises
}
VOLATILE = ("wall_time", "worker")


@pytest.fixture(scope="module")
def client():
    import distributed

    with local_cluster(2) as cluster, distributed.Client(cluster) as c:
        yield c


def stable(rows):
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in rows]


def mtimes(out):
    return {p.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*.npz")}


# -- spec ---------------------------------------------------------------------------------


def test_spec_expansion_and_ids():
    spec = parse_spec(SPEC)
    assert len(spec.param_sets) == 4 + 2
    assert len(spec.runs) == 6 * 2
    assert [r.seed for r in spec.runs[:4]] == [0, 1, 0, 1]
    assert [(p["m"], p["lam"]) for p in spec.param_sets[:4]] == [(10, 0.0), (10, 1e-3), (20, 0.0), (20, 1e-3)]
    assert spec.param_sets[4]["spectrum"] == "uniform" and spec.param_sets[4]["d"] == 6
    assert spec.param_sets[5]["d"] == 5  # [[runs]] overrides [fixed]
    assert len({r.id for r in spec.runs}) == len(spec.runs)
    # stable: defaults filled in and 20 == 20.0 for a float parameter
    again = parse_spec(dict(SPEC, fixed=dict(FIXED, t_end=20, order=4)))
    assert [r.id for r in again.runs] == [r.id for r in spec.runs]
    assert spec.runs[0].id == run_id("flow", spec.param_sets[0], 0)
    assert parse_spec(dict(SPEC, seeds=[3, 3, 5])).seeds == [3, 5]
    # identical parameter sets are run once
    assert len(parse_spec({"kind": "flow", "runs": [{"m": 5}, {"m": 5}]}).runs) == 1


@pytest.mark.parametrize("bad, err, match", [
    ({"kind": "nope"}, ValueError, "kind must be one of"),
    ({"kind": "flow", "fixed": {"dd": 3}}, ValueError, r"unknown parameter\(s\) \['dd'\]"),
    ({"kind": "flow", "grid": {"m": 5}}, TypeError, "grid entry 'm' must be a non-empty list"),
    ({"kind": "flow", "fixed": {"m": 5}, "grid": {"m": [5]}}, ValueError, "both"),
    ({"kind": "flow", "seeds": 0}, ValueError, "seeds must be >= 1"),
    ({"kind": "flow", "seeds": "3"}, TypeError, "seeds must be"),
    ({"kind": "flow", "sedes": 3}, ValueError, r"unknown key\(s\) \['sedes'\]"),
    ({"kind": "flow", "runs": {"m": 3}}, TypeError, "runs must be a list"),
])
def test_spec_errors(bad, err, match):
    with pytest.raises(err, match=match):
        parse_spec(bad)


def test_toml_spec(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('kind = "flow"\nseeds = [1, 4]\n[fixed]\nd = 6\n[grid]\nm = [10, 20]\n')
    spec = parse_spec(path)
    assert spec.seeds == [1, 4] and len(spec.runs) == 4 and spec.param_sets[1]["m"] == 20
    path.write_text("kind = \n")
    with pytest.raises(ValueError, match="not valid TOML"):
        parse_spec(path)


def test_import_does_not_import_dask():
    code = "import sys, tdflow; assert callable(tdflow.sweep); assert 'distributed' not in sys.modules and 'dask' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_old_import_path_still_works():
    """tdflow.sweep was a module before tdflow.sweeps (issue 17): its names still import from
    there, and importing it does not turn the function tdflow.sweep into a module."""
    code = ("import tdflow; from tdflow.sweep import register_kind, FLOW_DEFAULTS, sweep; "
            "import tdflow.sweep; import tdflow.sweeps as s; "
            "assert tdflow.sweep is sweep is s.sweep and register_kind is s.register_kind; "
            "assert FLOW_DEFAULTS is s.FLOW_DEFAULTS")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_dask_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(ImportError, match=r"python -m pip install 'tdflow\[dask\]'"):
        sweep({"kind": "flow", "fixed": FIXED}, tmp_path, verbose=False)


# -- running ------------------------------------------------------------------------------


def test_sweep_matches_direct_runs(client, tmp_path):
    res = sweep(SPEC, tmp_path, client=client, verbose=False)
    spec = parse_spec(SPEC)
    assert (res.ran, res.skipped, res.errors, res.pending) == (12, 0, 2, 0)
    assert [r["id"] for r in res.rows] == [r.id for r in spec.runs]
    for run, row in zip(spec.runs, res.rows):
        direct = run_one("flow", run.params, run.seed)
        assert row["status"] == direct["status"]
        assert row["error"] == direct["error"]
        assert row["worker"].startswith("tcp://127.0.0.1:")
        for k, v in direct["row"].items():
            np.testing.assert_equal(row[k], v, err_msg=k)
        for k, v in run.params.items():
            assert row[k] == v
        arrays, meta = io.load_npz(tmp_path / "runs" / f"{run.id}.npz", kind=FILE_KIND)
        assert meta["status"] == row["status"]
        for k, v in direct["arrays"].items():
            np.testing.assert_array_equal(arrays[k], v)
    ok = [r for r in res.rows if r["status"] == "ok"]
    assert all(r["recovered"] == 3 and r["final_error"] < 0.05 for r in ok)
    assert ok[0]["t_final"] == 20.0 and ok[0]["n_rhs"] > 0
    bad = [r for r in res.rows if r["status"] == "error"]
    assert len(bad) == 2 and all("radius must be >= 0" in r["error"] for r in bad)
    # the CSV holds the same table, floats to the last digit
    with open(tmp_path / "summary.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 12
    for row, line in zip(res.rows, table):
        assert line["id"] == row["id"] and line["status"] == row["status"]
        if row["status"] == "ok":
            assert float(line["final_error"]) == row["final_error"]
            assert int(line["recovered"]) == row["recovered"]
            assert float(line["wall_time"]) == row["wall_time"]
        else:
            assert line["error"] == row["error"] and line["final_error"] == ""


def test_interrupt_and_resume(client, tmp_path):
    full = sweep(SPEC, tmp_path / "full", client=client, verbose=False)
    out = tmp_path / "killed"
    seen = []

    def kill(row):
        seen.append(row)
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sweep(SPEC, out, client=client, on_result=kill, verbose=False)
    before = mtimes(out)
    assert len(before) == 3  # every run that finished is on disk
    lines = (out / "summary.csv").read_text().splitlines()  # the summary says what was kept
    assert len(lines) == 13 and sum(",pending," in line for line in lines) == 9

    part = sweep(SPEC, out, client=client, max_runs=4, verbose=False)
    assert part.ran == 4 and part.pending == 12 - 3 - 4
    assert sum(r["status"] == "pending" for r in part.rows) == part.pending
    assert all(mtimes(out)[k] == v for k, v in before.items())

    n_ok = sum(r["status"] == "ok" for r in part.rows)
    n_err = sum(r["status"] == "error" for r in part.rows)
    before = {k: v for k, v in mtimes(out).items()}
    done = sweep(SPEC, out, client=client, verbose=False)
    assert done.skipped == n_ok and done.ran == 12 - n_ok  # error runs are retried
    after = mtimes(out)
    ok_files = {f"{r['id']}.npz" for r in part.rows if r["status"] == "ok"}
    assert all(after[k] == before[k] for k in ok_files)
    assert n_err == 0 or any(after[f"{r['id']}.npz"] != before[f"{r['id']}.npz"]
                             for r in part.rows if r["status"] == "error")
    assert stable(done.rows) == stable(full.rows)

    again = sweep(SPEC, out, client=client, verbose=False)
    assert again.ran == 2 and again.skipped == 10  # only the two error runs


def test_corrupt_result_files_are_rerun(client, tmp_path):
    spec = {"kind": "flow", "seeds": 3, "fixed": FIXED}
    first = sweep(spec, tmp_path, client=client, verbose=False)
    files = sorted((tmp_path / "runs").glob("*.npz"))
    assert len(files) == 3
    data = files[0].read_bytes()
    files[0].write_bytes(data[: len(data) // 2])  # truncated
    files[1].write_bytes(b"not a zip file")
    untouched = files[2].stat().st_mtime_ns
    second = sweep(spec, tmp_path, client=client, verbose=False)
    assert (second.ran, second.skipped) == (2, 1)
    assert files[2].stat().st_mtime_ns == untouched
    assert stable(second.rows) == stable(first.rows)
    for f in files:
        io.load_npz(f, kind=FILE_KIND)


def test_linear_kind(client, tmp_path):
    spec = {"kind": "linear", "seeds": 2,
            "runs": [{"n0": 1, "nL": 1, "hidden": [1], "t_end": 3.0},
                     {"init": "near", "balance": 1.5, "t_end": 2.0},
                     {"hidden": [3, 3], "t_end": 1.0},
                     {"hidden": [3, 3, 3], "t_end": 0.5}]}
    res = sweep(spec, tmp_path, client=client, verbose=False)
    assert res.errors == 0 and len(res.rows) == 8
    for run, row in zip(parse_spec(spec).runs, res.rows):
        direct = run_one("linear", run.params, run.seed)["row"]
        np.testing.assert_equal({k: row[k] for k in direct}, direct)
    assert all(r["holds"] for r in res.rows[:6])
    assert res.rows[4]["bound_kind"] == "three-layer"  # Theorem 2 of Min, Vidal, Mallada
    # four random matrix layers: no theorem applies
    assert res.rows[6]["bound_kind"] == "none" and res.rows[6]["holds"] is None


def test_register_a_kind_with_one_line(client, tmp_path, monkeypatch):
    monkeypatch.setitem(KINDS, "toy", KINDS["flow"])  # restored after the test

    def toy(params, seed):  # a local function travels to the workers by value
        x = np.random.default_rng(seed).standard_normal(params["n"])
        if params["n"] == 3:
            raise RuntimeError("three is not allowed")
        import tdflow

        return {"epochs": params["n"], "final_error": float(x @ x),
                "omp_threads": tdflow.get_num_threads()}, {"x": x}

    register_kind("toy", toy, {"n": 1})
    res = sweep({"kind": "toy", "seeds": [7], "grid": {"n": [2, 3]}}, tmp_path, client=client, verbose=False)
    ok, bad = res.rows
    x = np.random.default_rng(7).standard_normal(2)
    assert ok["status"] == "ok" and ok["epochs"] == 2 and ok["final_error"] == float(x @ x)
    assert ok["omp_threads"] == 1
    assert bad["status"] == "error" and bad["error"] == "RuntimeError: three is not allowed"


def test_cli_with_scheduler_address(client, tmp_path, capsys):
    spec = tmp_path / "small.toml"
    spec.write_text('kind = "flow"\nseeds = 2\n[fixed]\nd = 6\nr = 3\nm = 10\nradius = 1e-3\n'
                    't_end = 20\nn_records = 41\n')
    addr = client.scheduler.address
    assert addr.startswith("tcp://127.0.0.1:")
    assert main(["sweep", str(spec), "--scheduler", addr, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "2 runs: 2 ok" in out and "summary:" in out
    assert (tmp_path / "small" / "summary.csv").exists()
    assert main(["sweep", str(spec), "--scheduler", addr, "--quiet"]) == 0
    assert "skipped 2 already complete" in capsys.readouterr().out
    assert main(["sweep", str(spec), "--scheduler", addr, "--workers", "2"]) == 2
    assert "workers applies to the local cluster only" in capsys.readouterr().err
    spec.write_text('kind = "flow"\n[fixed]\nd = 6\nr = 7\n')
    assert main(["sweep", str(spec), "--scheduler", addr, "--quiet"]) == 1


def test_parquet_summary(client, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    res = sweep(SPEC, tmp_path, client=client, verbose=False)
    table = pq.read_table(tmp_path / "summary.parquet").to_pylist()
    assert [r["id"] for r in table] == [r["id"] for r in res.rows]
    assert [r["final_error"] for r in table if r["status"] == "ok"] == \
        [r["final_error"] for r in res.rows if r["status"] == "ok"]


def test_summary_as_a_dataframe(client, tmp_path):
    pd = pytest.importorskip("pandas")
    from tdflow.sweeps import load_summary

    res = sweep(SPEC, tmp_path, client=client, verbose=False)
    df = res.to_pandas()
    assert isinstance(df, pd.DataFrame) and len(df) == len(res.rows) == 12
    with open(tmp_path / "summary.csv", newline="") as fh:
        header = next(csv.reader(fh))
    assert list(df.columns) == header  # the columns of summary.csv, in its order
    assert df["id"].tolist() == [r["id"] for r in res.rows]
    assert df["status"].tolist() == ["ok"] * 10 + ["error"] * 2  # the last parameter set raises
    ok = df["status"] == "ok"
    assert df["final_error"][ok].tolist() == [r["final_error"] for r in res.rows if r["status"] == "ok"]
    disk = load_summary(tmp_path)  # Parquet when pyarrow is there, else the CSV
    assert disk["id"].tolist() == df["id"].tolist() and disk["status"].tolist() == df["status"].tolist()
    np.testing.assert_array_equal(disk["final_error"][ok].to_numpy(dtype=float),
                                  df["final_error"][ok].to_numpy(dtype=float))


def test_run_one_validates():
    with pytest.raises(ValueError, match="kind must be one of"):
        run_one("nope", {}, 0)
    with pytest.raises(ValueError, match="unknown parameter"):
        run_one("flow", {"q": 1}, 0)
    with pytest.raises(TypeError, match="seed must be an integer"):
        run_one("flow", {}, 1.5)


def test_toml_needs_tomli_before_python_311(tmp_path, monkeypatch):
    path = tmp_path / "s.toml"
    path.write_text('kind = "flow"\n')
    monkeypatch.setitem(sys.modules, "tomllib", None)
    monkeypatch.setitem(sys.modules, "tomli", None)
    with pytest.raises(ImportError, match="python -m pip install tomli"):
        parse_spec(path)


def test_worker_environment(client):
    def env():
        import os

        return os.environ.get("OMP_NUM_THREADS"), os.environ.get("MALLOC_TRIM_THRESHOLD_")

    # one OpenMP thread per single-threaded worker; no forced malloc trimming (slows runs 2x)
    assert set(client.run(env).values()) == {("1", None)}
    assert all(w["nthreads"] == 1 for w in client.scheduler_info()["workers"].values())
    assert all(a.startswith("tcp://127.0.0.1:") for a in client.scheduler_info()["workers"])


def test_sigkill_part_way_and_resume(client, tmp_path):
    """A client killed with SIGKILL in the middle of a sweep loses none of the finished runs."""
    spec = tmp_path / "kill.toml"
    spec.write_text('kind = "flow"\nseeds = 8\n[fixed]\nd = 20\nm = 150\nr = 5\nt_end = 250\n'
                    'n_records = 51\n')
    out = tmp_path / "kill"
    cmd = [sys.executable, "-m", "tdflow", "sweep", str(spec), "--scheduler", client.scheduler.address,
           "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while proc.poll() is None and not list((out / "runs").glob("*.npz")):
            time.sleep(0.005)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = mtimes(out)
    assert len(before) >= 1
    for name in before:
        io.load_npz(out / "runs" / name, kind=FILE_KIND)  # complete files only, never torn
    res = sweep(spec, out, client=client, verbose=False)
    assert res.skipped == len(before) and res.ran == 8 - len(before) and res.errors == 0
    assert all(mtimes(out)[k] == v for k, v in before.items())
    for run, row in zip(parse_spec(spec).runs, res.rows):
        direct = run_one("flow", run.params, run.seed)["row"]
        np.testing.assert_equal({k: row[k] for k in direct}, direct)


def test_deflate_kind_matches_a_direct_run():
    from tdflow.sweeps import run_one

    params = dict(d=10, r=3, m=20, ratio=2.0, max_epochs=20)
    res = run_one("deflate", params, 1)
    assert res["status"] == "ok", res.get("error")
    direct = tdflow.deflate(tdflow.Target.orthogonal(10, tdflow.geometric_weights(3, 2.0)), 20,
                            tdflow.Schedule(max_epochs=20), 1, rtol=1e-7, n_records=41, progress=False)
    row = res["row"]
    assert row["status"] == direct.status == "recovered"
    assert row["recovered"] == 3 and row["epochs"] == direct.n_epochs
    assert row["final_error"] == direct.residual_norm
    np.testing.assert_array_equal(res["arrays"]["W"], direct.W)

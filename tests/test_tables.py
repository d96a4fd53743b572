"""Results as pandas DataFrames and xarray Datasets (issue 14, item 3): the frames' shapes, column
names and values against the recorded arrays; the messages without pandas / xarray."""
import builtins
import json
import math

import numpy as np
import pytest

import tdflow
from tdflow import theory
from tdflow.sweeps import Run, SweepResult, load_summary, summary_row, write_summary

pd = pytest.importorskip("pandas")

TARGET = tdflow.Target.orthogonal(6, tdflow.geometric_weights(3, 1.5))


@pytest.fixture(scope="module")
def traj():
    flow = tdflow.GradientFlow(TARGET)
    return flow.integrate(tdflow.sphere(6, 4, 1e-3, 0), (0, 30), n_records=7, save_norms=True,
                          save_states=True, progress=False)


@pytest.fixture(scope="module")
def linear():
    lin = tdflow.DeepLinearFlow(np.diag([2.0, 1.0]), [3, 2])
    return lin.integrate(lin.random_layers(0, 0.5), (0, 1), n_records=5, progress=False)


@pytest.fixture(scope="module")
def deflation():
    with tdflow.num_threads(1):
        target = tdflow.Target.orthogonal(10, [0.6, 0.25, 0.1, 0.05])
        return tdflow.deflate(target, 30, tdflow.Schedule(), 0, progress=False)


def test_trajectory_wide_frame(traj):
    df = traj.to_pandas()
    n, r, m = traj.t.size, TARGET.rank, 4
    assert df.shape == (n, 2 + r + m)  # loss, residual_norm, r residuals, m norms
    assert df.index.name == "t" and np.array_equal(df.index.to_numpy(), traj.t)
    assert list(df.columns.names) == ["quantity", "index"]
    assert list(df.columns) == ([("loss", ""), ("residual_norm", "")]
                                + [("directional_residual", i) for i in range(r)]
                                + [("norms", k) for k in range(m)])
    assert isinstance(df["loss"], pd.Series)  # a quantity with one value: a Series
    assert np.array_equal(df["loss"].to_numpy(), traj.loss)
    assert np.array_equal(df["residual_norm"].to_numpy(), traj.residual_norm)
    assert list(df["directional_residual"].columns) == list(range(r))
    assert np.array_equal(df["directional_residual"].to_numpy(), traj.directional_residual)
    assert np.array_equal(df["norms"].to_numpy(), traj.norms)


def test_trajectory_long_frame(traj):
    df = traj.to_pandas("long")
    n, r, m = traj.t.size, TARGET.rank, 4
    assert list(df.columns) == ["record", "t", "quantity", "direction", "column", "value"]
    assert len(df) == n * (2 + r + m)
    assert df["quantity"].unique().tolist() == ["loss", "residual_norm", "directional_residual",
                                                "norms"]
    loss = df[df.quantity == "loss"]
    assert np.array_equal(loss["value"].to_numpy(), traj.loss)
    assert np.array_equal(loss["t"].to_numpy(), traj.t)
    assert loss["direction"].isna().all() and loss["column"].isna().all()
    res = df[df.quantity == "directional_residual"]
    assert res["column"].isna().all() and str(res["direction"].dtype) == "Int64"
    wide = res.pivot(index="record", columns="direction", values="value")
    assert np.array_equal(wide.to_numpy(), traj.directional_residual)
    norms = df[df.quantity == "norms"].pivot(index="record", columns="column", values="value")
    assert np.array_equal(norms.to_numpy(), traj.norms)
    # the tidy form writes to Parquet as it is
    pytest.importorskip("pyarrow")
    import io

    buf = io.BytesIO()
    df.to_parquet(buf)
    back = pd.read_parquet(io.BytesIO(buf.getvalue()))
    assert np.array_equal(back["value"].to_numpy(), df["value"].to_numpy())


def test_layout_is_checked(traj):
    with pytest.raises(ValueError, match="layout must be one of .*'wide'.*'long'.*got 'tall'"):
        traj.to_pandas("tall")


def test_linear_trajectory_frames(linear):
    df = linear.to_pandas()
    assert df.shape == (5, 4) and list(df.columns) == ["loss", "gap", "grad_norm_sq", "rate"]
    assert df.index.name == "t" and np.array_equal(df.index.to_numpy(), linear.t)
    for name in df.columns:
        assert np.array_equal(df[name].to_numpy(), getattr(linear, name), equal_nan=True)
    long = linear.to_pandas("long")
    assert list(long.columns) == ["record", "t", "quantity", "value"] and len(long) == 20
    assert np.array_equal(long[long.quantity == "gap"]["value"].to_numpy(), linear.gap)


def test_trajectory_dataset(traj, tmp_path):
    xr = pytest.importorskip("xarray")
    ds = traj.to_xarray()
    assert isinstance(ds, xr.Dataset)
    assert dict(ds.sizes) == {"t": 7, "direction": 3, "column": 4, "coordinate": 6}
    assert np.array_equal(ds["t"].values, traj.t)
    assert ds["directional_residual"].dims == ("t", "direction")
    assert np.array_equal(ds["directional_residual"].values, traj.directional_residual)
    assert ds["norms"].dims == ("t", "column") and np.array_equal(ds["norms"].values, traj.norms)
    assert ds["states"].dims == ("t", "coordinate", "column")
    assert np.array_equal(ds["states"].values, traj.states)
    assert np.array_equal(ds["W"].values, traj.W) and np.array_equal(ds["a"].values, TARGET.a)
    assert ds["direction"].values.tolist() == [0, 1, 2] and ds["column"].values.tolist() == [0, 1, 2, 3]
    assert np.array_equal(ds["loss"].values, traj.loss)
    assert ds.attrs["status"] == "finished" and ds.attrs["n_rhs"] == traj.n_rhs
    assert ds.attrs["method"] == "dopri5" and ds.attrs["t_final"] == 30.0
    # one direction's residual over time, by label
    assert np.array_equal(ds["directional_residual"].sel(direction=2).values,
                          traj.directional_residual[:, 2])
    # the attributes are numbers and strings, so the Dataset writes to netCDF
    pytest.importorskip("scipy")
    ds.to_netcdf(tmp_path / "traj.nc", engine="scipy")
    back = xr.load_dataset(tmp_path / "traj.nc", engine="scipy")
    assert np.array_equal(back["norms"].values, traj.norms) and back.attrs["status"] == "finished"


def test_linear_dataset(linear):
    pytest.importorskip("xarray")
    ds = linear.to_xarray()
    assert ds["products"].dims == ("t", "product_row", "product_col")
    assert np.array_equal(ds["products"].values, linear.products)
    for l, D in enumerate(linear.imbalances, start=1):  # D_1, D_2 of a 3-layer model
        assert ds[f"imbalance_{l}"].dims == ("t", f"imbalance_{l}_row", f"imbalance_{l}_col")
        assert np.array_equal(ds[f"imbalance_{l}"].values, D)
    assert ds["imbalance"].values.tolist() == [1, 2]
    assert np.array_equal(ds["imbalance_scale"].values, linear.imbalance_scale)
    assert np.array_equal(ds["rate"].values, linear.rate, equal_nan=True)
    assert ds.attrs["f_star"] == linear.f_star


def test_epochs_frame_has_the_report_columns(deflation):
    res = deflation
    df = res.epochs_frame()
    assert df.shape == (res.n_epochs, len(theory.REPORT_FIELDS)) and res.n_epochs >= 2
    assert list(df.columns) == list(theory.REPORT_FIELDS) == [
        "beta", "t1", "t2", "n_discovered", "n_fitted", "prop1_a", "prop1_b", "prop1_c_lower",
        "prop1_c_upper", "prop1_d", "n_good", "n_potential", "n_bad",
        "lemma5_large_not_potential", "lemma5_good_undiscovered", "lemma5_large_unjoined"]
    assert df.index.name == "epoch" and df.index.tolist() == list(range(res.n_epochs))
    for name in df.columns:
        assert np.array_equal(df[name].to_numpy(), res.epochs[name])
    # the text report shows the same numbers: beta and t1 of each epoch
    rows = res.theory_report().splitlines()[1:1 + res.n_epochs]
    for s, row in enumerate(rows):
        cells = row.split()
        assert int(cells[0]) == s and math.isclose(float(cells[1]), df["beta"][s], rel_tol=1e-2)
        assert int(cells[4]) == df["n_discovered"][s] and int(cells[5]) == df["n_fitted"][s]
    full = res.epochs_frame(full=True)
    assert list(full.columns) == list(res.epochs) and len(full) == res.n_epochs
    assert np.array_equal(full["wall_time"].to_numpy(), res.epochs["wall_time"])


def test_deflation_trajectory_to_pandas(deflation):
    # a phase boundary is recorded twice (before and after the re-draw): the index repeats t,
    # and the long form tells the records apart by their number
    traj = deflation.trajectory
    df = traj.to_pandas()
    assert len(df) == traj.t.size and not df.index.is_unique
    long = traj.to_pandas("long")
    keys = ["record", "quantity", "direction", "column"]
    assert long.groupby(keys, dropna=False).size().max() == 1


def _rows():
    runs = [Run("flow", {"d": 6, "m": m}, s, f"id{m}{s}") for m in (10, 20) for s in (0, 1)]
    metas = [dict(status="ok", error=None, row=dict(final_error=0.1 * k, fit_order=[0, 2, 1]),
                  wall_time=0.5 + k, worker="w") for k in range(3)] + [None]
    return [summary_row(run, meta) for run, meta in zip(runs, metas)]


def test_sweep_summary_frame(tmp_path):
    rows = _rows()
    res = SweepResult(out=tmp_path, rows=rows, ran=3, skipped=0, errors=0, pending=1, files=[],
                      wall_time=1.0)
    df = res.to_pandas()
    assert list(df.columns) == ["id", "kind", "seed", "d", "m", "status", "error", "final_error",
                                "fit_order", "wall_time", "worker"]
    assert df.shape == (4, 11)
    assert df["status"].tolist() == ["ok", "ok", "ok", "pending"]
    assert type(df["status"][0]) is str  # the string, not the Status
    assert df["m"].tolist() == [10, 10, 20, 20] and df["seed"].tolist() == [0, 1, 0, 1]
    assert df["final_error"][:3].tolist() == [0.0, 0.1, 0.2] and pd.isna(df["final_error"][3])
    assert df["fit_order"][0] == [0, 2, 1]


@pytest.mark.parametrize("parquet", [False, True])
def test_load_summary(tmp_path, parquet):
    rows = _rows()
    if parquet:
        pytest.importorskip("pyarrow")
    written = write_summary(tmp_path, rows)
    assert written[0].name == "summary.csv"
    if parquet:
        assert [p.name for p in written] == ["summary.csv", "summary.parquet"]
    else:  # as without pyarrow: only the CSV is there
        (tmp_path / "summary.parquet").unlink(missing_ok=True)
    df = load_summary(tmp_path)
    assert df.shape == (4, 11) and df["id"].tolist() == [r["id"] for r in rows]
    assert df["status"].tolist() == ["ok", "ok", "ok", "pending"]
    assert df["final_error"][:3].tolist() == [0.0, 0.1, 0.2] and pd.isna(df["final_error"][3])
    assert json.loads(df["fit_order"][0]) == [0, 2, 1]  # lists are JSON text in both files
    assert df["wall_time"][:3].tolist() == [0.5, 1.5, 2.5]


def test_load_summary_of_a_folder_without_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no sweep summary"):
        load_summary(tmp_path)


@pytest.mark.parametrize("module, extra", [("pandas", "pandas"), ("xarray", "xarray")])
def test_missing_library_names_the_extra(traj, deflation, monkeypatch, module, extra):
    real_import = builtins.__import__

    def missing(name, *args, **kwargs):
        if name.split(".")[0] == module:
            raise ImportError(f"No module named {module!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", missing)
    import importlib

    monkeypatch.setattr(importlib, "import_module", lambda name: missing(name))
    hint = rf"pip install 'tdflow\[{extra}\]'"
    if module == "pandas":
        with pytest.raises(ImportError, match=r"Trajectory.to_pandas needs pandas.*" + hint):
            traj.to_pandas()
        with pytest.raises(ImportError, match=r"epoch_frame needs pandas.*" + hint):
            deflation.epochs_frame()
        with pytest.raises(ImportError, match=hint):
            SweepResult(out=".", rows=[], ran=0, skipped=0, errors=0, pending=0, files=[],
                        wall_time=0.0).to_pandas()
    else:
        with pytest.raises(ImportError, match=r"Trajectory.to_xarray needs xarray.*" + hint):
            traj.to_xarray()

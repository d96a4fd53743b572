"""SolverOptions (issue 17, item 2): one validated object from the keywords, the same run from
``options=`` as from keywords at every layer, the CLI's flags building the same object, and old
deflation files (before the object) still loading."""
import math

import numpy as np
import pytest

import tdflow
from tdflow import cli, io
from tdflow.cli.common import solver_options
from tdflow.deflation import SOLVER as DEFLATE_SOLVER
from tdflow.figure1 import SOLVER as FIG1_SOLVER
from tdflow.options import SolverOptions

TARGET = tdflow.Target.orthogonal(5, tdflow.geometric_weights(2, 2.0))


def test_keywords_and_options_give_the_same_run():
    flow = tdflow.GradientFlow(TARGET)
    W0 = tdflow.sphere(5, 4, 1e-3, 0)
    kw = dict(method="dop853", rtol=1e-9, atol=1e-12, max_step=0.5, n_records=7)
    a = flow.integrate(W0, (0, 30), progress=False, **kw)
    b = flow.integrate(W0, (0, 30), options=SolverOptions(**kw), progress=False)
    c = flow.integrate(W0, (0, 30), options=SolverOptions(method="dop853", rtol=1.0),
                       rtol=1e-9, atol=1e-12, max_step=0.5, n_records=7, progress=False)
    for other in (b, c):
        np.testing.assert_array_equal(a.W, other.W)
        np.testing.assert_array_equal(a.loss, other.loss)
        assert (a.n_steps, a.n_rhs, a.method) == (other.n_steps, other.n_rhs, other.method)
    batch = flow.integrate_batch(W0[None], (0, 30), options=SolverOptions(**kw), progress=False)
    np.testing.assert_array_equal(batch[0].W, a.W)
    lin = tdflow.DeepLinearFlow(np.eye(2), [2])
    layers = lin.random_layers(0, 0.5)
    la = lin.integrate(layers, (0, 1), n_records=5, progress=False)  # rtol 1e-10: its default
    lb = lin.integrate(layers, (0, 1), options=SolverOptions(rtol=1e-10, n_records=5),
                       progress=False)
    np.testing.assert_array_equal(la.loss, lb.loss)


def test_the_keyword_set_is_checked_once_with_names():
    with pytest.raises(TypeError, match=r"integrate\(\) got unexpected keyword argument\(s\) "
                                        r"\['rtl'\]; the solver options are \['method'"):
        tdflow.GradientFlow(TARGET).integrate(np.ones((5, 1)), rtl=1e-3)
    with pytest.raises(TypeError, match="options must be a tdflow.SolverOptions or None"):
        tdflow.GradientFlow(TARGET).integrate(np.ones((5, 1)), options={"rtol": 1e-3})
    with pytest.raises(ValueError, match="method 'rk4' needs a step h"):
        SolverOptions(method="rk4")
    with pytest.raises(ValueError, match="max_step must be > 0, got 0.0"):
        SolverOptions(max_step=0)
    with pytest.raises(TypeError, match="max_step must be a number > 0"):
        SolverOptions(max_step="1")
    with pytest.raises(ValueError, match="t_eval must be non-empty, non-decreasing"):
        SolverOptions(t_eval=[1.0, 0.5])
    opts = SolverOptions(t_eval=[0.0, 0.5], max_step=None)
    assert math.isinf(opts.max_step) and not opts.t_eval.flags.writeable
    with pytest.raises(Exception):
        opts.rtol = 1.0  # frozen
    with pytest.raises(ValueError, match="t_eval does not apply to deflate"):
        tdflow.deflate(TARGET, 4, t_eval=[0.0, 1.0], progress=False)


def test_records_round_trip():
    opts = SolverOptions(method="rk4", h=0.1, max_steps=9, t_eval=[0.0, 1.0])
    assert SolverOptions.from_dict(opts.to_dict()) == opts
    assert opts.to_dict()["max_step"] is None  # JSON has no inf
    assert SolverOptions.from_dict({"method": "dop853"}) == SolverOptions(method="dop853")
    with pytest.raises(ValueError, match=r"unknown solver options \['nope'\]"):
        SolverOptions.from_dict({"nope": 1})
    assert SolverOptions.from_params(dict(d=3, rtol=1e-3, t_end=2.0)) == SolverOptions(rtol=1e-3)
    assert opts != SolverOptions(method="rk4", h=0.1, max_steps=9)
    assert "method='rk4'" in repr(opts) and "t_eval=<2 times>" in repr(opts)


def test_deflate_takes_options_and_checkpoints_them(tmp_path):
    sched = tdflow.Schedule(max_epochs=2)
    a = tdflow.deflate(TARGET, 6, sched, 3, rtol=1e-8, n_records=11, progress=False)
    b = tdflow.deflate(TARGET, 6, sched, 3, options=SolverOptions(rtol=1e-8, n_records=11),
                       progress=False)
    np.testing.assert_array_equal(a.W, b.W)
    assert a.solver == b.solver == SolverOptions(rtol=1e-8, n_records=11)
    assert a.options == dict(SolverOptions(rtol=1e-8, n_records=11).to_dict(), active_tol=1e-16)
    path = a.save(tmp_path / "run")
    assert tdflow.DeflationResult.load(path).solver == a.solver
    with pytest.raises(ValueError, match="differs in integrator options"):
        tdflow.deflate(TARGET, 6, sched, 3, rtol=1e-7, n_records=11, checkpoint=path,
                       resume=True, progress=False)


def test_old_deflation_files_without_the_new_fields_load(tmp_path):
    """Files written before SolverOptions held six integrator options; they still load (and
    resume) with the new fields at their defaults."""
    res = tdflow.deflate(TARGET, 6, tdflow.Schedule(max_epochs=1), 0, progress=False)
    path = res.save(tmp_path / "new")
    arrays, meta = io.load_npz(path, kind="deflation")
    meta["options"] = {k: meta["options"][k]
                       for k in ("method", "rtol", "atol", "h", "n_records", "active_tol")}
    old = io.save_npz(tmp_path / "old", arrays, meta, kind="deflation")
    back = tdflow.DeflationResult.load(old)
    assert back.solver == res.solver and back.active_tol == res.active_tol
    more = tdflow.resume(old, max_epochs=2, progress=False)
    assert more.n_epochs == 2


def test_cli_flags_build_the_same_object():
    parser = cli.build_parser()
    args = parser.parse_args(["fig1", "--method", "dop853", "--rtol", "1e-9", "--max-steps", "50"])
    assert solver_options(args, FIG1_SOLVER) == SolverOptions(
        method="dop853", h=0.05, rtol=1e-9, max_steps=50, n_records=1001)
    args = parser.parse_args(["deflate", "--atol", "1e-12"])
    assert solver_options(args, DEFLATE_SOLVER, {"rtol": 1e-6}) == SolverOptions(
        rtol=1e-6, atol=1e-12, n_records=41)
    args = parser.parse_args(["deflate", "--max-step", "-1"])
    with pytest.raises(ValueError, match="max_step must be > 0"):
        solver_options(args, DEFLATE_SOLVER)


def test_old_configs_with_solver_keys_in_problem_still_read(tmp_path, capsys):
    path = tmp_path / "c.toml"
    path.write_text('[problem]\nd = 6\nr = 2\nm = 8\nmethod = "dop853"\nrtol = 1e-6\n'
                    'n_records = 5\n[schedule]\nmax_epochs = 1\n')
    out = tmp_path / "r.npz"
    assert cli.main(["deflate", "--config", str(path), "--out", str(out), "--quiet"]) in (0, 1)
    assert tdflow.DeflationResult.load(out).solver == SolverOptions(method="dop853", rtol=1e-6,
                                                                     n_records=5)
    path.write_text('[problem]\nrtol = 1e-6\n[solver]\nrtol = 1e-5\n')
    assert cli.main(["deflate", "--config", str(path), "--out", str(out)]) == 2
    assert "rtol is in both [problem] and [solver]" in capsys.readouterr().err

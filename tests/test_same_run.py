"""One target vocabulary and one seeding rule (issue 17, item 7): the CLI, a sweep run and the
Python call make the same run, bitwise, from the same parameters."""
import numpy as np
import pytest

import tdflow
from tdflow import cli
from tdflow.sweeps import run_one

PARAMS = dict(d=8, r=3, m=24, target="random_rotation", spectrum="geometric", ratio=1.5,
              max_epochs=3)
SEED = 3


def _same(a, b):
    np.testing.assert_array_equal(a.target.U, b.target.U)
    np.testing.assert_array_equal(a.target.a, b.target.a)
    np.testing.assert_array_equal(a.W, b.W)
    for k in a.epochs:
        np.testing.assert_array_equal(a.epochs[k], b.epochs[k] if k != "wall_time" else a.epochs[k])
    assert (a.status, a.seed, a.schedule, a.solver) == (b.status, b.seed, b.schedule, b.solver)


def _python(**params):
    p = dict(PARAMS, **params)
    target = tdflow.Target.from_spec({k: p[k] for k in ("d", "r", "target", "spectrum", "ratio")},
                                     seed=SEED)
    return tdflow.deflate(target, p["m"], tdflow.Schedule(max_epochs=p["max_epochs"]), rng=SEED,
                          progress=False)


def test_cli_sweep_and_python_make_the_same_run(tmp_path):
    py = _python()
    out = tmp_path / "cli.npz"
    flags = ["--d", "8", "--r", "3", "--m", "24", "--target", "random_rotation", "--spectrum",
             "geometric", "--ratio", "1.5", "--max-epochs", "3", "--seed", str(SEED)]
    assert cli.main(["deflate", *flags, "--out", str(out), "--quiet"]) in (0, 1)
    _same(tdflow.DeflationResult.load(out), py)
    sw = run_one("deflate", PARAMS, SEED)
    assert sw["status"] == "ok", sw["error"]
    np.testing.assert_array_equal(sw["arrays"]["U"], py.target.U)
    np.testing.assert_array_equal(sw["arrays"]["W"], py.W)
    for k, v in py.epochs.items():
        if k != "wall_time":
            np.testing.assert_array_equal(sw["arrays"][f"epoch_{k}"], v)
    assert sw["row"]["status"] == py.status and sw["row"]["final_error"] == py.residual_norm


def test_the_seeding_rule():
    """seed s: the target from default_rng([s, 1]), the initial draw from default_rng(s)."""
    t = tdflow.Target.from_spec(d=6, r=2, target="random_rotation", seed=SEED)
    u = tdflow.Target.random_rotation(6, tdflow.geometric_weights(2),
                                      np.random.default_rng([SEED, 1]))
    np.testing.assert_array_equal(t.U, u.U)
    rng = np.random.default_rng([SEED, 1])
    np.testing.assert_array_equal(tdflow.Target.from_spec(d=6, r=2, target="random_unit",
                                                          rng=rng).U,
                                  tdflow.Target.random_unit(6, tdflow.geometric_weights(2),
                                                            np.random.default_rng([SEED, 1])).U)
    res = tdflow.deflate(t, 5, tdflow.Schedule(max_epochs=1), rng=SEED, progress=False)
    X = np.random.default_rng(SEED).standard_normal((6, 5))
    W0 = 1e-3 * X / np.linalg.norm(X, axis=0)  # Schedule().delta0 = 1e-3
    assert res.seed == SEED
    assert tdflow.GradientFlow(t).residual_norm(W0) == res.epochs["beta"][0]  # beta^(0) at W0


def test_old_names_and_span_still_read(tmp_path):
    """tdflow deflate's vocabulary before issue 17 (basis/rotation, geo/pow, --span) is read."""
    a = tdflow.Target.from_spec(d=7, r=4, target="basis", spectrum="pow", span=20.0)
    b = tdflow.Target.from_spec(d=7, r=4, target="orthogonal", spectrum="power_law",
                                exponent=np.log(20.0) / np.log(4))
    np.testing.assert_array_equal(a.U, b.U)
    np.testing.assert_allclose(a.a, b.a, rtol=1e-15)
    np.testing.assert_array_equal(
        tdflow.Target.from_spec(d=7, r=4, span=30.0).a,
        tdflow.geometric_weights(4, 30.0 ** (1 / 3)))
    assert tdflow.Target.from_spec(d=7, r=4, ratio=2.0, span=30.0).a[0] == \
        tdflow.geometric_weights(4, 2.0)[0]  # the spectrum's own parameter wins over span
    outs = []
    for target, spectrum in (("rotation", "geo"), ("random_rotation", "geometric")):
        out = tmp_path / f"{target}.npz"
        assert cli.main(["deflate", "--d", "6", "--r", "2", "--m", "8", "--max-epochs", "1",
                         "--target", target, "--spectrum", spectrum, "--out", str(out),
                         "--quiet"]) in (0, 1)
        outs.append(tdflow.DeflationResult.load(out))
    _same(*outs)


def test_bad_specs_name_the_key():
    with pytest.raises(ValueError, match=r"unknown target spec keys \['m'\]"):
        tdflow.Target.from_spec(d=3, r=1, m=4)
    with pytest.raises(ValueError, match="target must be one of"):
        tdflow.Target.from_spec(d=3, r=1, target="haar")
    with pytest.raises(ValueError, match="give seed"):
        tdflow.Target.from_spec(d=3, r=1, target="random_unit")
    with pytest.raises(ValueError, match="r must be <= d for an orthogonal target"):
        tdflow.Target.from_spec(d=3, r=4)
    with pytest.raises(ValueError, match="span must be >= 1"):
        tdflow.Target.from_spec(d=3, r=2, span=0.5)


def test_sweep_run_ids_did_not_change():
    """The restructuring kept every kind's parameter names and defaults: a sweep folder written
    before it is still recognised (ids computed with tdflow at commit c126d06)."""
    from tdflow.sweeps import DEFLATE_DEFAULTS, FLOW_DEFAULTS, LINEAR_DEFAULTS, run_id

    assert run_id("flow", FLOW_DEFAULTS, 0) == "c07b47b95424be5c"
    assert run_id("linear", LINEAR_DEFAULTS, 1) == "80cf8f0d36f374ac"
    assert run_id("deflate", DEFLATE_DEFAULTS, 2) == "25b3d5a8a49897da"

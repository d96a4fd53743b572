"""One Status vocabulary and one Solution base (issue 17, item 3)."""
import json
import pickle

import numpy as np
import pytest

import tdflow
from tdflow import io
from tdflow.solution import Solution, Status, status_arg

TARGET = tdflow.Target.orthogonal(5, tdflow.geometric_weights(2, 2.0))


def test_status_is_a_string_everywhere():
    s = Status.NON_FINITE
    assert s == "non-finite" and "non-finite" == s and s in ("non-finite", "x")
    assert str(s) == f"{s}" == f"{s:>10}".strip() == "non-finite"
    assert json.dumps({"status": Status.OK}) == '{"status": "ok"}'
    assert pickle.loads(pickle.dumps(s)) is s
    assert Status("recovered") is Status.RECOVERED  # old files' strings
    assert [x.success for x in (Status.FINISHED, Status.RECOVERED, Status.OK)] == [True] * 3
    assert not any(x.success for x in Status if x not in (Status.FINISHED, Status.RECOVERED,
                                                           Status.OK))
    assert all(isinstance(x.message, str) and x.message for x in Status)
    with pytest.raises(ValueError, match=r"status must be one of \('ok', 'error'\), got 'done'"):
        status_arg("done", (Status.OK, Status.ERROR))


def test_results_share_the_solution_base():
    flow = tdflow.GradientFlow(TARGET)
    traj = flow.integrate(tdflow.sphere(5, 3, 1e-3, 0), (0, 5), n_records=4, progress=False)
    lin = tdflow.DeepLinearFlow(np.eye(2), [2])
    ltraj = lin.integrate(lin.random_layers(0, 0.5), (0, 1), n_records=4, progress=False)
    for sol in (traj, ltraj):
        assert isinstance(sol, Solution) and sol.status is Status.FINISHED and sol.success
        assert sol.message == "the integration reached the end of t_span"
        assert sol.t.shape == sol.loss.shape == (4,) and sol.states is None
        assert sol.n_rhs > 0 and sol.n_steps > 0 and sol.wall_time >= 0
    stopped = flow.integrate(tdflow.sphere(5, 3, 1e-3, 0), (0, 5), method="rk4", h=0.01,
                             max_steps=3, progress=False)
    assert stopped.status is Status.MAX_STEPS and not stopped.success
    assert "max_steps" in stopped.message


def test_deflation_and_sweep_statuses_are_the_same_enum(tmp_path):
    res = tdflow.deflate(TARGET, 6, tdflow.Schedule(max_epochs=1, eps=1e-12), 0, progress=False)
    assert res.status is Status.MAX_EPOCHS and not res.success
    back = tdflow.DeflationResult.load(res.save(tmp_path / "r"))
    assert back.status is Status.MAX_EPOCHS and back.message == "the run stopped at max_epochs"
    assert io.load_npz(tmp_path / "r", kind="deflation")[1]["status"] == "max-epochs"
    from tdflow.sweeps import run_one, summary_row, parse_spec
    run = parse_spec({"kind": "flow", "fixed": {"d": 4, "r": 2, "t_end": 2.0}}).runs[0]
    done = run_one("flow", run.params, 0)
    assert done["status"] is Status.OK and type(done["row"]["integration"]) is str
    assert summary_row(run, None)["status"] is Status.PENDING

"""Algorithm 2 (tdflow.deflate): recovery, fit order, epochs of discovery, failure modes,
files, checkpoint/resume and the command line."""
import math

import numpy as np
import pytest

import tdflow
from tdflow import Schedule, analysis, cli, deflate, io
from tdflow.deflation import DeflationResult


@pytest.fixture(autouse=True)
def one_thread():
    # these problems are far too small to split; one thread also keeps a shared machine quiet
    with tdflow.num_threads(1):
        yield


def span_weights(r, span=30.0):
    return tdflow.geometric_weights(r, span ** (1.0 / (r - 1)))


@pytest.fixture(scope="module")
def small_run():
    with tdflow.num_threads(1):
        target = tdflow.Target.orthogonal(10, [0.6, 0.25, 0.1, 0.05])
        return deflate(target, 30, Schedule(), 0, progress=False)


def test_small_case_fit_order_and_epochs(small_run):
    res = small_run
    assert res.status == "recovered"
    assert res.discovery_order.tolist() == [0, 1, 2, 3]
    # seed 0: directions 1-3 are discovered in epoch 0 and fitted (a_i - â_i <= 2 lam, the
    # paper's rule) in epochs 0, 0, 1; the smallest (a = 0.05) waits for beta to shrink: it is
    # discovered in epoch 2, and the run stops (||T - T*||_F <= eps) before its gap is <= 2 lam
    assert res.directions["discovered_epoch"].tolist() == [0, 0, 0, 2]
    assert res.directions["fitted_epoch"].tolist() == [0, 0, 1, -1]
    assert res.fit_order.tolist() == [0, 1, 2] and not res.all_fitted
    s = res.schedule
    assert 2 * s.lam < res.target.a[3] - res.a_hat[3] <= s.eps  # fitted by tdflow's eps floor
    eps_floor = analysis.fit_tolerance(res.target.a, s.lam, "eps-floor", s.eps)
    assert analysis.fitted(res.target.a, res.a_hat, eps_floor).all()
    assert res.n_epochs == 3
    d = res.directions
    assert np.all(d["discovered_t"][:3] <= d["fitted_t"][:3])
    # per-epoch records are consistent with the schedule; t1, t2 from the epoch start, t2 the
    # epoch end as in the paper
    e = res.epochs
    np.testing.assert_allclose(e["beta"][1:] / e["beta"][:-1], 1 - s.gamma)
    np.testing.assert_allclose(e["t1"], 10 / (e["beta"] * math.log(10)))
    np.testing.assert_allclose(e["t1p"], e["t1"])  # practical schedule: c1pp = c1ppp = 0
    np.testing.assert_allclose(e["t2"] - e["t1"],
                               (math.log(1 / s.delta1) + math.log(1 / s.lam)) / e["beta"])
    np.testing.assert_allclose(e["t_end"], np.cumsum(e["t2"]))
    np.testing.assert_allclose(e["t_end"] - e["t_start"], e["t2"])
    assert e["n_discovered"].tolist() == [3, 3, 4] and e["n_fitted"].tolist() == [2, 3, 3]
    assert e["beta"][0] == pytest.approx(np.linalg.norm([0.6, 0.25, 0.1, 0.05]), rel=1e-3)
    assert e["residual_norm"][-1] <= s.eps
    np.testing.assert_allclose(res.a_hat, res.target.a, atol=s.eps)
    assert np.all(res.a_hat <= res.target.a)
    # every crossing of delta1 is recorded once; joins at norm delta1, aligned (Definition 1)
    ev = res.events
    j = ev["joined"]
    assert np.all(ev["misalignment"][j] <= s.alpha ** 2)
    np.testing.assert_allclose(ev["norm"], s.delta1, rtol=1e-9)
    assert j.sum() == e["n_joined"].sum() and (~j).sum() == e["n_crossed_unjoined"].sum()
    for i in range(4):
        assert set(res.S(i)) <= set(ev["column"][j & (ev["direction"] == i)])


def test_proposition1_holds_on_successful_runs(small_run):
    assert small_run.proposition1_ok.all()
    e = small_run.epochs
    for c in analysis.PROP1_CONDITIONS:
        assert np.all(e[f"prop1_{c}"] >= 0), c
    # (a) with alpha = 0.3: members keep wbar^2 >= 1 - alpha^2, far inside 1 - alpha
    assert np.all(e["prop1_a"] >= small_run.schedule.alpha - small_run.schedule.alpha ** 2)
    assert e["prop1_c_upper"][0] == math.inf  # in epoch 0 no a_k >= beta/(1 - gamma)
    assert np.all(e["n_unfitted_again"] == 0)
    assert not any("Proposition 1" in w for w in small_run.warnings)
    assert "all margins >= 0 in every epoch" in small_run.theory_report()


def test_proposition1_flags_a_schedule_that_breaks_it():
    # delta1 only 1.5 x delta0: columns cross delta1 before they align, so they do not join
    # S_i (Definition 1) and S_∅ holds large columns: Proposition 1(d) fails, and (c)'s upper
    # bound once beta has fallen below a_1 (1 - gamma)
    target = tdflow.Target.orthogonal(10, [0.6, 0.25, 0.1, 0.05])
    s = Schedule(delta0=1e-3, delta1=1.5e-3)
    res = deflate(target, 30, s, 0, progress=False)
    e = res.epochs
    assert not res.proposition1_ok.any()
    assert np.all(e["prop1_d"] < 0) and e["n_crossed_unjoined"][0] >= 20
    assert e["prop1_c_upper"][2] < 0 and np.all(e["prop1_c_lower"] >= 0)
    assert e["lemma5_large_unjoined"][0] >= 20  # Lemma 5.3's prediction fails too
    assert any("epoch 0: Proposition 1 (d) violated" in w for w in res.warnings)
    assert "negative margin in c_upper, d" in res.theory_report()


def test_progress_bar_and_other_bit_generators(capsys, tmp_path):
    target = tdflow.Target.orthogonal(8, [0.7, 0.3])
    rng = np.random.Generator(np.random.Philox(3))
    res = deflate(target, 12, Schedule(max_epochs=3), rng, progress=True)
    err = capsys.readouterr().err
    last = f"epoch {res.n_epochs - 1} (at most 3)"
    assert "epoch 0 (at most 3)" in err and last in err and "epoch ends in" in err
    assert res.rng_state["bit_generator"] == "Philox" and res.seed == -1

    def stop(r):
        if r.epoch == 1:
            raise Interrupt

    ck = tmp_path / "philox.npz"
    with pytest.raises(Interrupt):
        deflate(target, 12, Schedule(max_epochs=3), np.random.Generator(np.random.Philox(3)),
                checkpoint=ck, progress=False, callback=stop)
    _same(res, tdflow.resume(ck, progress=False))


def test_definition2_partition_and_lemma5_each_epoch(small_run):
    res, s = small_run, small_run.schedule
    e, pt = res.epochs, res.partitions
    # the partition at (s, 0) covers the columns of S_∅ then, and its counts are the records
    for ep in range(res.n_epochs):
        rows = pt["epoch"] == ep
        lab = pt["label"][rows]
        assert (lab == 0).sum() == e["n_good"][ep] and (lab == 2).sum() == e["n_bad"][ep]
        assert (lab != 3).sum() == e["n_potential"][ep]  # good and bad are potential too
    # epoch 0 recomputed from the initial state with analysis.partition
    rng = np.random.default_rng(0)
    X = rng.standard_normal((10, 30))
    W0 = s.delta0 * X / np.linalg.norm(X, axis=0)
    part = analysis.partition(W0, res.target.U, res.target.a, np.zeros(4, bool), lam=s.lam,
                              t1=e["t1p"][0], c_rho=s.c_rho)
    assert part.counts() == (e["n_good"][0], e["n_potential"][0], e["n_bad"][0])
    # Lemma 5 is recorded (its predictions need Theta constants the practical schedule does
    # not claim; 5.3, "large columns are in some S_i", holds here)
    assert np.all(e["lemma5_large_unjoined"] == 0)
    assert np.all(e["lemma5_large_not_potential"] >= 0)
    # tdflow's escape-time labels of re-drawn columns stay available under their own name
    rd = res.redraws
    assert rd["kind"][:30].tolist() == [0] * 30 and np.all(rd["kind"][30:] == 1)
    bad = rd["escape_label"] == 2
    assert bad.any() and np.all(rd["joined"][bad] == -1)


@pytest.mark.parametrize("d, r, m, rotate, method", [(10, 5, 40, False, "dopri5"), (30, 10, 80, True, "dopri5"),
                                                    (50, 10, 100, False, "dopri5"), (30, 10, 80, True, "dop853")])
def test_default_schedule_recovers_orthogonal_targets(d, r, m, rotate, method):
    a = span_weights(r, 30.0)
    target = (tdflow.Target.random_rotation(d, a, rng=7) if rotate else tdflow.Target.orthogonal(d, a))
    res = deflate(target, m, rng=1, method=method, progress=False)
    assert res.status == "recovered", res.summary()
    eps_floor = analysis.fit_tolerance(res.target.a, res.schedule.lam, "eps-floor", res.schedule.eps)
    assert analysis.fitted(res.target.a, res.a_hat, eps_floor).all(), res.summary()
    assert res.proposition1_ok.all(), res.summary()
    # no direction is fitted in a later epoch than a smaller one
    fe = res.directions["fitted_epoch"]
    assert np.all(np.diff(fe) >= 0)
    assert res.fit_order[0] in (0, 1) and res.fit_order[-1] in (r - 2, r - 1)


def test_too_few_columns_stall_with_a_warning():
    target = tdflow.Target.orthogonal(10, span_weights(5))
    res = deflate(target, 5, rng=1, progress=False)
    assert res.status == "stalled" and not res.all_fitted
    assert res.epochs["n_redrawn"][-1] == 0
    assert any("no fresh column is left" in w and "Increase m" in w for w in res.warnings)
    assert "status: stalled" in res.summary()


def test_max_epochs_and_max_time():
    target = tdflow.Target.orthogonal(10, span_weights(5))
    res = deflate(target, 30, Schedule(max_epochs=2), rng=0, progress=False)
    assert res.status == "max-epochs" and res.n_epochs == 2
    assert any("max-epochs" in w for w in res.warnings)
    res = deflate(target, 30, Schedule(max_time=20.0), rng=0, progress=False)
    assert res.status == "max-time" and res.t == pytest.approx(20.0)
    assert res.records["t"][-1] == pytest.approx(20.0)


def test_reproducible_from_seed_and_generator():
    target = tdflow.Target.orthogonal(8, [0.7, 0.3])
    s = Schedule(max_epochs=2)
    r1 = deflate(target, 12, s, 5, progress=False)
    r2 = deflate(target, 12, s, 5, progress=False)
    r3 = deflate(target, 12, s, np.random.default_rng(5), progress=False)
    np.testing.assert_array_equal(r1.W, r2.W)
    np.testing.assert_array_equal(r1.W, r3.W)
    assert not np.array_equal(r1.W, deflate(target, 12, s, 6, progress=False).W)


def test_schedule_formulas_and_validation():
    s = Schedule(c1=2.0, c1pp=0.5, c1ppp=0.25, c2=0.5)
    L = math.log(20)
    parts = (2.0 * 20 / (0.5 * L), 0.5 * 20 / (0.5 * L ** 3), 0.25 * math.log(20 / 0.3) / 0.5)
    assert s.t1_parts(0.5, 20) == pytest.approx(parts)
    assert s.t1(0.5, 20) == pytest.approx(sum(parts))
    assert s.phase2(0.5) == pytest.approx(0.5 * (math.log(1 / s.delta1) + math.log(1 / s.lam)) / 0.5)
    assert s.t2(0.5, 20) == pytest.approx(sum(parts) + s.phase2(0.5))  # the paper's t2: epoch end
    assert Schedule(lam=0.0).phase2(1.0) == pytest.approx(math.log(1 / 1e-2))
    assert Schedule().t1(0.5, 20) == pytest.approx(20 / (0.5 * L))  # practical: t1 = t1'
    assert Schedule.theory(16, 0.01, 100, max_epochs=3).max_epochs == 3
    assert Schedule(fit_tol="eps-floor").fit_tol == "eps-floor"
    with pytest.raises(ValueError, match="fit_tol must be one of"):
        Schedule(fit_tol="loose")
    assert Schedule.from_dict(s.to_dict()) == s
    for bad, msg in [(dict(delta0=0.1), "delta0 must be < delta1"), (dict(gamma=1.0), "gamma"),
                     (dict(alpha=1.2), "alpha"), (dict(eps=0), "eps must be > 0"),
                     (dict(lam=-1.0), "lam must be >= 0")]:
        with pytest.raises(ValueError, match=msg):
            Schedule(**bad)
    with pytest.raises(ValueError, match="unknown schedule parameters"):
        Schedule.from_dict({"delta": 1.0})
    target = tdflow.Target.orthogonal(5, [1.0])
    with pytest.raises(TypeError, match="target must be a tdflow.Target"):
        deflate(np.eye(5), 10)
    with pytest.raises(ValueError, match="m must be >= 1"):
        deflate(target, 0)
    with pytest.raises(ValueError, match="method 'rk4' needs a step h"):
        deflate(target, 10, method="rk4")


def test_theory_schedule_runs():
    target = tdflow.Target.orthogonal(6, [0.8, 0.2])
    res = deflate(target, 20, Schedule.theory(6, 0.05, 20, max_epochs=2), rng=0, progress=False)
    assert res.n_epochs <= 2 and res.status in ("max-epochs", "recovered")
    assert res.directions["discovered_epoch"][0] == 0


def _same(a: DeflationResult, b: DeflationResult):
    np.testing.assert_array_equal(a.W, b.W)
    np.testing.assert_array_equal(a.member, b.member)
    np.testing.assert_array_equal(a.armed, b.armed)
    assert (a.beta, a.epoch, a.t, a.status, a.rng_state) == (b.beta, b.epoch, b.t, b.status, b.rng_state)
    for group in ("epochs", "records", "events", "redraws", "partitions", "directions"):
        ga, gb = getattr(a, group), getattr(b, group)
        assert set(ga) == set(gb)
        for k in ga:
            if k != "wall_time":
                np.testing.assert_array_equal(ga[k], gb[k], err_msg=f"{group}/{k}")


def test_save_load_roundtrip(small_run, tmp_path):
    path = small_run.save(tmp_path / "run.npz")
    back = DeflationResult.load(path)
    _same(small_run, back)
    assert back.schedule == small_run.schedule and back.options == small_run.options
    assert back.warnings == small_run.warnings and back.summary() == small_run.summary()
    assert not list(tmp_path.glob(".*.tmp"))
    traj = back.trajectory
    assert traj.t.shape[0] == traj.loss.shape[0] == back.records["norms"].shape[0]


class Interrupt(Exception):
    pass


def test_checkpoint_resume_equals_uninterrupted(tmp_path):
    target = tdflow.Target.orthogonal(12, span_weights(5))
    full = deflate(target, 30, rng=3, progress=False)
    assert full.n_epochs >= 4

    def stop_after_two(res):
        if res.epoch == 2:
            raise Interrupt

    ck = tmp_path / "ck.npz"
    with pytest.raises(Interrupt):
        deflate(target, 30, rng=3, checkpoint=ck, progress=False, callback=stop_after_two)
    part = DeflationResult.load(ck)
    assert part.epoch == 2 and part.status == "running"
    resumed = tdflow.resume(ck, progress=False)
    _same(full, resumed)
    _same(full, DeflationResult.load(ck))  # the checkpoint holds the finished run
    # the same through deflate(..., resume=True), from a checkpoint after epoch 1
    ck2 = tmp_path / "ck2.npz"

    def stop_after_one(res):
        if res.epoch == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        deflate(target, 30, rng=3, checkpoint=ck2, progress=False, callback=stop_after_one)
    again = deflate(target, 30, rng=3, checkpoint=ck2, resume=True, progress=False)
    _same(full, again)
    # a finished run resumes to itself
    _same(full, tdflow.resume(ck2, progress=False))
    # a checkpoint of another run is refused
    with pytest.raises(ValueError, match=r"belongs to another run: it differs in m \(30 vs 31\), seed"):
        deflate(target, 31, rng=4, checkpoint=ck2, resume=True, progress=False)
    with pytest.raises(ValueError, match="differs in schedule"):
        deflate(target, 30, Schedule(gamma=0.2), rng=3, checkpoint=ck2, resume=True, progress=False)


def test_a_run_stopped_at_max_epochs_can_be_extended(tmp_path):
    target = tdflow.Target.orthogonal(12, span_weights(5))
    full = deflate(target, 30, rng=3, progress=False)
    ck = tmp_path / "short.npz"
    short = deflate(target, 30, Schedule(max_epochs=2), rng=3, checkpoint=ck, progress=False)
    assert short.status == "max-epochs"
    longer = tdflow.resume(ck, max_epochs=100, progress=False)
    _same(full, longer)
    assert not any(w.startswith("stopped (max-") for w in longer.warnings)
    # the same through deflate(..., resume=True) with the new limit in the schedule
    ck2 = tmp_path / "short2.npz"
    deflate(target, 30, Schedule(max_epochs=2), rng=3, checkpoint=ck2, progress=False)
    _same(full, deflate(target, 30, Schedule(), rng=3, checkpoint=ck2, resume=True, progress=False))
    # the CLI: --resume with a larger --max-epochs
    out = tmp_path / "cli.npz"
    args = ["deflate", "--d", "12", "--r", "5", "--m", "30", "--seed", "3", "--out", str(out), "--quiet"]
    assert cli.main(args + ["--max-epochs", "2"]) == 1
    assert cli.main(args + ["--resume"]) == 0
    _same(full, DeflationResult.load(out))


def test_killed_write_leaves_the_old_file(small_run, tmp_path, monkeypatch):
    path = small_run.save(tmp_path / "run.npz")
    before = path.read_bytes()

    def dies(*args, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(np.lib.format, "write_array", dies)
    with pytest.raises(KeyboardInterrupt):
        small_run.save(path)
    assert path.read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp"))


def test_corrupt_or_mismatched_files_are_rejected(small_run, tmp_path):
    path = small_run.save(tmp_path / "run.npz")
    (tmp_path / "junk.npz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a readable tdflow result"):
        DeflationResult.load(tmp_path / "junk.npz")
    (tmp_path / "cut.npz").write_bytes(path.read_bytes()[:300])
    with pytest.raises(ValueError, match="not a readable tdflow result"):
        DeflationResult.load(tmp_path / "cut.npz")
    with pytest.raises(ValueError, match="holds a 'figure1' result, expected 'deflation'"):
        DeflationResult.load(io.save_npz(tmp_path / "f.npz", {"x": np.ones(1)}, kind="figure1"))
    arrays, meta = io.load_npz(path, kind="deflation")
    # an array of the wrong shape
    bad = dict(arrays, W=arrays["W"][:, :5])
    with pytest.raises(ValueError, match=r"array 'W' has shape \(10, 5\), expected \(10, 30\)"):
        DeflationResult.load(io.save_npz(tmp_path / "b1.npz", bad, meta, kind="deflation"))
    # a missing group array
    bad = {k: v for k, v in arrays.items() if k != "events/t"}
    with pytest.raises(ValueError, match=r"lacks the events arrays \['t'\]"):
        DeflationResult.load(io.save_npz(tmp_path / "b2.npz", bad, meta, kind="deflation"))
    # metadata that lost a field, or a broken RNG state
    with pytest.raises(ValueError, match="not a valid deflation result: missing or bad 'beta'"):
        DeflationResult.load(io.save_npz(tmp_path / "b3.npz", arrays,
                                         {k: v for k, v in meta.items() if k != "beta"}, kind="deflation"))
    with pytest.raises(ValueError, match="not a valid deflation result"):
        DeflationResult.load(io.save_npz(tmp_path / "b4.npz", arrays, dict(meta, rng_state={"x": 1}),
                                         kind="deflation"))
    with pytest.raises(ValueError, match="unknown schedule parameters"):
        DeflationResult.load(io.save_npz(tmp_path / "b5.npz", arrays,
                                         dict(meta, schedule=dict(meta["schedule"], foo=1)), kind="deflation"))
    # a file written before Proposition 1's margins were recorded
    old = {k: v for k, v in meta.items() if k != "deflation_version"}
    with pytest.raises(ValueError, match="records are version 1, this tdflow reads version 2"):
        DeflationResult.load(io.save_npz(tmp_path / "b6.npz", arrays, old, kind="deflation"))


def test_results_do_not_depend_on_threads():
    target = tdflow.Target.orthogonal(8, [0.7, 0.3])
    s = Schedule(max_epochs=2)
    one = deflate(target, 12, s, 2, progress=False)
    with tdflow.num_threads(2):
        two = deflate(target, 12, s, 2, progress=False)
    _same(one, two)


def test_cli_deflate_and_plot(tmp_path, capsys):
    out = tmp_path / "run.npz"
    rc = cli.main(["deflate", "--d", "10", "--r", "4", "--m", "30", "--span", "12", "--seed", "0",
                   "--out", str(out), "--quiet"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "status: recovered" in text and "epoch" in text and "P1(a)" in text
    assert "Proposition 1: all margins >= 0 in every epoch" in text
    res = DeflationResult.load(out)
    assert res.recovered and res.m == 30 and res.target.rank == 4
    # a TOML file sets the schedule; options on the command line win
    cfg = tmp_path / "s.toml"
    cfg.write_text("[schedule]\ngamma = 0.5\nlam = 2e-4\nmax_epochs = 2\n")
    out2 = tmp_path / "run2.npz"
    rc = cli.main(["deflate", "--config", str(cfg), "--lam", "3e-4", "--d", "8", "--r", "3",
                   "--m", "20", "--out", str(out2), "--quiet"])
    assert rc == 1  # stopped after max_epochs = 2, not recovered
    assert "status: max-epochs" in capsys.readouterr().out
    res2 = DeflationResult.load(out2)
    assert (res2.schedule.gamma, res2.schedule.lam, res2.schedule.max_epochs) == (0.5, 3e-4, 2)
    cfg.write_text("[schedule]\ngama = 0.5\n")
    assert cli.main(["deflate", "--config", str(cfg), "--out", str(out2), "--quiet"]) == 2
    assert "unknown schedule parameters" in capsys.readouterr().err
    pytest.importorskip("matplotlib")
    rc = cli.main(["plot", str(out), "--out", str(tmp_path / "figs")])
    assert rc == 0
    png = tmp_path / "figs" / "run.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    (tmp_path / "junk.npz").write_bytes(b"junk")
    assert cli.main(["plot", str(tmp_path / "junk.npz")]) == 2
    assert "not a readable tdflow result" in capsys.readouterr().err

"""tdflow.analysis: S_i detection in the stepping loop, Definition 2, Proposition 1's checks."""
import numpy as np
import pytest

import tdflow
from tdflow import _core, analysis


@pytest.fixture(autouse=True)
def one_thread():
    # these problems are far too small to split; one thread also keeps a shared machine quiet
    with tdflow.num_threads(1):
        yield


def _joins(flow, W0, t_eval, method="dopri5", h=np.nan, armed=None, delta1=1e-2, alpha=0.3,
           save_states=False):
    armed = np.ones(W0.shape[1], bool) if armed is None else armed
    return _core.integrate_joins(flow._core, W0, float(t_eval[0]), np.asarray(t_eval, float), method,
                                 h, 1e-8, 0.0, np.inf, 0, True, save_states, armed, delta1, alpha,
                                 None, 0.1)


def test_alignments_and_a_hat():
    U = np.eye(3)[:, :2]
    W = np.array([[3.0, 0.0, 1.0, 0.0], [4.0, 2.0, 1.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    x = analysis.alignments(W, U)
    np.testing.assert_allclose(x, [[9 / 25, 0, 1 / 3, 0], [16 / 25, 1, 1 / 3, 0]])
    np.testing.assert_allclose(analysis.a_hat(W, [1, 1, -1, 0], 2), [0.0, 25 + 4])
    with pytest.raises(ValueError, match=r"member must have shape \(4,\)"):
        analysis.a_hat(W, [0, 1], 2)


def test_join_detected_at_every_step_not_only_at_records():
    target = tdflow.Target.orthogonal(6, [0.7, 0.3])
    flow = tdflow.GradientFlow(target, lam=1e-3)
    W0 = tdflow.sphere(6, 12, 1e-3, 3)
    h, T = 0.05, 30.0
    coarse = _joins(flow, W0, [0.0, T], method="rk4", h=h)  # two records only
    fine = _joins(flow, W0, np.linspace(0.0, T, int(round(T / h)) + 1), method="rk4", h=h,
                  save_states=True)
    assert coarse["n_checks"] == coarse["n_steps"] + 1 == int(round(T / h)) + 1
    assert coarse["event_column"].size >= 4
    # the per-step check on the coarse run finds the same joins, at the same steps, as an
    # after-the-fact scan of every step of the fine run
    states = fine["states"]
    t = np.linspace(0.0, T, states.shape[0])
    for k, i, te in zip(coarse["event_column"], coarse["event_direction"], coarse["event_t"]):
        w = states[:, :, k]
        n = np.linalg.norm(w, axis=1)
        al = (w @ target.U) ** 2 / n[:, None] ** 2
        ok = (n >= 1e-2) & (al.max(axis=1) >= 1 - 0.3 ** 2)
        first = np.flatnonzero(ok)[0]
        assert t[first] == pytest.approx(te, abs=1e-9)
        assert np.argmax(al[first]) == i
        assert 0.0 < te < T  # strictly between the two records: a record-time check misses it
    np.testing.assert_array_equal(np.sort(coarse["event_column"]), np.sort(fine["event_column"]))
    # joined columns are disarmed, the others stay armed
    armed = np.ones(12, bool)
    armed[coarse["event_column"]] = False
    np.testing.assert_array_equal(coarse["armed"], armed)


def test_join_detection_respects_armed_mask_and_checks_initial_state():
    target = tdflow.Target.orthogonal(4, [1.0])
    flow = tdflow.GradientFlow(target, lam=0.0)
    W0 = np.zeros((4, 3), order="F")
    W0[0, 0] = 0.5  # already large and aligned: joins at t0
    W0[0, 1] = 0.5  # same, but not armed: ignored
    W0[1, 2] = 0.5  # large but orthogonal to u_1: never joins
    out = _joins(flow, W0, [0.0, 1.0], armed=np.array([True, False, True]))
    assert out["event_column"].tolist() == [0]
    assert out["event_t"].tolist() == [0.0]
    assert out["armed"].tolist() == [False, False, True]
    with pytest.raises(ValueError, match=r"armed must have shape \(3,\)"):
        _joins(flow, W0, [0.0, 1.0], armed=np.ones(2, bool))
    with pytest.raises(ValueError, match="alpha must lie in"):
        _joins(flow, W0, [0.0, 1.0], alpha=1.5)


def test_definition2_partition():
    U = np.eye(4)[:, :3]
    a = np.array([0.5, 0.5, 0.2])
    cols = np.array([
        [0.8, 0.1, 0.1, 0.58],   # clear winner u_1, fast: good -> 0
        [0.6, 0.6, 0.0, 0.53],   # tie between u_1 and u_2: potential
        [0.05, 0.05, 0.05, 1.0],  # tiny alignments: escapes too late: bad
        [0.0, 0.0, 0.9, 0.44],   # only aligned with u_3, which is fitted: bad
    ]).T
    labels, pred = analysis.classify_fresh(cols, U, a, unfitted=[True, True, False], horizon=50.0)
    assert labels.tolist() == [analysis.GOOD, analysis.POTENTIAL, analysis.BAD, analysis.BAD]
    assert pred[0] == 0 and pred[3] == -1
    # the escape time is 1/(8 a x) for l = 4
    x = cols[0, 0] ** 2 / np.sum(cols[:, 0] ** 2)
    tau = analysis.escape_times(cols[:, :1], U, a, [True, True, False])
    assert tau[0, 0] == pytest.approx(1.0 / (8 * 0.5 * x))
    # a horizon below tau_(1) but within the margin makes the winner only "potential"
    labels, _ = analysis.classify_fresh(cols[:, :1], U, a, [True, True, False], horizon=0.6 * tau[0, 0])
    assert labels.tolist() == [analysis.POTENTIAL]


def _good_state():
    """Two directions fitted by one column each, plus two small fresh columns."""
    U = np.eye(5)[:, :3]
    a = np.array([0.6, 0.3, 0.1])
    W = np.zeros((5, 4), order="F")
    W[0, 0] = np.sqrt(0.6 - 5e-5)
    W[1, 1] = np.sqrt(0.3 - 5e-5)
    W[:, 2] = 1e-3 * np.array([0.3, 0.4, 0.5, 0.5, 0.5]) / np.linalg.norm([0.3, 0.4, 0.5, 0.5, 0.5])
    W[3, 3] = 2e-3
    member = np.array([0, 1, -1, -1])
    return U, a, W, member


def test_proposition1_passes_on_a_good_state_and_flags_each_violation():
    U, a, W, member = _good_state()
    kw = dict(delta1=1e-2, alpha=0.3, lam=1e-4)
    prev = np.array([True, True, False])
    ok = analysis.check_proposition1(W, U, a, member, previously_fitted=prev, **kw)
    assert ok.ok and (ok.a, ok.b, ok.c, ok.d) == (True, True, True, True)
    assert ok.min_member_alignment == pytest.approx(1.0)
    assert ok.max_nonmember_norm == pytest.approx(2e-3)

    # (a) a member that has turned away from its direction
    Wa = W.copy()
    Wa[2, 0] = 0.5 * Wa[0, 0]
    chk = analysis.check_proposition1(Wa, U, a, member, previously_fitted=prev, **kw)
    assert not chk.a and chk.min_member_alignment == pytest.approx(0.8)
    # (b) a column outside every S_i above delta1
    Wb = W.copy()
    Wb[3, 3] = 0.05
    chk = analysis.check_proposition1(Wb, U, a, member, previously_fitted=prev, **kw)
    assert (chk.a, chk.b, chk.c, chk.d) == (True, False, True, True)
    assert chk.max_nonmember_norm == pytest.approx(0.05)
    # (c) a_hat overshooting a_i
    Wc = W.copy()
    Wc[0, 0] = np.sqrt(0.8)
    chk = analysis.check_proposition1(Wc, U, a, member, previously_fitted=prev, **kw)
    assert not chk.c and chk.max_excess == pytest.approx(0.2)
    Wc[0, 0] = np.sqrt(0.65)  # within the slack lam + 2 alpha^2 a_1 = 0.1081
    assert analysis.check_proposition1(Wc, U, a, member, previously_fitted=prev, **kw).c
    # (d) a direction fitted before that is not any more
    Wd = W.copy()
    Wd[1, 1] = np.sqrt(0.2)
    chk = analysis.check_proposition1(Wd, U, a, member, previously_fitted=prev, **kw)
    assert (chk.a, chk.b, chk.c, chk.d) == (True, True, True, False)
    assert chk.unfitted_again == (1,)
    # merging two snapshots keeps the worst of each
    both = ok.merge(chk)
    assert not both.d and both.max_nonmember_norm == pytest.approx(2e-3)


def test_fit_tolerance_and_order():
    a = np.array([0.5, 0.2])
    np.testing.assert_allclose(analysis.fit_tolerance(a, 1e-3), [2e-3, 2e-3])
    np.testing.assert_allclose(analysis.fit_tolerance(a, 1e-4, eps=5e-4), [5e-4, 5e-4])
    np.testing.assert_allclose(analysis.fit_tolerance(a, 0.0), [5e-4, 2e-4])
    np.testing.assert_allclose(analysis.fit_tolerance(a, 1e-3, fit_tol=0.01), [0.01, 0.01])
    assert analysis.fit_order([3.0, np.nan, 1.0, 2.0]).tolist() == [2, 3, 0]

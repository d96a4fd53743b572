"""tdflow.analysis and the C++ watch (events.hpp): Definition 1 (S_i, joins at crossings of
delta1 on the dense output), Proposition 1 (margins at every accepted step), Definition 2
(partition), Lemma 5's outcome, "fitted", and the fitted equilibrium under weight decay; each
against a slow, literal transcription of the printed statement (Ge, Ren, Wang, Zhou 2021)."""
import itertools
import math

import numpy as np
import pytest

import tdflow
from tdflow import _core, analysis


@pytest.fixture(autouse=True)
def one_thread():
    # these problems are far too small to split; one thread also keeps a shared machine quiet
    with tdflow.num_threads(1):
        yield


def _watch(flow, W0, t_eval, method="dopri5", h=np.nan, member=None, delta1=1e-2, alpha=0.3,
           save_states=False, epoch=0, beta=1.0, gamma=0.5, rtol=1e-8):
    member = np.full(W0.shape[1], -1) if member is None else member
    return _core.integrate_joins(flow._core, W0, float(t_eval[0]), np.asarray(t_eval, float),
                                 method, h, rtol, 0.0, np.inf, 0, True, save_states, member, delta1,
                                 alpha, epoch, beta, gamma, None, 0.1)


def test_alignments_and_a_hat():
    U = np.eye(3)[:, :2]
    W = np.array([[3.0, 0.0, 1.0, 0.0], [4.0, 2.0, 1.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    x = analysis.alignments(W, U)
    np.testing.assert_allclose(x, [[9 / 25, 0, 1 / 3, 0], [16 / 25, 1, 1 / 3, 0]])
    np.testing.assert_allclose(analysis.a_hat(W, [1, 1, -1, 0], 2), [0.0, 25 + 4])
    with pytest.raises(ValueError, match=r"member must have shape \(4,\)"):
        analysis.a_hat(W, [0, 1], 2)


# ---- Definition 1 ------------------------------------------------------------------------------
def _setup():
    target = tdflow.Target.orthogonal(6, [0.7, 0.3])
    return target, tdflow.GradientFlow(target, lam=1e-3), tdflow.sphere(6, 12, 1e-3, 3)


@pytest.mark.parametrize("method", ["dopri5", "dop853"])
def test_joins_happen_where_the_dense_output_has_norm_delta1(method):
    target, flow, W0 = _setup()
    T = 30.0
    out = _watch(flow, W0, [0.0, T], method=method)
    joined = out["crossing_joined"]
    assert joined.sum() >= 4 and out["crossing_upward"].all()
    for k, i, tc, mis in zip(out["crossing_column"], out["crossing_direction"], out["crossing_t"],
                             out["crossing_misalignment"]):
        assert 0.0 < tc < T  # inside a step, not at a record
        # a record at the crossing time comes from the same dense output (records do not change
        # the adaptive steps): the norm there is delta1 and the alignment the one reported
        again = _watch(flow, W0, [0.0, tc, T], method=method, save_states=True)
        w = again["states"][1][:, k]
        assert np.linalg.norm(w) == pytest.approx(1e-2, rel=1e-10)
        assert 1 - (w @ target.U[:, i]) ** 2 / (w @ w) == pytest.approx(mis, abs=1e-12)
    # joined columns are members of the direction reported, the others are not
    member = np.full(12, -1)
    member[out["crossing_column"][joined]] = out["crossing_direction"][joined]
    np.testing.assert_array_equal(out["member"], member)


def _literal_definition1(t, states, U, delta1, alpha):
    """Definition 1 read literally on a fine grid of the trajectory: column k is in S_i after
    the first time its norm equals delta1 (a sign change of ||w|| - delta1 between two grid
    points, the crossing placed by linear interpolation) with wbar_i^2 >= 1 - alpha^2 there."""
    n_t, _, m = states.shape
    member, when, align = np.full(m, -1), np.full(m, np.nan), np.full(m, np.nan)
    for k in range(m):
        for j in range(1, n_t):
            n0, n1 = np.linalg.norm(states[j - 1][:, k]), np.linalg.norm(states[j][:, k])
            if (n0 < delta1) != (n1 < delta1):
                f = (delta1 - n0) / (n1 - n0)
                w = (1 - f) * states[j - 1][:, k] + f * states[j][:, k]
                wbar2 = (U.T @ w) ** 2 / (w @ w)
                i = int(np.argmax(wbar2))
                if wbar2[i] >= 1 - alpha ** 2:
                    member[k], when[k], align[k] = i, t[j - 1] + f * (t[j] - t[j - 1]), wbar2[i]
                    break
    return member, when, align


def test_definition1_against_a_literal_scan_of_the_trajectory():
    target, flow, W0 = _setup()
    T = 30.0
    out = _watch(flow, W0, [0.0, T])
    t = np.linspace(0.0, T, 3001)
    fine = _watch(flow, W0, t, save_states=True)
    member, when, align = _literal_definition1(t, fine["states"], target.U, 1e-2, 0.3)
    np.testing.assert_array_equal(out["member"], member)
    j = out["crossing_joined"]
    cols = out["crossing_column"][j]
    np.testing.assert_allclose(out["crossing_t"][j], when[cols], atol=2 * T / 3000)
    np.testing.assert_allclose(1 - out["crossing_misalignment"][j], align[cols], atol=1e-6)


def test_a_badly_aligned_crossing_does_not_join_and_breaks_proposition1_d():
    # a tie between two equal weights: the column grows along (e1 + e2)/sqrt(2), crossing
    # delta1 with wbar_1^2 = wbar_2^2 = 1/2 < 1 - alpha^2
    target = tdflow.Target.orthogonal(4, [0.5, 0.5])
    flow = tdflow.GradientFlow(target, lam=0.0)
    W0 = np.zeros((4, 1), order="F")
    W0[:2, 0] = 1e-3 / math.sqrt(2)
    out = _watch(flow, W0, [0.0, 20.0])
    assert out["crossing_column"].tolist() == [0]
    assert not out["crossing_joined"][0] and out["crossing_upward"][0]
    assert out["crossing_misalignment"][0] == pytest.approx(0.5)
    assert out["member"].tolist() == [-1]
    assert out["prop1_margin"]["d"] < 0  # S_∅ holds a column above delta1
    assert out["prop1_t"]["d"] == pytest.approx(20.0)


def test_a_downward_aligned_crossing_joins_and_membership_lasts():
    # weight decay larger than the weight: an aligned column shrinks through delta1 (a time its
    # norm equals delta1 while aligned: it joins) and stays a member below delta1
    target = tdflow.Target.orthogonal(4, [0.1])
    flow = tdflow.GradientFlow(target, lam=1.0)
    W0 = np.zeros((4, 2), order="F")
    W0[0, 0] = 0.5
    W0[0, 1] = 0.5
    out = _watch(flow, W0, [0.0, 10.0], member=np.array([-1, 0]), delta1=0.1)
    # column 1 is already a member: not watched
    assert out["crossing_column"].tolist() == [0] and out["crossing_joined"][0]
    assert not out["crossing_upward"][0]
    assert out["member"].tolist() == [0, 0]
    # both columns stay equal: n = ||w||^2 obeys dn/dt = 2 (2 (a - 2 n) - lam) n, so the
    # crossing of n = delta1^2 = 0.01 from n = 0.25 is at this time
    from scipy.integrate import quad
    t_cross = quad(lambda n: 1.0 / (2 * (2 * (0.1 - 2 * n) - 1.0) * n), 0.25, 0.01)[0]
    assert out["crossing_t"][0] == pytest.approx(t_cross, rel=1e-6)
    assert np.all(np.linalg.norm(out["W"], axis=0) < 0.1)  # below delta1, still members
    # (d) is violated only before the join (column 0 starts in S_∅ above delta1)
    assert out["prop1_margin"]["d"] == pytest.approx(0.1 - 0.5) and out["prop1_t"]["d"] == 0.0


def test_fixed_step_crossings_match_records_at_every_step():
    # RK4 with records at every step gives the same steps: the crossings of a run with two
    # records equal those of the fine run (found inside steps, on RK4's continuous extension)
    target, flow, W0 = _setup()
    h, T = 0.05, 30.0
    coarse = _watch(flow, W0, [0.0, T], method="rk4", h=h)
    fine = _watch(flow, W0, np.linspace(0.0, T, int(round(T / h)) + 1), method="rk4", h=h)
    assert coarse["n_checks"] == coarse["n_steps"] + 1 == int(round(T / h)) + 1
    for k in ("crossing_column", "crossing_joined", "member"):
        np.testing.assert_array_equal(coarse[k], fine[k])
    np.testing.assert_allclose(coarse["crossing_t"], fine["crossing_t"], rtol=1e-14)
    assert coarse["crossing_joined"].sum() >= 4


def test_watch_validates_its_arguments():
    target, flow, W0 = _setup()
    with pytest.raises(ValueError, match=r"member must have shape \(12,\)"):
        _watch(flow, W0, [0.0, 1.0], member=np.full(3, -1))
    with pytest.raises(ValueError, match="member entries must be -1 or a direction index < r"):
        _watch(flow, W0, [0.0, 1.0], member=np.full(12, 2))
    with pytest.raises(ValueError, match="alpha must lie in"):
        _watch(flow, W0, [0.0, 1.0], alpha=1.5)
    with pytest.raises(ValueError, match="gamma must lie in"):
        _watch(flow, W0, [0.0, 1.0], gamma=1.0)


# ---- Proposition 1 -----------------------------------------------------------------------------
def _literal_proposition1(W, U, a, member, alpha, delta1, lam, s, beta, gamma):
    """Proposition 1 (a)-(d) as printed, condition by condition, as margins."""
    m = W.shape[1]
    out = dict(a=math.inf, b=math.inf, c_lower=math.inf, c_upper=math.inf, d=math.inf)
    for k in range(U.shape[1]):
        S = [j for j in range(m) if member[j] == k]
        wbar2 = {j: (U[:, k] @ W[:, j]) ** 2 / (W[:, j] @ W[:, j]) for j in S}
        for j in S:
            out["a"] = min(out["a"], wbar2[j] - (1 - alpha))
        ahat = sum(W[:, j] @ W[:, j] for j in S)
        if S:
            E = sum((W[:, j] @ W[:, j]) * wbar2[j] for j in S) / ahat
            out["b"] = min(out["b"], E - (1 - alpha ** 2 - 4 * s * m * delta1 ** 2))
        out["c_lower"] = min(out["c_lower"], (a[k] - ahat) - (lam / 6 - s * m * delta1 ** 2))
        if a[k] >= beta / (1 - gamma):
            out["c_upper"] = min(out["c_upper"], (lam + s * m * delta1 ** 2) - (a[k] - ahat))
    for j in range(m):
        if member[j] < 0:
            out["d"] = min(out["d"], delta1 - np.linalg.norm(W[:, j]))
    return out


def test_proposition1_margins_at_every_step_equal_the_literal_conditions():
    target = tdflow.Target.random_rotation(6, [0.7, 0.3], rng=1)
    flow = tdflow.GradientFlow(target, lam=1e-3)
    W0 = np.asfortranarray(tdflow.sphere(6, 10, 1e-3, 4))
    W0[:, 0] = math.sqrt(0.7 - 5e-4) * (target.U[:, 0] + 0.05 * target.U[:, 1])
    member0 = np.full(10, -1)
    member0[0] = 0
    h, T = 0.05, 25.0
    t = np.linspace(0.0, T, int(round(T / h)) + 1)
    kw = dict(alpha=0.3, delta1=1e-2, epoch=2, beta=0.3, gamma=0.5)  # (c) upper: a_k >= 0.6
    out = _watch(flow, W0, t, method="rk4", h=h, member=member0, save_states=True, **kw)
    assert out["crossing_joined"].sum() >= 1
    worst = dict(a=math.inf, b=math.inf, c_lower=math.inf, c_upper=math.inf, d=math.inf)
    for j, tj in enumerate(t):
        member = member0.copy()
        done = out["crossing_joined"] & (out["crossing_t"] <= tj)
        member[out["crossing_column"][done]] = out["crossing_direction"][done]
        lit = _literal_proposition1(out["states"][j], target.U, target.a, member, kw["alpha"],
                                    kw["delta1"], 1e-3, kw["epoch"], kw["beta"], kw["gamma"])
        fast = analysis.proposition1(out["states"][j], target.U, target.a, member, lam=1e-3, **kw)
        for c in worst:
            assert getattr(fast, c) == pytest.approx(lit[c], abs=1e-14)
            if lit[c] < worst[c]:
                worst[c] = lit[c]
    for c in worst:
        assert out["prop1_margin"][c] == pytest.approx(worst[c], abs=1e-12), c
        assert np.isfinite(worst[c])


def test_proposition1_on_hand_made_states():
    U = np.eye(5)[:, :3]
    a = np.array([0.6, 0.3, 0.1])
    W = np.zeros((5, 4))
    W[0, 0], W[3, 0] = math.sqrt(0.5), math.sqrt(0.1)   # member of S_1: wbar^2 = 5/6
    W[1, 1] = math.sqrt(0.3 - 5e-5)                      # member of S_2, exact
    W[3, 2] = 2e-3                                       # S_∅, small
    W[4, 3] = 5e-2                                       # S_∅, above delta1
    member = [0, 1, -1, -1]
    kw = dict(alpha=0.3, delta1=1e-2, lam=1e-4, epoch=1, beta=0.3, gamma=0.5)
    p = analysis.proposition1(W, U, a, member, **kw)
    slack = 1 * 4 * 1e-4
    assert p.a == pytest.approx(5 / 6 - 0.7)
    assert p.b == pytest.approx(5 / 6 - (1 - 0.09 - 4 * slack))
    # gaps: 0.6 - 0.6 = 0, 5e-5, 0.1; lower bound lam/6 - slack < 0
    assert p.c_lower == pytest.approx(0.0 - (1e-4 / 6 - slack))
    assert p.c_upper == pytest.approx(1e-4 + slack - 0.0)  # only a_1 = 0.6 >= 0.3/0.5
    assert p.d == pytest.approx(1e-2 - 5e-2) and not p.ok
    empty = analysis.proposition1(np.zeros((5, 0)), U, a, [], **kw)
    assert (empty.a, empty.b, empty.d) == (math.inf, math.inf, math.inf)


# ---- fitted, and the equilibrium gap under weight decay ------------------------------------
def test_fitted_rules():
    a = np.array([0.5, 0.2])
    np.testing.assert_allclose(analysis.fit_tolerance(a, 1e-3), [2e-3, 2e-3])  # the paper: 2 lam
    np.testing.assert_allclose(analysis.fit_tolerance(a, 1e-4, "paper", eps=5e-4), [2e-4, 2e-4])
    np.testing.assert_allclose(analysis.fit_tolerance(a, 1e-4, "eps-floor", eps=5e-4), [5e-4] * 2)
    np.testing.assert_allclose(analysis.fit_tolerance(a, 0.0, "eps-floor"), [5e-4, 2e-4])
    np.testing.assert_allclose(analysis.fit_tolerance(a, 1e-3, 0.01), [0.01, 0.01])
    with pytest.raises(ValueError, match="fit_tol must be one of"):
        analysis.fit_tolerance(a, 1e-3, "loose")
    assert analysis.fitted(a, [0.4985, 0.1], [2e-3, 2e-3]).tolist() == [True, False]
    assert analysis.still_fitted([True, True, False], [True, False, False]) == (1,)
    assert analysis.fit_order([3.0, np.nan, 1.0, 2.0]).tolist() == [2, 3, 0]


@pytest.mark.parametrize("order", [3, 4, 5, 6])
def test_fitted_equilibrium_gap_is_half_lambda_for_every_order(order):
    # derivation (analysis module docstring): for w = sqrt(n) u_1 the flow is
    # dw/dt = (2 (a - n) - lam) w, whatever the order, so a - n -> lam / 2 (not lam / (l - 2))
    a, lam = 0.6, 0.02
    target = tdflow.Target.orthogonal(5, [a], order=order)
    flow = tdflow.GradientFlow(target, lam=lam)
    W = np.zeros((5, 1), order="F")
    W[0, 0] = 0.3
    np.testing.assert_allclose(flow.rhs(W), (2 * (a - 0.09) - lam) * W, rtol=1e-12)
    # a slightly misaligned start aligns and settles at the same gap
    W[1, 0] = 1e-3
    traj = flow.integrate(W, (0.0, 400.0), method="dopri5", rtol=1e-10)
    n = float(np.sum(traj.W ** 2))
    assert a - n == pytest.approx(lam / 2, rel=1e-6)
    assert traj.directional_residual[-1, 0] == pytest.approx(lam / 2, rel=1e-5)


# ---- Definition 2 and Lemma 5 ------------------------------------------------------------------
def _literal_partition(W, U, a, discovered, lam, t1, c_rho):
    r, m = U.shape[1], W.shape[1]
    Gamma = [1 / (8 * (lam if discovered[i] else a[i]) * t1) for i in range(r)]
    rho = [c_rho * g for g in Gamma]
    good, pot, bad = np.zeros((m, r), bool), np.zeros((m, r), bool), np.zeros(m, bool)
    for k in range(m):
        v = W[:, k] / np.linalg.norm(W[:, k])
        vb2 = [(U[:, i] @ v) ** 2 for i in range(r)]
        for i in range(r):
            good[k, i] = vb2[i] >= Gamma[i] + rho[i] and all(
                vb2[j] <= Gamma[j] - rho[j] for j in range(r) if j != i)
            pot[k, i] = vb2[i] >= Gamma[i] - rho[i]
        bad[k] = any(vb2[i] >= Gamma[i] - rho[i] and vb2[j] >= Gamma[j] - rho[j]
                     for i, j in itertools.permutations(range(r), 2))
    return good, pot, bad, np.array(Gamma), np.array(rho)


@pytest.mark.parametrize("rotate", [False, True])
def test_definition2_equals_its_literal_transcription(rotate):
    d, r, m = 6, 4, 400
    a = np.array([0.4, 0.3, 0.2, 0.1])
    target = tdflow.Target.random_rotation(d, a, rng=2) if rotate else tdflow.Target.orthogonal(d, a)
    W = tdflow.sphere(d, m, 1e-3, 5)
    discovered = np.array([False, False, True, False])
    lam, t1 = 0.05, 3.0  # Gamma = 0.10, 0.14, 0.83, 0.42
    part = analysis.partition(W, target.U, a, discovered, lam=lam, t1=t1, c_rho=0.1)
    good, pot, bad, Gamma, rho = _literal_partition(W, target.U, a, discovered, lam, t1, 0.1)
    np.testing.assert_array_equal(part.good, good)
    np.testing.assert_array_equal(part.potential, pot)
    np.testing.assert_array_equal(part.bad, bad)
    np.testing.assert_allclose(part.Gamma, Gamma)
    np.testing.assert_allclose(part.rho, rho)
    assert good.any() and bad.any() and (pot.any(axis=1) & ~bad & ~good.any(axis=1)).any()
    assert np.all(part.potential | ~part.good)  # good ⊆ potential
    assert part.counts() == (good.any(axis=1).sum(), pot.any(axis=1).sum(), bad.sum())


def test_definition2_refuses_what_it_does_not_define():
    U = np.eye(4)[:, :2]
    W = tdflow.sphere(4, 5, 1.0, 0)
    kw = dict(lam=1e-3, t1=5.0)
    with pytest.raises(ValueError, match="stated for order 4, got order=3"):
        analysis.partition(W, U, [0.5, 0.5], [False, False], order=3, **kw)
    skew = np.array([[1.0, 0.6], [0.0, 0.8], [0.0, 0.0], [0.0, 0.0]])
    with pytest.raises(ValueError, match="orthonormal targets"):
        analysis.partition(W, skew, [0.5, 0.5], [False, False], **kw)
    with pytest.raises(ValueError, match=r"discovered must have shape \(2,\)"):
        analysis.partition(W, U, [0.5, 0.5], [False], **kw)
    # a zero weight (or lam = 0 for a discovered direction): Gamma = inf, nobody is potential
    part = analysis.partition(W, U, [0.5, 0.0], [False, False], **kw)
    assert part.Gamma[1] == math.inf and not part.potential[:, 1].any()


def test_lemma5_outcome_counts_each_prediction():
    part = analysis.Partition(
        good=np.array([[True, False], [False, False], [False, False], [False, True]]),
        potential=np.array([[True, False], [True, False], [False, False], [False, True]]),
        bad=np.zeros(4, bool), Gamma=np.ones(2), rho=np.ones(2))
    fresh = np.array([True, True, True, False])  # column 3 was already in S_2 at (s, 0)
    reached = np.array([True, False, True, False])
    joined = np.array([True, False, False, False])
    out = analysis.lemma5_outcome(part, fresh, reached, joined, discovered_t1=[True, False])
    # column 2 reached delta1 outside S_pot and did not join; direction 2's good column was
    # not fresh, so no prediction about it
    assert (out.large_not_potential, out.good_undiscovered, out.large_unjoined) == (1, 0, 1)
    assert not out.ok
    out = analysis.lemma5_outcome(part, fresh, [True, False, False, False], joined, [False, False])
    assert (out.large_not_potential, out.good_undiscovered, out.large_unjoined) == (0, 1, 0)


def test_escape_time_labels_are_kept_under_their_own_name():
    U = np.eye(4)[:, :3]
    a = np.array([0.5, 0.5, 0.2])
    cols = np.array([
        [0.8, 0.1, 0.1, 0.58],   # clear winner u_1, fast: good -> 0
        [0.6, 0.6, 0.0, 0.53],   # tie between u_1 and u_2: potential
        [0.05, 0.05, 0.05, 1.0],  # tiny alignments: escapes too late: bad
        [0.0, 0.0, 0.9, 0.44],   # only aligned with u_3, which is fitted: bad
    ]).T
    labels, pred = analysis.classify_by_escape_time(cols, U, a, [True, True, False], 50.0)
    assert labels.tolist() == [analysis.GOOD, analysis.POTENTIAL, analysis.BAD, analysis.BAD]
    assert pred[0] == 0 and pred[3] == -1
    x = cols[0, 0] ** 2 / np.sum(cols[:, 0] ** 2)
    tau = analysis.escape_times(cols[:, :1], U, a, [True, True, False])
    assert tau[0, 0] == pytest.approx(1.0 / (8 * 0.5 * x))
    assert not hasattr(analysis, "classify_fresh")

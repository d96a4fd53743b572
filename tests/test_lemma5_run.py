"""Lemma 5 of Ge, Ren, Wang, Zhou 2021 on a real run of Algorithm 2: the three counts a run
records each epoch (``epochs["lemma5_*"]``, :func:`tdflow.analysis.lemma5_outcome`) and
Definition 2's partition (``partitions``) against a slow column-by-column recount written from
the printed statements and :class:`tdflow.analysis.Lemma5Outcome`'s docstring:

* 5.1 "If v^(s,t) not in S_pot^(s), ||v^(s,t)|| = O(delta0) [...] for all t <= t1^(s)": counted,
  as the docstring says, as the fresh columns outside S_pot whose norm reached delta1 in [0, t1].
* 5.2 "If S_{i,good}^(s) != empty, there exists v^(s,t1) such that ||v|| >= delta1 and
  S_i^(s,t1) != empty": counted as the directions with a fresh column in S_{i,good} and S_i
  empty at t1.
* 5.3 "If ||v^(s,t)|| >= delta1 for some t <= t1^(s), there exists i with v^(s,t) in S_i^(s,t)":
  counted as the fresh columns that reached delta1 by t1 and joined no S_i by t1.

"Fresh" is S_∅ at (s, 0) (no membership then). The recount takes the state at each epoch start
(the initial draw, then the callback's copy after each epoch), the run's crossing events (a
crossing is a time where ||v|| = delta1) and its recorded norms; nothing from the run's own
bookkeeping of reached / joined / discovered."""
import numpy as np
import pytest

import tdflow
from tdflow import Schedule, deflate
from test_analysis import _literal_partition


def run_with_starts(target, m, schedule, seed):
    """A run and the state (W, member) at the start of each of its epochs."""
    after = []
    with tdflow.num_threads(1):
        res = deflate(target, m, schedule, seed, progress=False,
                      callback=lambda r: after.append((r.W.copy(), r.member.copy())))
    rng = np.random.default_rng(seed)  # the initial draw: delta0 Unif(S^{d-1}), column by column
    X = rng.standard_normal((target.dim, m))
    W0 = schedule.delta0 * X / np.linalg.norm(X, axis=0)
    return res, [(W0, np.full(m, -1))] + after[:-1]


def literal_lemma5(res, s, W, member):
    """(large_not_potential, good_undiscovered, large_unjoined) of epoch s, Definition 2's label
    of each fresh column (0 good, 1 potential only, 2 bad, 3 none), and the sets found."""
    sch, ev, a, U = res.schedule, res.events, res.target.a, res.target.U
    m, r = W.shape[1], len(a)
    discovered0 = [any(member[k] == i for k in range(m)) for i in range(r)]  # S_i^(s,0) != empty
    good, pot, bad, _, _ = _literal_partition(W, U, a, discovered0, sch.lam,
                                              res.epochs["t1p"][s], sch.c_rho)
    t0, t1 = res.epochs["t_start"][s], res.epochs["t_start"][s] + res.epochs["t1"][s]
    phase1 = [j for j in range(ev["column"].size) if ev["epoch"][j] == s and ev["phase"][j] == 1]
    assert all(t0 <= ev["t"][j] <= t1 for j in phase1)
    rec = np.flatnonzero((res.records["record_epoch"] == s) & (res.records["record_phase"] == 1))
    large_not_pot = good_undiscovered = large_unjoined = 0
    labels, found = {}, dict(reached=0, joined=0, good=0, pot=0, bad=0)
    for k in range(m):
        if member[k] >= 0:
            continue  # in some S_i at (s, 0): not fresh
        in_pot = any(pot[k, i] for i in range(r))
        reached = (np.linalg.norm(W[:, k]) >= sch.delta1
                   or any(ev["column"][j] == k for j in phase1))  # ||v|| = delta1 at a crossing
        joined = any(ev["column"][j] == k and ev["joined"][j] for j in phase1)
        if max(res.records["norms"][j, k] for j in rec) >= sch.delta1:
            assert reached  # the recorded norms agree with the events
        if reached and not in_pot:
            large_not_pot += 1  # 5.1
        if reached and not joined:
            large_unjoined += 1  # 5.3
        labels[k] = 0 if any(good[k]) else 2 if bad[k] else 1 if in_pot else 3
        found["reached"] += reached
        found["joined"] += joined
        found["good"] += any(good[k])
        found["pot"] += in_pot
        found["bad"] += bad[k]
    for i in range(r):
        good_fresh = any(good[k, i] for k in range(m) if member[k] < 0)
        S_i_t1 = (any(member[k] == i for k in range(m))
                  or any(ev["joined"][j] and ev["direction"][j] == i for j in phase1))
        if good_fresh and not S_i_t1:
            good_undiscovered += 1  # 5.2
    return (large_not_pot, good_undiscovered, large_unjoined), labels, found


# d = 6, r = 3, m = 30, seed 0. The practical schedule: epoch 0 has a direction with a good
# column undiscovered at t1 (5.2's count 1), epoch 1 a large column outside S_pot (5.1's count
# 1). delta1 = 1.5 delta0: columns cross delta1 before they align, 5.3's count is large.
@pytest.mark.parametrize("schedule, totals", [
    (Schedule(), (1, 1, 0)),
    (Schedule(delta0=1e-3, delta1=1.5e-3), (23, 2, 50)),
])
def test_lemma5_counts_are_the_literal_recount_of_each_epoch(schedule, totals):
    target = tdflow.Target.orthogonal(6, [0.6, 0.3, 0.1])
    res, starts = run_with_starts(target, 30, schedule, 0)
    assert res.status == "recovered" and len(starts) == res.n_epochs >= 2
    e, pt = res.epochs, res.partitions
    want = np.zeros(3, int)
    seen = dict(reached=0, joined=0, good=0, pot=0, bad=0)
    for s, (W, member) in enumerate(starts):
        counts, labels, found = literal_lemma5(res, s, W, member)
        assert counts == (e["lemma5_large_not_potential"][s], e["lemma5_good_undiscovered"][s],
                          e["lemma5_large_unjoined"][s]), s
        rows = pt["epoch"] == s
        assert dict(zip(pt["column"][rows].tolist(), pt["label"][rows].tolist())) == labels
        want += counts
        seen = {k: seen[k] + found[k] for k in seen}
    # not vacuous: the counts and the sets are not all empty
    assert tuple(want) == totals
    assert seen["good"] > 0 and seen["pot"] > seen["good"] and seen["bad"] > 0
    assert seen["reached"] > 0 and seen["joined"] > 0

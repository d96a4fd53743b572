"""Theorem 1's parameters (Schedule.theory), its phase lengths (Lemmas 4 and 6), the per-epoch
theory report, and Algorithm 2 on Figure 1's target with Proposition 1's margins >= 0."""
import math

import numpy as np
import pytest

import tdflow
from tdflow import Schedule, deflate, theory


@pytest.fixture(autouse=True)
def one_thread():
    with tdflow.num_threads(1):
        yield


def test_theorem1_parameters_for_d10_eps1e2_m200():
    s = Schedule.theory(10, 1e-2, 200)
    # lam = min(log d / d, eps / sqrt d) = min(0.2303, 3.162e-3)
    assert s.lam == pytest.approx(1e-2 / math.sqrt(10))
    # alpha = min(lam / d^1.5, lam^2, eps^2 / d^4) = min(1e-4, 1e-5, 1e-8)
    assert s.alpha == pytest.approx(1e-8)
    assert s.delta1 == pytest.approx(1e-12 / math.sqrt(200))  # alpha^1.5 / sqrt(m)
    assert s.delta0 == pytest.approx(s.delta1 * 1e-8 / math.sqrt(math.log(10)))
    assert (s.lam, s.alpha, s.delta1, s.delta0) == pytest.approx(
        (3.1623e-3, 1e-8, 7.0711e-14, 4.6599e-22), rel=1e-4)  # the docstring's numbers
    assert (s.gamma, s.eps, s.c1, s.c1pp, s.c1ppp, s.c2, s.c_rho) == (0.5, 1e-2, 1, 1, 1, 1, 0.1)
    # Lemma 4's t1', t1'', t1''' and Lemma 6's t2 - t1, times beta
    L = math.log(10)
    assert s.t1_parts(1.0, 10) == pytest.approx((10 / L, 10 / L ** 3, math.log(10 / 1e-8)))
    assert s.t1_parts(1.0, 10) == pytest.approx((4.343, 0.8191, 20.72), rel=1e-3)
    assert s.phase2(1.0) == pytest.approx(math.log(1 / s.delta1) + math.log(1 / s.lam))
    assert s.phase2(1.0) == pytest.approx(36.04, rel=1e-3)
    assert s.t2(0.5, 10) == pytest.approx((10 / L + 10 / L ** 3 + math.log(1e9) + 36.0366) / 0.5,
                                          rel=1e-4)
    assert theory.suggest_m(10, 1e-2) == 691


def test_every_hidden_constant_is_a_keyword():
    base = theory.theorem1_parameters(10, 1e-2, 200)
    # each constant scales its own term; a term only matters while it is the minimum
    p = theory.theorem1_parameters(10, 1e-2, 200, c_lam_eps=2.0)
    assert p["lam"] == pytest.approx(2 * base["lam"])
    p = theory.theorem1_parameters(10, 1e-2, 200, c_lam_d=0.001)  # log d / d term now smaller
    assert p["lam"] == pytest.approx(0.001 * math.log(10) / 10)
    p = theory.theorem1_parameters(10, 1e-2, 200, c_alpha_eps=1e6)  # lam^2 = 1e-5 wins
    assert p["alpha"] == pytest.approx(base["lam"] ** 2)
    p = theory.theorem1_parameters(10, 1e-2, 200, c_alpha_eps=1e6, c_alpha_lam=1e3)
    assert p["alpha"] == pytest.approx(base["lam"] / 10 ** 1.5)
    p = theory.theorem1_parameters(10, 1e-2, 200, c_delta1=3.0, c_delta0=0.5)
    assert p["delta1"] == pytest.approx(3 * base["delta1"])
    assert p["delta0"] == pytest.approx(0.5 * 3 * base["delta0"])
    s = Schedule.theory(10, 1e-2, 200, gamma=0.25, c1=2.0, c1pp=0.0, c1ppp=3.0, c2=0.5,
                        c_rho=0.05, c_alpha_d=0.5, max_epochs=7, fit_tol="eps-floor")
    assert (s.gamma, s.c1, s.c1pp, s.c1ppp, s.c2, s.c_rho) == (0.25, 2.0, 0.0, 3.0, 0.5, 0.05)
    assert (s.max_epochs, s.fit_tol) == (7, "eps-floor")
    with pytest.raises(TypeError, match="c_typo"):
        Schedule.theory(10, 1e-2, 200, c_typo=1.0)
    with pytest.raises(ValueError, match="c_delta1 must be > 0"):
        theory.theorem1_parameters(10, 1e-2, 200, c_delta1=0.0)
    with pytest.raises(TypeError, match="m must be an integer"):
        Schedule.theory(10, 1e-2, 200.0)


def _figure1_target():
    return tdflow.Target.orthogonal(10, tdflow.geometric_weights(5, ratio=1.2))


# tdflow's practical constants, written out (the defaults of Schedule())
PRACTICAL = dict(delta0=1e-3, delta1=1e-2, alpha=0.3, gamma=0.3, lam=1e-4, eps=5e-4, c1=1.0,
                 c1pp=0.0, c1ppp=0.0, c2=1.0)


@pytest.mark.parametrize("seed", range(5))
def test_practical_run_on_figure1_target_keeps_proposition1(seed):
    res = deflate(_figure1_target(), 50, Schedule(**PRACTICAL), seed, progress=False)
    assert res.status == "recovered"
    e = res.epochs
    for c in ("a", "b", "c_lower", "c_upper", "d"):
        assert np.all(e[f"prop1_{c}"] >= 0), (c, res.theory_report())
    assert np.all(e["n_crossed_unjoined"] == 0)
    report = res.theory_report()
    assert report.splitlines()[0].split()[:6] == ["s", "beta", "t1", "t2", "disc", "fit"]
    assert "all margins >= 0 in every epoch" in report
    assert report in res.summary()


def test_theory_schedule_run_on_figure1_target():
    # Theorem 1's parameters with every constant 1: alpha = 1e-8, delta0 = 4.7e-22; joins need
    # 1 - wbar^2 <= 1e-16 at the crossing, which growth from delta0 to delta1 delivers
    res = deflate(_figure1_target(), 200, Schedule.theory(10, 1e-2, 200), 0, progress=False)
    assert res.status == "recovered" and res.all_fitted
    assert res.proposition1_ok.all(), res.theory_report()
    assert res.events["joined"].all()
    assert res.fit_order.tolist() == [0, 1, 2, 3, 4]

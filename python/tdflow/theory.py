"""Theorem 1 of Ge, Ren, Wang, Zhou (2021) in numbers, and the per-epoch theory report.

Theorem 1, as printed: "For any eps >= exp(-o(d/log d)), there exists gamma = Θ(1),
m = poly(d), lam = min{O(log d/d), O(eps/d^{1/2})}, alpha = min{O(lam/d^{3/2}), O(lam^2),
O(eps^2/d^4)}, delta1 = O(alpha^{3/2}/m^{1/2}), delta0 = Θ(delta1 alpha/log^{1/2}(d)) such that
with probability 1 - 1/poly(d) in the (re)-initializations, Algorithm 2 terminates in
O(log(d/eps)) epochs and returns a tensor T such that ||T - T*||_F <= eps."

:func:`theorem1_parameters` writes every O(·)/Θ(·) as an explicit constant (default 1);
:meth:`tdflow.Schedule.theory` builds the whole schedule from them, with Lemma 4's and Lemma 6's
phase lengths. The theorem leaves ``m`` as poly(d): it is an argument; :func:`suggest_m` is
tdflow's suggestion, not the paper's.

:func:`epoch_report` formats the per-epoch records of a :class:`tdflow.DeflationResult` as a
table to hold beside Section 5 of the paper; :func:`epoch_frame` gives the same columns as a
pandas DataFrame.
"""
from __future__ import annotations

import math

import numpy as np

from ._checks import positive_int, real_number


def theorem1_parameters(d: int, eps: float, m: int, *, c_lam_d: float = 1.0,
                        c_lam_eps: float = 1.0, c_alpha_d: float = 1.0, c_alpha_lam: float = 1.0,
                        c_alpha_eps: float = 1.0, c_delta1: float = 1.0,
                        c_delta0: float = 1.0) -> dict:
    """Theorem 1's ``lam, alpha, delta1, delta0`` with the hidden constants explicit::

        lam    = min(c_lam_d log d / d, c_lam_eps eps / sqrt(d))
        alpha  = min(c_alpha_d lam / d^{3/2}, c_alpha_lam lam^2, c_alpha_eps eps^2 / d^4)
        delta1 = c_delta1 alpha^{3/2} / sqrt(m)
        delta0 = c_delta0 delta1 alpha / sqrt(log d)

    For d = 10, eps = 1e-2, m = 200 (all constants 1): lam = 3.162e-3 (the eps term),
    alpha = 1e-8 (the eps^2/d^4 term), delta1 = 7.071e-14, delta0 = 4.660e-22.
    """
    d = positive_int(d, "d", minimum=2)
    eps = real_number(eps, "eps", minimum=0.0, strict=True)
    m = positive_int(m, "m")
    c = dict(c_lam_d=c_lam_d, c_lam_eps=c_lam_eps, c_alpha_d=c_alpha_d, c_alpha_lam=c_alpha_lam,
             c_alpha_eps=c_alpha_eps, c_delta1=c_delta1, c_delta0=c_delta0)
    for name, v in c.items():
        real_number(v, name, minimum=0.0, strict=True)
    log_d = math.log(d)
    lam = min(c_lam_d * log_d / d, c_lam_eps * eps / math.sqrt(d))
    alpha = min(c_alpha_d * lam / d ** 1.5, c_alpha_lam * lam ** 2, c_alpha_eps * eps ** 2 / d ** 4)
    delta1 = c_delta1 * alpha ** 1.5 / math.sqrt(m)
    delta0 = c_delta0 * delta1 * alpha / math.sqrt(log_d)
    return dict(lam=lam, alpha=alpha, delta1=delta1, delta0=delta0)


def suggest_m(d: int, eps: float) -> int:
    """tdflow's suggestion for the number of columns (the theorem only says m = poly(d)):
    ``ceil(d^2 log(d/eps))`` (691 for d = 10, eps = 1e-2). Not from the paper."""
    d = positive_int(d, "d", minimum=2)
    eps = real_number(eps, "eps", minimum=0.0, strict=True)
    return int(math.ceil(d * d * max(math.log(d / eps), 1.0)))


# the per-epoch records the report shows, in its order: beta, t1, t2, discovered / fitted,
# Proposition 1's margins, Definition 2's partition, Lemma 5's outcome
PROP1_REPORTED = ("a", "b", "c_lower", "c_upper", "d")
REPORT_FIELDS = ("beta", "t1", "t2", "n_discovered", "n_fitted",
                 *(f"prop1_{c}" for c in PROP1_REPORTED), "n_good", "n_potential", "n_bad",
                 "lemma5_large_not_potential", "lemma5_good_undiscovered", "lemma5_large_unjoined")


def _margin(v: float) -> str:
    return f"{'n/a':>9}" if math.isinf(v) and v > 0 else f"{v:+9.1e}"


def _count(v) -> str:
    return "-" if v < 0 else str(int(v))


def epoch_report(epochs: dict) -> str:
    """One row per epoch: ``s, beta^(s), t1^(s), t2^(s)`` (times from the epoch start; ``t2`` is
    the epoch end, as in the paper), directions discovered / fitted at the epoch end, the worst
    margin of each condition of Proposition 1 over the epoch (``n/a``: nothing to check), the
    Definition 2 partition of ``S_∅`` at ``(s, 0)`` (good/potential/bad, ``-`` when it does not
    apply) and Lemma 5's outcome (columns outside ``S_pot`` that reached ``delta1`` by ``t1``,
    directions with a good component left undiscovered, columns that reached ``delta1`` without
    joining; 0/0/0 is what the lemma predicts)."""
    e = epochs
    head = (f"{'s':>3} {'beta':>9} {'t1':>8} {'t2':>8} {'disc':>4} {'fit':>4} "
            f"{'P1(a)':>9} {'P1(b)':>9} {'P1(c)low':>9} {'P1(c)up':>9} {'P1(d)':>9} "
            f"{'D2 g/p/b':>10} {'L5':>7}")
    rows = [head]
    for s in range(e["beta"].size):
        gpb = "/".join(_count(e[k][s]) for k in ("n_good", "n_potential", "n_bad"))
        l5 = "/".join(_count(e[k][s]) for k in
                      ("lemma5_large_not_potential", "lemma5_good_undiscovered",
                       "lemma5_large_unjoined"))
        margins = " ".join(_margin(float(e[f"prop1_{c}"][s])) for c in PROP1_REPORTED)
        rows.append(f"{s:>3} {e['beta'][s]:9.3g} {e['t1'][s]:8.2f} {e['t2'][s]:8.2f} "
                    f"{e['n_discovered'][s]:>4} {e['n_fitted'][s]:>4} {margins} {gpb:>10} "
                    f"{l5:>7}")
    worst = {c: float(np.min(e[f"prop1_{c}"])) if e["beta"].size else math.inf
             for c in PROP1_REPORTED}
    failed = [c for c, v in worst.items() if v < 0]
    rows.append("Proposition 1: " + ("all margins >= 0 in every epoch" if not failed else
                                     "negative margin in " + ", ".join(failed)))
    return "\n".join(rows)


def epoch_frame(epochs: dict, *, full: bool = False):
    """The per-epoch records as a pandas DataFrame (``pip install 'tdflow[pandas]'``).

    Parameters
    ----------
    epochs : dict
        The per-epoch records of a :class:`tdflow.DeflationResult` (``result.epochs``).
    full : bool
        False (the default): the columns of :func:`epoch_report`, in its order
        (:data:`REPORT_FIELDS`: ``beta, t1, t2, n_discovered, n_fitted``, Proposition 1's
        margins ``prop1_a, prop1_b, prop1_c_lower, prop1_c_upper, prop1_d``, Definition 2's
        ``n_good, n_potential, n_bad``, Lemma 5's ``lemma5_large_not_potential,
        lemma5_good_undiscovered, lemma5_large_unjoined``); True: every per-epoch record, in the
        order of ``DeflationResult.epochs``.

    Returns
    -------
    pandas.DataFrame
        One row per epoch, indexed by ``epoch`` (the report's ``s``). The values are the records
        themselves: a margin of ``inf`` is the report's ``n/a`` (nothing to check), a count of
        -1 its ``-`` (Definition 2 or Lemma 5 does not apply: order != 4 or a
        non-orthonormal target).
    """
    from .tables import pandas

    pd = pandas("epoch_frame")
    names = list(epochs) if full else list(REPORT_FIELDS)
    n = np.asarray(epochs["beta"]).size
    return pd.DataFrame({k: np.asarray(epochs[k]) for k in names},
                        index=pd.RangeIndex(n, name="epoch"))

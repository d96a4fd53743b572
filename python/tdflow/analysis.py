"""Watching Algorithm 2 work: the definitions and the induction hypothesis of Section 5 of Ge,
Ren, Wang, Zhou (2021), "Understanding Deflation Process in Over-parametrized Tensor
Decomposition" (``shared/papers/ge-ren-wang-zhou-2021-deflation.md``), as printed.

Notation: ``w̄ = w/||w||``, ``w̄_i = <w̄, u_i>`` (the paper takes ``U = I``), epoch ``s``,
``m`` columns, ``beta = beta^(s)``.

* **Definition 1** (``S_i``): "the k-th component is in S_i^(s,t) if and only if there exists some
  time (s', t') that is no later than (s, t) and no earlier than the latest re-initialization of
  W[:, k] such that ||W^(s',t')[:, k]|| = delta1 and [W^(s',t')[:, k]]bar_i^2 >= 1 - alpha^2."
  Computed in the C++ stepping loop (``cpp/include/tdflow/events.hpp``): at every crossing of
  the level ``delta1``, located on the stepper's dense output, a column of ``S_∅`` joins the
  direction of its largest alignment if that alignment is ``>= 1 - alpha^2`` there; a column
  that crosses badly aligned stays in ``S_∅``. Membership lasts until the column is re-drawn.
  Direction ``i`` is *discovered* when ``S_i`` is non-empty.
* ``â_i = sum_{k in S_i} ||w_k||^2`` (:func:`a_hat`); direction ``i`` is **fitted** when
  ``a_i - â_i <= 2 lam`` (:func:`fit_tolerance`, rule ``"paper"``). tdflow's variant
  ``"eps-floor"`` uses ``max(2 lam, eps)`` (``eps`` the run's target accuracy), so that a run that
  reached ``||T - T*||_F <= eps`` counts its directions as fitted even when ``eps > 2 lam``.
* **Proposition 1** (induction hypothesis), for every epoch s, time t and direction k:
  (a) ``w̄_k^2 >= 1 - alpha`` for every member of ``S_k``; (b) if ``S_k`` is non-empty,
  ``E_{k,w} w̄_k^2 >= 1 - alpha^2 - 4 s m delta1^2`` (mean weighted by ``||w||^2``);
  (c) ``a_k - â_k >= lam/6 - s m delta1^2`` always, and ``a_k - â_k <= lam + s m delta1^2`` if
  ``a_k >= beta^(s)/(1 - gamma)``; (d) ``||w|| <= delta1`` for every column of ``S_∅``.
  :func:`proposition1` evaluates each as a margin (>= 0: holds) on one state; a run evaluates
  them on every accepted step in C++ and keeps the worst margin per epoch. k ranges over the
  target's r directions: the paper's extra directions with ``a_k = 0`` (it sets r = d) would
  fail (c)'s lower bound by definition (``0 >= lam/6`` is false), so tdflow leaves them out.
* **Definition 2** (good / potential / bad components at ``(s, 0)``): :func:`partition`.
* **Lemma 5** (only potential components grow past ``delta1`` by ``t1``; good components
  discover their direction): :func:`lemma5_outcome` compares the prediction with the run.

Not in the paper, kept under their own names: :func:`still_fitted` (directions fitted at an
earlier epoch end that are not fitted any more) and :func:`classify_by_escape_time` (tdflow's
escape-time labels of fresh columns, a heuristic, not Definition 2).

Fitted equilibrium under weight decay (checked in tests/test_analysis.py): a column aligned
with ``u_i`` obeys ``dw/dt = l (a_i - â_i) w - (l-2) (a_i - â_i) w - lam w = (2 (a_i - â_i) -
lam) w`` (the model is 2-homogeneous in each column for every order l), so the fitted equilibrium
has ``a_i - â_i = lam/2`` for every order l, inside Proposition 1(c)'s ``[lam/6, lam]`` and
below the ``2 lam`` of "fitted".
"""
from __future__ import annotations

import dataclasses
import math
from typing import Union

import numpy as np

from ._checks import real_array, real_number

GOOD, POTENTIAL, BAD = 0, 1, 2
LABELS = ("good", "potential", "bad")
FIT_RULES = ("paper", "eps-floor")


def alignments(W, U) -> np.ndarray:
    """``w̄_{k,i}^2 = <w_k, u_i>^2 / ||w_k||^2`` as an ``(r, m)`` array (0 for a zero column)."""
    W = real_array(W, "W", 2)
    U = real_array(U, "U", 2, (W.shape[0], None))
    n2 = np.einsum("ij,ij->j", W, W)
    P = U.T @ W
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(n2[None, :] > 0, P * P / n2[None, :], 0.0)
    return out


def a_hat(W, member, r: int) -> np.ndarray:
    """``â_i = sum_{k in S_i} ||w_k||^2``; ``member[k]`` is the direction of column k or -1."""
    W = real_array(W, "W", 2)
    member = np.asarray(member)
    if member.shape != (W.shape[1],):
        raise ValueError(f"member must have shape ({W.shape[1]},), got {member.shape}")
    n2 = np.einsum("ij,ij->j", W, W)
    out = np.zeros(r)
    ok = member >= 0
    np.add.at(out, member[ok], n2[ok])
    return out


def fit_tolerance(a, lam: float, fit_tol: Union[None, str, float] = None,
                  eps: float = 0.0) -> np.ndarray:
    """Per-direction tolerance of "fitted" (``a_i - â_i <= tol``).

    ``fit_tol``: None or ``"paper"``: ``2 lam`` (Section 5.1 of Ge et al. 2021); ``"eps-floor"``
    (tdflow's variant): ``max(2 lam, eps)``, and ``1e-3 a_i`` when both are 0; a number: itself.
    """
    a = np.asarray(a, dtype=float)
    if fit_tol is None or fit_tol == "paper":
        return np.full(a.shape, 2.0 * lam)
    if fit_tol == "eps-floor":
        tol = max(2.0 * lam, eps)
        return np.full(a.shape, tol) if tol > 0 else 1e-3 * a
    if isinstance(fit_tol, str):
        raise ValueError(f"fit_tol must be one of {FIT_RULES} or a number, got {fit_tol!r}")
    return np.full(a.shape, real_number(fit_tol, "fit_tol", minimum=0.0))


def fitted(a, ahat, tol) -> np.ndarray:
    """Boolean mask of fitted directions: ``a_i - â_i <= tol_i``."""
    return np.asarray(a) - np.asarray(ahat) <= np.asarray(tol)


def still_fitted(previously_fitted, fitted_now) -> tuple:
    """tdflow's check (not Proposition 1): the directions fitted before that are not fitted now
    (an empty tuple when every fitted direction stayed fitted)."""
    prev = np.asarray(previously_fitted, dtype=bool)
    return tuple(int(i) for i in np.flatnonzero(prev & ~np.asarray(fitted_now, dtype=bool)))


# ---- Proposition 1 ------------------------------------------------------------------------------
PROP1_CONDITIONS = ("a", "b", "c_lower", "c_upper", "d")


@dataclasses.dataclass(frozen=True)
class Prop1Margins:
    """Margins of Proposition 1's conditions (>= 0: the condition holds; +inf: nothing to check,
    e.g. (a) with every ``S_k`` empty). ``c_lower`` / ``c_upper`` are the two bounds of (c)."""

    a: float
    b: float
    c_lower: float
    c_upper: float
    d: float

    @property
    def ok(self) -> bool:
        return all(getattr(self, c) >= 0 for c in PROP1_CONDITIONS)

    def worst(self, other: "Prop1Margins") -> "Prop1Margins":
        return Prop1Margins(*(min(getattr(self, c), getattr(other, c)) for c in PROP1_CONDITIONS))


def proposition1(W, U, a, member, *, alpha: float, delta1: float, lam: float, epoch: int,
                 beta: float, gamma: float) -> Prop1Margins:
    """Proposition 1 of Ge et al. 2021 on one state ``W``, each condition as a margin:

    (a) ``min_k min_{w in S_k} w̄_k^2 - (1 - alpha)``;
    (b) ``min_{k: S_k != ∅} E_{k,w} w̄_k^2 - (1 - alpha^2 - 4 s m delta1^2)``;
    (c) lower: ``min_k (a_k - â_k) - (lam/6 - s m delta1^2)``; upper:
        ``min_{k: a_k >= beta/(1-gamma)} (lam + s m delta1^2) - (a_k - â_k)``;
    (d) ``min_{w in S_∅} delta1 - ||w||``;

    with ``s = epoch``, ``m`` the number of columns and ``member[k]`` the direction whose S_i
    holds column k (-1: ``S_∅``). A plain transcription (the run computes the same in C++, with
    ``1 - w̄^2`` formed without cancellation)."""
    W = real_array(W, "W", 2)
    U = real_array(U, "U", 2, (W.shape[0], None))
    r, m = U.shape[1], W.shape[1]
    a = real_array(a, "a", 1, (r,))
    member = _member(member, m, r)
    slack = epoch * m * delta1 ** 2
    x = alignments(W, U)
    n2 = np.einsum("ij,ij->j", W, W)
    inside = member >= 0
    cols = np.flatnonzero(inside)
    mar_a = float(np.min(x[member[cols], cols] - (1.0 - alpha))) if cols.size else math.inf
    ah = a_hat(W, member, r)
    mar_b = math.inf
    for k in range(r):
        S = np.flatnonzero(member == k)
        if S.size:
            mean = float(np.sum(n2[S] * x[k, S]) / ah[k])
            mar_b = min(mar_b, mean - (1.0 - alpha ** 2 - 4.0 * slack))
    gap = a - ah
    mar_cl = float(np.min(gap - (lam / 6.0 - slack))) if r else math.inf
    big = a >= beta / (1.0 - gamma)
    mar_cu = float(np.min((lam + slack) - gap[big])) if big.any() else math.inf
    out = ~inside
    mar_d = float(np.min(delta1 - np.sqrt(n2[out]))) if out.any() else math.inf
    return Prop1Margins(mar_a, mar_b, mar_cl, mar_cu, mar_d)


def _member(member, m: int, r: int) -> np.ndarray:
    member = np.asarray(member, dtype=np.int64)
    if member.shape != (m,):
        raise ValueError(f"member must have shape ({m},), got {member.shape}")
    if np.any(member >= r) or np.any(member < -1):
        raise ValueError("member entries must be -1 or a direction index < r")
    return member


# ---- Definition 2 and Lemma 5 -------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Partition:
    """Definition 2 of Ge et al. 2021 on the columns of ``W^(s,0)``: ``good[k, i]``: k in
    ``S_{i,good}``; ``potential[k, i]``: k in ``S_{i,pot}``; ``bad[k]``: k in ``S_bad``;
    ``Gamma``, ``rho`` (r,)."""

    good: np.ndarray
    potential: np.ndarray
    bad: np.ndarray
    Gamma: np.ndarray
    rho: np.ndarray

    def counts(self, columns=None) -> tuple:
        """``(|S_good|, |S_pot|, |S_bad|)`` over ``columns`` (a boolean mask; default all)."""
        sel = np.ones(self.bad.shape, bool) if columns is None else np.asarray(columns, bool)
        return (int(np.sum(self.good.any(axis=1) & sel)),
                int(np.sum(self.potential.any(axis=1) & sel)), int(np.sum(self.bad & sel)))


def partition(W, U, a, discovered, *, lam: float, t1: float, c_rho: float = 0.1,
              order: int = 4) -> Partition:
    """Definition 2 of Ge et al. 2021 (partition of (re-)initialised components), as printed.

    ``Gamma_i = 1/(8 a_i t1')`` if ``S_i^(s,0)`` is empty (``discovered[i]`` False), else
    ``1/(8 lam t1')``; ``rho_i = c_rho Gamma_i``;

    * ``S_{i,good} = {k : v̄_i^2 >= Gamma_i + rho_i and v̄_j^2 <= Gamma_j - rho_j for all j != i}``,
    * ``S_{i,pot}  = {k : v̄_i^2 >= Gamma_i - rho_i}``,
    * ``S_bad      = {k : v̄_i^2 >= Gamma_i - rho_i and v̄_j^2 >= Gamma_j - rho_j for some i != j}``,

    with ``v = W[:, k]`` at ``(s, 0)``. ``t1`` is Lemma 4's ``t1' = Θ(d/(beta log d))``, passed as
    given (``Schedule.t1_parts``); ``c_rho`` is the paper's "small enough absolute constant".
    ``a_i = 0`` (or ``lam = 0`` for a discovered direction) gives ``Gamma_i = inf``: no column is
    good or potential for it. The definition is for 4th-order tensors with orthonormal ``U``:
    other orders and non-orthonormal ``U`` raise ``ValueError``.
    """
    if order != 4:
        raise ValueError(f"Definition 2 (Gamma_i = 1/(8 a_i t1')) is stated for order 4, got "
                         f"order={order}")
    W = real_array(W, "W", 2)
    U = real_array(U, "U", 2, (W.shape[0], None))
    r = U.shape[1]
    a = real_array(a, "a", 1, (r,))
    dev = float(np.max(np.abs(U.T @ U - np.eye(r)))) if r else 0.0
    if dev > 1e-10:
        raise ValueError(f"Definition 2 is stated for orthonormal targets; U^T U differs from I "
                         f"by {dev:.3g}")
    discovered = np.asarray(discovered, dtype=bool)
    if discovered.shape != (r,):
        raise ValueError(f"discovered must have shape ({r},), got {discovered.shape}")
    lam = real_number(lam, "lam", minimum=0.0)
    t1 = real_number(t1, "t1", minimum=0.0, strict=True)
    c_rho = real_number(c_rho, "c_rho", minimum=0.0)
    rate = np.where(discovered, lam, a)
    with np.errstate(divide="ignore"):
        Gamma = np.where(rate > 0, 1.0 / (8.0 * np.where(rate > 0, rate, 1.0) * t1), np.inf)
    rho = c_rho * Gamma
    finite = np.isfinite(Gamma)  # Gamma = inf: no threshold can be met (inf - inf is NaN)
    lower = np.where(finite, Gamma - np.where(finite, rho, 0.0), np.inf)
    upper = np.where(finite, Gamma + np.where(finite, rho, 0.0), np.inf)
    x = alignments(W, U).T  # (m, r)
    potential = x >= lower
    low = x <= lower
    m = x.shape[0]
    good = np.zeros((m, r), bool)
    for i in range(r):
        others = np.delete(low, i, axis=1).all(axis=1)
        good[:, i] = (x[:, i] >= upper[i]) & others
    bad = potential.sum(axis=1) >= 2
    return Partition(good=good, potential=potential, bad=bad, Gamma=Gamma, rho=rho)


@dataclasses.dataclass(frozen=True)
class Lemma5Outcome:
    """Lemma 5 of Ge et al. 2021 against a run, over the columns of ``S_∅`` at ``(s, 0)``.

    tdflow counts consequences of the three statements that a run records, not the statements
    themselves:

    * ``large_not_potential``: columns outside ``S_pot`` whose norm reached ``delta1`` by ``t1``.
      5.1 says more: such a column stays at ``||v|| = O(delta0)`` with every ``v̄_i^2 =
      O(log(d)/d)`` for ``t <= t1``; neither bound (nor its constant) is checked, only that the
      column does not reach ``delta1``, which 5.1 implies since ``delta1 >> delta0``.
    * ``good_undiscovered``: directions with ``S_{i,good}`` non-empty and ``S_i`` empty at
      ``t1``. 5.2 also says some column has norm ``>= delta1`` at ``t1``; not counted.
    * ``large_unjoined``: columns that reached ``delta1`` by ``t1`` and are in no ``S_i`` at
      ``t1``. 5.3 asks for membership at the time the norm is ``>= delta1``: a column that
      crosses badly aligned (and is then reported by Proposition 1(d)) but crosses again aligned
      before ``t1`` passes this count though it fails 5.3 at its first crossing; the run's
      ``events`` (``joined`` False) show every such crossing."""

    large_not_potential: int
    good_undiscovered: int
    large_unjoined: int

    @property
    def ok(self) -> bool:
        return self.large_not_potential == 0 and self.good_undiscovered == 0 \
            and self.large_unjoined == 0


def lemma5_outcome(part: Partition, fresh, reached, joined, discovered_t1) -> Lemma5Outcome:
    """Lemma 5's prediction against the outcome. ``fresh`` (m,): columns in ``S_∅`` at ``(s, 0)``;
    ``reached`` (m,): their norm reached ``delta1`` in ``[0, t1]``; ``joined`` (m,): they joined
    some ``S_i`` by ``t1``; ``discovered_t1`` (r,): ``S_i`` non-empty at ``t1``."""
    fresh, reached, joined = (np.asarray(v, bool) for v in (fresh, reached, joined))
    pot = part.potential.any(axis=1)
    has_good = (part.good & fresh[:, None]).any(axis=0)
    return Lemma5Outcome(
        large_not_potential=int(np.sum(fresh & reached & ~pot)),
        good_undiscovered=int(np.sum(has_good & ~np.asarray(discovered_t1, bool))),
        large_unjoined=int(np.sum(fresh & reached & ~joined)))


# ---- tdflow's escape-time labels (not Definition 2) ------------------------------------------
def escape_times(W, U, a, unfitted, order: int = 4) -> np.ndarray:
    """``tau_{i,k} = 1/(l (l-2) a_i x_{ik}^{(l-2)/2})`` for unfitted directions (inf otherwise):
    the blow-up time of the tensor power flow ``dx/dt = 2 l a x^{l/2}`` of ``x = w̄_i^2``."""
    x = alignments(W, U)
    a = np.asarray(a, dtype=float)
    rate = order * (order - 2) * a[:, None] * x ** ((order - 2) / 2.0)
    rate[~np.asarray(unfitted, dtype=bool)] = 0.0
    with np.errstate(divide="ignore"):
        return np.where(rate > 0, 1.0 / np.where(rate > 0, rate, 1.0), np.inf)


def classify_by_escape_time(W, U, a, unfitted, horizon: float, *, order: int = 4,
                            margin: float = 1.0):
    """tdflow's escape-time labels of fresh columns (a heuristic, not Definition 2): with
    ``tau_(1) <= tau_(2)`` the two smallest :func:`escape_times` and ``H = horizon``, *good* if
    ``tau_(1) <= H`` and ``tau_(2) >= (1 + margin) tau_(1)``, *potential* if not good and
    ``tau_(1) <= (1 + margin) H``, *bad* otherwise. Returns labels (GOOD/POTENTIAL/BAD) and the
    predicted direction (argmin of tau; -1 when no direction is unfitted)."""
    horizon = real_number(horizon, "horizon", minimum=0.0)
    margin = real_number(margin, "margin", minimum=0.0)
    tau = escape_times(W, U, a, unfitted, order)
    m = tau.shape[1]
    labels = np.full(m, BAD, dtype=np.int64)
    pred = np.full(m, -1, dtype=np.int64)
    if tau.shape[0] == 0 or m == 0:
        return labels, pred
    srt = np.sort(tau, axis=0)
    t1 = srt[0]
    t2 = srt[1] if tau.shape[0] > 1 else np.full(m, np.inf)
    finite = np.isfinite(t1)
    pred[finite] = np.argmin(tau, axis=0)[finite]
    good = finite & (t1 <= horizon) & (t2 >= (1.0 + margin) * t1)
    potential = finite & ~good & (t1 <= (1.0 + margin) * horizon)
    labels[good] = GOOD
    labels[potential] = POTENTIAL
    return labels, pred


def fit_order(fitted_t) -> np.ndarray:
    """Directions in the order they were (first) fitted; unfitted ones left out."""
    ft = np.asarray(fitted_t, dtype=float)
    done = np.flatnonzero(np.isfinite(ft))
    return done[np.argsort(ft[done], kind="stable")]

"""Watching Algorithm 2 work: the sets S_i, â_i, discovered/fitted directions, the
good/potential/bad partition of fresh columns and the invariants of Proposition 1
(Ge, Ren, Wang, Zhou 2021, "Understanding Deflation Process in Over-parametrized Tensor
Decomposition"; our reading of Definitions 1-2 and Proposition 1, stated exactly below).

Definitions as implemented (``w̄ = w/||w||``, ``U`` the target directions, order ``l``):

* **S_i** (Definition 1). Column ``k`` joins ``S_i`` at the first accepted integration step
  since its last re-draw at which ``||w_k|| >= delta1`` and ``w̄_{k,i}^2 = <w̄_k, u_i>^2 >= 1 -
  alpha^2``. The check runs in the C++ stepping loop after every accepted step
  (``tdflow._core.integrate_joins``), so no step is missed; the recorded time is the end of that
  step. A column stays in ``S_i`` until it is re-drawn (which happens only if its norm has fallen
  below ``delta1`` at a re-draw).
* ``â_i = sum_{k in S_i} ||w_k||^2``.
* Direction ``i`` is **discovered** when ``S_i`` first becomes non-empty and **fitted** when
  ``a_i - â_i <= fit_tol`` with ``fit_tol = max(2 lam, eps)`` (``Schedule.fit_tol`` overrides
  it; with ``lam = eps = 0`` the default is ``1e-3 a_i``). Under weight decay the fitted
  equilibrium of a direction has ``(T* - T)(u_i^l) = lam/(l-2)`` (``lam/2`` for ``l = 4``),
  below ``2 lam``; the ``eps`` floor makes a run that reached ``||T - T*||_F <= eps`` count
  its directions as fitted (a gap ``a_i - â_i`` shows up in ``||T - T*||_F``). Fit times are
  resolved on the recording grid.
* **Definition 2** (good / potential / bad fresh columns), in the escape-time form we use: with
  only the still-unfitted directions in the residual, a fresh column's alignment
  ``x_i = w̄_i^2`` follows the tensor power flow ``dx_i/dt ~= 2 l a_i x_i^{l/2}``, which blows
  up at ``tau_i = 1 / (l (l-2) a_i x_i^{(l-2)/2})`` (``1/(8 a_i x_i)`` for ``l = 4``). Let
  ``tau_(1) <= tau_(2)`` be the two smallest over unfitted ``i`` and ``H`` the time the column
  has before the next re-draw (``t2`` of this epoch + ``t1`` of the next; ``t1`` for the
  initial draw). The column is

  - *good*      if ``tau_(1) <= H`` and ``tau_(2) >= (1 + margin) tau_(1)`` (a clear winner
    that escapes in time; it is predicted to join ``S_argmin``),
  - *potential* if ``tau_(1) <= (1 + margin) H`` but it is not good (a near tie, or borderline
    in time),
  - *bad*       otherwise (it stays small and is re-drawn again);

  ``margin = 1`` by default (a factor 2).
* **Proposition 1**, checked per epoch at two snapshots (end of phase 1 before the re-draw,
  end of phase 2), each check reporting the worst measured value:

  (a) members stay aligned: ``min_{i, k in S_i} w̄_{k,i}^2 >= 1 - alpha^2``;
  (b) non-members stay small: ``max_{k not in any S_i} ||w_k|| < delta1``;
  (c) no over-fit: ``â_i - a_i <= lam + 2 alpha^2 a_i`` for every i (the slack allows for
      weight decay and for a member's mass off ``u_i``: with ``w̄_i^2 >= 1 - alpha^2`` a member
      puts at least ``(1 - alpha^2)^2`` of its mass on ``u_i^{(x)4}``); the reported quantity is
      ``max_i (â_i - a_i)``;
  (d) fitted directions stay fitted: every direction fitted at the end of an earlier epoch is
      still fitted (``a_i - â_i <= fit_tol``) at both snapshots.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from ._checks import real_array, real_number

GOOD, POTENTIAL, BAD = 0, 1, 2
LABELS = ("good", "potential", "bad")


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


def fit_tolerance(a, lam: float, fit_tol: Optional[float] = None, eps: float = 0.0) -> np.ndarray:
    """Per-direction tolerance of "fitted": ``fit_tol`` if given, else ``max(2 lam, eps)``
    (``eps`` the run's target accuracy), else (both 0) ``1e-3 a_i``."""
    a = np.asarray(a, dtype=float)
    if fit_tol is not None:
        return np.full(a.shape, real_number(fit_tol, "fit_tol", minimum=0.0))
    tol = max(2.0 * lam, eps)
    if tol > 0:
        return np.full(a.shape, tol)
    return 1e-3 * a


def fitted(a, ahat, tol) -> np.ndarray:
    """Boolean mask of fitted directions: ``a_i - â_i <= tol_i``."""
    return np.asarray(a) - np.asarray(ahat) <= np.asarray(tol)


def escape_times(W, U, a, unfitted, order: int = 4) -> np.ndarray:
    """``tau_{i,k} = 1/(l (l-2) a_i x_{ik}^{(l-2)/2})`` for unfitted directions (inf otherwise)."""
    x = alignments(W, U)
    a = np.asarray(a, dtype=float)
    rate = order * (order - 2) * a[:, None] * x ** ((order - 2) / 2.0)
    rate[~np.asarray(unfitted, dtype=bool)] = 0.0
    with np.errstate(divide="ignore"):
        return np.where(rate > 0, 1.0 / np.where(rate > 0, rate, 1.0), np.inf)


def classify_fresh(W, U, a, unfitted, horizon: float, *, order: int = 4, margin: float = 1.0):
    """Definition 2 (see the module docstring): labels (GOOD/POTENTIAL/BAD per column) and the
    predicted direction (argmin of the escape time; -1 when no direction is unfitted)."""
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


@dataclasses.dataclass
class Prop1Check:
    """Proposition 1's checks (a)-(d) on one state, with the measured quantities."""

    a: bool
    b: bool
    c: bool
    d: bool
    min_member_alignment: float  # (a): min over members of w̄_i^2 (1.0 when S is empty)
    max_nonmember_norm: float  # (b): 0.0 when every column is a member
    max_excess: float  # (c): max_i (â_i - a_i)
    unfitted_again: tuple  # (d): directions fitted before, not any more

    @property
    def ok(self) -> bool:
        return self.a and self.b and self.c and self.d

    def merge(self, other: "Prop1Check") -> "Prop1Check":
        """The worse of two snapshots, check by check."""
        return Prop1Check(
            self.a and other.a, self.b and other.b, self.c and other.c, self.d and other.d,
            min(self.min_member_alignment, other.min_member_alignment),
            max(self.max_nonmember_norm, other.max_nonmember_norm),
            max(self.max_excess, other.max_excess),
            tuple(sorted(set(self.unfitted_again) | set(other.unfitted_again))),
        )


def check_proposition1(W, U, a, member, *, delta1: float, alpha: float, lam: float,
                       fit_tol=None, eps: float = 0.0, previously_fitted=None) -> Prop1Check:
    """Checks (a)-(d) of Proposition 1 on the state ``W`` (thresholds in the module docstring).

    ``member[k]`` is the direction whose ``S_i`` holds column ``k`` (-1: none);
    ``previously_fitted`` a boolean mask of the directions fitted at an earlier epoch end.
    """
    W = real_array(W, "W", 2)
    U = real_array(U, "U", 2, (W.shape[0], None))
    a = real_array(a, "a", 1, (U.shape[1],))
    member = np.asarray(member, dtype=np.int64)
    if member.shape != (W.shape[1],):
        raise ValueError(f"member must have shape ({W.shape[1]},), got {member.shape}")
    if np.any(member >= U.shape[1]) or np.any(member < -1):
        raise ValueError("member entries must be -1 or a direction index < r")
    r = U.shape[1]
    x = alignments(W, U)
    norms = np.linalg.norm(W, axis=0)
    is_member = member >= 0
    min_align = float(x[member[is_member], np.flatnonzero(is_member)].min()) if is_member.any() else 1.0
    max_out = float(norms[~is_member].max()) if (~is_member).any() else 0.0
    ah = a_hat(W, member, r)
    excess = float(np.max(ah - a))
    tol = fit_tolerance(a, lam, fit_tol, eps)
    now = fitted(a, ah, tol)
    prev = np.zeros(r, bool) if previously_fitted is None else np.asarray(previously_fitted, bool)
    lost = tuple(int(i) for i in np.flatnonzero(prev & ~now))
    return Prop1Check(
        a=min_align >= 1.0 - alpha ** 2,
        b=max_out < delta1,
        c=bool(np.all(ah - a <= lam + 2.0 * alpha ** 2 * a)),
        d=not lost,
        min_member_alignment=min_align,
        max_nonmember_norm=max_out,
        max_excess=excess,
        unfitted_again=lost,
    )


def fit_order(fitted_t) -> np.ndarray:
    """Directions in the order they were (first) fitted; unfitted ones left out."""
    ft = np.asarray(fitted_t, dtype=float)
    done = np.flatnonzero(np.isfinite(ft))
    return done[np.argsort(ft[done], kind="stable")]

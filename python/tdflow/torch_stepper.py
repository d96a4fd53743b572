"""One explicit Runge-Kutta stepper on torch tensors, over the core's own tableau data: the
stepper of ``runge_kutta.hpp`` and the drivers of ``integrate.hpp``, for every method of
``_core.methods()``.

No coefficient is written here. :func:`tableau` reads, from ``_core.tableau(method)``, the
Butcher tableau (c, A, b), the embedded error rows (``e``; dop853: ``e`` and ``e2`` with
``e2_weight``), the dense output (weights ``P`` or Hairer's ``D``) and the step-size controller's
constants (``controller``, controller.hpp): a tableau added to ``tableaux.hpp`` runs here as it
is. The operations follow the core's one by one (stage sums in the same order, zero
coefficients skipped, the error measured per column, the same accept/reject rule and starting
step), so a torch run takes the same steps as the core's, to rounding.
"""
from __future__ import annotations

import copy
import functools
import math
import time
from typing import Callable

import numpy as np
import torch

from . import _core
from .torch_kernels import column_norms

_EPS = np.finfo(float).eps
_MAX = np.finfo(float).max


@functools.lru_cache(maxsize=None)
def tableau(method: str) -> dict:
    """``_core.tableau(method)``, read once (ValueError naming the methods if unknown)."""
    return _core.tableau(method)


def _finite(X) -> bool:
    return bool(torch.isfinite(X).all())


# ---- the error of a step, per column (runge_kutta.hpp, detail::column_error_*) -----------------
def column_error_ratios(E, Y, Z, rtol: float, atol: float):
    """``||e_j|| / (atol + rtol max(||y_j||, ||z_j||))`` per column, as the core."""
    e = column_norms(E)
    scale = atol + rtol * torch.maximum(column_norms(Y), column_norms(Z))
    inf = torch.full_like(e, math.inf)
    return torch.where(e == 0, torch.zeros_like(e), torch.where(scale > 0, e / scale, inf))


def _sum_squares(r, unit: float = 1.0) -> float:
    q = r / unit
    return float((q * q).sum())


def column_error_norm(E, Y, Z, rtol: float, atol: float) -> float:
    """``sqrt(mean_j ratio_j^2)``; squares that overflow are summed relative to the largest
    ratio, as the core."""
    r = column_error_ratios(E, Y, Z, rtol, atol)
    total = _sum_squares(r)
    if not total > _MAX:
        return math.sqrt(total / E.shape[1])
    rmax = float(r.max())
    if not math.isfinite(rmax):
        return rmax
    return rmax * math.sqrt(_sum_squares(r, rmax) / E.shape[1])


def combine(base, h: float, coef, K):
    """``base + h * sum_s coef[s] K[s]`` (base None: zero; zero coefficients skipped), as
    runge_kutta.hpp's detail::combine."""
    out = torch.zeros_like(K[0]) if base is None else base.clone()
    for c, k in zip(coef, K):
        if c != 0.0:
            out.add_(k, alpha=h * c)
    return out


class RungeKutta:
    """runge_kutta.hpp's RungeKutta: the stages ``K`` of one method for the right-hand side
    ``f``. They stay valid for the error estimate and the dense output until :meth:`accept`."""

    def __init__(self, tab: dict, f: Callable):
        self.tab, self.f = tab, f
        self.stages, self.fsal = tab["stages"], tab["fsal"]
        self.K = [None] * tab["dense_stages"]
        self.F = []  # the rows F_3.. of a Hermite dense output (prepare_dense)
        self.f0_ready = self.dense_ready = False

    def start(self, W) -> None:
        """``K_0 = f(W)``."""
        self.K[0] = self.f(W)
        self.f0_ready = True

    def step(self, W, h: float):
        """The stages of a step of size h from W; returns the new state (an FSAL method's last
        stage is f there)."""
        if not self.f0_ready:
            self.start(W)
        A, K, s = self.tab["A"], self.K, self.stages
        last = s - 1 if self.fsal else s
        for i in range(1, last):
            K[i] = self.f(combine(W, h, A[i], K))
        Wn = combine(W, h, self.tab["b"][:last], K)
        if self.fsal:
            K[s - 1] = self.f(Wn)
        self.dense_ready = False
        return Wn

    def last_stage_finite(self) -> bool:
        return not self.fsal or _finite(self.K[self.stages - 1])

    def error_norm(self, W, Wn, h: float, rtol: float, atol: float) -> float:
        """The step's error relative to the tolerances (<= 1: accept), per column. Two error
        rows (dop853.f): ``|h| S1 / sqrt(m (S1 + e2_weight S2))``, ``S_k = sum_j ratio_kj^2``."""
        tab, K = self.tab, self.K
        if "e2" not in tab:
            return column_error_norm(combine(None, h, tab["e"], K), W, Wn, rtol, atol)
        r1 = column_error_ratios(combine(None, 1.0, tab["e"], K), W, Wn, rtol, atol)
        r2 = column_error_ratios(combine(None, 1.0, tab["e2"], K), W, Wn, rtol, atol)
        s1, s2, unit = _sum_squares(r1), _sum_squares(r2), 1.0
        if s1 == 0.0 and s2 == 0.0:
            return 0.0
        if s1 > _MAX or s2 > _MAX:  # relative to the largest ratio, as the core
            unit = max(float(r1.max()), float(r2.max()))
            if not math.isfinite(unit):
                return unit
            s1, s2 = _sum_squares(r1, unit), _sum_squares(r2, unit)
        return abs(h) * unit * s1 / math.sqrt((s1 + tab["e2_weight"] * s2) * W.shape[1])

    def prepare_dense(self, W, h: float) -> None:
        """The dense-only stages (dop853: 3 more RHS, only on steps that need the dense output)
        and the rows F of a Hermite form, once per step."""
        if self.dense_ready:
            return
        A, K = self.tab["A"], self.K
        for i in range(self.stages, len(K)):
            K[i] = self.f(combine(W, h, A[i], K))
        self.F = [combine(None, h, row, K) for row in self.tab.get("D", ())]
        self.dense_ready = True

    def dense(self, th: float, W, Wn, h: float):
        """``y(t + th h)`` (after :meth:`prepare_dense`)."""
        if self.tab["dense"] == "weights":
            return combine(W, h, self._weights(th), self.K)
        # Hairer's form, the innermost term first: F_{4+r} enters F_{3+r} times theta for even
        # r and times 1 - theta for odd r (F_3 enters F_2 times 1 - theta)
        x, x1 = th, 1.0 - th
        f0, f1 = self.K[0], self.K[self.stages - 1]
        F0 = Wn - W
        F1 = h * f0 - F0
        v = 2.0 * F0 - h * (f0 + f1)
        if self.F:
            y = self.F[-1]
            for r in range(len(self.F) - 2, -1, -1):
                y = self.F[r] + (x if r % 2 == 0 else x1) * y
            v = v + x1 * y
        return W + x * (F0 + x1 * (F1 + x * v))

    def columns(self, idx) -> "RungeKutta":
        """This step on the columns ``idx`` only (after :meth:`prepare_dense`): its stages
        indexed once, so that :meth:`dense` of a few columns costs no more than they do."""
        sub = copy.copy(self)
        sub.K = [None if k is None else k[:, idx] for k in self.K]
        sub.F = [f[:, idx] for f in self.F]
        return sub

    def _weights(self, th: float) -> list:
        """``b_j(theta) = sum_k P[j][k] theta^(k+1)`` of the weights form."""
        P = self.tab["P"]
        pw = [th]
        for _ in range(1, len(P[0])):
            pw.append(pw[-1] * th)
        out = []
        for p in P:
            v = p[0] * pw[0]
            for k in range(1, len(p)):
                v += p[k] * pw[k]
            out.append(v)
        return out

    def accept(self) -> None:
        """The step was taken: an FSAL method's last stage is the next step's first."""
        if self.fsal:
            self.K[0] = self.K[self.stages - 1]
        else:
            self.f0_ready = False


class Run:
    """One integration's state and the drivers of integrate.hpp on torch tensors.

    ``observe(t, W)`` at each recording time; ``update(t)`` (progress) at most every
    ``interval`` seconds, an error in it stops the run; ``hook.step(t, t_new, W, Wn, dense)``
    on every accepted step (:class:`tdflow.torch_events.Watch`), where ``dense(idx)`` is the
    continuous extension of the columns ``idx``, a function of ``theta`` in [0, 1].
    ``flow.rhs`` is the system."""

    def __init__(self, flow, W, t0: float, t_eval, observe, update, interval, hook=None):
        self.flow, self.W, self.t, self.t_eval = flow, W, t0, t_eval
        self.observe, self.update, self.interval = observe, update, interval
        self.hook = hook
        self.status, self.error = "finished", None
        self.n_steps = self.n_rhs = self.n_rejected = 0
        self.h_last = 0.0
        self.last_tick = time.monotonic()

    def f(self, W):
        self.n_rhs += 1
        return self.flow.rhs(W)

    def tick(self, t: float, force: bool = False) -> bool:
        """Progress at most every ``interval`` seconds; an error in it stops the run."""
        if self.update is None:
            return False
        now = time.monotonic()
        if not force and now - self.last_tick < self.interval:
            return False
        self.last_tick = now
        try:
            self.update(t)
        except BaseException as err:  # handed back with the partial result, as the core does
            self.status, self.error = "stopped", err
            return True
        return False

    def _record_start(self) -> int:
        """Records the times equal to the start; returns how many."""
        i = 0
        while i < len(self.t_eval) and self.t_eval[i] == self.t:
            self.observe(self.t, self.W)
            i += 1
        return i

    def _show_step(self, rk: RungeKutta, t: float, t_new: float, W, Wn, h: float) -> None:
        """Hands an accepted step and its continuous extension to the hook, if any."""
        if self.hook is None:
            return

        def dense(idx):
            rk.prepare_dense(W, h)
            sub, Wi, Wni = rk.columns(idx), W[:, idx], Wn[:, idx]
            return lambda th: sub.dense(th, Wi, Wni, h)

        self.hook.step(t, t_new, W, Wn, dense)

    def _take(self, rk: RungeKutta, Wn, t_new: float) -> None:
        self.W = Wn
        rk.accept()
        self.t = t_new
        self.n_steps += 1

    def fixed(self, method: str, h: float, max_steps: int) -> None:
        """integrate_fixed: equal steps no longer than h that land on every recording time."""
        rk = RungeKutta(tableau(method), self.f)
        self.h_last = h
        i = self._record_start()
        for tb in self.t_eval[i:]:
            ta = self.t
            if tb == ta:
                self.observe(tb, self.W)
                continue
            n = max(1, int(math.ceil((tb - ta) / h - 1e-9)))
            hs = (tb - ta) / n
            for s in range(n):
                if max_steps > 0 and self.n_steps >= max_steps:
                    self.status = "max-steps"
                    return
                W = self.W
                Wn = rk.step(W, hs)
                if not _finite(Wn):
                    self.status = "non-finite"
                    return
                t_new = tb if s + 1 == n else ta + (s + 1) * hs
                self._show_step(rk, self.t, t_new, W, Wn, hs)
                self._take(rk, Wn, t_new)
                if self.tick(self.t):
                    return
            self.observe(tb, self.W)

    def _first_step(self, f0, rtol: float, atol: float, c: dict, t_end: float) -> float:
        """Hairer's starting step (II.4): compare the state with its derivative, then try one
        Euler step; the constants are the core's (``c``: controller.hpp)."""
        W = self.W
        d0 = column_error_norm(W, W, W, rtol, atol)
        d1 = column_error_norm(f0, W, W, rtol, atol)
        h0 = c["first_ratio"] * d0 / d1 if d1 > 0 else math.nan
        if d0 < c["first_min_norm"] or d1 < c["first_min_norm"] or not (h0 > 0 and math.isfinite(h0)):
            h0 = c["first_fallback"]
        h0 = min(h0, t_end - self.t)
        f1 = self.f(W + h0 * f0)
        d2 = column_error_norm((f1 - f0) / h0, W, W, rtol, atol)
        dm = max(d1, d2)
        if dm <= c["first_flat"]:
            h1 = max(c["first_fallback"], h0 * c["first_flat_ratio"])
        else:
            h1 = (c["first_ratio"] / dm) ** -c["exponent"]
        h = min(c["first_growth"] * h0, h1)
        return h if h > 0 and math.isfinite(h) else h0  # h0 if f(W + h0 f0) overflowed

    def adaptive(self, method: str, h: float, rtol: float, atol: float, max_step: float,
                 max_steps: int) -> None:
        """integrate_adaptive: an embedded pair under the core's step-size controller."""
        tab = tableau(method)
        c = tab["controller"]
        exponent, tiny = c["exponent"], c["tiny"] * _EPS  # steps below tiny |t| cannot advance t
        t_eval = self.t_eval
        t_end = t_eval[-1]
        i = self._record_start()
        if i == len(t_eval):
            return
        rk = RungeKutta(tab, self.f)
        rk.start(self.W)
        if not _finite(rk.K[0]):  # the RHS overflows at the start: no step can help
            self.status = "non-finite"
            return
        if not (h > 0):
            h = self._first_step(rk.K[0], rtol, atol, c, t_end)
        h = min(h, max_step)

        rejected_last = False
        while self.t < t_end:
            if max_steps > 0 and self.n_steps + self.n_rejected >= max_steps:
                self.status = "max-steps"
                return
            t, W = self.t, self.W
            last = False
            if t + h >= t_end or t + c["stretch"] * h >= t_end:
                h = t_end - t
                last = True
            self.h_last = h
            if not h > tiny * abs(t):  # NaN counts as tiny
                self.status = "step-too-small"
                return
            Wn = rk.step(W, h)
            err = rk.error_norm(W, Wn, h, rtol, atol)
            if not math.isfinite(err) or not _finite(Wn) or not rk.last_stage_finite():
                # shrink hard; a state that blows up at every step size is reported as non-finite
                rejected_last = True
                self.n_rejected += 1
                h *= c["nonfinite_factor"]
                if not h > tiny * abs(t):
                    self.status = "non-finite"
                    return
                continue
            if err > 1.0:
                self.n_rejected += 1
                h *= max(c["min_factor"], c["safety"] * err ** exponent)
                rejected_last = True
                continue
            # accepted: dense output at the recording times inside (t, t + h]
            t_new = t_end if last else t + h
            while i < len(t_eval) and t_eval[i] <= t_new:
                if t_eval[i] == t_new:
                    self.observe(t_new, Wn)
                else:
                    rk.prepare_dense(W, h)
                    self.observe(t_eval[i], rk.dense((t_eval[i] - t) / h, W, Wn, h))
                i += 1
            self._show_step(rk, t, t_new, W, Wn, h)
            self._take(rk, Wn, t_new)
            factor = (c["max_factor"] if err == 0.0
                      else min(c["max_factor"], c["safety"] * err ** exponent))
            if rejected_last:
                factor = min(1.0, factor)
            rejected_last = False
            h = min(h * factor, max_step)
            if self.tick(self.t):
                return

"""Definition 1 and Proposition 1 of Ge et al. 2021 (Algorithm 2) watched on every accepted step
of a torch run: the core's ``integrate_joins`` and ``DeflationWatch`` (events.hpp) on torch
tensors, so that ``tdflow.deflate(..., backend="cuda")`` runs its phases on the device.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np
import torch

from .gpu import integrate

_EPS = np.finfo(float).eps


def integrate_joins(flow, W0: np.ndarray, t0: float, t_eval: np.ndarray, method: str,
                    h: float, rtol: float, atol: float, max_step: float, max_steps: int,
                    save_norms: bool, save_states: bool, member: np.ndarray, delta1: float,
                    alpha: float, epoch: int, beta: float, gamma: float,
                    update: Optional[Callable[[float], None]] = None,
                    interval: float = 0.1) -> dict:
    """:func:`tdflow.gpu.integrate` on ``flow`` plus Definition 1 and Proposition 1
    on every accepted step (the core's ``integrate_joins``, events.hpp): a column of S_∅
    (``member`` -1) joins S_i where its norm crosses ``delta1`` (located on the dense output) if
    ``<w, u_i>^2 / ||w||^2 >= 1 - alpha^2`` there; the worst margin of each condition of
    Proposition 1."""
    delta1, alpha, beta, gamma = float(delta1), float(alpha), float(beta), float(gamma)
    if not (delta1 > 0 and math.isfinite(delta1)):
        raise ValueError("delta1 must be finite and > 0")
    if not 0 < alpha < 1:
        raise ValueError("alpha must lie in (0, 1)")
    if int(epoch) < 0:
        raise ValueError("epoch must be >= 0")
    if not (beta > 0 and math.isfinite(beta)):
        raise ValueError("beta must be finite and > 0")
    if not 0 <= gamma < 1:
        raise ValueError("gamma must lie in [0, 1)")
    member = np.asarray(member).ravel()
    if member.shape != (np.shape(W0)[1],):
        raise ValueError(f"member must have shape ({np.shape(W0)[1]},), got {member.shape}")
    r = flow.U.shape[1]
    if np.any(member != np.floor(member)) or np.any(member < -1) or np.any(member >= r):
        raise ValueError("member entries must be -1 or a direction index < r")
    m = member.size
    watch = Watch(flow, member.astype(np.int64), delta1, alpha,
                  slack=int(epoch) * m * delta1 * delta1, big=beta / (1.0 - gamma))
    out = integrate(flow, W0, t0, t_eval, method, h, rtol, atol, max_step, max_steps,
                    save_norms, save_states, update, interval, watch)
    out.update(watch.result())
    return out


class Watch:
    """Definition 1 and Proposition 1 on the device (events.hpp, DeflationWatch): crossings of
    delta1 located on the dense output by regula falsi (Illinois), margins kept on the device."""

    CONDITIONS = ("a", "b", "c_lower", "c_upper", "d")

    def __init__(self, flow, member: np.ndarray, delta1: float, alpha: float,
                 slack: float, big: float):
        self.flow, self.delta1, self.alpha, self.slack = flow, delta1, alpha, slack
        dev = flow.device
        self.member = torch.tensor(member, dtype=torch.int64, device=dev)
        self.big = flow.a >= big
        self.worst = torch.full((5,), math.inf, dtype=torch.float64, device=dev)
        self.when = torch.full((5,), math.nan, dtype=torch.float64, device=dev)
        self.below = None
        self.crossings = []
        self.checks = 0

    def _misalignment(self, Y, dirs):
        """``1 - wbar_i^2`` of the columns of Y for directions dirs, without cancellation."""
        Ui = self.flow.U[:, dirs]
        p = (Ui * Y).sum(0)
        E = Y - Ui * p
        n2 = (Y * Y).sum(0)
        mis = torch.where(n2 > 0, (E * E).sum(0) / torch.where(n2 > 0, n2, 1.0),
                          torch.ones_like(n2))
        return torch.clamp(mis, max=1.0)

    def start(self, t: float, W) -> None:
        self.check(t, W)

    def step(self, t: float, t_new: float, W, Wn, dense) -> None:
        d1sq = self.delta1 * self.delta1
        below = (Wn * Wn).sum(0) < d1sq
        change = (self.member < 0) & (below != self.below)
        if bool(change.any()):
            self.locate(t, t_new, W, Wn, dense, torch.nonzero(change).flatten())
        self.check(t_new, Wn)

    def locate(self, t, t_new, W, Wn, dense, idx) -> None:
        d1sq = self.delta1 * self.delta1
        was_below = self.below[idx]
        lo = torch.zeros(idx.numel(), dtype=torch.float64, device=W.device)
        hi = torch.ones_like(lo)
        glo = (W[:, idx] ** 2).sum(0) - d1sq
        ghi = (Wn[:, idx] ** 2).sum(0) - d1sq
        last = torch.zeros_like(lo)
        theta, Y = hi.clone(), Wn[:, idx]
        eps4 = 4 * _EPS
        # each column's dense output, its stages indexed once: a column's own theta costs O(d)
        columns = [dense(idx[j:j + 1]) for j in range(idx.numel())]
        for _ in range(200):
            active = (hi - lo) > eps4
            if not bool(active.any()):
                break
            th = (lo * ghi - hi * glo) / (ghi - glo)
            th = torch.where((th > lo) & (th < hi), th, 0.5 * (lo + hi))
            th = torch.where(active, th, theta)
            # the dense output at each column's own theta
            Yn = torch.cat([y(x) for y, x in zip(columns, th.tolist())], 1)
            g = (Yn * Yn).sum(0) - d1sq
            Y = torch.where(active[None, :], Yn, Y)
            theta = th
            same = (g < 0) == (glo < 0)
            up_lo, up_hi = active & same, active & ~same
            ghi = torch.where(up_lo & (last == -1), 0.5 * ghi, ghi)
            glo = torch.where(up_hi & (last == 1), 0.5 * glo, glo)
            lo, glo = torch.where(up_lo, th, lo), torch.where(up_lo, g, glo)
            hi, ghi = torch.where(up_hi, th, hi), torch.where(up_hi, g, ghi)
            last = torch.where(up_lo, -1.0, torch.where(up_hi, 1.0, last))
            done = active & (g == 0)
            lo, hi = torch.where(done, th, lo), torch.where(done, th, hi)
        f = self.flow
        P = Y[: f.U.shape[1]] if f.basis else f.U.T @ Y
        best = (P * P).argmax(0)
        mis = self._misalignment(Y, best)
        joined = mis <= self.alpha * self.alpha
        self.member[idx[joined]] = best[joined]
        host = [x.cpu().numpy() for x in (idx, best, theta, torch.sqrt((Y * Y).sum(0)), mis,
                                          was_below, joined)]
        for k, i, th, n, ms, up, ok in zip(*host):
            self.crossings.append((int(k), int(i), t + float(th) * (t_new - t), float(n),
                                   float(ms), bool(up), bool(ok)))

    def check(self, t: float, W) -> None:
        self.checks += 1
        f, a = self.flow, self.flow.a
        n2 = (W * W).sum(0)
        self.below = n2 < self.delta1 * self.delta1
        inside = self.member >= 0
        dirs = torch.where(inside, self.member, torch.zeros_like(self.member))
        mis = self._misalignment(W, dirs)
        inf = torch.tensor(math.inf, dtype=torch.float64, device=W.device)
        r = a.shape[0]
        m_a = torch.where(inside, self.alpha - mis, inf).min() if W.shape[1] else inf
        w = torch.where(inside, n2, torch.zeros_like(n2))
        ahat = torch.zeros(r, dtype=torch.float64, device=W.device).index_add_(0, dirs, w)
        msum = torch.zeros_like(ahat).index_add_(0, dirs, w * mis)
        count = torch.zeros_like(ahat).index_add_(0, dirs, inside.to(torch.float64))
        mean = torch.where(ahat > 0, msum / torch.where(ahat > 0, ahat, 1.0), torch.ones_like(ahat))
        m_b = torch.where(count > 0, self.alpha ** 2 + 4 * self.slack - mean, inf).min()
        gap = a - ahat
        m_cl = (gap - (f.lam / 6.0 - self.slack)).min() if r else inf
        m_cu = torch.where(self.big, f.lam + self.slack - gap, inf).min() if r else inf
        m_d = torch.where(inside, inf, self.delta1 - torch.sqrt(n2)).min() if W.shape[1] else inf
        vals = torch.stack([m_a, m_b, m_cl, m_cu, m_d])
        better = vals < self.worst
        self.worst = torch.where(better, vals, self.worst)
        self.when = torch.where(better, torch.full_like(vals, t), self.when)

    def result(self) -> dict:
        ev = self.crossings
        cols = lambda j, dt: np.array([e[j] for e in ev], dtype=dt)  # noqa: E731
        worst, when = self.worst.cpu().numpy(), self.when.cpu().numpy()
        return dict(crossing_column=cols(0, np.int64), crossing_direction=cols(1, np.int64),
                    crossing_t=cols(2, float), crossing_norm=cols(3, float),
                    crossing_misalignment=cols(4, float), crossing_upward=cols(5, bool),
                    crossing_joined=cols(6, bool), member=self.member.cpu().numpy(),
                    prop1_margin={c: float(v) for c, v in zip(self.CONDITIONS, worst)},
                    prop1_t={c: float(v) for c, v in zip(self.CONDITIONS, when)},
                    n_checks=self.checks)

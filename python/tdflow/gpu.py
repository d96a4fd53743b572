"""The deflation flow on PyTorch tensors: the optional GPU backend (``backend="cuda"``).

Longer than 400 lines on purpose, for now: it transcribes the steppers, the active set, the
records and Definition 1's watch of ``integrate.hpp`` / ``events.hpp`` in one place; issue 17
(item 5) rebuilds it on the tableau data exported from the core, leaving the tensor kernels here.

Why PyTorch (rather than CUDA kernels in the extension, or CuPy):

* the work is fp64 GEMMs on Gram blocks plus elementwise powers, which cuBLAS (through
  ``torch.mm``/``addmm``) runs at the device's fp64 peak; a hand-written CUDA kernel would gain
  little and need a CUDA toolchain at build time, which the wheel must not require;
* it installs as an optional extra (``pip install 'tdflow[gpu]'``) that the core never imports;
* the same code runs on the CPU (``backend="torch"``), so this module is tested on machines
  without a GPU against the C++ core, to rounding.

The model, the active set and the steppers are those of the C++ core (``flow.hpp``,
``integrate.hpp``), transcribed operation by operation: RHS in unit directions, the same
exponent-bucket active set, Euler / RK4 with steps shortened onto the recording times, and
Dormand-Prince 5(4) and DOP853 with the same per-column error norm, starting step, controller
and dense output (coefficients read from the core, ``_core.tableau``); ``integrate_joins`` adds
Definition 1 and Proposition 1 of Algorithm 2 (events.hpp) on every accepted step, so
``tdflow.deflate(..., backend="cuda")`` runs its phases here. States stay on the device for the
whole run; only recordings (and a few scalars per step) come back to the host.

No m x m matrix is formed: every Gram matrix ``Z^T V`` is computed in blocks of at most
``block x block`` entries (sources and output columns both blocked), raised to its power while
it is small and accumulated into the ``d x m`` output. Peak memory is ``O(m d)`` plus a few
blocks (``block = 4096``: 128 MiB per fp64 block, small next to a GPU's memory and large enough
that each GEMM is ``2 * 4096^2 * d`` flops).
"""
from __future__ import annotations

import math
import time
from typing import Callable, Optional

import numpy as np

torch = None  # imported on first use: ``import tdflow`` must stay fast and work without torch

BLOCK = 4096  # default Gram block edge (sources x output columns)
BACKENDS = ("cpu", "cuda", "torch")

_EPS = np.finfo(float).eps
_MAX = np.finfo(float).max
_MIN_EXP, _N_BUCKETS = -1100, 2200  # frexp exponents of squared norms (as flow.hpp)

def require_torch():
    """The torch module, or an ImportError that says how to get it."""
    global torch
    if torch is None:
        try:
            import torch as module
        except ImportError as err:
            raise ImportError("backend 'cuda'/'torch' needs PyTorch: pip install 'tdflow[gpu]' "
                              "(or pip install torch)") from err
        torch = module
    return torch


def device_for(backend: str):
    """The torch device of ``backend`` ("cuda": the current CUDA device; "torch": torch's
    default device). Raises ImportError without torch, RuntimeError without CUDA."""
    require_torch()
    if backend == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("backend='cuda' needs a CUDA device, but torch.cuda.is_available() "
                               "is False (a CPU-only torch build, or no GPU visible); use "
                               "backend='cpu' (the C++ core) or backend='torch'")
        return torch.device("cuda", torch.cuda.current_device())
    if backend == "torch":
        get = getattr(torch, "get_default_device", None)
        return get() if get is not None else torch.empty(0).device
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def _gram(Z, V):
    """One Gram block ``Z^T V`` (every Gram entry of this module is formed here)."""
    return Z.T @ V


def _power(G, q: int):
    """``G^q`` elementwise by repeated products, as the C++ core's Power<q>."""
    out = G.clone() if q == 1 else G * G
    for _ in range(q - 2):
        out.mul_(G)
    return out


class _Part:
    """A CP part ``sum_k c_k z_k^{(x)l}``; ``basis``: Z is the first k standard basis vectors."""

    __slots__ = ("Z", "c", "basis")

    def __init__(self, Z, c, basis=False):
        self.Z, self.c, self.basis = Z, c, basis


class TorchFlow:
    """The deflation flow of :class:`tdflow.GradientFlow` on torch tensors on ``device``.

    Same model and active set as the C++ core; every method takes and returns torch tensors
    (``d x m`` float64 on ``device``). ``block`` bounds every Gram block to ``block x block``.
    """

    def __init__(self, U: np.ndarray, a: np.ndarray, order: int, lam: float, active_tol: float,
                 device, *, basis: bool = False, block: Optional[int] = None):
        require_torch()
        self.device = torch.device(device)
        self.order = int(order)
        self.lam = float(lam)
        self.active_tol = float(active_tol)
        self.block = int(BLOCK if block is None else block)
        if self.block < 1:
            raise ValueError(f"block must be >= 1, got {self.block}")
        self.U = torch.tensor(np.array(U, dtype=np.float64), device=self.device)
        self.a = torch.tensor(np.array(a, dtype=np.float64), device=self.device)
        self.basis = bool(basis)
        self.target_part = _Part(self.U, self.a, self.basis)
        self.target_norm = math.sqrt(max(self._inner([self.target_part]), 0.0))
        self.n_active = 0
        self.n_rhs = 0

    # ---- conversions -------------------------------------------------------------------
    def to_device(self, W: np.ndarray):
        """A float64 copy of ``W`` on the device (the caller's array is never written)."""
        return torch.tensor(np.array(W, dtype=np.float64), device=self.device)

    @staticmethod
    def to_host(X) -> np.ndarray:
        return np.asfortranarray(X.detach().cpu().numpy())

    # ---- blocked contractions ----------------------------------------------------------
    def _blocks(self, n: int):
        b = self.block
        return ((k0, min(n, k0 + b)) for k0 in range(0, n, b))

    def _contract(self, parts, V, q: int):
        """``out(:, j) = sum_parts sum_k c_k <z_k, v_j>^q z_k`` (d x m)."""
        out = torch.zeros_like(V)
        for j0, j1 in self._blocks(V.shape[1]):
            VJ, outJ = V[:, j0:j1], out[:, j0:j1]
            for part in parts:
                for k0, k1 in self._blocks(part.Z.shape[1]):
                    if part.basis:
                        G = _power(VJ[k0:k1], q)
                        outJ[k0:k1].addcmul_(part.c[k0:k1, None], G)
                    else:
                        G = _power(_gram(part.Z[:, k0:k1], VJ), q)
                        outJ.addmm_(part.Z[:, k0:k1] * part.c[k0:k1], G)
        return out

    def _evaluate(self, parts, V, l: int):
        """``out(j) = sum_parts sum_k c_k <z_k, v_j>^l`` (m)."""
        out = torch.zeros(V.shape[1], dtype=V.dtype, device=V.device)
        for j0, j1 in self._blocks(V.shape[1]):
            VJ = V[:, j0:j1]
            for part in parts:
                for k0, k1 in self._blocks(part.Z.shape[1]):
                    G = VJ[k0:k1] if part.basis else _gram(part.Z[:, k0:k1], VJ)
                    out[j0:j1] += part.c[k0:k1] @ _power(G, l)
        return out

    def _identity(self, k: int):
        return torch.eye(self.U.shape[0], k, dtype=torch.float64, device=self.device)

    def _inner(self, parts) -> float:
        """``||sum parts||_F^2`` as ``sum_b c_b . T(z_b^l)`` (not clamped)."""
        total = None
        for pb in parts:
            if pb.Z.shape[1] == 0:
                continue
            V = self._identity(pb.Z.shape[1]) if pb.basis else pb.Z
            v = pb.c @ self._evaluate(parts, V, self.order)
            total = v if total is None else total + v
        return 0.0 if total is None else float(total)

    # ---- the model -----------------------------------------------------------------------
    def _prepare(self, W):
        """Unit directions, norms and the residual's parts ``[T*, -sum_active ||w||^2 wbar^l]``."""
        n = torch.sqrt((W * W).sum(0))
        small = n < 1e-150
        if not bool(small.any()):
            Wbar = W * (1.0 / n)
        else:  # squares underflow: the scaled norm; 1/n overflows for subnormal n
            amax = W.abs().amax(0)
            safe = torch.where(amax > 0, amax, torch.ones_like(amax))
            scaled = amax * torch.sqrt(((W / safe) ** 2).sum(0))
            n = torch.where(small, scaled, n)
            safe = torch.where(n > 0, n, torch.ones_like(n))
            inv = 1.0 / safe
            Wbar = torch.where(torch.isfinite(inv), W * inv, W / safe)
            Wbar = torch.where(n > 0, Wbar, torch.zeros_like(Wbar))
        idx = self._active(n)
        if idx is None:
            self.n_active = W.shape[1]
            model = _Part(Wbar, -(n * n))
        else:
            self.n_active = int(idx.numel())
            model = _Part(Wbar[:, idx], -(n[idx] * n[idx]))
        parts = [self.target_part] + ([model] if model.Z.shape[1] > 0 else [])
        return Wbar, n, parts

    def _active(self, norms):
        """Indices of the columns kept in the residual (None: all), as ActiveSet::select."""
        budget = self.active_tol * self.target_norm
        if not budget > 0:
            return None
        n = norms.detach().cpu().numpy()
        n2 = n * n
        if n2.min() > budget:
            return None
        if np.cumsum(n2)[-1] <= budget:  # sequential sum, as the core
            return torch.zeros(0, dtype=torch.long, device=self.device)
        _, e = np.frexp(n2)
        e = np.where(n2 > 0, e, _MIN_EXP)
        bucket = np.clip(e, _MIN_EXP, _MIN_EXP + _N_BUCKETS - 1) - _MIN_EXP
        sums = np.bincount(bucket, weights=n2, minlength=_N_BUCKETS)
        dropped, cut, hi = 0.0, int(bucket.min()), int(bucket.max())
        while cut <= hi and dropped + sums[cut] <= budget:
            dropped += sums[cut]
            cut += 1
        keep = np.flatnonzero(bucket >= cut)
        if keep.size == n.size:
            return None
        return torch.as_tensor(keep, dtype=torch.long, device=self.device)

    def rhs(self, W):
        """``-grad L(W)``: ``l ||w|| R(wbar^{l-1}, I) - (l-2) R(wbar^l) w - lam w``."""
        l = self.order
        Wbar, n, parts = self._prepare(W)
        P = self._contract(parts, Wbar, l - 1)
        s = (P * Wbar).sum(0)
        self.n_rhs += 1
        return (l * n) * P - ((l - 2) * s + self.lam) * W

    def residual_norm_squared(self, W) -> float:
        """``||T* - T||_F^2`` clamped at 0 (rounding can make the sum slightly negative)."""
        _, _, parts = self._prepare(W)
        v = self._inner(parts)
        return max(v, 0.0) if math.isfinite(v) else v

    def loss(self, W) -> float:
        return 0.5 * self.residual_norm_squared(W) + 0.5 * self.lam * float((W * W).sum())

    def directional_residual(self, W):
        """``(T* - T)(u_i^{(x)l})`` (r)."""
        _, _, parts = self._prepare(W)
        V = self._identity(self.U.shape[1]) if self.basis else self.U
        return self._evaluate(parts, V, self.order)

    # ---- integration -----------------------------------------------------------------------
    def integrate(self, W0: np.ndarray, t0: float, t_eval: np.ndarray, method: str, h: float,
                  rtol: float, atol: float, max_step: float, max_steps: int, save_norms: bool,
                  save_states: bool, update: Optional[Callable[[float], None]] = None,
                  interval: float = 0.1) -> dict:
        """Run a stepper; returns the same dict as the core's ``GradientFlow.integrate``
        (``error``: an exception raised by Ctrl-C or by ``update`` during the run, else None)."""
        return self._integrate(W0, t0, t_eval, method, h, rtol, atol, max_step, max_steps,
                               save_norms, save_states, update, interval, None)

    def integrate_joins(self, W0: np.ndarray, t0: float, t_eval: np.ndarray, method: str,
                        h: float, rtol: float, atol: float, max_step: float, max_steps: int,
                        save_norms: bool, save_states: bool, member: np.ndarray, delta1: float,
                        alpha: float, epoch: int, beta: float, gamma: float,
                        update: Optional[Callable[[float], None]] = None,
                        interval: float = 0.1) -> dict:
        """:meth:`integrate` plus Definition 1 and Proposition 1 on every accepted step (the
        core's ``integrate_joins``, events.hpp): a column of S_∅ (``member`` -1) joins S_i where
        its norm crosses ``delta1`` (located on the dense output) if ``<w, u_i>^2 / ||w||^2 >=
        1 - alpha^2`` there; the worst margin of each condition of Proposition 1."""
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
        r = self.U.shape[1]
        if np.any(member != np.floor(member)) or np.any(member < -1) or np.any(member >= r):
            raise ValueError("member entries must be -1 or a direction index < r")
        m = member.size
        watch = _Watch(self, member.astype(np.int64), delta1, alpha,
                       slack=int(epoch) * m * delta1 * delta1, big=beta / (1.0 - gamma))
        out = self._integrate(W0, t0, t_eval, method, h, rtol, atol, max_step, max_steps,
                              save_norms, save_states, update, interval, watch)
        out.update(watch.result())
        return out

    def _integrate(self, W0, t0, t_eval, method, h, rtol, atol, max_step, max_steps, save_norms,
                   save_states, update, interval, hook):
        rec = _Recorder(self, bool(save_norms), bool(save_states))
        run = _Run(self, self.to_device(W0), float(t0), [float(t) for t in t_eval], rec,
                   update, interval, hook)
        try:
            if hook is not None:
                hook.start(run.t, run.W)
            if method in _SCHEMES:
                run.adaptive(method, h, rtol, atol, max_step, max_steps)
            else:
                run.fixed(method, h, max_steps)
        except KeyboardInterrupt as err:
            run.status, run.error = "stopped", err
        if run.status == "finished" and update is not None:
            run.tick(run.t, force=True)
        out = rec.to_dict(self.to_host(run.W), self.U.shape[1], self.U.shape[0])
        out.update(status=run.status, t_final=run.t, n_steps=run.n_steps, n_rhs=run.n_rhs,
                   n_rejected=run.n_rejected, h_last=run.h_last, error=run.error)
        return out


class _Watch:
    """Definition 1 and Proposition 1 on the device (events.hpp, DeflationWatch): crossings of
    delta1 located on the dense output by regula falsi (Illinois), margins kept on the device."""

    CONDITIONS = ("a", "b", "c_lower", "c_upper", "d")

    def __init__(self, flow: TorchFlow, member: np.ndarray, delta1: float, alpha: float,
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
        for _ in range(200):
            active = (hi - lo) > eps4
            if not bool(active.any()):
                break
            th = (lo * ghi - hi * glo) / (ghi - glo)
            th = torch.where((th > lo) & (th < hi), th, 0.5 * (lo + hi))
            th = torch.where(active, th, theta)
            # the dense output at each column's own theta
            Yn = torch.stack([dense(float(x))[:, k] for x, k in zip(th.tolist(), idx.tolist())], 1)
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


class _Recorder:
    """What a run records at each requested time (on the host)."""

    def __init__(self, flow: TorchFlow, save_norms: bool, save_states: bool):
        self.flow, self.save_norms, self.save_states = flow, save_norms, save_states
        self.ts, self.losses, self.rnorms, self.dirs, self.norms, self.states = [], [], [], [], [], []

    def __call__(self, t: float, W) -> None:
        f = self.flow
        self.ts.append(t)
        rn2 = f.residual_norm_squared(W)
        with np.errstate(invalid="ignore"):
            self.rnorms.append(float(np.sqrt(rn2)))
        self.losses.append(0.5 * rn2 + 0.5 * f.lam * float((W * W).sum()))
        self.dirs.append(f.directional_residual(W).cpu().numpy())
        if self.save_norms:
            self.norms.append(torch.sqrt((W * W).sum(0)).cpu().numpy())
        if self.save_states:
            self.states.append(W.cpu().numpy())

    def to_dict(self, W: np.ndarray, r: int, d: int) -> dict:
        n = len(self.ts)
        out = dict(t=np.array(self.ts, dtype=float), loss=np.array(self.losses, dtype=float),
                   residual_norm=np.array(self.rnorms, dtype=float),
                   directional_residual=np.array(self.dirs, dtype=float).reshape(n, r), W=W)
        if self.save_norms:
            out["norms"] = np.array(self.norms, dtype=float).reshape(n, W.shape[1])
        if self.save_states:
            out["states"] = np.array(self.states, dtype=float).reshape(n, d, W.shape[1])
        return out


def _finite(X) -> bool:
    return bool(torch.isfinite(X).all())


def _norms(X):
    """Column norms; columns whose squares overflow (norms > 1e154) are rescaled first."""
    n2 = (X * X).sum(0)
    amax = X.abs().amax(0)
    safe = torch.where(amax > 0, amax, torch.ones_like(amax))
    scaled = amax * torch.sqrt(((X / safe) ** 2).sum(0))
    return torch.where(torch.isinf(n2), scaled, torch.sqrt(n2))


def _column_error_ratios(E, Y, Z, rtol: float, atol: float):
    """``||e_j|| / (atol + rtol max(||y_j||, ||z_j||))`` per column, as the core."""
    e = _norms(E)
    scale = atol + rtol * torch.maximum(_norms(Y), _norms(Z))
    inf = torch.full_like(e, math.inf)
    return torch.where(e == 0, torch.zeros_like(e), torch.where(scale > 0, e / scale, inf))


def _sum_squares(r, unit: float = 1.0) -> float:
    q = r / unit
    return float((q * q).sum())


def _column_error_sum(E, Y, Z, rtol: float, atol: float) -> float:
    """``sum_j ratio_j^2`` (see :func:`_column_error_ratios`)."""
    return _sum_squares(_column_error_ratios(E, Y, Z, rtol, atol))


def _column_error_norm(E, Y, Z, rtol: float, atol: float) -> float:
    """``sqrt(mean_j ratio_j^2)``; squares that overflow are summed relative to the largest
    ratio, as the core."""
    r = _column_error_ratios(E, Y, Z, rtol, atol)
    total = _sum_squares(r)
    if not total > _MAX:
        return math.sqrt(total / E.shape[1])
    rmax = float(r.max())
    if not math.isfinite(rmax):
        return rmax
    return rmax * math.sqrt(_sum_squares(r, rmax) / E.shape[1])


def _tiny_step(h: float, t: float) -> bool:
    """h below the resolution of t (relative to t, as the core); NaN counts as tiny."""
    return not h > 16 * _EPS * abs(t)


class _Run:
    """One integration's state: the steppers of integrate.hpp on torch tensors."""

    def __init__(self, flow: TorchFlow, W, t0: float, t_eval, observe, update, interval,
                 hook=None):
        self.flow, self.W, self.t, self.t_eval = flow, W, t0, t_eval
        self.observe, self.update, self.interval = observe, update, interval
        self.hook = hook  # hook.step(t, t_new, W, Wn, dense) on every accepted step (_Watch)
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

    def fixed(self, method: str, h: float, max_steps: int) -> None:
        t_eval, W = self.t_eval, self.W
        self.h_last = h
        i = 0
        while i < len(t_eval) and t_eval[i] == self.t:
            self.observe(self.t, W)
            i += 1
        for tb in t_eval[i:]:
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
                if method == "euler":
                    K1 = self.f(W)
                    Wn = W + hs * K1
                else:
                    K1 = self.f(W)
                    K2 = self.f(W + (0.5 * hs) * K1)
                    K3 = self.f(W + (0.5 * hs) * K2)
                    K4 = self.f(W + hs * K3)
                    Wn = W + (hs / 6.0) * (K1 + 2.0 * K2 + 2.0 * K3 + K4)
                if not _finite(Wn):
                    self.status = "non-finite"
                    return
                t_new = tb if s + 1 == n else ta + (s + 1) * hs
                if self.hook is not None:
                    if method == "euler":
                        dense = lambda th, W=W, K1=K1: W + (th * hs) * K1  # noqa: E731
                    else:
                        def dense(th, W=W, K=(K1, K2, K3, K4)):  # RK4's 3rd-order extension
                            t2, t3 = th * th, th * th * th
                            b1, b2 = th - 1.5 * t2 + 2.0 * t3 / 3.0, t2 - 2.0 * t3 / 3.0
                            b4 = -0.5 * t2 + 2.0 * t3 / 3.0
                            return W + hs * (b1 * K[0] + b2 * (K[1] + K[2]) + b4 * K[3])
                    self.hook.step(self.t, t_new, W, Wn, dense)
                self.W = Wn
                self.t = t_new
                self.n_steps += 1
                if self.tick(self.t):
                    return
            self.observe(tb, self.W)

    def adaptive(self, method: str, h: float, rtol: float, atol: float, max_step: float,
                 max_steps: int) -> None:
        """integrate.hpp's integrate_adaptive: ``method`` is "dopri5" or "dop853"."""
        t_eval = self.t_eval
        t_end = t_eval[-1]
        i = 0
        while i < len(t_eval) and t_eval[i] == self.t:
            self.observe(self.t, self.W)
            i += 1
        if i == len(t_eval):
            return
        scheme = _SCHEMES[method](self.f, self.f(self.W))
        if not _finite(scheme.K[0]):  # the RHS overflows at the start: no step can help
            self.status = "non-finite"
            return
        exponent = -1.0 / (scheme.error_order + 1)

        if not (h > 0):  # Hairer's starting step
            W, f0 = self.W, scheme.K[0]
            d0 = _column_error_norm(W, W, W, rtol, atol)
            d1 = _column_error_norm(f0, W, W, rtol, atol)
            h0 = 0.01 * d0 / d1 if d1 > 0 else math.nan
            if d0 < 1e-5 or d1 < 1e-5 or not (h0 > 0 and math.isfinite(h0)):
                h0 = 1e-6
            h0 = min(h0, t_end - self.t)
            f1 = self.f(W + h0 * f0)
            d2 = _column_error_norm((f1 - f0) / h0, W, W, rtol, atol)
            dm = max(d1, d2)
            h1 = max(1e-6, h0 * 1e-3) if dm <= 1e-15 else (0.01 / dm) ** -exponent
            h = min(100 * h0, h1)
            if not (h > 0 and math.isfinite(h)):  # f(W + h0 f0) overflowed
                h = h0
        h = min(h, max_step)

        rejected_last = False
        while self.t < t_end:
            if max_steps > 0 and self.n_steps + self.n_rejected >= max_steps:
                self.status = "max-steps"
                return
            t, W = self.t, self.W
            last = False
            if t + h >= t_end or t + 1.01 * h >= t_end:
                h = t_end - t
                last = True
            self.h_last = h
            if _tiny_step(h, t):
                self.status = "step-too-small"
                return
            Wn = scheme.attempt(W, h)
            err = scheme.error_norm(W, Wn, h, rtol, atol)
            if not math.isfinite(err) or not _finite(Wn) or not _finite(scheme.K[-1]):
                rejected_last = True
                self.n_rejected += 1
                h *= 0.1
                if _tiny_step(h, t):
                    self.status = "non-finite"
                    return
                continue
            if err > 1.0:
                self.n_rejected += 1
                h *= max(0.2, 0.9 * err ** exponent)
                rejected_last = True
                continue
            t_new = t_end if last else t + h
            while i < len(t_eval) and t_eval[i] <= t_new:
                if t_eval[i] == t_new:
                    self.observe(t_new, Wn)
                else:
                    scheme.prepare_dense(W, h)
                    self.observe(t_eval[i], scheme.dense((t_eval[i] - t) / h, W, Wn, h))
                i += 1
            if self.hook is not None:
                def dense(th, W=W, Wn=Wn, h=h):
                    scheme.prepare_dense(W, h)
                    return scheme.dense(th, W, Wn, h)
                self.hook.step(t, t_new, W, Wn, dense)
            self.W = Wn
            scheme.accept()
            self.t = t_new
            self.n_steps += 1
            factor = 10.0 if err == 0.0 else min(10.0, 0.9 * err ** exponent)
            if rejected_last:
                factor = min(1.0, factor)
            rejected_last = False
            h = min(h * factor, max_step)
            if self.tick(self.t):
                return


def _combine(base, h: float, coef, K):
    """``base + h * sum_s coef[s] K[s]`` (zero coefficients skipped), as integrate.hpp."""
    out = base.clone()
    for c, k in zip(coef, K):
        if c != 0.0:
            out.add_(k, alpha=h * c)
    return out


class _Dopri5:
    """Dormand-Prince 5(4): integrate.hpp's Dopri5Scheme. ``K[-1]`` is f at the new state."""

    error_order = 4

    def __init__(self, f, f0):
        tab = _tableau("dopri5")
        self.A, self.b, self.e, self.P = tab["A"], tab["b"], tab["e"], tab["P"]
        self.f, self.K = f, [f0] + [None] * 6

    def attempt(self, W, h: float):
        K = self.K
        for s in range(1, 6):
            K[s] = self.f(_combine(W, h, self.A[s], K))
        Wn = _combine(W, h, self.b, K)
        K[6] = self.f(Wn)
        return Wn

    def error_norm(self, W, Wn, h: float, rtol: float, atol: float) -> float:
        E = _combine(torch.zeros_like(W), h, self.e, self.K)
        return _column_error_norm(E, W, Wn, rtol, atol)

    def prepare_dense(self, W, h: float) -> None:
        pass  # the dense output needs no further stage

    def dense(self, th: float, W, Wn, h: float):
        pw = (th, th * th, th * th * th, th * th * th * th)
        q = [P[0] * pw[0] + P[1] * pw[1] + P[2] * pw[2] + P[3] * pw[3] for P in self.P]
        return _combine(W, h, q, self.K)

    def accept(self) -> None:
        self.K[0] = self.K[6]  # first same as last


class _Dop853:
    """DOP853 (integrate.hpp's Dop853Scheme): 12 stages, the 5th/3rd-order error estimates of
    dop853.f, and a 7th-order dense output costing 3 more RHS on steps that hold a record."""

    error_order = 7

    def __init__(self, f, f0):
        tab = _tableau("dop853")
        self.A, self.E3, self.E5, self.D = tab["A"], tab["E3"], tab["E5"], tab["D"]
        self.f, self.K = f, [f0] + [None] * 12
        self.extra = None

    def attempt(self, W, h: float):
        K = self.K[:13]
        for s in range(1, 12):
            K[s] = self.f(_combine(W, h, self.A[s], K))
        Wn = _combine(W, h, self.A[12], K)
        K[12] = self.f(Wn)
        self.K, self.extra = K, None
        return Wn

    def error_norm(self, W, Wn, h: float, rtol: float, atol: float) -> float:
        zero = torch.zeros_like(W)
        r5 = _column_error_ratios(_combine(zero, 1.0, self.E5, self.K), W, Wn, rtol, atol)
        r3 = _column_error_ratios(_combine(zero, 1.0, self.E3, self.K), W, Wn, rtol, atol)
        s5, s3, unit = _sum_squares(r5), _sum_squares(r3), 1.0
        if s5 == 0.0 and s3 == 0.0:
            return 0.0
        if s5 > _MAX or s3 > _MAX:  # relative to the largest ratio, as the core
            unit = max(float(r5.max()), float(r3.max()))
            if not math.isfinite(unit):
                return unit
            s5, s3 = _sum_squares(r5, unit), _sum_squares(r3, unit)
        return abs(h) * unit * s5 / math.sqrt((s5 + 0.01 * s3) * W.shape[1])

    def prepare_dense(self, W, h: float) -> None:
        if self.extra is not None:
            return
        K = list(self.K)
        for s in range(13, 16):
            K.append(self.f(_combine(W, h, self.A[s], K)))
        self.extra = [_combine(torch.zeros_like(W), h, row, K) for row in self.D]

    def dense(self, x: float, W, Wn, h: float):
        F0 = Wn - W
        F1 = h * self.K[0] - F0
        F2 = 2.0 * F0 - h * (self.K[0] + self.K[12])
        F3, F4, F5, F6 = self.extra
        y = 1.0 - x
        v = F2 + y * (F3 + x * (F4 + y * (F5 + x * F6)))
        return W + x * (F0 + y * (F1 + x * v))

    def accept(self) -> None:
        self.K[0] = self.K[12]


_SCHEMES = {"dopri5": _Dopri5, "dop853": _Dop853}
_TABLEAUX: dict = {}


def _tableau(method: str) -> dict:
    if method not in _TABLEAUX:
        from . import _core

        _TABLEAUX[method] = _core.tableau(method)
    return _TABLEAUX[method]

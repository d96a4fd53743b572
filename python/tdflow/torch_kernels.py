"""The deflation flow's tensor kernels on PyTorch (``flow.hpp`` / ``cp_tensor.hpp`` of the core):
the Gram-block contractions, the active set, the right-hand side, the loss and the residuals.

Imported only once torch is (:func:`tdflow.gpu.require_torch`). :class:`TorchFlow` hands its
runs to :func:`tdflow.gpu.integrate` (the stepper of :mod:`tdflow.torch_stepper` over the core's
tableaux) and to :mod:`tdflow.torch_events` (Definition 1's watch).

No m x m matrix is formed: every Gram matrix ``Z^T V`` is computed in blocks of at most
``block x block`` entries (sources and output columns both blocked), raised to its power while
it is small and accumulated into the ``d x m`` output. Peak memory is ``O(m d)`` plus a few
blocks (``BLOCK = 4096``: 128 MiB per fp64 block, small next to a GPU's memory and large enough
that each GEMM is ``2 * 4096^2 * d`` flops).
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

from . import _core

BLOCK = 4096  # default Gram block edge (sources x output columns)

# read from the core (flow.hpp), so that both backends select the same columns
_MIN_EXP, _N_BUCKETS = _core.ACTIVE_SET_MIN_EXP, _core.ACTIVE_SET_BUCKETS  # ActiveSet's buckets
_UNDERFLOW = _core.UNDERFLOW_NORM  # norms below this are recomputed scaled (squares underflow)


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
        small = n < _UNDERFLOW
        if not bool(small.any()):
            Wbar = W * (1.0 / n)
        else:  # squares underflow: the scaled norm; 1/n overflows for subnormal n
            n = torch.where(small, column_norms(W, scaled=True), n)
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

    # ---- runs (the core's integrate / integrate_joins) -----------------------------------------
    def integrate(self, *args, **kwargs) -> dict:
        """Run a stepper (:func:`tdflow.gpu.integrate`) on this flow."""
        from .gpu import integrate

        return integrate(self, *args, **kwargs)

    def integrate_joins(self, *args, **kwargs) -> dict:
        """A run watched by Definition 1 and Proposition 1:
        :func:`tdflow.torch_events.integrate_joins` on this flow."""
        from .torch_events import integrate_joins

        return integrate_joins(self, *args, **kwargs)


def column_norms(X, scaled: bool = False):
    """Column norms of X. Columns whose squares overflow (norms > 1e154) are rescaled by their
    largest entry first; ``scaled``: every column is (squares that underflow)."""
    amax = X.abs().amax(0)
    safe = torch.where(amax > 0, amax, torch.ones_like(amax))
    rescaled = amax * torch.sqrt(((X / safe) ** 2).sum(0))
    if scaled:
        return rescaled
    n2 = (X * X).sum(0)
    return torch.where(torch.isinf(n2), rescaled, torch.sqrt(n2))

"""The model and objective of the beyond-lazy variant (Section 4 of Wang, Wu, Lee, Ma, Ge 2020):
``T = sum_i a_i c_i^{l-2} u_i^{(x)l}`` and ``f(U, C, Ĉ, A)`` with its gradient over ``U`` (the
scalars held fixed), and Algorithm 1's state :class:`VariantState`. The algorithm itself and the
printed statements: :mod:`tdflow.beyond_lazy`.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from ._checks import real_array, real_number
from .cp import CPTensor
from .target import Target


def target_arg(target) -> Target:
    if not isinstance(target, Target):
        raise TypeError(f"target must be a tdflow.Target, got {type(target).__name__}")
    return target


def check_parts(target: Target, U, signs, c, c_hat=None):
    U = real_array(U, "U", 2, (target.dim, None))
    m = U.shape[1]
    if m < 1:
        raise ValueError("U must have m >= 1 columns")
    signs = real_array(signs, "signs", 1, (m,))
    if not np.all(np.abs(signs) == 1.0):
        raise ValueError("signs must hold only +1 and -1")
    c = real_array(c, "c", 1, (m,))
    if np.any(c <= 0):
        raise ValueError("c must be > 0")
    if c_hat is not None:
        c_hat = real_array(c_hat, "c_hat", 1, (m,))
        if np.any(c_hat <= 0):
            raise ValueError("c_hat must be > 0")
    return U, signs, c, c_hat


def model_tensor(U, signs, c, order) -> CPTensor:
    # unit directions keep every Gram entry in [-1, 1]; the size goes into the coefficient
    norms = np.linalg.norm(U, axis=0)
    keep = norms > 0
    n = norms[keep]
    with np.errstate(over="ignore", invalid="ignore"):
        # (c ||u||)^{l-2} ||u||^2: c ||u|| is kappa or 1 in Algorithm 1, so no overflow there
        weight = signs[keep] * (c[keep] * n) ** (order - 2) * n ** 2
    if not np.all(np.isfinite(weight)):
        raise FloatingPointError("a component weight overflowed (NaN/Inf); try a smaller eta")
    return CPTensor(U[:, keep] / n, weight, order)


def variant_model(target: Target, U, signs, c) -> CPTensor:
    """The model ``T = sum_i a_i c_i^{l-2} u_i^{(x)l}`` of Section 4 as a :class:`CPTensor`
    (``a_i`` = ``signs``; zero columns dropped); its order is the target's."""
    target = target_arg(target)
    U, signs, c, _ = check_parts(target, U, signs, c)
    return model_tensor(U, signs, c, target.order)


def variant_loss(target: Target, U, signs, c, c_hat, lam: float = 0.0) -> float:
    """The objective of Section 4, ``f = 1/2 ||T - T*||_F^2 + lam sum_i ĉ_i^{l-2} ||u_i||^l``.

    ``U`` is d x m, ``signs``, ``c``, ``c_hat`` have shape (m,).
    """
    target = target_arg(target)
    U, signs, c, c_hat = check_parts(target, U, signs, c, c_hat)
    lam = real_number(lam, "lam", minimum=0.0)
    return loss_and_residual(target, U, signs, c, c_hat, lam)[0]


def loss_and_residual(target, U, signs, c, c_hat, lam):
    """(f, ||T - T*||_F)."""
    R = model_tensor(U, signs, c, target.order) - target.tensor
    rn = math.sqrt(max(R.inner(R), 0.0))
    norms = np.linalg.norm(U, axis=0)
    return 0.5 * rn * rn + lam * float(np.sum(c_hat ** (target.order - 2) * norms ** target.order)), rn


def variant_gradient(target: Target, U, signs, c, c_hat, lam: float = 0.0) -> np.ndarray:
    """``∇_U f`` with ``c`` and ``c_hat`` held fixed, as Algorithm 1 takes it (d x m)."""
    target = target_arg(target)
    U, signs, c, c_hat = check_parts(target, U, signs, c, c_hat)
    lam = real_number(lam, "lam", minimum=0.0)
    return grad_u(target, U, signs, c, c_hat, lam)


def grad_u(target, U, signs, c, c_hat, lam):
    l = target.order
    norms = np.linalg.norm(U, axis=0)
    R = model_tensor(U, signs, c, l) - target.tensor
    safe = np.where(norms > 0, norms, 1.0)
    # R(u^{l-1}, I) = ||u||^{l-1} R(ū^{l-1}, I); a zero column has zero gradient
    G = R.contract(U / safe) * (l * signs * (c * norms) ** (l - 2) * norms)
    G += (lam * l * (c_hat * norms) ** (l - 2)) * U
    return G


@dataclasses.dataclass
class VariantState:
    """Algorithm 1's state: ``U`` (d x m), ``signs`` (the paper's ``a_i``), ``c``, ``c_hat``
    (m,), ``scalar_mode`` (m,) booleans: True once the column's scalar-mode switch has happened
    since its last (re)initialisation; ``drawn`` the number of columns drawn so far."""

    U: np.ndarray
    signs: np.ndarray
    c: np.ndarray
    c_hat: np.ndarray
    scalar_mode: np.ndarray
    drawn: int

    def copy(self) -> "VariantState":
        return VariantState(self.U.copy(), self.signs.copy(), self.c.copy(), self.c_hat.copy(),
                            self.scalar_mode.copy(), self.drawn)

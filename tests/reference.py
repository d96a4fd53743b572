"""Plain NumPy reference implementations that the C++ core is held against.

Two levels: Gram-matrix formulas written the obvious way (any d), and brute-force dense d^l
arrays built with einsum (small d only). Nothing here is optimised; clarity is the point.
"""
from __future__ import annotations

import string

import numpy as np


# ---- symmetric CP tensors through Gram matrices -------------------------------------------

def contract(Z, c, V, order):
    """T(v^{l-1}, I) for each column of V, T = sum_j c_j z_j^{(x)l}."""
    G = Z.T @ V
    return Z @ (c[:, None] * G ** (order - 1))


def contract_mixed(Z, c, V, U, order):
    """T(v^{l-2}, u, I) for paired columns of V and U."""
    return Z @ (c[:, None] * (Z.T @ V) ** (order - 2) * (Z.T @ U))


def evaluate(Z, c, V, order):
    """T(v^l) for each column of V."""
    return (c[:, None] * (Z.T @ V) ** order).sum(axis=0)


def inner(Z1, c1, Z2, c2, order):
    return float(c1 @ (Z1.T @ Z2) ** order @ c2)


# ---- dense d^l arrays (small d) ------------------------------------------------------------

def dense(Z, c, order):
    """The full d^l array sum_j c_j z_j^{(x)l}."""
    letters = string.ascii_lowercase[:order]
    spec = ",".join(f"{x}j" for x in letters) + ",j->" + letters
    return np.einsum(spec, *([Z] * order), c)


def dense_apply(T, vectors):
    """Contract the first len(vectors) modes of a dense tensor with the given vectors."""
    out = T
    for v in vectors:
        out = np.tensordot(v, out, axes=(0, 0))
    return out


# ---- the deflation model -------------------------------------------------------------------

def model_parts(W, order):
    """T = sum_k w_k^{(x)l} / ||w_k||^{l-2} as components and coefficients (zero columns drop out)."""
    norms = np.linalg.norm(W, axis=0)
    keep = norms > 0
    return W[:, keep], norms[keep] ** (-(order - 2))


def residual_parts(U, a, W, order):
    Zw, cw = model_parts(W, order)
    return np.hstack([U, Zw]), np.concatenate([a, -cw])


def loss(U, a, W, order, lam):
    Z, c = residual_parts(U, a, W, order)
    return 0.5 * inner(Z, c, Z, c, order) + 0.5 * lam * np.sum(W * W)


def residual_norm(U, a, W, order):
    Z, c = residual_parts(U, a, W, order)
    return np.sqrt(max(inner(Z, c, Z, c, order), 0.0))


def directional_residual(U, a, W, order):
    Z, c = residual_parts(U, a, W, order)
    return evaluate(Z, c, U, order)


def rhs(U, a, W, order, lam, columns=None):
    """-grad L, written straight from DESIGN.md: l R(w^{l-1},I)/||w||^{l-2} - (l-2) R(w^l)/||w||^l w - lam w.
    With ``columns``, only those columns of it (each costs O(m d))."""
    Z, c = residual_parts(U, a, W, order)
    columns = range(W.shape[1]) if columns is None else columns
    out = np.zeros((W.shape[0], len(columns)))
    for i, k in enumerate(columns):
        w = W[:, k]
        n = np.linalg.norm(w)
        if n == 0:
            continue
        Rw = contract(Z, c, w[:, None], order)[:, 0]
        Rww = evaluate(Z, c, w[:, None], order)[0]
        out[:, i] = order * Rw / n ** (order - 2) - (order - 2) * Rww / n ** order * w - lam * w
    return out


def rhs_dense(U, a, W, order, lam):
    """The same right-hand side from a dense d^l residual array (small d only)."""
    Zw, cw = model_parts(W, order)
    R = dense(U, a, order) - (dense(Zw, cw, order) if Zw.shape[1] else 0.0)
    out = np.zeros_like(W)
    for k in range(W.shape[1]):
        w = W[:, k]
        n = np.linalg.norm(w)
        if n == 0:
            continue
        Rw = dense_apply(R, [w] * (order - 1))
        Rww = float(Rw @ w)
        out[:, k] = order * Rw / n ** (order - 2) - (order - 2) * Rww / n ** order * w - lam * w
    return out


def rk4(f, W, h, n_steps):
    """Classic RK4 with a fixed step, the textbook way."""
    for _ in range(n_steps):
        k1 = f(W)
        k2 = f(W + 0.5 * h * k1)
        k3 = f(W + 0.5 * h * k2)
        k4 = f(W + h * k3)
        W = W + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return W


def euler(f, W, h, n_steps):
    for _ in range(n_steps):
        W = W + h * f(W)
    return W

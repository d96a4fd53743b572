"""Dense symmetric arrays of shape ``(d,)*l``: the symmetry check, batched contractions, and the
norms of a dense array deflated by rank-one terms, and CP tensors written out densely.

Dense arrays come from users of TensorLy and NumPy; tdflow's own tensors stay in CP form. Every
routine here works on row blocks of the ``(d, d^(l-1))`` or ``(d^(l-1), d)`` unfolding so that
its scratch stays within a few ``_BLOCK`` entries besides the array (a power method run on a
19.5 MiB array, d = 40, l = 4, peaked at 17 MiB more; TensorLy's at 58.6 MiB).
"""
from __future__ import annotations

import numpy as np

from ._checks import real_array, show

SYMMETRY_TOL = 1e-10  # largest |T - T with two axes swapped| allowed, relative to max |T|
_BLOCK = 1 << 20  # entries of scratch per block (8 MiB)


def symmetric_array(T, name: str = "T", tol: float = SYMMETRY_TOL) -> np.ndarray:
    """``T`` as a C-contiguous float64 array of shape ``(d,)*l``, ``l >= 3``, symmetric.

    Symmetry: ``max |T - T.swapaxes(i, i+1)| <= tol * max |T|`` over the adjacent axis pairs
    (they generate every permutation, so any permutation moves ``T`` by at most ``l(l-1)/2``
    times that). A ``ValueError`` names ``name``, the entry of largest asymmetry and its size.
    """
    if isinstance(T, (str, bytes)) or T is None:
        raise TypeError(f"{name} must be a dense symmetric array of shape (d,)*l, got {show(T)}")
    try:
        ndim = np.ndim(T)
    except Exception:  # ragged nested lists: real_array says what is wrong
        ndim = 3
    arr = real_array(T, name, ndim, order="C")
    if arr.ndim < 3 or len(set(arr.shape)) != 1 or arr.shape[0] < 1:
        raise ValueError(f"{name} must be a dense symmetric array of shape (d,)*l with l >= 3 and "
                         f"d >= 1, got shape {arr.shape}")
    d = arr.shape[0]
    rows = max(1, _BLOCK // d ** (arr.ndim - 1))
    scale, worst, where = 0.0, 0.0, None
    for r in range(0, d, rows):
        block = arr[r:r + rows]
        scale = max(scale, float(block.max()), -float(block.min()))
        for i in range(arr.ndim - 1):
            diff = np.subtract(block, arr.swapaxes(i, i + 1)[r:r + rows])
            np.abs(diff, out=diff)
            k = int(np.argmax(diff))
            if diff.flat[k] > worst:
                idx = np.unravel_index(k, diff.shape)
                worst, where = float(diff.flat[k]), (i, (idx[0] + r,) + idx[1:])
    if worst > tol * scale:
        i, idx = where
        idx = tuple(int(x) for x in idx)
        swapped = list(idx)
        swapped[i], swapped[i + 1] = swapped[i + 1], swapped[i]
        raise ValueError(
            f"{name} must be symmetric: |{name}{list(idx)} - {name}{swapped}| = {worst:.3g}, "
            f"{worst / scale:.3g} of max |{name}| = {scale:.3g}, the largest asymmetry, exceeds "
            f"symmetry_tol = {tol:g} (average {name} over its axis permutations if this is rounding)")
    return arr


def contract(D: np.ndarray, V: np.ndarray) -> np.ndarray:
    """``D(v^{l-1}, I)`` for each column ``v`` of ``V`` (d, m): one GEMM with the
    ``(d^(l-1), d)`` unfolding, then ``l-2`` batched contractions of the shrinking remainder.
    ``d^l + d^(l-1) + ... + d^2`` multiply-adds a column (:func:`contract_work`)."""
    d, l = D.shape[0], D.ndim
    flat = D.reshape(d ** (l - 1), d)
    out = np.empty((d, V.shape[1]))
    step = max(1, _BLOCK // d ** (l - 1))
    for j in range(0, V.shape[1], step):
        Vb = V[:, j:j + step]
        X = flat @ Vb
        for p in range(l - 2, 0, -1):
            X = np.einsum("aib,ib->ab", X.reshape(d ** p, d, -1), Vb)
        out[:, j:j + step] = X
    return out


def contract_work(d: int, l: int) -> float:
    """Multiply-adds of one column of :func:`contract`."""
    return float(sum(d ** j for j in range(2, l + 1)))


def power_columns(W: np.ndarray, p: int) -> np.ndarray:
    """The ``(d^p, k)`` matrix whose column ``j`` is ``w_j^{(x)p}`` flattened in C order."""
    d, k = W.shape
    out = W
    for _ in range(p - 1):
        out = (out[:, None, :] * W[None, :, :]).reshape(out.shape[0] * d, k)
    return out


def from_cp(Z: np.ndarray, c: np.ndarray, l: int) -> np.ndarray:
    """``sum_j c_j z_j^{(x)l}`` as a ``(d,)*l`` array: GEMMs ``(Z^{(x)(l-1)} c) Z^T`` over blocks
    of components (``2 k d^l`` flops, ``_BLOCK`` entries of scratch beside the result)."""
    d, k = Z.shape
    out = np.zeros((d ** (l - 1), d))
    step = max(1, _BLOCK // max(1, d ** (l - 1)))
    for j in range(0, k, step):
        Zb = Z[:, j:j + step]
        out += (power_columns(Zb, l - 1) * c[j:j + step]) @ Zb.T
    return out.reshape((d,) * l)


def deflated_norms(D: np.ndarray, W: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """``||D - sum_{j<i} lam_j w_j^{(x)l}||_F`` for ``i = 0..k``: each difference formed entry by
    entry (no Gram-form cancellation), in row blocks of the ``(d, d^(l-1))`` unfolding.
    ``k d^l`` multiply-adds; ``D`` is not modified."""
    d, l = D.shape[0], D.ndim
    flat = D.reshape(d, d ** (l - 1))
    P = power_columns(W, l - 1)
    sq = np.zeros(W.shape[1] + 1)
    rows = max(1, _BLOCK // d ** (l - 1))
    for i in range(0, d, rows):
        R = flat[i:i + rows].copy()
        sq[0] += np.vdot(R, R)
        for j in range(W.shape[1]):
            R -= np.outer(lam[j] * W[i:i + rows, j], P[:, j])
            sq[j + 1] += np.vdot(R, R)
    return np.sqrt(sq)

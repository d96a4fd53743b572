"""TensorLy's CP tensors to and from :class:`tdflow.CPTensor` (``pip install 'tdflow[tensorly]'``).

TensorLy writes a CP tensor as ``(weights, factors)``: weights (k,) and ``l`` factor matrices
(d, k), the tensor ``sum_j weights_j f1_j (x) ... (x) fl_j``; its symmetric power iteration
returns ``(weights, factor)`` with one matrix for every mode. tdflow's tensors are symmetric, so a
TensorLy tensor is taken only when column ``j`` of every factor matrix is parallel to column ``j``
of the first (``||(+-)f_j/||f_j|| - f1_j/||f1_j||||`` <= ``symmetry_tol``); the scales and signs
fold into the weight: ``c_j = weights_j prod_k (+-)||fk_j|| / ||f1_j||`` with ``z_j = f1_j``, so
equal factor matrices come back unchanged. Reading needs no TensorLy (NumPy arrays work too);
writing does.
"""
from __future__ import annotations

import numpy as np

from ._checks import order_arg, real_array, real_number, show
from .cp import CPTensor
from .dense import SYMMETRY_TOL

_MISSING = ("{what} needs TensorLy, which is not installed: pip install 'tdflow[tensorly]' "
            "(or pip install tensorly)")


def _tensorly(what: str):
    try:
        import tensorly
        import tensorly.cp_tensor  # noqa: F401  (the submodule holding CPTensor)
    except ImportError as err:
        raise ImportError(_MISSING.format(what=what)) from err
    return tensorly


def is_tensorly_cp(x) -> bool:
    """Whether ``x`` looks like TensorLy's CP form: a ``tensorly.cp_tensor.CPTensor``, or a pair
    ``(weights, factors)`` whose weights are None or 1-D (a dense array's first slice is not)."""
    if type(x).__module__.startswith("tensorly") and type(x).__name__ == "CPTensor":
        return True
    if isinstance(x, (tuple, list)) and len(x) == 2:
        try:
            return x[0] is None or np.ndim(x[0]) == 1
        except Exception:  # ragged: not weights
            return False
    return False


def _numpy(x):
    """A TensorLy backend tensor (or anything array-like) as NumPy, before the checks."""
    mod = type(x).__module__
    if not isinstance(x, np.ndarray) and not mod.startswith(("builtins", "numpy")):
        try:
            return _tensorly("reading a non-NumPy TensorLy tensor").to_numpy(x)
        except Exception:
            return x  # real_array then says what is wrong
    return x


def to_tensorly(T: CPTensor):
    """``T`` as ``tensorly.cp_tensor.CPTensor((c, [Z] * l))`` in TensorLy's active backend (the
    ``l`` factor matrices are separate copies of ``Z``)."""
    if not isinstance(T, CPTensor):
        raise TypeError(f"T must be a tdflow.CPTensor, got {show(T)}")
    tl = _tensorly("CPTensor.to_tensorly()")
    return tl.cp_tensor.CPTensor((tl.tensor(T.c.copy()), [tl.tensor(T.Z.copy()) for _ in range(T.order)]))


def from_tensorly(cp, order: int | None = None, *, symmetry_tol: float = SYMMETRY_TOL,
                  name: str = "cp") -> CPTensor:
    """A :class:`CPTensor` from TensorLy's ``CPTensor`` / ``(weights, factors)``, or from the
    ``(weights, factor)`` pair of ``symmetric_parafac_power_iteration`` (then ``order`` is
    required). A ``ValueError`` names ``name`` when the factors are not symmetric (see the module
    docstring), giving the factor, the column and the largest deviation."""
    symmetry_tol = real_number(symmetry_tol, "symmetry_tol", minimum=0.0)
    if not is_tensorly_cp(cp):
        raise TypeError(f"{name} must be TensorLy's CPTensor or a pair (weights, factors), got {show(cp)}")
    weights, factors = cp
    if isinstance(factors, (list, tuple)) and factors and all(np.ndim(_numpy(f)) == 2 for f in factors):
        mats = [real_array(_numpy(f), f"{name}'s factors[{i}]", 2) for i, f in enumerate(factors)]
        if len(mats) < 3:
            raise ValueError(f"{name} must have at least 3 factor matrices (order l >= 3), got {len(mats)}")
        if order is not None and order_arg(order) != len(mats):
            raise ValueError(f"order must match the {len(mats)} factor matrices of {name}, got {order}")
        order = len(mats)
    else:
        if order is None:
            raise ValueError(f"order must be given for {name} = (weights, factor) with one symmetric "
                             f"factor matrix (TensorLy's symmetric_parafac_power_iteration output)")
        mats = [real_array(_numpy(factors), f"{name}'s factor", 2)]
        order = order_arg(order)
    Z = mats[0]
    if Z.shape[0] < 1:
        raise ValueError(f"{name}'s factor matrices must have d >= 1 rows, got shape {Z.shape}")
    for i, F in enumerate(mats):
        if F.shape != Z.shape:
            raise ValueError(f"{name}'s factors[{i}] must have the shape of factors[0] {Z.shape}, got {F.shape}")
    k = Z.shape[1]
    w = np.ones(k) if weights is None else real_array(_numpy(weights), f"{name}'s weights", 1, (k,))
    if len(mats) == 1:
        return CPTensor(Z, w, order)
    n1 = np.linalg.norm(Z, axis=0)
    scale = np.ones(k)
    for i, F in enumerate(mats[1:], start=1):
        n = np.linalg.norm(F, axis=0)
        ok = (n > 0) & (n1 > 0)
        sign = np.where(np.einsum("ij,ij->j", F, Z) < 0, -1.0, 1.0)
        dev = np.zeros(k)
        dev[ok] = np.linalg.norm(sign[ok] * F[:, ok] / n[ok] - Z[:, ok] / n1[ok], axis=0)
        j = int(np.argmax(dev))
        if dev[j] > symmetry_tol:
            raise ValueError(
                f"{name} must be symmetric: column {j} of factors[{i}] deviates from column {j} of "
                f"factors[0] by {dev[j]:.3g} after scaling both to unit norm (and matching the "
                f"sign), more than symmetry_tol = {symmetry_tol:g}")
        scale *= np.where(ok, sign * n / np.where(n1 > 0, n1, 1.0), 0.0)
    with np.errstate(over="ignore"):
        c = w * scale
    if not np.all(np.isfinite(c)):
        raise ValueError(f"{name}'s weights times its factors' column norms overflow")
    return CPTensor(Z, c, order)

"""Symmetric CP tensors T = sum_j c_j z_j^{(x)l}, never formed as d^l arrays."""
from __future__ import annotations

import numbers

import numpy as np

from . import _core
from ._checks import order_arg, real_array, real_number, show
from .dense import SYMMETRY_TOL, from_cp

_DENSE_LIMIT = 10_000_000  # entries; dense() is a testing aid for small d


class CPTensor:
    """A symmetric tensor of order ``l`` given by components ``Z`` (d x k) and coefficients ``c``.

    All operations go through Gram matrices ``Z^T V`` in the compiled core, batched over the
    columns of ``V``; cost ``O(k m d)``, memory ``O((k + m) d)``.

    >>> T = CPTensor(np.eye(3)[:, :2], [1.0, 0.5], order=4)
    >>> T.evaluate(np.ones(3))   # T(v^4) = 1 + 0.5
    1.5
    """

    __slots__ = ("Z", "c", "order")

    def __init__(self, Z, c, order: int = 4):
        self.order = order_arg(order)
        self.Z = real_array(Z, "Z", 2)
        if self.Z.shape[0] < 1:
            raise ValueError(f"Z must have d >= 1 rows, got shape {self.Z.shape}")
        self.c = real_array(c, "c", 1, (self.Z.shape[1],))

    @property
    def dim(self) -> int:
        return self.Z.shape[0]

    @property
    def rank(self) -> int:
        """Number of components k (an upper bound on the CP rank)."""
        return self.Z.shape[1]

    def _vectors(self, V, name="V"):
        try:
            single = np.ndim(V) == 1
        except ValueError:  # ragged lists: real_array says what is wrong
            single = False
        V = real_array(V, name, 1 if single else 2, (self.dim,) if single else (self.dim, None))
        return (np.asfortranarray(V[:, None]) if single else V), single

    def contract(self, V) -> np.ndarray:
        """``T(v^{l-1}, I)`` for each column ``v`` of ``V`` (or for a single vector)."""
        V, single = self._vectors(V)
        out = _core.contract(self.Z, self.c, V, self.order)
        return out[:, 0] if single else out

    def contract_mixed(self, V, U) -> np.ndarray:
        """``T(v^{l-2}, u, I)`` for paired columns of ``V`` and ``U`` (or single vectors)."""
        V, single = self._vectors(V)
        U, _ = self._vectors(U, "U")
        if U.shape != V.shape:
            raise ValueError(f"U must have the shape of V {V.shape}, got {U.shape}")
        out = _core.contract_mixed(self.Z, self.c, V, U, self.order)
        return out[:, 0] if single else out

    def evaluate(self, V):
        """``T(v^l)`` for each column of ``V``; a float for a single vector."""
        V, single = self._vectors(V)
        out = _core.evaluate(self.Z, self.c, V, self.order)
        return float(out[0]) if single else out

    def inner(self, other: "CPTensor") -> float:
        """Frobenius inner product ``<T, T'>``."""
        self._check_compatible(other)
        return float(_core.inner(self.Z, self.c, other.Z, other.c, self.order))

    def norm(self) -> float:
        """Frobenius norm; a tiny negative ``<T,T>`` from rounding is reported as 0."""
        return float(np.sqrt(_core.norm_squared(self.Z, self.c, self.order)))

    def dense(self) -> np.ndarray:
        """The full ``d^l`` array (for testing on small ``d``)."""
        if self.dim ** self.order > _DENSE_LIMIT:
            raise ValueError(
                f"dense() would form {self.dim}^{self.order} entries; it is meant for small d"
            )
        return from_cp(self.Z, self.c, self.order)

    def to_tensorly(self):
        """This tensor as TensorLy's ``CPTensor((c, [Z] * l))`` (needs ``tensorly``; see
        :mod:`tdflow.tensorly_interop`)."""
        from .tensorly_interop import to_tensorly
        return to_tensorly(self)

    @classmethod
    def from_tensorly(cls, cp, order: int | None = None, *,
                      symmetry_tol: float = SYMMETRY_TOL) -> "CPTensor":
        """From TensorLy's ``CPTensor`` / ``(weights, factors)`` with symmetric factors (every
        factor matrix's column ``j`` parallel to the first's within ``symmetry_tol``), or from
        ``symmetric_parafac_power_iteration``'s ``(weights, factor)`` with ``order`` given.
        Details in :func:`tdflow.tensorly_interop.from_tensorly`."""
        from .tensorly_interop import from_tensorly
        return from_tensorly(cp, order, symmetry_tol=symmetry_tol)

    def _check_compatible(self, other):
        if not isinstance(other, CPTensor):
            raise TypeError(f"other must be a tdflow.CPTensor, got {show(other)}")
        if other.order != self.order or other.dim != self.dim:
            raise ValueError(
                f"other must have this tensor's order {self.order} and dimension d = {self.dim}, "
                f"got order {other.order}, d = {other.dim}")

    def __add__(self, other: "CPTensor") -> "CPTensor":
        self._check_compatible(other)
        return CPTensor(np.hstack([self.Z, other.Z]), np.concatenate([self.c, other.c]), self.order)

    def __neg__(self) -> "CPTensor":
        return CPTensor(self.Z, -self.c, self.order)

    def __sub__(self, other: "CPTensor") -> "CPTensor":
        return self + (-other)

    def __mul__(self, s) -> "CPTensor":
        if not isinstance(s, numbers.Real):
            return NotImplemented
        s = real_number(s, "the factor")
        with np.errstate(over="ignore"):
            c = s * self.c
        if not np.all(np.isfinite(c)):
            raise ValueError(f"the factor {s:g} times the coefficients c overflows")
        return CPTensor(self.Z, c, self.order)

    __rmul__ = __mul__

    def __repr__(self) -> str:
        return f"CPTensor(d={self.dim}, rank={self.rank}, order={self.order})"

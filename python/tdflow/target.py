"""Ground-truth tensors T* = sum_i a_i u_i^{(x)l} and weight spectra."""
from __future__ import annotations

import numpy as np

from ._checks import flag, generator, order_arg, positive_int, real_array, real_number
from .cp import CPTensor


def geometric_weights(r: int, ratio: float = 1.2, *, normalize: bool = True) -> np.ndarray:
    """Weights with ``a_i / a_{i+1} = ratio``, largest first; ``sum a_i = 1`` when ``normalize``,
    else ``a_1 = 1``."""
    r = positive_int(r, "r")
    ratio = real_number(ratio, "ratio", minimum=0.0, strict=True)
    return _spectrum(lambda: ratio ** -np.arange(r, dtype=float), f"ratio = {ratio:g}", normalize)


def power_law_weights(r: int, exponent: float = 1.0, *, normalize: bool = True) -> np.ndarray:
    """Weights ``a_i ∝ i^{-exponent}`` (i = 1..r), largest first."""
    r = positive_int(r, "r")
    exponent = real_number(exponent, "exponent")
    return _spectrum(lambda: np.arange(1, r + 1, dtype=float) ** -exponent,
                     f"exponent = {exponent:g}", normalize)


def _spectrum(make, what: str, normalize) -> np.ndarray:
    normalize = flag(normalize, "normalize")
    with np.errstate(over="ignore", under="ignore"):
        a = make()
    if not (np.all(np.isfinite(a)) and a.max() > 0):
        raise ValueError(f"{what} takes the weights out of floating-point range (got {a})")
    return a / a.sum() if normalize else a


def uniform_weights(r: int, *, normalize: bool = True) -> np.ndarray:
    """Equal weights (``1/r`` each when ``normalize``, else 1)."""
    r = positive_int(r, "r")
    return np.full(r, 1.0 / r if flag(normalize, "normalize") else 1.0)


def _weights_arg(a, d: int | None = None) -> np.ndarray:
    """The weights of a classmethod target: 1-D, non-empty, at most ``d`` of them."""
    a = real_array(a, "a", 1)
    if a.size < 1 or (d is not None and a.size > d):
        most = "" if d is None else f" and at most d = {d}"
        raise ValueError(f"a must hold at least one{most} weights, got {a.size}")
    return a


class Target:
    """The ground truth ``T* = sum_i a_i u_i^{(x)l}``.

    ``U`` is ``d x r`` with unit columns, ``a`` holds ``r`` non-negative weights. Build one with
    :meth:`orthogonal` (the first r basis vectors: the fast path), :meth:`random_rotation`
    (orthonormal, Haar-random) or :meth:`random_unit` (independent unit columns, not orthogonal).
    """

    def __init__(self, U, a, order: int = 4, *, normalize: bool = False):
        """``normalize=True`` rescales ``a`` so that ``sum a_i = 1``.

        The columns of ``U`` must have unit norm to the precision of ``U``'s dtype (``1e-8`` for
        float64; ``sqrt(d)`` units in the last place of a float32/float16 ``U``, which is then
        renormalised in float64).
        """
        self.order = order_arg(order)
        U_in = U
        U = real_array(U, "U", 2)
        d, r = U.shape
        if d < 1 or r < 1:
            raise ValueError(f"U must have d >= 1 rows and r >= 1 columns, got shape {U.shape}")
        with np.errstate(over="ignore"):
            norms = np.linalg.norm(U, axis=0)
        dtype = getattr(U_in, "dtype", np.dtype(float))
        low = dtype.kind == "f" and dtype.itemsize < 8
        tol = max(1e-8, 4.0 * np.sqrt(d) * np.finfo(dtype).eps) if low else 1e-8
        if not np.all(np.abs(norms - 1.0) <= tol):
            raise ValueError(
                f"the columns of U must have unit norm (within {tol:.1g}), got norms "
                f"{np.array2string(norms, precision=4, threshold=8)}; divide U by "
                "np.linalg.norm(U, axis=0)")
        if low:
            U = np.asfortranarray(U / norms)
        a = real_array(a, "a", 1, (r,))
        if np.any(a < 0):
            raise ValueError(f"the weights a must be >= 0, got {np.array2string(a, threshold=8)}")
        if flag(normalize, "normalize"):
            total = a.sum()
            if not (0 < total < np.inf):
                raise ValueError(f"normalize=True needs weights with a finite, positive sum, got {total}")
            a = a / total
        self.U = U
        self.a = a
        self.U.flags.writeable = False
        self.a.flags.writeable = False

    @classmethod
    def orthogonal(cls, d: int, a, order: int = 4, **kw) -> "Target":
        """Components on the first ``r = len(a)`` standard basis vectors of R^d."""
        d = positive_int(d, "d")
        a = _weights_arg(a, d)
        return cls(np.eye(d)[:, : a.size], a, order, **kw)

    @classmethod
    def random_rotation(cls, d: int, a, rng, order: int = 4, **kw) -> "Target":
        """Orthonormal components: the first ``r`` columns of a Haar-random rotation."""
        d = positive_int(d, "d")
        a = _weights_arg(a, d)
        Q, R = np.linalg.qr(generator(rng).standard_normal((d, d)))
        Q *= np.sign(np.diag(R))  # sign fix makes Q Haar-distributed
        return cls(Q[:, : a.size], a, order, **kw)

    @classmethod
    def random_unit(cls, d: int, a, rng, order: int = 4, **kw) -> "Target":
        """Independent uniformly random unit components (not orthogonal)."""
        d = positive_int(d, "d")
        a = _weights_arg(a)
        X = generator(rng).standard_normal((d, a.size))
        return cls(X / np.linalg.norm(X, axis=0), a, order, **kw)

    def __reduce__(self):
        # rebuilt (and re-checked) by the constructor; the arrays stay read-only
        return (Target, (self.U, self.a, self.order))

    @property
    def dim(self) -> int:
        return self.U.shape[0]

    @property
    def rank(self) -> int:
        return self.U.shape[1]

    @property
    def is_basis(self) -> bool:
        """True when U is the first r standard basis vectors."""
        return bool(np.array_equal(self.U, np.eye(self.dim)[:, : self.rank]))

    @property
    def is_orthogonal(self) -> bool:
        return bool(np.allclose(self.U.T @ self.U, np.eye(self.rank), atol=1e-10))

    @property
    def tensor(self) -> CPTensor:
        return CPTensor(self.U, self.a, self.order)

    @property
    def norm(self) -> float:
        """``||T*||_F``."""
        return self.tensor.norm()

    def __repr__(self) -> str:
        kind = "basis" if self.is_basis else ("orthogonal" if self.is_orthogonal else "general")
        return f"Target(d={self.dim}, r={self.rank}, order={self.order}, {kind}, a={np.array2string(self.a, precision=3)})"

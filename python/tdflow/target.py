"""Ground-truth tensors T* = sum_i a_i u_i^{(x)l}, weight spectra, and targets described by a
spec (:meth:`Target.from_spec`: one vocabulary for Python, the CLI and the sweeps)."""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional

import numpy as np

from ._checks import choice, flag, generator, order_arg, positive_int, real_array, real_number
from .cp import CPTensor

# Target.from_spec's vocabulary: the names of Target's constructors and of the weight functions
TARGET_KINDS = ("orthogonal", "random_rotation", "random_unit")
SPECTRA = ("geometric", "power_law", "uniform")
SPEC_KEYS = ("d", "r", "order", "target", "spectrum", "ratio", "exponent", "span")
# names that tdflow deflate (and its --config) used before issue 17; still read
OLD_NAMES = {"target": {"basis": "orthogonal", "rotation": "random_rotation"},
             "spectrum": {"geo": "geometric", "pow": "power_law"}}


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
        self.tensor = CPTensor(U, a, self.order)  # T* as a CP tensor, made once

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

    @classmethod
    def from_spec(cls, spec: Optional[Mapping[str, Any]] = None, /, *, seed: Optional[int] = None,
                  rng=None, **params) -> "Target":
        """The target a spec describes: the one vocabulary of ``tdflow deflate`` (its
        ``[problem]``), the sweep kinds ``"flow"`` / ``"deflate"`` and Python.

        Keys (from the mapping ``spec`` and/or keywords; keywords win): ``d``, ``r``,
        ``order`` (4), ``target`` (``"orthogonal"``: the first r basis vectors, the default;
        ``"random_rotation"``: a Haar-random orthonormal frame; ``"random_unit"``: independent
        unit columns), ``spectrum`` (``"geometric"``, the default: ``a_i / a_{i+1} = ratio``;
        ``"power_law"``: ``a_i ∝ i^-exponent``; ``"uniform"``), weights summing to 1, and the
        spectrum's parameter: ``ratio`` / ``exponent``, or ``span`` = ``a_max / a_min``
        (``ratio = span^(1/(r-1))``, ``exponent = log(span) / log(r)``), used when the
        spectrum's own parameter is None; with neither, ``ratio = 1.2`` and ``exponent = 1``
        (the weight functions' defaults). A parameter of another spectrum is ignored (a sweep's
        parameter set holds them all). The names ``"basis"``, ``"rotation"``, ``"geo"`` and
        ``"pow"`` (``tdflow deflate`` before issue 17) are read as the new ones.

        Randomness of the random frames, the seeding rule of tdflow: a run with the integer
        ``seed`` s draws its target from ``numpy.random.default_rng([s, 1])`` and its
        initialisation and re-draws from ``default_rng(s)`` (what ``rng=s`` means for
        :func:`~tdflow.sphere` and :func:`~tdflow.deflate`): two independent streams of one
        seed. Or pass ``rng`` (a Generator or a seed) to draw the frame from it directly.
        ``Target.from_spec(spec, seed=s)`` with ``deflate(target, m, schedule, rng=s)`` is the
        run that ``tdflow deflate --seed s`` and the sweep kind ``"deflate"`` with seed s make.
        """
        p = dict(spec or {}, **params)
        unknown = sorted(map(str, set(p) - set(SPEC_KEYS)))
        if unknown:
            raise ValueError(f"unknown target spec keys {unknown}; known: {list(SPEC_KEYS)}")
        if "d" not in p or "r" not in p:
            raise ValueError("a target spec needs d and r")
        d, r = positive_int(p["d"], "d"), positive_int(p["r"], "r")
        kind = spec_name("target", p.get("target", "orthogonal"))
        if kind != "random_unit" and r > d:
            raise ValueError(f"r must be <= d for an orthogonal target, got r={r}, d={d}")
        a = _spec_weights(spec_name("spectrum", p.get("spectrum", "geometric")), r, p)
        order = p.get("order", 4)
        if kind == "orthogonal":
            return cls.orthogonal(d, a, order=order)
        if seed is not None and rng is not None:
            raise ValueError("give seed (the run's seed) or rng, not both")
        if seed is None and rng is None:
            raise ValueError(f"target {kind!r} is drawn at random: give seed (the run's seed) or rng")
        if seed is not None:
            rng = np.random.default_rng([positive_int(seed, "seed", minimum=0), 1])
        make = cls.random_rotation if kind == "random_rotation" else cls.random_unit
        return make(d, a, rng, order=order)

    def __reduce__(self):
        # rebuilt (and re-checked) by the constructor; the arrays stay read-only
        return (Target, (self.U, self.a, self.order))

    @property
    def dim(self) -> int:
        return self.tensor.dim

    @property
    def rank(self) -> int:
        return self.tensor.rank

    @property
    def is_basis(self) -> bool:
        """True when U is the first r standard basis vectors."""
        return bool(np.array_equal(self.U, np.eye(self.dim)[:, : self.rank]))

    @property
    def is_orthogonal(self) -> bool:
        return bool(np.allclose(self.U.T @ self.U, np.eye(self.rank), atol=1e-10))

    @property
    def norm(self) -> float:
        """``||T*||_F``."""
        return self.tensor.norm()

    def __repr__(self) -> str:
        kind = "basis" if self.is_basis else ("orthogonal" if self.is_orthogonal else "general")
        return f"Target(d={self.dim}, r={self.rank}, order={self.order}, {kind}, a={np.array2string(self.a, precision=3)})"


def spec_name(key: str, value) -> str:
    """A spec's ``target`` or ``spectrum`` name, the old CLI names translated; checked."""
    if isinstance(value, str):
        value = OLD_NAMES[key].get(value, value)
    return choice(value, key, TARGET_KINDS if key == "target" else SPECTRA)


def _spec_weights(spectrum: str, r: int, p: Mapping[str, Any]) -> np.ndarray:
    """The weights of :meth:`Target.from_spec` (``p`` its keys)."""
    span = p.get("span")
    if spectrum == "uniform":
        return uniform_weights(r)
    if spectrum == "geometric":
        ratio = p.get("ratio")
        if ratio is None:
            ratio = 1.2 if span is None else real_number(span, "span", minimum=1.0) ** (1.0 / max(r - 1, 1))
        return geometric_weights(r, ratio)
    exponent = p.get("exponent")
    if exponent is None:
        exponent = 1.0 if span is None else (
            math.log(real_number(span, "span", minimum=1.0)) / math.log(r) if r > 1 else 0.0)
    return power_law_weights(r, exponent)

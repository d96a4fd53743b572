"""Argument checks shared by the public API: each names the argument and the expected shape."""
from __future__ import annotations

import numbers

import numpy as np


def real_array(x, name: str, ndim: int, shape: tuple | None = None, *, order: str = "F") -> np.ndarray:
    """``x`` as a finite float64 array with ``ndim`` dimensions (``shape`` entries of None: any)."""
    try:
        arr = np.asarray(x)
    except Exception as err:  # e.g. ragged nested lists
        raise TypeError(f"{name} must be an array of real numbers: {err}") from None
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    if shape is not None:
        for axis, want in enumerate(shape):
            if want is not None and arr.shape[axis] != want:
                expected = ", ".join("*" if s is None else str(s) for s in shape)
                expected += "," if len(shape) == 1 else ""
                raise ValueError(f"{name} must have shape ({expected}), got {arr.shape}")
    arr = np.asarray(arr, dtype=np.float64, order=order)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or Inf")
    return arr


def positive_int(x, name: str, minimum: int = 1) -> int:
    if isinstance(x, bool) or not isinstance(x, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(x).__name__}")
    if x < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {x}")
    return int(x)


def real_number(x, name: str, *, minimum: float | None = None, strict: bool = False) -> float:
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(x).__name__}")
    x = float(x)
    if not np.isfinite(x):
        raise ValueError(f"{name} must be finite, got {x}")
    if minimum is not None and (x <= minimum if strict else x < minimum):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {minimum}, got {x}")
    return x


def order_arg(order) -> int:
    return positive_int(order, "order", minimum=3)


def generator(rng) -> np.random.Generator:
    """A numpy Generator from a Generator or an integer seed (a run is reproducible from its seed)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, numbers.Integral) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(
        f"rng must be a numpy.random.Generator or an integer seed, got {type(rng).__name__}"
    )

"""Argument checks shared by the public API.

Each public entry point converts its arguments once, with these helpers, and a bad argument is a
``TypeError`` (wrong type) or ``ValueError`` (wrong value) whose message names the argument, shows
the value given and says what is allowed.
"""
from __future__ import annotations

import math
import numbers
from typing import Optional, Sequence

import numpy as np

C_INT_MAX = 2**31 - 1  # the compiled core takes orders and counts as C ints


def show(x) -> str:
    """A short description of a value for an error message: its repr (cut) and its type."""
    text = repr(x)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(x).__name__})"


def real_array(x, name: str, ndim: int, shape: tuple | None = None, *, order: str = "F") -> np.ndarray:
    """``x`` as a finite float64 array with ``ndim`` dimensions (``shape`` entries of None: any)."""
    if isinstance(x, (str, bytes)):
        raise TypeError(f"{name} must be an array of real numbers, got {show(x)}")
    try:
        arr = np.asarray(x)
    except Exception as err:  # e.g. ragged nested lists
        raise TypeError(f"{name} must be an array of real numbers: {err}") from None
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"{name} must hold real numbers (float, int or bool), got dtype {arr.dtype}")
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    if shape is not None:
        for axis, want in enumerate(shape):
            if want is not None and arr.shape[axis] != want:
                expected = ", ".join("*" if s is None else str(s) for s in shape)
                expected += "," if len(shape) == 1 else ""
                raise ValueError(f"{name} must have shape ({expected}), got {arr.shape}")
    arr = np.asarray(arr, dtype=np.float64, order=order)
    finite = np.isfinite(arr)
    if not finite.all():
        where = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise ValueError(f"{name} contains NaN or Inf ({arr[where]} at index {where}); it must be finite")
    return arr


def positive_int(x, name: str, minimum: int = 1, maximum: Optional[int] = None) -> int:
    """An integer ``>= minimum`` (and ``<= maximum``); bools and floats are refused."""
    if type(x) is not int and (isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Integral)):
        raise TypeError(f"{name} must be an integer {_int_bounds(minimum, maximum)}, got {show(x)}")
    if x < minimum or (maximum is not None and x > maximum):
        raise ValueError(f"{name} must be {_int_bounds(minimum, maximum)}, got {int(x)}")
    return int(x)


def _int_bounds(minimum: int, maximum: Optional[int]) -> str:
    return f">= {minimum}" + ("" if maximum is None else f" and <= {maximum}")


def real_number(x, name: str, *, minimum: float | None = None, strict: bool = False,
                maximum: float | None = None, strict_max: bool = False) -> float:
    """A finite real number within the bounds (``strict``: the bound itself is excluded)."""
    if type(x) is not float and (isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Real)):
        raise TypeError(f"{name} must be a real number, got {show(x)}")  # (a float skips the ABC)
    x = float(x)
    finite = math.isfinite(x)
    if finite and (minimum is None or (x > minimum if strict else x >= minimum)) and \
            (maximum is None or (x < maximum if strict_max else x <= maximum)):
        return x  # the message below is built only for a bad value (this runs on every call)
    low = "" if minimum is None else f"{'>' if strict else '>='} {minimum:g}"
    high = "" if maximum is None else f"{'<' if strict_max else '<='} {maximum:g}"
    bounds = " and ".join(b for b in (low, high) if b)
    if not finite:
        raise ValueError(f"{name} must be finite{' and ' + bounds if bounds else ''}, got {x}")
    raise ValueError(f"{name} must be {bounds}, got {x:g}")


def flag(x, name: str) -> bool:
    """A bool (or NumPy bool); ``1``, ``"yes"`` and arrays are refused."""
    if not isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {show(x)}")
    return bool(x)


def choice(x, name: str, allowed: Sequence[str]) -> str:
    """One of the strings ``allowed``."""
    if not isinstance(x, str) or x not in allowed:
        raise ValueError(f"{name} must be one of {tuple(allowed)}, got {show(x)}")
    return x


def order_arg(order) -> int:
    """A tensor order ``l`` (``3 <= l``, a C int for the core)."""
    return positive_int(order, "order", minimum=3, maximum=C_INT_MAX)


def generator(rng, name: str = "rng") -> np.random.Generator:
    """A numpy Generator from a Generator, a non-negative integer seed, a ``SeedSequence`` or a
    ``BitGenerator`` (a run is reproducible from its seed)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (np.random.SeedSequence, np.random.BitGenerator)):
        return np.random.default_rng(rng)
    allowed = "a numpy.random.Generator or an integer seed >= 0"
    if isinstance(rng, numbers.Integral) and not isinstance(rng, (bool, np.bool_)):
        if rng < 0:
            raise ValueError(f"{name} must be {allowed}, got {int(rng)}")
        return np.random.default_rng(int(rng))
    raise TypeError(f"{name} must be {allowed}, got {show(rng)}")

"""Initial states."""
from __future__ import annotations

import numpy as np

from ._checks import generator, positive_int, real_number


def sphere(d: int, m: int, radius: float, rng) -> np.ndarray:
    """``m`` columns drawn independently and uniformly from the sphere of ``radius`` in R^d.

    Returns a float64 ``d x m`` array in Fortran order (the layout the core uses without a copy).
    ``rng`` is a ``numpy.random.Generator`` or an integer seed.
    """
    d = positive_int(d, "d")
    m = positive_int(m, "m")
    radius = real_number(radius, "radius", minimum=0.0)
    g = generator(rng)
    X = g.standard_normal((d, m))
    X /= np.linalg.norm(X, axis=0, keepdims=True)
    return np.asfortranarray(radius * X)

"""Figure 1 of Ge, Ren, Wang, Zhou (2021): plain gradient flow fits the directions one by one.

Setting: ``T* = sum_{i<=5} a_i e_i^{(x)4}`` in R^10 with ``a_i / a_{i+1} = 1.2`` (sum a_i = 1),
50 components drawn on the sphere of radius 1e-15, no regularisation, t from 0 to 250.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np

from . import io
from .display import Summarised
from ._checks import positive_int, real_number
from .flow import GradientFlow
from .options import SolverOptions
from .sampling import sphere
from .target import Target, geometric_weights

KIND = "figure1"
SOLVER = dict(method="rk4", h=0.05, rtol=1e-8, n_records=1001)  # run_figure1's integrator


@dataclasses.dataclass(repr=False)
class Figure1Result(Summarised):
    """Stacked records of the seeds: arrays are (seeds, times) or (seeds, times, r)."""

    seeds: np.ndarray
    t: np.ndarray
    loss: np.ndarray
    residual_norm: np.ndarray
    directional_residual: np.ndarray
    norms: np.ndarray  # (seeds, times, m) column norms
    a: np.ndarray
    fit_times: np.ndarray  # (seeds, r), threshold 1/2
    wall_time: np.ndarray  # (seeds,): a batch's wall time shared out over its seeds
    n_rhs: np.ndarray  # (seeds,)
    params: dict

    @property
    def fit_orders(self) -> np.ndarray:
        """(seeds, r): the directions in the order each seed fitted them (-1: not fitted)."""
        out = np.full(self.fit_times.shape, -1, dtype=int)
        for s, times in enumerate(self.fit_times):
            done = np.flatnonzero(np.isfinite(times))
            order = done[np.argsort(times[done], kind="stable")]
            out[s, : order.size] = order
        return out

    def fitted_in_order(self) -> bool:
        """Every seed fitted every direction, from the largest weight to the smallest."""
        want = np.argsort(-self.a, kind="stable")
        return bool(np.all(self.fit_orders == want[None, :]))

    def _summary(self) -> list:
        p = self.params
        return [("seeds", self.seeds), ("d", p.get("d")), ("m", p.get("m")), ("r", self.a.size),
                ("a", self.a), ("records", self.t.size), ("method", p.get("method")),
                ("fitted_in_order", self.fitted_in_order()),
                ("wall_time", float(np.sum(self.wall_time)))]

    def _table(self):
        """One row per seed: its fit times and fit order."""
        header = ("seed", *(f"t_fit[{i + 1}]" for i in range(self.a.size)), "order", "n_rhs")
        return header, [(seed, *self.fit_times[s], "".join(str(i + 1) if i >= 0 else "-"
                                                           for i in self.fit_orders[s]),
                         self.n_rhs[s]) for s, seed in enumerate(self.seeds)]

    def summary(self) -> str:
        r = self.a.size
        head = f"{'seed':>4}  " + "  ".join(f"t_fit[{i + 1}]" for i in range(r)) + "  order       wall(s)  RHS"
        rows = [head]
        for s in range(self.seeds.size):
            times = "  ".join(f"{x:9.1f}" for x in self.fit_times[s])
            order = "".join(str(i + 1) if i >= 0 else "-" for i in self.fit_orders[s])
            rows.append(f"{self.seeds[s]:>4}  {times}  {order:<10}  {self.wall_time[s]:7.3f}  {self.n_rhs[s]}")
        verdict = "largest to smallest" if self.fitted_in_order() else "NOT in weight order"
        rows.append(f"a = {np.array2string(self.a, precision=4)}; every seed fitted the directions {verdict}")
        return "\n".join(rows)

    def save(self, path):
        arrays = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "params"}
        return io.save_npz(path, arrays, self.params, kind=KIND)

    @classmethod
    def load(cls, path) -> "Figure1Result":
        return cls.from_npz(path, *io.load_npz(path, kind=KIND))

    @classmethod
    def from_npz(cls, path, arrays: dict, meta: dict) -> "Figure1Result":
        """The result in what :func:`tdflow.io.load_npz` read from ``path`` (named in errors)."""
        names = [f.name for f in dataclasses.fields(cls) if f.name != "params"]
        missing = [n for n in names if n not in arrays]
        if missing:
            raise ValueError(f"{path} lacks the arrays {missing}")
        return cls(**{n: arrays[n] for n in names}, params=meta)


def run_figure1(
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    *,
    d: int = 10,
    m: int = 50,
    r: int = 5,
    ratio: float = 1.2,
    radius: float = 1e-15,
    lam: float = 0.0,
    t_end: float = 250.0,
    options: Optional[SolverOptions] = None,
    progress: Optional[bool] = None,
    **solver,
) -> Figure1Result:
    """Run the Figure 1 setting once per seed and stack the records.

    ``options`` and the solver keywords as in :meth:`GradientFlow.integrate`, with the defaults
    :data:`SOLVER` (RK4, ``h = 0.05``, 1001 records)."""
    opts = SolverOptions.resolve(options, solver, SOLVER, where="run_figure1")
    seeds = np.asarray([positive_int(s, "seed", minimum=0) for s in seeds], dtype=np.int64)
    if seeds.size == 0:
        raise ValueError("seeds must not be empty")
    d, m, r = positive_int(d, "d"), positive_int(m, "m"), positive_int(r, "r")
    if r > d:
        raise ValueError(f"r must be <= d, got r={r}, d={d}")
    real_number(t_end, "t_end", minimum=0.0, strict=True)
    a = geometric_weights(r, ratio)
    flow = GradientFlow(Target.orthogonal(d, a, order=4), lam=lam)
    # the seeds are independent replicas: one batch spreads them over the OpenMP threads
    W0s = np.stack([sphere(d, m, radius, np.random.default_rng(seed)) for seed in seeds])
    trajs = flow.integrate_batch(W0s, (0.0, t_end), options=opts, save_norms=True,
                                 progress=progress)
    params = dict(d=d, m=m, r=r, ratio=ratio, radius=radius, lam=lam, t_end=t_end,
                  **opts.to_dict(), fit_threshold=0.5)
    return Figure1Result(
        seeds=seeds,
        t=trajs[0].t,
        loss=np.stack([tr.loss for tr in trajs]),
        residual_norm=np.stack([tr.residual_norm for tr in trajs]),
        directional_residual=np.stack([tr.directional_residual for tr in trajs]),
        norms=np.stack([tr.norms for tr in trajs]),
        a=a,
        fit_times=np.stack([tr.fit_times(0.5) for tr in trajs]),
        wall_time=np.array([tr.wall_time for tr in trajs]),
        n_rhs=np.array([tr.n_rhs for tr in trajs]),
        params=params,
    )

"""Lazy training, the beyond-lazy variant, the tensor power method and plain gradient flow on
one target: relative error ``||T - T*||_F / ||T*||_F`` against the number of components ``m``
and against the work spent.

Work is counted in multiply-adds of the CP contractions (``2 k n d`` for ``n`` vectors against a
rank-``k`` CP tensor): per right-hand-side evaluation of gradient flow and per step of the
variant ``2 (m + r) m d``; per power iteration ``2 k_R d`` a start. The lazy fit's work is its
dense least squares, ``N p min(N, p)`` for the ``N x p`` feature matrix. These are estimates of
the arithmetic, comparable across methods; the wall time is measured.
"""
from __future__ import annotations

import dataclasses
import time
from typing import List, Optional, Sequence

import numpy as np

from ._checks import generator, positive_int, real_number
from .beyond_lazy import BeyondLazy
from .display import Summarised
from .flow import GradientFlow
from .solution import IntegrationError
from .lazy import lazy_sweep, symmetric_dim
from .power import tensor_power_method
from .sampling import sphere
from .target import Target, geometric_weights

METHODS = ("lazy", "gradient-flow", "beyond-lazy", "power")


@dataclasses.dataclass
class ComparisonRow:
    """One run: ``method``, ``m`` components, final ``error`` (relative), ``work``
    (multiply-adds), ``wall_time`` seconds, ``note`` (e.g. a failure)."""

    method: str
    m: int
    error: float
    work: float
    wall_time: float
    note: str = ""


@dataclasses.dataclass(repr=False)
class Comparison(Summarised):
    """All rows of a comparison and its settings (``params``)."""

    rows: List[ComparisonRow]
    params: dict

    def select(self, method: str) -> List[ComparisonRow]:
        return [row for row in self.rows if row.method == method]

    def _summary(self) -> list:
        p = self.params
        return [("d", p["d"]), ("r", p["r"]), ("order", p["order"]), ("ms", p["ms"]),
                ("seed", p["seed"]), ("methods", list(dict.fromkeys(r.method for r in self.rows))),
                ("runs", len(self.rows))]

    def _table(self):
        """One row per run."""
        return (("method", "m", "relative error", "work", "wall_time", "note"),
                [(r.method, r.m, r.error, r.work, r.wall_time, r.note) for r in self.rows])

    def table(self) -> str:
        """A plain-text table, one row per run."""
        p = self.params
        lines = [
            f"target: d={p['d']}, r={p['r']}, order={p['order']}, non-orthogonal unit components, "
            f"a={np.array2string(np.asarray(p['a']), precision=3)}; lazy needs m >= {p['lazy_m_needed']}",
            f"{'method':<14} {'m':>4} {'rel.error':>10} {'work':>10} {'wall(s)':>8}  note",
        ]
        for row in self.rows:
            lines.append(f"{row.method:<14} {row.m:>4} {row.error:10.3e} {row.work:10.3e} "
                         f"{row.wall_time:8.3f}  {row.note}")
        lines.append("(errors from <R,R> of CP tensors bottom out near 1e-8: rounding; the lazy fit's "
                     "are computed densely)")
        return "\n".join(lines)

    def plot(self, path=None, *, x: str = "m", ax=None):
        """Relative error (log scale) against ``x``, one line per method.

        Parameters
        ----------
        path : str or os.PathLike, optional
            Write the figure there (:func:`tdflow.plot.save_figure`).
        x : {"m", "work"}
            The x axis: the number of components, or the work (multiply-adds, log scale).
        ax : matplotlib.axes.Axes, optional
            Draw on this Axes instead of a new figure.

        Returns
        -------
        matplotlib.figure.Figure
            The figure: each method's relative error against ``x``.
        """
        if x not in ("m", "work"):
            raise ValueError(f"x must be 'm' or 'work', got {x!r}")
        from .plot import panels, save_figure

        fig, (ax,), created = panels(ax, 1, (6.4, 4.4), "ax")
        for method, marker in zip(METHODS, "osD^"):
            rows = self.select(method)
            if not rows:
                continue
            xs = [getattr(row, x) for row in rows]
            ys = [max(row.error, 1e-16) for row in rows]
            ax.plot(xs, ys, marker=marker, label=method)
        ax.set_yscale("log")
        if x == "work":
            ax.set_xscale("log")
        ax.set_xlabel("components m" if x == "m" else "work (multiply-adds)")
        ax.set_ylabel("||T - T*||_F / ||T*||_F")
        p = self.params
        ax.set_title(f"d={p['d']}, r={p['r']}, l={p['order']}")
        ax.legend()
        return save_figure(fig, path, dpi=130, close=created)


def run_comparison(
    *,
    d: int = 8,
    r: int = 2,
    order: int = 3,
    ms: Sequence[int] = (3, 6, 12, 24),
    seed: int = 0,
    methods: Sequence[str] = METHODS,
    t_end: float = 60.0,
    radius: float = 1e-3,
    epochs: int = 20,
    steps: int = 100,
    delta: float = 1e-3,
    lam: float = 1e-4,
    n_starts: int = 20,
    n_iters: int = 30,
    progress: Optional[bool] = False,
) -> Comparison:
    """Run the chosen ``methods`` on one target ``sum_i a_i u_i^{(x)l}`` (``r`` random unit
    components in R^d, ``a_i / a_{i+1} = 1.25``, ``a_1 = 1``).

    For each ``m`` in ``ms``: the lazy fit (first ``m`` of one draw of unit columns), plain
    gradient flow of the deflation model from ``m`` columns of norm ``radius`` up to ``t_end``
    (adaptive Dormand-Prince), and Algorithm 1 of Wang et al. 2020 (``epochs``, ``steps``,
    ``delta``, ``lam``; tdflow's automatic step size), its note giving the largest
    ``||P_B U||_F^2`` over every step against Lemma 5's ``(m + K) delta^2``. The power method runs once, extracting ``r`` components
    (``n_starts`` starts, ``n_iters`` iterations). Everything is seeded from ``seed``.
    """
    d = positive_int(d, "d")
    r = positive_int(r, "r")
    ms = [positive_int(m, "m") for m in ms]
    if not ms:
        raise ValueError("ms must not be empty")
    methods = list(methods)
    for name in methods:
        if name not in METHODS:
            raise ValueError(f"methods must be among {METHODS}, got {name!r}")
    seed = positive_int(seed, "seed", minimum=0)
    t_end = real_number(t_end, "t_end", minimum=0.0, strict=True)
    radius = real_number(radius, "radius", minimum=0.0, strict=True)
    g = generator(seed)
    a = geometric_weights(r, 1.25, normalize=False)
    target = Target.random_unit(d, a, g, order=order)
    tnorm = target.norm
    rows: List[ComparisonRow] = []

    if "lazy" in methods:
        sweep = lazy_sweep(target, ms, generator(seed + 1))
        for i, m in enumerate(ms):
            rows.append(ComparisonRow("lazy", m, float(sweep.relative_error[i]), float(sweep.work[i]),
                                      float(sweep.wall_time[i]), f"span {sweep.span_dim[i]}/{sweep.sym_dim}"))
    if "gradient-flow" in methods:
        flow = GradientFlow(target)
        for m in ms:
            W0 = sphere(d, m, radius, generator(seed + 2))
            start = time.perf_counter()
            note = ""
            try:
                traj = flow.integrate(W0, (0.0, t_end), method="dopri5", rtol=1e-8, n_records=2,
                                      progress=progress)
            except IntegrationError as err:
                traj, note = err.trajectory, "stopped early"
            rows.append(ComparisonRow("gradient-flow", m, float(traj.residual_norm[-1]) / tnorm,
                                      2.0 * traj.n_rhs * (m + r) * m * d, time.perf_counter() - start,
                                      note or f"t={traj.t_final:g}, {traj.n_rhs} RHS"))
    if "beyond-lazy" in methods:
        for m in ms:
            bl = BeyondLazy(target, m, epochs=epochs, steps=steps, delta=delta, lam=lam)
            start = time.perf_counter()
            try:
                res = bl.run(generator(seed + 3), progress=progress)
                rows.append(ComparisonRow(
                    "beyond-lazy", m, float(res.relative_error[-1]), res.work, time.perf_counter() - start,
                    f"max |P_B U|^2 = {res.worst_proj_B / res.bound:.2f} (m+K)delta^2 (Lemma 5), "
                    f"{res.n_scalar[-1]} scalar"))
            except FloatingPointError as err:
                rows.append(ComparisonRow("beyond-lazy", m, float("nan"), float("nan"),
                                          time.perf_counter() - start, str(err)))
    if "power" in methods:
        res = tensor_power_method(target, r, n_starts=n_starts, n_iters=n_iters, rng=generator(seed + 4))
        rows.append(ComparisonRow("power", res.rank, float(res.relative_error[-1]), res.work, res.wall_time,
                                  f"{res.n_contractions} contractions"))
    return Comparison(rows, dict(d=d, r=r, order=target.order, ms=ms, seed=seed, a=a.tolist(),
                                 t_end=t_end, radius=radius, epochs=epochs, steps=steps, delta=delta,
                                 lam=lam, n_starts=n_starts, n_iters=n_iters,
                                 lazy_m_needed=-(-symmetric_dim(d, target.order) // d)))


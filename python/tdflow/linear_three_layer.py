"""The three-layer experiment of Min, Vidal, Mallada (ICML 2023, Sec. 5 and App. A, Figure 1 left):
the rate bound ``Delta*(D21, D23)`` of Theorem 2 under NTK, Fan-in and Fan-out initialisations.

The paper draws ``W_1`` (n x h_1), ``W_2`` (h_1 x h_2), ``W_3`` (h_2 x m) with n = 5, m = 1,
h_1 = h_2 = 200, 100 draws per scheme, and shows ``Delta*`` as a box plot:

* ``"ntk"``: every entry N(0, 1); the value shown is divided by ``sqrt(m h_1 h_2)`` (the notes'
  reading of App. A; the paper does not say more about this scaling);
* ``"fan-in"`` (Xavier): variances 1/n, 1/h_1, 1/h_2;
* ``"fan-out"``: variances 1/h_1, 1/h_2, 1/m.

tdflow adds what the figure leaves out: each draw is also run by gradient flow on the paper's
loss ``1/2 ||Y - W_1 W_2 W_3||_F^2`` with ``Y`` the all-ones n x m matrix (the target of the
paper's n = 5 gradient-descent runs), and the box plot sets the rate bound ``gamma Delta*``
(``gamma = 2``) beside the observed rate ``min_t ||grad L||^2 / (L - L*)`` and
``2 lambda_min(T)`` at t = 0. NTK rates are divided by the same ``sqrt(m h_1 h_2)``.
"""
from __future__ import annotations

import dataclasses
import math
from typing import List, Optional

import numpy as np

from . import io
from .display import Summarised
from . import linear_bounds as lb
from ._checks import positive_int, real_number
from .linear import DeepLinearFlow

KIND = "linear-three-layer"
SCHEMES = ("ntk", "fan-in", "fan-out")
DEFAULTS = dict(n=5, m=1, h1=200, h2=200, draws=100, seed=0, horizon=20.0, rtol=1e-8, n_records=101)


def scheme_std(scheme: str, n: int, h1: int, h2: int, m: int):
    """Standard deviations of the entries of (W_1, W_2, W_3) under ``scheme`` (MVM App. A)."""
    if scheme == "ntk":
        return (1.0, 1.0, 1.0)
    if scheme == "fan-in":
        return (1 / math.sqrt(n), 1 / math.sqrt(h1), 1 / math.sqrt(h2))
    if scheme == "fan-out":
        return (1 / math.sqrt(h1), 1 / math.sqrt(h2), 1 / math.sqrt(m))
    raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")


def display_scale(scheme: str, n: int, h1: int, h2: int, m: int) -> float:
    """The factor the figure applies to a scheme's values: ``1/sqrt(m h_1 h_2)`` for NTK, else 1."""
    return 1 / math.sqrt(m * h1 * h2) if scheme == "ntk" else 1.0


@dataclasses.dataclass(repr=False)
class ThreeLayerResult(Summarised):
    """Arrays of shape (schemes, draws), in the figure's scale (NTK divided by sqrt(m h1 h2)):
    ``delta_star`` (Theorem 2's Delta*), ``bound`` (the rate bound ``2 Delta*``), ``ntk_rate``
    (``2 lambda_min(T)`` at t = 0), ``rate_min`` and ``rate_secant`` (observed rates of the loss
    gap, :meth:`~tdflow.linear.LinearTrajectory.observed_rate`)."""

    schemes: List[str]
    delta_star: np.ndarray
    bound: np.ndarray
    ntk_rate: np.ndarray
    rate_min: np.ndarray
    rate_secant: np.ndarray
    params: dict

    def _summary(self) -> list:
        p = self.params
        return [("schemes", self.schemes), ("draws", p["draws"]), ("n", p["n"]), ("m", p["m"]),
                ("h1", p["h1"]), ("h2", p["h2"]), ("holds", self.holds())]

    def _table(self):
        """One row per scheme: medians over the draws (the figure's scale)."""
        return (("scheme", "median Delta*", "median bound", "median 2 lmin(T(0))",
                 "median observed min rate"),
                [(s, np.median(self.delta_star[i]), np.median(self.bound[i]),
                  np.median(self.ntk_rate[i]), np.median(self.rate_min[i]))
                 for i, s in enumerate(self.schemes)])

    def holds(self, slack: float = 1e-8) -> bool:
        """Every observed rate is at least its bound (up to a relative ``slack``)."""
        return bool(np.all(self.rate_min >= self.bound * (1 - slack)))

    def summary(self) -> str:
        p = self.params
        head = (f"{'scheme':<8} {'Delta* median':>13} {'[min, max]':>19} {'bound 2Delta*':>13} "
                f"{'2 lmin(T(0))':>12} {'observed min':>12} {'secant':>9} {'obs/bound':>9}")
        lines = [f"three-layer, n={p['n']} m={p['m']} h1={p['h1']} h2={p['h2']}, "
                 f"{p['draws']} draws per scheme (medians; NTK divided by sqrt(m h1 h2))",
                 head, "-" * len(head)]
        for i, s in enumerate(self.schemes):
            d, pos = self.delta_star[i], self.bound[i] > 0
            lines.append(
                f"{s:<8} {np.median(d):13.4g} {f'[{d.min():.4g}, {d.max():.4g}]':>19} "
                f"{np.median(self.bound[i]):13.4g} {np.median(self.ntk_rate[i]):12.4g} "
                f"{np.median(self.rate_min[i]):12.4g} {np.median(self.rate_secant[i]):9.4g} "
                f"{np.median(self.rate_min[i][pos] / self.bound[i][pos]) if pos.any() else math.nan:9.3g}")
        verdict = "holds" if self.holds() else "is VIOLATED"
        lines.append(f"observed min rate >= bound 2 Delta* {verdict} in every draw")
        return "\n".join(lines)

    def save(self, path):
        """Every array, one row per scheme, as ``.npz`` (tdflow.io format)."""
        arrays = {k: getattr(self, k) for k in ("delta_star", "bound", "ntk_rate", "rate_min", "rate_secant")}
        return io.save_npz(path, arrays, dict(self.params, schemes=self.schemes), kind=KIND)


def observed_rates(flow: DeepLinearFlow, layers, horizon: float, start: float, bound: float, *,
                   rtol: float, n_records: int, progress: Optional[bool] = None):
    """``(min rate, secant rate)`` of the loss gap along the flow from ``layers`` until the gap has
    fallen by ``e^-horizon``: runs of length ``horizon / start`` (``start``: the rate at t = 0)
    with records spaced geometrically from the start of each run (a fast decay is resolved),
    repeated from the end state until the gap is small enough; ``bound`` (> 0: a proven rate)
    caps the number of runs, since the gap must have fallen by then (100 runs when it is 0)."""
    if not start > 0:
        raise ValueError(f"the rate at t = 0 is {start:.3g}: no decay to measure")
    length = horizon / start
    runs = math.ceil(start / bound) + 1 if bound > 0 else 100
    t0, gap0, t_all, gap_all, rate_all = 0.0, None, [], [], []
    for _ in range(runs):
        t_eval = t0 + np.concatenate([[0.0], np.geomspace(1e-4 * length, length, n_records - 1)])
        tr = flow.integrate(layers, (t0, t0 + length), t_eval=t_eval, rtol=rtol,
                            save_products=False, save_imbalances=False, progress=progress)
        gap0 = tr.gap[0] if gap0 is None else gap0
        t_all.append(tr.t), gap_all.append(tr.gap), rate_all.append(tr.rate)
        layers, t0 = tr.layers, t0 + length
        if tr.gap[-1] <= math.exp(-horizon) * gap0:
            break
    t, gap, rate = (np.concatenate(a) for a in (t_all, gap_all, rate_all))
    if not gap0 > 0:
        raise ValueError("the loss gap is 0 at t = 0: no decay to measure")
    ok = (gap > 1e-10 * gap0) & (gap > 0)  # below: rounding of the residual
    last = int(np.flatnonzero(ok)[-1])
    return float(np.min(rate[ok])), float(math.log(gap0 / gap[last]) / t[last]) if last else math.nan


def run_three_layer(*, n: int = DEFAULTS["n"], m: int = DEFAULTS["m"], h1: int = DEFAULTS["h1"],
                    h2: int = DEFAULTS["h2"], draws: int = DEFAULTS["draws"],
                    seed: int = DEFAULTS["seed"], schemes=SCHEMES,
                    horizon: float = DEFAULTS["horizon"], rtol: float = DEFAULTS["rtol"],
                    n_records: int = DEFAULTS["n_records"],
                    progress: Optional[bool] = None) -> ThreeLayerResult:
    """Draw ``draws`` initialisations per scheme, compute Theorem 2's Delta* and run each by
    gradient flow (dopri5, ``rtol``) until the loss gap has fallen by ``e^-horizon``
    (:func:`observed_rates`). Draw k of every scheme uses the seed ``(seed, k)``; a draw with
    Delta* = 0 (possible for small widths) keeps bound 0."""
    n, m, h1, h2 = (positive_int(v, k) for v, k in ((n, "n"), (m, "m"), (h1, "h1"), (h2, "h2")))
    draws, seed = positive_int(draws, "draws"), positive_int(seed, "seed", minimum=0)
    horizon = real_number(horizon, "horizon", minimum=0.0, strict=True)
    if horizon > 40:  # records below 1e-10 gap(0) = e^-23 gap(0) are rounding anyway
        raise ValueError(f"horizon must be <= 40 (the gap is resolved down to e^-23), got {horizon}")
    rtol = real_number(rtol, "rtol", minimum=0.0, strict=True)
    n_records = positive_int(n_records, "n_records", minimum=3)
    schemes = list(schemes)
    for s in schemes:
        scheme_std(s, n, h1, h2, m)  # validates the name
    flow = DeepLinearFlow(np.ones((n, m)), (h1, h2))
    shapes = [(n, h1), (h1, h2), (h2, m)]
    out = np.full((5, len(schemes), draws), np.nan)
    for i, s in enumerate(schemes):
        std, scale = scheme_std(s, n, h1, h2, m), display_scale(s, n, h1, h2, m)
        for k in range(draws):
            rng = np.random.default_rng([seed, k])
            layers = [sd * rng.standard_normal(shape) for sd, shape in zip(std, shapes)]
            D = flow.imbalances(layers)
            # Theorem 2 with D21 = -D_1, D23 = D_2; below 0 only by rounding (lambda_min(T) >= 0)
            delta = max(lb.three_layer_alpha(-D[0], D[1], n, m), 0.0)
            bound, start = 2 * flow.mu * delta, 2 * flow.mu * flow.ntk_min_eig(layers)
            rates = observed_rates(flow, layers, horizon, start, bound, rtol=rtol,
                                   n_records=n_records, progress=progress)
            out[:, i, k] = (delta * scale, bound * scale, start * scale, rates[0] * scale,
                            rates[1] * scale)
    params = dict(n=n, m=m, h1=h1, h2=h2, draws=draws, seed=seed, horizon=horizon, rtol=rtol,
                  n_records=n_records, target="ones", gamma=2.0)
    return ThreeLayerResult(schemes, *out, params)


def plot_three_layer(result: ThreeLayerResult, path=None, *, ax=None):
    """Box plot per scheme: the rate bound ``2 Delta*``, ``2 lambda_min(T(0))`` and the observed
    minimum rate (log scale).

    Parameters
    ----------
    result : ThreeLayerResult
        The draws (:func:`run_three_layer`, ``tdflow linear three-layer``).
    path : str or os.PathLike, optional
        Write the figure there (:func:`tdflow.plot.save_figure`).
    ax : matplotlib.axes.Axes, optional
        Draw on this Axes instead of a new figure.

    Returns
    -------
    matplotlib.figure.Figure
        The figure: per scheme, boxes of the bound, ``2 lambda_min(T(0))`` and the observed rate.
    """
    from .plot import panels, save_figure

    fig, (ax,), created = panels(ax, 1, (8, 4.8), "ax")
    series = (("bound $2\\Delta^*$ (Theorem 2)", result.bound, "tab:blue"),
              ("$2\\lambda_{\\min}(\\mathcal{T})$ at $t=0$", result.ntk_rate, "tab:gray"),
              ("observed min rate", result.rate_min, "tab:orange"))
    width, ns = 0.25, len(result.schemes)
    for j, (label, data, color) in enumerate(series):
        pos = np.arange(ns) + (j - 1) * width
        positive = [d[d > 0] for d in data]  # a zero bound (Delta* = 0) has no place on a log axis
        bp = ax.boxplot(positive, positions=pos, widths=0.8 * width, patch_artist=True,
                        manage_ticks=False, medianprops=dict(color="black"))
        for patch in bp["boxes"]:
            patch.set(facecolor=color, alpha=0.6)
        ax.plot([], [], color=color, lw=6, alpha=0.6, label=label)
    ax.set_xticks(np.arange(ns))
    ax.set_xticklabels([s + (" / sqrt(m h1 h2)" if s == "ntk" else "") for s in result.schemes])
    ax.set_yscale("log")
    p = result.params
    ax.set(ylabel=r"rate of $L(t) - L^*$",
           title=f"Three-layer model, n={p['n']}, m={p['m']}, h1={p['h1']}, h2={p['h2']}: "
                 f"{p['draws']} draws per scheme")
    ax.legend(fontsize=8)
    return save_figure(fig, path, dpi=120, close=created)

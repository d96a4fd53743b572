"""Rate bounds against observed rates on deep linear models: the ``tdflow linear`` job.

Each case is one model and one initialisation; it is integrated with the adaptive stepper
(dopri5) and with fixed-step RK4, and the table compares the bound of
:meth:`tdflow.linear.DeepLinearFlow.rate_bound` with the observed decay rates of the loss gap
and the drift of the conserved imbalances.
"""
from __future__ import annotations

import dataclasses
from typing import List, Optional, Sequence

import numpy as np

from . import io
from .display import Summarised
from ._checks import generator, positive_int, real_number
from .linear import DeepLinearFlow, LinearTrajectory, RateBound

KIND = "linear-rates"


@dataclasses.dataclass
class LinearCase:
    """One model, one initialisation and the time to integrate to."""

    name: str
    flow: DeepLinearFlow
    layers0: List[np.ndarray]
    t_end: float


def _scalar_case(name: str, weights: Sequence[float], y: float, t_end: float) -> LinearCase:
    flow = DeepLinearFlow([[y]], (1,) * (len(weights) - 1))
    return LinearCase(name, flow, [np.array([[float(w)]]) for w in weights], t_end)


def _factor(W: np.ndarray, h: int, c: float):
    """Layers W_1 (n x h), W_2 (h x m) with W_1 W_2 = W, balanced for c = 1 (D = 0 on the
    singular spaces), W_1 scaled by c and W_2 by 1/c otherwise (D = (c^2 - c^-2) diag(s))."""
    U, s, Vt = np.linalg.svd(W, full_matrices=False)
    k = s.size
    W1 = np.zeros((W.shape[0], h))
    W2 = np.zeros((h, W.shape[1]))
    W1[:, :k] = c * U * np.sqrt(s)
    W2[:k, :] = (np.sqrt(s)[:, None] * Vt) / c
    return [W1, W2]


def default_cases(rng=0) -> List[LinearCase]:
    """The cases of ``tdflow linear``: balanced against unbalanced initialisations with the same
    initial product, for a scalar two-factor model, a 3-layer scalar model, a 3 x 3 two-layer
    factorisation and a two-layer regression, plus one random initialisation each."""
    rng = generator(rng)
    cases = [
        _scalar_case("scalar L=2 balanced", [0.1, 0.1], 1.0, 10.0),
        _scalar_case("scalar L=2 d=1", [1.0, 0.01], 1.0, 6.0),
        _scalar_case("scalar L=2 d=4", [2.0, 0.005], 1.0, 3.0),
        _scalar_case("scalar L=3 balanced", [0.3, 0.3, 0.3], 1.0, 8.0),
        _scalar_case("scalar L=3 unbalanced", [1.5, 0.3, 0.06], 1.0, 5.0),
    ]
    # two-layer 3 x 3 factorisation: initial product Y + E with ||E||_F = sigma_min(Y) / 2
    Q1, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    Q2, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    Y = Q1 @ np.diag([3.0, 2.0, 1.5]) @ Q2.T
    E = rng.standard_normal((3, 3))
    W0 = Y + 0.75 * E / np.linalg.norm(E)
    flow = DeepLinearFlow(Y, (3,))
    cases += [
        LinearCase("matrix 3x3 h=3 balanced", flow, _factor(W0, 3, 1.0), 4.0),
        LinearCase("matrix 3x3 h=3 c=1.5", flow, _factor(W0, 3, 1.5), 3.0),
        LinearCase("matrix 3x3 h=3 c=2.5", flow, _factor(W0, 3, 2.5), 1.5),
    ]
    # two-layer regression (N = 20, n_0 = 3, h = m = 2), initial product near the least-squares
    # fit; c = 0.5 makes the second layer the larger one, D = (c^2 - c^-2) diag(s) < 0
    X = rng.standard_normal((20, 3))
    Yr = X @ rng.standard_normal((3, 2)) + 0.1 * rng.standard_normal((20, 2))
    reg = DeepLinearFlow(Yr, (2,), X=X)
    Ws = reg.W_star
    s_min = np.linalg.svd(Ws, compute_uv=False)[-1]
    E = rng.standard_normal(Ws.shape)
    W0 = Ws + 0.5 * s_min * np.sqrt(reg.mu / reg.K) * E / np.linalg.norm(E)
    cases += [
        LinearCase("regression h=2 balanced", reg, _factor(W0, 2, 1.0), 2.0),
        LinearCase("regression h=2 c=0.5", reg, _factor(W0, 2, 0.5), 0.6),
    ]
    return cases


@dataclasses.dataclass(repr=False)
class LinearComparison(Summarised):
    """Per case: the bound, the observed rates (dopri5) and the imbalance drift of both steppers."""

    names: List[str]
    bounds: List[RateBound]
    trajectories: List[LinearTrajectory]  # dopri5
    rk4_drift: np.ndarray  # (cases,) max relative imbalance drift with RK4
    params: dict

    def rows(self) -> List[dict]:
        out = []
        for name, b, tr, dr in zip(self.names, self.bounds, self.trajectories, self.rk4_drift):
            drift = tr.imbalance_drift()
            out.append(dict(
                case=name, kind=b.kind, bound=b.rate, margin=b.margin,
                rate_min=tr.observed_rate("min"), rate_secant=tr.observed_rate("secant"),
                rate_final=tr.observed_rate("final"),
                drift_dopri5=float(drift.max()) if drift.size else 0.0, drift_rk4=float(dr),
            ))
        return out

    def _summary(self) -> list:
        return [("cases", len(self.names)), ("holds", self.holds()),
                ("rtol", self.params.get("rtol")), ("rk4_h", self.params.get("rk4_h"))]

    def _table(self):
        """One row per case: the bound against the observed rates."""
        keys = ("case", "bound", "rate_min", "rate_secant", "rate_final", "drift_dopri5",
                "drift_rk4", "kind")
        return keys, [tuple(r[k] for k in keys) for r in self.rows()]

    def holds(self, slack: float = 1e-8) -> bool:
        """Every observed minimum rate is at least the bound (up to a relative ``slack``)."""
        return all(r["rate_min"] >= r["bound"] * (1 - slack) for r in self.rows())

    def summary(self) -> str:
        head = (f"{'case':<26} {'bound':>9} {'min rate':>9} {'secant':>9} {'final':>9} "
                f"{'margin':>8} {'D drift dopri5':>14} {'D drift rk4':>11}  bound kind")
        lines = [head, "-" * len(head)]
        for r in self.rows():
            lines.append(
                f"{r['case']:<26} {r['bound']:9.4f} {r['rate_min']:9.4f} {r['rate_secant']:9.4f} "
                f"{r['rate_final']:9.4f} {r['margin']:8.4f} {r['drift_dopri5']:14.2e} {r['drift_rk4']:11.2e}"
                f"  {r['kind']}")
        verdict = "holds" if self.holds() else "is VIOLATED"
        lines.append(f"rates of L(t) - f* (-d/dt log); 'min rate' >= 'bound' {verdict} in every case; "
                     f"bound kinds: tdflow.linear_bounds.STATEMENTS")
        return "\n".join(lines)

    def save(self, path):
        """Rates, bounds and the loss-gap curves as ``.npz`` (tdflow.io format)."""
        rows = self.rows()
        arrays = {k: np.array([r[k] for r in rows]) for k in rows[0] if k not in ("case", "kind")}
        for i, tr in enumerate(self.trajectories):
            arrays[f"t_{i}"], arrays[f"gap_{i}"], arrays[f"rate_{i}"] = tr.t, tr.gap, tr.rate
        meta = dict(self.params, cases=self.names, kinds=[r["kind"] for r in rows])
        return io.save_npz(path, arrays, meta, kind=KIND)


def run_linear_comparison(
    cases: Optional[Sequence[LinearCase]] = None,
    *,
    rng=0,
    rtol: float = 1e-10,
    rk4_h: float = 0.002,
    n_records: int = 401,
    progress: Optional[bool] = None,
) -> LinearComparison:
    """Integrate every case with dopri5 (``rtol``) and RK4 (step ``rk4_h``) and compare rates."""
    if cases is None:
        cases = default_cases(rng)
    cases = list(cases)
    if not cases or not all(isinstance(c, LinearCase) for c in cases):
        raise TypeError("cases must be a non-empty sequence of LinearCase")
    rtol = real_number(rtol, "rtol", minimum=0.0, strict=True)
    rk4_h = real_number(rk4_h, "rk4_h", minimum=0.0, strict=True)
    n_records = positive_int(n_records, "n_records", minimum=2)
    bounds, trajs, rk4 = [], [], []
    for c in cases:
        bounds.append(c.flow.rate_bound(c.layers0))
        trajs.append(c.flow.integrate(c.layers0, (0.0, c.t_end), method="dopri5", rtol=rtol,
                                      n_records=n_records, progress=progress))
        tr = c.flow.integrate(c.layers0, (0.0, c.t_end), method="rk4", h=rk4_h,
                              n_records=n_records, save_products=False, progress=progress)
        d = tr.imbalance_drift()
        rk4.append(float(d.max()) if d.size else 0.0)
    params = dict(rtol=rtol, rk4_h=rk4_h, n_records=n_records, t_end=[c.t_end for c in cases])
    return LinearComparison([c.name for c in cases], bounds, trajs, np.array(rk4), params)


def plot_linear_comparison(result: LinearComparison, path=None, *, axes=None):
    """Rate bounds against observed rates in two panels.

    The loss gap ``L(t) - f*`` of every case (log scale) with its guaranteed envelope
    ``gap(0) exp(-bound t)`` dashed, and the instantaneous rate with the bound dotted.

    Parameters
    ----------
    result : LinearComparison
        The cases (:func:`run_linear_comparison`, ``tdflow linear``).
    path : str or os.PathLike, optional
        Write the figure there (:func:`tdflow.plot.save_figure`).
    axes : sequence of 2 matplotlib.axes.Axes, optional
        Draw on these instead of a new figure.

    Returns
    -------
    matplotlib.figure.Figure
        The figure: each case's loss gap with its envelope, and its rate with the bound.
    """
    from .plot import _pyplot, panels, save_figure

    plt = _pyplot()
    n = len(result.names)
    colors = plt.get_cmap("tab10")(np.arange(n) % 10)
    fig, axes, created = panels(axes, 2, (13, 4.8))
    for i, (name, b, tr) in enumerate(zip(result.names, result.bounds, result.trajectories)):
        ok = tr.gap > 1e-10 * tr.gap[0]
        axes[0].semilogy(tr.t[ok], tr.gap[ok], color=colors[i], lw=1.5, label=name)
        env = tr.gap[0] * np.exp(-b.rate * (tr.t - tr.t[0]))
        keep = env > 1e-10 * tr.gap[0]
        axes[0].semilogy(tr.t[keep], env[keep], color=colors[i], lw=1, ls="--")
        axes[1].plot(tr.t[ok], tr.rate[ok], color=colors[i], lw=1.5)
        axes[1].axhline(b.rate, color=colors[i], lw=1, ls=":")
    axes[0].set(xlabel="t", ylabel=r"$L(t) - f^*$",
                title="Loss gap (solid) and bound envelope $e^{-\\mathrm{bound}\\,t}$ (dashed)")
    axes[0].legend(fontsize=7, ncol=2)
    axes[1].set_yscale("log")
    axes[1].set(xlabel="t", ylabel=r"$-\frac{d}{dt}\log(L - f^*)$",
                title="Instantaneous rate (solid) and its lower bound (dotted)")
    return save_figure(fig, path, dpi=120, close=created)

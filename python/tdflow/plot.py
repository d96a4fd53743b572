"""Figures (matplotlib is an optional dependency: ``pip install 'tdflow[plot]'``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    try:
        import matplotlib.pyplot as plt  # without a display matplotlib falls back to Agg
    except ImportError:
        raise ImportError(
            "plotting needs matplotlib: python -m pip install 'tdflow[plot]' (or matplotlib)"
        ) from None
    return plt


def plot_figure1(result, path=None, *, seed_index: int = 0):
    """Three panels: the loss of every seed (log scale), the per-direction residuals
    ``(T* - T)(e_i^4)`` of one seed (the deflation staircase) with the other seeds faint, and
    that seed's column norms. Returns the matplotlib Figure; saves it when ``path`` is given."""
    plt = _pyplot()
    t, a = result.t, result.a
    r = a.size
    colors = plt.get_cmap("viridis")(np.linspace(0.0, 0.85, r))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), constrained_layout=True)

    ax = axes[0]
    for s in range(result.seeds.size):
        ax.semilogy(t, np.maximum(result.loss[s], 1e-32), lw=1.4 if s == seed_index else 0.8,
                    alpha=1.0 if s == seed_index else 0.45, color="k" if s == seed_index else "0.4",
                    label=f"seed {result.seeds[s]}" if s in (seed_index,) else None)
    for i in range(r):
        ax.axvline(result.fit_times[seed_index, i], color=colors[i], ls=":", lw=1)
    # cut the final exponential convergence so that the staircase stays readable
    ax.set_ylim(bottom=max(np.nanmin(result.loss) / 10, 1e-6 * np.nanmax(result.loss[:, 0])))
    ax.set(xlabel="t", ylabel=r"loss $\frac{1}{2}\|T-T^*\|_F^2$",
           title=f"Loss, {result.seeds.size} seeds (dotted: fit times of seed {result.seeds[seed_index]})")
    ax.legend(loc="lower left", fontsize=8)

    ax = axes[1]
    for i in range(r):
        for s in range(result.seeds.size):
            if s != seed_index:
                ax.plot(t, result.directional_residual[s, :, i], color=colors[i], lw=0.6, alpha=0.3)
        ax.plot(t, result.directional_residual[seed_index, :, i], color=colors[i], lw=2,
                label=fr"$i={i + 1}$, $a_i={a[i]:.3f}$")
    ax.set(xlabel="t", ylabel=r"$(T^*-T)(e_i^{\otimes 4})$",
           title="Per-direction residual: largest fitted first")
    ax.legend(fontsize=8)

    ax = axes[2]
    norms = result.norms[seed_index]
    ax.semilogy(t, np.maximum(norms, 1e-300), color="0.3", lw=0.6, alpha=0.6)
    ax.set(xlabel="t", ylabel=r"$\|w_k\|$", title=f"Column norms, seed {result.seeds[seed_index]}")
    p = result.params
    fig.suptitle(
        f"Gradient flow, d={p.get('d')}, m={p.get('m')}, r={r}, ratio {p.get('ratio')}, "
        f"init radius {p.get('radius'):g}, {p.get('method')}"
    )
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
        plt.close(fig)
    return fig

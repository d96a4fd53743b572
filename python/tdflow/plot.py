"""Figures (matplotlib is an optional dependency: ``pip install 'tdflow[plot]'``).

Every plotting function of tdflow returns the matplotlib Figure and draws on the Axes it is given
(``ax`` for a one-panel figure, ``axes`` for several; :func:`panels`), so that a figure can be
placed in a notebook or a larger layout; with ``path`` it is also written (:func:`save_figure`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import io


def _pyplot():
    try:
        import matplotlib.pyplot as plt  # without a display matplotlib falls back to Agg
    except ImportError:
        raise ImportError(
            "plotting needs matplotlib: python -m pip install 'tdflow[plot]' (or matplotlib)"
        ) from None
    return plt


def panels(axes, n: int, figsize, name: str = "axes"):
    """The Axes to draw ``n`` panels on: new ones in a row, or those given.

    Parameters
    ----------
    axes : matplotlib.axes.Axes or sequence of Axes or None
        None: a new figure with ``n`` panels in a row; else ``n`` Axes (one Axes when ``n`` is
        1; a sequence or the array ``plt.subplots`` returns, in reading order).
    n : int
        The number of panels drawn.
    figsize : tuple of float
        The size of a new figure, in inches.
    name : str
        The argument's name, for the error message.

    Returns
    -------
    fig : matplotlib.figure.Figure
        The figure the panels belong to.
    axes : list of matplotlib.axes.Axes
        The ``n`` Axes.
    created : bool
        True when the figure is new (tdflow then titles and, with a path, closes it).
    """
    plt = _pyplot()
    if axes is None:
        fig, new = plt.subplots(1, n, figsize=figsize, constrained_layout=True)
        return fig, list(np.ravel(new)), True
    from matplotlib.axes import Axes

    given = [axes] if isinstance(axes, Axes) else list(np.ravel(np.asarray(axes, dtype=object)))
    if len(given) != n or not all(isinstance(a, Axes) for a in given):
        want = "one matplotlib Axes" if n == 1 else f"{n} matplotlib Axes"
        raise ValueError(f"{name} must be {want}, got {len(given)} object(s) of types "
                         f"{sorted({type(a).__name__ for a in given})}")
    try:
        fig = given[0].get_figure(root=True)  # the Figure, also for Axes in a SubFigure
    except TypeError:  # matplotlib < 3.10
        fig = given[0].figure
    return fig, given, False


def save_figure(fig, path=None, *, dpi: int = 120, close: bool = True):
    """Write a figure to a file.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure.
    path : str or os.PathLike, optional
        Where to write it (its folder is created; the format follows the suffix; the file is
        replaced atomically). None: nothing is written.
    dpi : int
        Resolution of a raster format.
    close : bool
        Close the figure once written (True; tdflow keeps open the figures of Axes it was
        given).

    Returns
    -------
    matplotlib.figure.Figure
        ``fig``.
    """
    if path is None:
        return fig
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or None  # a file handle carries no name to infer it
    try:  # tdflow's one writer: a killed run leaves the old figure or the new one
        io.atomic_write(path, lambda fh: fig.savefig(fh, dpi=dpi, format=fmt))
    finally:
        if close:
            _pyplot().close(fig)
    return fig


def plot_figure1(result, path=None, *, seed_index: int = 0, axes=None):
    """Figure 1 of Ge et al. 2021 in three panels.

    The loss of every seed (log scale), the per-direction residuals ``(T* - T)(e_i^4)`` of one
    seed (the deflation staircase) with the other seeds faint, and that seed's column norms.

    Parameters
    ----------
    result : tdflow.figure1.Figure1Result
        The runs (:func:`tdflow.figure1.run_figure1`, ``tdflow fig1``).
    path : str or os.PathLike, optional
        Write the figure there (:func:`save_figure`).
    seed_index : int
        The seed drawn in full (an index into ``result.seeds``).
    axes : sequence of 3 matplotlib.axes.Axes, optional
        Draw on these instead of a new figure.

    Returns
    -------
    matplotlib.figure.Figure
        The figure: every seed's loss, one seed's residuals and its column norms.
    """
    plt = _pyplot()
    t, a = result.t, result.a
    r = a.size
    colors = plt.get_cmap("viridis")(np.linspace(0.0, 0.85, r))
    fig, axes, created = panels(axes, 3, (15, 4.2))

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
    if created:
        fig.suptitle(
            f"Gradient flow, d={p.get('d')}, m={p.get('m')}, r={r}, ratio {p.get('ratio')}, "
            f"init radius {p.get('radius'):g}, {p.get('method')}"
        )
    return save_figure(fig, path, dpi=120, close=created)


def plot_deflation(result, path=None, *, axes=None):
    """A run of Algorithm 2 in four panels.

    ``||T - T*||_F`` (log scale) with the epoch boundaries (dotted) and ``eps``; the
    per-direction residuals ``(T* - T)(u_i^{(x)l})`` with the epoch boundaries and each
    direction's fit time (dots); ``â_i(t)`` against the weights ``a_i`` (dashed); the final
    ``â_i`` against ``a_i`` (log-log, diagonal = exact).

    Parameters
    ----------
    result : tdflow.DeflationResult
        The run.
    path : str or os.PathLike, optional
        Write the figure there (:func:`save_figure`).
    axes : sequence of 4 matplotlib.axes.Axes, optional
        Draw on these instead of a new figure.

    Returns
    -------
    matplotlib.figure.Figure
        The figure: the loss with its epochs, the residuals, ``â_i(t)`` and the final ``â_i``.
    """
    plt = _pyplot()
    rec, a = result.records, np.asarray(result.target.a)
    r = a.size
    t = rec["t"]
    colors = plt.get_cmap("viridis")(np.linspace(0.0, 0.85, r))
    bounds = result.epochs["t_end"]
    fig, axes, created = panels(axes, 4, (20, 4.4))

    def epochs(ax):
        for tb in bounds:
            ax.axvline(tb, color="0.6", ls=":", lw=0.8)

    ax = axes[0]
    ax.semilogy(t, np.maximum(rec["residual_norm"], 1e-300), color="k", lw=1.2)
    ax.axhline(result.schedule.eps, color="tab:red", ls="--", lw=1, label=f"eps = {result.schedule.eps:g}")
    epochs(ax)
    ax.set(xlabel="t", ylabel=r"$\|T - T^*\|_F$", title=f"Residual, {result.n_epochs} epochs (dotted)")
    ax.legend(fontsize=8)

    ax = axes[1]
    for i in range(r):
        ax.plot(t, rec["directional_residual"][:, i], color=colors[i], lw=1.4,
                label=fr"$i={i}$, $a_i={a[i]:.3g}$" if r <= 12 else None)
        ft = result.directions["fitted_t"][i]
        if np.isfinite(ft):
            ax.plot([ft], [np.interp(ft, t, rec["directional_residual"][:, i])], "o", color=colors[i], ms=4)
    epochs(ax)
    ax.set(xlabel="t", ylabel=r"$(T^* - T)(u_i^{\otimes l})$",
           title="Per-direction residuals (dots: fitted)")
    if r <= 12:
        ax.legend(fontsize=7)

    ax = axes[2]
    for i in range(r):
        ax.plot(t, rec["a_hat"][:, i], color=colors[i], lw=1.4)
        ax.axhline(a[i], color=colors[i], ls="--", lw=0.8)
    epochs(ax)
    ax.set(xlabel="t", ylabel=r"$\hat a_i = \sum_{k \in S_i} \|w_k\|^2$",
           title=r"$\hat a_i(t)$ and $a_i$ (dashed)")

    ax = axes[3]
    ah = np.maximum(result.a_hat, 1e-6 * a.max())
    ax.loglog(a, ah, "o", color="k")
    lo, hi = min(a.min(), ah.min()) / 1.5, max(a.max(), ah.max()) * 1.5
    ax.plot([lo, hi], [lo, hi], color="0.5", lw=0.8)
    ax.set(xlabel=r"$a_i$", ylabel=r"final $\hat a_i$", title=r"$\hat a_i$ against $a_i$",
           xlim=(lo, hi), ylim=(lo, hi))
    p = result.target
    if created:
        fig.suptitle(f"Algorithm 2: d={p.dim}, r={p.rank}, m={result.m}, seed {result.seed}, "
                     f"status {result.status}, lam={result.schedule.lam:g}, "
                     f"gamma={result.schedule.gamma:g}")
    return save_figure(fig, path, dpi=110, close=created)

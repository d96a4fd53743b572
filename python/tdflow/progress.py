"""Progress bars, every one tdflow draws: shown on a terminal and in Jupyter, silent otherwise.

The bars are ``tqdm.auto``'s: a text bar on a terminal (tqdm's rule: only when stderr is a
terminal, unless asked), and in a Jupyter notebook a widget bar (tqdm.notebook, which shows
itself without a terminal; it needs ipywidgets, else tqdm falls back to the text bar, which a
notebook's stderr does not show unless ``progress=True``).
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Optional

from tqdm.auto import tqdm


def tqdm_disable(enabled: Optional[bool]) -> Optional[bool]:
    """tqdm's ``disable`` for ``enabled``: None (the default) shows a bar only on a terminal."""
    return None if enabled is None else not enabled


@contextlib.contextmanager
def progress_bar(t0: float, t1: float, *, enabled: Optional[bool] = None, desc: str = "") -> Iterator[Callable[[float], None]]:
    """Yields ``update(t)`` that moves a bar over simulated time ``[t0, t1]``.

    ``enabled=None`` shows the bar only when stderr is a terminal.
    """
    total = max(float(t1) - float(t0), 0.0)
    bar = tqdm(total=total, desc=desc, unit="t", disable=tqdm_disable(enabled),
               leave=False, bar_format="{l_bar}{bar}| t={n:.4g}/{total:.4g} [{elapsed}<{remaining}]")
    def update(t: float) -> None:
        if not bar.disable:
            bar.n = min(float(t) - float(t0), total)
            bar.refresh()
    try:
        yield update
    finally:
        bar.close()


def count_bar(total: int, desc: str, unit: str = "run", enabled: Optional[bool] = None,
              leave: bool = False):
    """A bar over ``total`` items.

    Parameters
    ----------
    total : int
        The number of items.
    desc : str
        The bar's label.
    unit : str
        What an item is.
    enabled : bool, optional
        None: shown on a terminal or in Jupyter (see the module); True / False: always / never.
    leave : bool
        Keep the finished bar on screen.

    Returns
    -------
    tqdm.auto.tqdm
        The bar (a context manager with ``update(k)`` and ``close()``).
    """
    return tqdm(total=total, desc=desc, unit=unit, leave=leave, disable=tqdm_disable(enabled))


def tqdm_replicas(n: int, enabled: Optional[bool] = None):
    """A bar over ``n`` replicas (a context manager with ``update(k)``)."""
    return count_bar(n, "replicas", "run", enabled)


class EpochBar:
    """The progress bar of a deflation run (Algorithm 2), over simulated time.

    How long a run lasts is not known in advance: it stops when ``||T - T*||_F <= eps``, usually
    long before ``max_epochs``, and epoch ``s`` lasts ``t1 + t2 ~ 1 / beta_s``, which grows by
    ``1 / (1 - gamma)`` per epoch. A bar over ``max_epochs`` epochs (as before) therefore showed
    an ETA for epochs that never run, at the pace of the short early epochs. This bar covers the
    current epoch: its total is the epoch's end time (known exactly from the schedule), it moves
    during the epoch (the core reports the simulated time every 0.25 s), and the
    ETA is the time to the end of the epoch at the pace measured so far (the wall time per unit
    of simulated time stays about the same from epoch to epoch). The label shows the epoch, the
    residual and the discovered / fitted directions.
    """

    def __init__(self, res, enabled: Optional[bool] = None):
        self.disable = tqdm_disable(enabled)
        self.cap = res.schedule.max_epochs
        self.bar = None  # made at the first epoch, when its end is known

    @property
    def shown(self) -> bool:
        return self.bar is not None and not self.bar.disable

    def start(self, res, end: float) -> None:
        """Epoch ``res.epoch`` begins; it ends at simulated time ``end``."""
        desc = f"epoch {res.epoch} (at most {self.cap})"
        if self.bar is None:
            self.bar = tqdm(total=max(float(end), res.t), initial=res.t, unit="t", leave=False,
                            disable=self.disable, smoothing=0.1, desc=desc,
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| t={n:.4g}/{total:.4g} "
                                       "[{elapsed}, epoch ends in {remaining}{postfix}]")
        elif not self.bar.disable:
            self.bar.total = max(float(end), self.bar.n)
            self.bar.set_description_str(desc, refresh=False)
            self.bar.refresh()

    def tick(self, t: float) -> None:
        """The integration reached simulated time ``t``."""
        if self.shown and t > self.bar.n:
            self.bar.update(min(float(t), self.bar.total) - self.bar.n)

    def done(self, res) -> None:
        """Epoch finished: show its outcome."""
        if not self.shown:
            return
        e = res.epochs
        self.tick(res.t)
        self.bar.set_postfix_str(f"|T-T*|={e['residual_norm'][-1]:.2e} "
                                 f"disc={e['n_discovered'][-1]} fit={e['n_fitted'][-1]}"
                                 f"/{res.target.rank}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@contextlib.contextmanager
def epoch_bar(res, *, enabled: Optional[bool] = None) -> Iterator[EpochBar]:
    """An :class:`EpochBar` for the deflation run ``res``; shown only on a terminal unless
    ``enabled``."""
    bar = EpochBar(res, enabled)
    try:
        yield bar
    finally:
        bar.close()

"""Progress bars: shown on a terminal, silent otherwise (tqdm's own rule)."""
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


def tqdm_replicas(n: int, enabled: Optional[bool] = None):
    """A bar over ``n`` replicas (a context manager with ``update(k)``)."""
    return tqdm(total=n, desc="replicas", unit="run", leave=False,
                disable=tqdm_disable(enabled))


@contextlib.contextmanager
def epoch_bar(total: int, initial: int = 0, *, enabled: Optional[bool] = None):
    """Yields ``update(result)`` that advances a bar over the epochs of a deflation run and shows
    its residual and discovered/fitted counts; shown only on a terminal unless ``enabled``."""
    bar = tqdm(total=total, initial=initial, desc="epochs", unit="epoch", leave=False,
               disable=tqdm_disable(enabled))

    def update(res) -> None:
        if bar.disable:
            return
        e = res.epochs
        bar.n = res.epoch
        bar.set_postfix_str(f"t={res.t:.0f} |T-T*|={e['residual_norm'][-1]:.2e} "
                            f"disc={e['n_discovered'][-1]} fit={e['n_fitted'][-1]}")
        bar.refresh()

    try:
        yield update
    finally:
        bar.close()

"""Thread control for the OpenMP core. Results do not depend on the thread count.

The count is process-wide: set from any Python thread, it holds for calls from every thread
(the core passes it to each parallel region instead of relying on OpenMP's per-thread setting).
A process forked after a multithreaded call (``multiprocessing`` with the "fork" start method)
keeps the count and can use its threads: the core releases GNU OpenMP's idle thread pool before
every fork, which the child would otherwise wait on forever.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

from . import _core
from ._checks import positive_int


def get_num_threads() -> int:
    """Number of OpenMP threads the C++ core uses (1 when built without OpenMP)."""
    return int(_core.get_max_threads())


def set_num_threads(n: int) -> None:
    """Set the number of OpenMP threads for the whole process (every Python thread)."""
    _core.set_max_threads(positive_int(n, "n"))


@contextlib.contextmanager
def num_threads(n: int) -> Iterator[None]:
    """Context manager: run the enclosed block with ``n`` OpenMP threads.

    The setting is process-wide, so it also holds for other threads while the block runs."""
    before = get_num_threads()
    set_num_threads(n)
    try:
        yield
    finally:
        set_num_threads(before)

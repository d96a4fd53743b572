"""Thread control for the OpenMP core. Results do not depend on the thread count.

The count is process-wide: set from any Python thread, it holds for calls from every thread
(the core passes it to each parallel region instead of relying on OpenMP's per-thread setting).
By default it is the number of CPUs the process may use (:func:`tdflow._openmp.available_cpus`:
the affinity mask, capped by a cgroup CPU quota), or ``OMP_NUM_THREADS`` when that is set.
A process forked after a multithreaded call (``multiprocessing`` with the "fork" start method)
keeps the count and can use its threads: the core releases GNU OpenMP's idle thread pool before
every fork, which the child would otherwise wait on forever.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

from . import _core
from ._checks import positive_int
from ._openmp import available_cpus


def get_num_threads() -> int:
    """Number of OpenMP threads the C++ core uses (1 when built without OpenMP)."""
    return int(_core.get_max_threads())


def set_num_threads(n: int) -> None:
    """Set the number of OpenMP threads for the whole process (every Python thread).

    The default is the number of CPUs available to the process (affinity mask and cgroup
    quota), or ``OMP_NUM_THREADS``. Only evaluations large enough to gain open a parallel region
    (about 2e5 multiply-adds; a Figure 1 sized problem never does), its blocks handed out
    dynamically; threads that run out of work spin about 20 us and then sleep (see
    :mod:`tdflow._openmp`), so they do not compete with other busy processes. Results are
    bitwise identical for every ``n``. ``integrate_batch`` runs up to ``n`` replicas at once,
    each single-threaded."""
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


if not os.environ.get("OMP_NUM_THREADS"):  # the user's choice stands
    _core.set_max_threads(min(_core.get_max_threads(), available_cpus()))

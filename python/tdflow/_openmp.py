"""How the OpenMP runtime of the compiled core is set up: its wait policy and the CPUs it may use.

Imported before ``tdflow._core`` (so it must not import it).

Wait policy. GNU OpenMP's default lets an idle thread spin 300,000 times (about 7 ms here)
before it sleeps, after every parallel region. With other processes busy on the same cores the
spinning threads eat the time slices the working thread needs: measured on 2 cores with two
``while True: pass`` processes (bench/bench_contention.py, d=50, m=2000), 2 threads took up to 1.5x
the time of 1 thread for a dense right-hand side and 1.9-12x for a whole dopri5 run; with a spin
of 1000 (about 20 us) or passive waiting, 2 threads took 0.3-1.0x. libgomp reads its settings from
the environment once, when it loads, and has no call to change them later, so
:func:`loading_environment` sets ``GOMP_SPINCOUNT=1000`` (libgomp) and ``KMP_BLOCKTIME=0``
(LLVM/Intel OpenMP: sleep at once) while the core loads, and puts the environment back
afterwards: child processes and libraries that bring their own OpenMP runtime (PyTorch,
scikit-learn wheels) do not see it. Left alone: a setting the user made (any of
``OMP_WAIT_POLICY``, ``GOMP_SPINCOUNT``, ``KMP_BLOCKTIME`` in the environment), and a runtime that
was loaded before tdflow (its settings stand). Side effect: a library that shares tdflow's own
libgomp (a source build links the system's ``libgomp.so.1``) and is loaded later waits the same way.
"""
from __future__ import annotations

import contextlib
import math
import os
from typing import Iterator, Optional

# what the core's runtime is given while it loads, unless the user chose a wait policy
WAIT_ENVIRONMENT = {"GOMP_SPINCOUNT": "1000", "KMP_BLOCKTIME": "0"}
USER_WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")


@contextlib.contextmanager
def loading_environment(environ=os.environ) -> Iterator[None]:
    """Within the block, the environment holds :data:`WAIT_ENVIRONMENT` (unless the user set a
    wait policy); afterwards it is as before."""
    if any(v in environ for v in USER_WAIT_VARIABLES):
        yield
        return
    environ.update(WAIT_ENVIRONMENT)
    try:
        yield
    finally:
        for key in WAIT_ENVIRONMENT:
            environ.pop(key, None)


def available_cpus(cgroup_root: str = "/sys/fs/cgroup", proc_cgroup: str = "/proc/self/cgroup") -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup CPU quota (cgroup v2
    ``cpu.max`` or v1 ``cpu.cfs_quota_us`` of its cgroup and the ones above it), rounded down
    (a thread throttled by the quota in the middle of a parallel loop holds up the others), >= 1."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        n = os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup_root, proc_cgroup)
    if quota is not None:
        n = min(n, max(1, math.floor(quota)))
    return max(1, n)


def cgroup_cpu_quota(cgroup_root: str = "/sys/fs/cgroup", proc_cgroup: str = "/proc/self/cgroup") -> Optional[float]:
    """The smallest CPU quota (quota / period, in CPUs) along this process's cgroup path, or None."""
    try:
        with open(proc_cgroup) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    limits = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":  # cgroup v2
            limits += _walk(os.path.join(cgroup_root), path, _v2_limit)
        elif "cpu" in controllers.split(","):
            for mount in (controllers, "cpu", "cpu,cpuacct"):
                limits += _walk(os.path.join(cgroup_root, mount), path, _v1_limit)
    return min(limits) if limits else None


def _walk(mount: str, path: str, read) -> list:
    """Limits found in the cgroup at ``path`` under ``mount`` and in each one above it."""
    found = []
    parts = [p for p in path.split("/") if p]
    for k in range(len(parts), -1, -1):
        limit = read(os.path.join(mount, *parts[:k]))
        if limit is not None:
            found.append(limit)
    return found


def _v2_limit(directory: str) -> Optional[float]:
    try:
        with open(os.path.join(directory, "cpu.max")) as f:
            quota, period = f.read().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def _v1_limit(directory: str) -> Optional[float]:
    try:
        with open(os.path.join(directory, "cpu.cfs_quota_us")) as f:
            quota = int(f.read())
        with open(os.path.join(directory, "cpu.cfs_period_us")) as f:
            period = int(f.read())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None

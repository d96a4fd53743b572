"""What this tdflow is and runs on, for bug reports: ``tdflow.show_config()``, ``tdflow doctor``."""
from __future__ import annotations

import os
import platform
import sys
from typing import Any, Dict

import numpy as np

from . import _cpu, _dispatch
from .threads import get_num_threads

# _OPENMP (the specification's date) -> OpenMP version
_OPENMP_VERSIONS = {200505: "2.5", 200805: "3.0", 201107: "3.1", 201307: "4.0", 201511: "4.5",
                    201811: "5.0", 202011: "5.1", 202111: "5.2", 202411: "6.0"}


def build_config() -> Dict[str, Any]:
    """The facts :func:`show_config` prints, as a dict (JSON-serialisable)."""
    from . import __version__

    choice = _dispatch.CHOICE
    flags = dict(item.split("=", 1) for item in _cpu.level_flags.split("|") if item)
    omp = dict(_cpu.openmp())
    features = _cpu.features()
    return {
        "tdflow": __version__,
        "python": f"{platform.python_version()} ({platform.python_implementation()})",
        "platform": platform.platform(),
        "numpy": np.__version__,
        "cpu_level": choice.level,
        "cpu_level_reason": choice.reason,
        "cpu_level_flags": flags.get(choice.level, ""),
        "levels_built": list(choice.built),
        "levels_runnable": list(choice.runnable),
        "levels_missing_features": {lv: _dispatch.missing_features(lv, features)
                                    for lv in choice.built if lv not in choice.runnable},
        "compiler": _cpu.compiler,
        "build_type": _cpu.build_type,
        "eigen": _cpu.eigen_version,
        "openmp": (_OPENMP_VERSIONS.get(omp["spec"], "unknown") if omp else None),
        "openmp_spec_date": omp.get("spec"),
        "openmp_runtime": os.path.normpath(omp["library"]) if omp.get("library") else None,
        "threads": get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
    }


def show_config(file=None) -> None:
    """Print tdflow's version, its CPU level (and why), the levels built, the compiler, Eigen,
    the OpenMP runtime and the thread count: paste it into a bug report.

    The same text is printed by ``tdflow doctor``; :func:`build_config` returns it as a dict.
    """
    c = build_config()
    runnable = ", ".join(c["levels_runnable"]) or "none"
    lacks = "".join(f"\n  not runnable   {lv}: this CPU lacks {', '.join(f)}"
                    for lv, f in c["levels_missing_features"].items())
    openmp = ("not used (single-threaded build)" if c["openmp"] is None else
              f"{c['openmp']} (_OPENMP {c['openmp_spec_date']}), runtime "
              f"{c['openmp_runtime'] or 'unknown'}")
    threads_env = c["OMP_NUM_THREADS"]
    lines = [
        f"tdflow {c['tdflow']}",
        f"  python         {c['python']} on {c['platform']}",
        f"  numpy          {c['numpy']}",
        f"  cpu level      {c['cpu_level']}: {c['cpu_level_reason']}",
        f"  level flags    {c['cpu_level_flags'] or '(compiler defaults)'}",
        f"  levels built   {', '.join(c['levels_built'])} (this CPU runs: {runnable}){lacks}",
        f"  compiler       {c['compiler']} ({c['build_type']})",
        f"  eigen          {c['eigen']}",
        f"  openmp         {openmp}",
        f"  threads        {c['threads']} (OMP_NUM_THREADS "
        f"{'not set' if threads_env is None else '= ' + threads_env})",
    ]
    print("\n".join(lines), file=file or sys.stdout)

"""Load the compiled core built for this CPU and make it ``tdflow._core``.

The C++ core is compiled once per CPU level (CMakeLists.txt): ``_core_x86_64_v2`` (SSE4.2),
``_core_x86_64_v3`` (AVX2, FMA) and ``_core_x86_64_v4`` (AVX-512) on x86-64,
``_core_baseline`` elsewhere (aarch64: NEON), or one ``_core_native`` (``-DTDFLOW_NATIVE=ON``).
:func:`load` imports the best one this CPU runs, or the one the environment variable
``TDFLOW_CPU_LEVEL`` names (``auto``, ``native``, ``v4``, ``v3``, ``v2``, ``baseline``), and
registers it as ``tdflow._core``, so that every ``from . import _core`` gets it. The CPU's
features come from ``tdflow._cpu``, which is compiled without ``-march`` and so never faults.
A level the CPU lacks is refused with an ImportError naming the missing features: loading it
would kill the process with SIGILL at its first AVX instruction.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Mapping, Optional, Sequence, Tuple

ENV = "TDFLOW_CPU_LEVEL"

# Best first. A native build is the user's explicit choice at build time, so it comes first.
LEVELS = ("native", "x86-64-v4", "x86-64-v3", "x86-64-v2", "baseline")

# The x86-64 psABI levels, each adding to the one before (names as in /proc/cpuinfo).
X86_FEATURES = {
    "x86-64-v2": ("cx16", "lahf_lm", "popcnt", "pni", "sse4_1", "sse4_2", "ssse3"),
    "x86-64-v3": ("avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe"),
    "x86-64-v4": ("avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"),
}

_ALIASES = {"": "auto", "v2": "x86-64-v2", "v3": "x86-64-v3", "v4": "x86-64-v4"}


@dataclass(frozen=True)
class Choice:
    """The core that was loaded: its level, why, and what else this build and CPU offer."""

    level: str
    reason: str
    built: Tuple[str, ...]
    runnable: Tuple[str, ...]


def module_name(level: str) -> str:
    """``'x86-64-v3'`` -> ``'_core_x86_64_v3'`` (the extension's file and PyInit name)."""
    return "_core_" + level.replace("-", "_")


def normalize(requested: str) -> str:
    """The level a ``TDFLOW_CPU_LEVEL`` value names (``auto`` for empty); ValueError if none."""
    name = _ALIASES.get(requested.strip().lower(), requested.strip().lower().replace("_", "-"))
    if name != "auto" and name not in LEVELS:
        raise ValueError(f"{ENV}={requested!r} is not a CPU level; allowed: auto, native, "
                         "v4, v3, v2, baseline (or x86-64-v4, x86-64-v3, x86-64-v2)")
    return name


def missing_features(level: str, features: Mapping[str, bool]) -> list:
    """Features that ``level`` (with the levels below it) needs and ``features`` lacks.

    ``native`` and ``baseline`` need nothing that can be checked: a native core was compiled for
    the build machine, a baseline core for the architecture's minimum.
    """
    if level not in X86_FEATURES:
        return []
    need: list = []
    for name, feats in X86_FEATURES.items():
        need += feats
        if name == level:
            break
    return [f for f in need if not features.get(f, False)]


def choose(requested: Optional[str], built: Sequence[str], features: Mapping[str, bool]) -> Choice:
    """The level to load, given the request (None: not set), the levels built (best first) and
    the CPU's features.

    Raises ImportError, with the reason and what is possible instead, when the request cannot
    be met (not built, or needs a feature this CPU lacks) or nothing built runs here.
    """
    try:
        level = normalize("auto" if requested is None else requested)
    except ValueError as err:
        raise ImportError(str(err)) from None
    built = tuple(built)
    if not built:
        raise ImportError("tdflow has no compiled core (tdflow._core_<level>) beside tdflow._cpu; "
                          "rebuild and reinstall it (python -m pip install .)")
    runnable = tuple(lv for lv in built if not missing_features(lv, features))
    if level == "auto":
        if not runnable:
            lowest = built[-1]
            raise ImportError(
                f"tdflow's compiled core needs at least {lowest}, but this CPU lacks "
                f"{', '.join(missing_features(lowest, features))}. Build from source for this "
                "CPU: CMAKE_ARGS='-DTDFLOW_CPU_LEVELS=baseline' python -m pip install tdflow "
                "--no-binary tdflow")
        level = runnable[0]
        why = "the -march=native build" if level == "native" else "the best level this CPU runs"
        how = f"{ENV} not set" if requested is None else f"{ENV}={requested}"
        return Choice(level, f"{why} ({how})", built, runnable)
    if level not in built:
        raise ImportError(f"{ENV}={requested!r}: this build of tdflow has no {level} core; "
                          f"it has {', '.join(built)}")
    missing = missing_features(level, features)
    if missing:
        runs = ", ".join(runnable) or "none of the levels built"
        raise ImportError(f"{ENV}={requested!r}: this CPU lacks {', '.join(missing)}, which "
                          f"{level} needs; it runs {runs}")
    return Choice(level, f"{ENV}={requested}", built, runnable)


CHOICE: Optional[Choice] = None  # set by load()


def built_levels(package: str) -> Tuple[str, ...]:
    """The levels whose extension module exists in ``package``, best first."""
    return tuple(lv for lv in LEVELS if importlib.util.find_spec(f"{package}.{module_name(lv)}"))


def load(package: str) -> ModuleType:
    """Import the chosen ``<package>._core_<level>``, register it as ``<package>._core``."""
    global CHOICE
    cpu = importlib.import_module(f"{package}._cpu")
    choice = choose(os.environ.get(ENV), built_levels(package), cpu.features())
    core = importlib.import_module(f"{package}.{module_name(choice.level)}")
    sys.modules[f"{package}._core"] = core
    CHOICE = choice
    return core

"""Sweep specs: :func:`parse_spec` expands a spec (TOML or a dict; format in the docstring of
:mod:`tdflow.sweeps`) into its runs, each with a stable id (:func:`run_id`)."""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import numbers
import os
from typing import Any, Dict, List, Mapping, Union

from .. import io
from .._checks import positive_int
from .kinds import KINDS, plain


@dataclasses.dataclass(frozen=True)
class Run:
    """One run of a sweep: kind, full parameter set and seed; ``id`` is their stable hash."""

    kind: str
    params: Dict[str, Any]
    seed: int
    id: str


@dataclasses.dataclass
class SweepSpec:
    """An expanded spec: the runs in order (parameter sets outer, seeds inner)."""

    kind: str
    seeds: List[int]
    param_sets: List[Dict[str, Any]]
    runs: List[Run]
    threads: int = 1
    raw: Dict[str, Any] = dataclasses.field(default_factory=dict)


def run_id(kind: str, params: Mapping[str, Any], seed: int) -> str:
    """Stable 16-hex-digit id of a run: a SHA-256 of kind, parameters and seed."""
    text = json.dumps({"kind": kind, "params": plain(params), "seed": int(seed)}, sort_keys=True,
                      separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _seeds(seeds) -> List[int]:
    if isinstance(seeds, numbers.Integral) and not isinstance(seeds, bool):
        return list(range(positive_int(seeds, "seeds")))
    if isinstance(seeds, (list, tuple, range)):
        out = [positive_int(s, "seeds entry", minimum=0) for s in seeds]
        if not out:
            raise ValueError("seeds must not be empty")
        return list(dict.fromkeys(out))
    raise TypeError(f"seeds must be a positive integer or a list of seeds, got {type(seeds).__name__}")


SPEC_KEYS = ("kind", "seeds", "threads", "fixed", "grid", "runs", "name")


def parse_spec(spec: Union[Mapping[str, Any], str, os.PathLike]) -> SweepSpec:
    """Expand a spec (a dict, or the path of a TOML file) into its runs; see the module docstring."""
    if isinstance(spec, (str, os.PathLike)):
        spec = io.load_toml(spec, "spec")
    if not isinstance(spec, Mapping):
        raise TypeError(f"spec must be a dict or the path of a TOML file, got {type(spec).__name__}")
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if unknown:
        raise ValueError(f"spec: unknown key(s) {unknown}; known: {list(SPEC_KEYS)}")
    name = spec.get("kind")
    if name not in KINDS:
        raise ValueError(f"spec: kind must be one of {sorted(KINDS)}, got {name!r}")
    kind = KINDS[name]
    seeds = _seeds(spec.get("seeds", 1))
    threads = positive_int(spec.get("threads", 1), "threads")
    fixed = spec.get("fixed", {})
    grid = spec.get("grid")
    runs = spec.get("runs")
    if not isinstance(fixed, Mapping):
        raise TypeError("spec: [fixed] must be a table of parameters")
    sets: List[Dict[str, Any]] = []
    if grid is not None:
        if not isinstance(grid, Mapping) or not grid:
            raise TypeError("spec: [grid] must be a non-empty table of lists")
        for k, v in grid.items():
            if not isinstance(v, (list, tuple)) or len(v) == 0:
                raise TypeError(f"spec: grid entry {k!r} must be a non-empty list (single values go in [fixed])")
            if k in fixed:
                raise ValueError(f"spec: {k!r} is in both [fixed] and [grid]")
        keys = list(grid)
        for values in itertools.product(*(grid[k] for k in keys)):
            sets.append(dict(fixed, **dict(zip(keys, values))))
    if runs is not None:
        if not isinstance(runs, (list, tuple)) or not all(isinstance(r, Mapping) for r in runs):
            raise TypeError("spec: runs must be a list of tables ([[runs]])")
        sets.extend(dict(fixed, **r) for r in runs)
    if grid is None and runs is None:
        sets.append(dict(fixed))
    full, out, seen = [], [], set()
    for i, s in enumerate(sets):
        p = kind.full_params(s, f"spec parameter set {i}")
        full.append(p)
        for seed in seeds:
            rid = run_id(name, p, seed)
            if rid not in seen:
                seen.add(rid)
                out.append(Run(name, p, seed, rid))
    raw = plain({k: v for k, v in spec.items()})
    return SweepSpec(name, seeds, full, out, threads, raw)

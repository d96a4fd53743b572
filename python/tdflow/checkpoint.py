"""Deflation results on disk: :func:`save` and :func:`load` (one ``.npz`` per run, the state
included, so that every file is also a checkpoint), the consistency checks of a loaded file and of
a resumed run, and the RNG state kept as JSON.

Behind :meth:`DeflationResult.save` / :meth:`DeflationResult.load`; the format itself
(atomic writes, checksums) is :mod:`tdflow.io`'s.
"""
from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np

from . import io
from ._checks import positive_int, real_array, real_number
from .deflation_result import (DIRECTION_FIELDS, EPOCH_FIELDS, EVENT_FIELDS, GROUPS, OPTION_NAMES,
                               PARTITION_FIELDS, REDRAW_FIELDS, STATUSES, DeflationResult)
from .options import SolverOptions
from .schedule import Schedule
from .solution import Status, status_arg
from .target import Target

KIND = "deflation"
VERSION = 2  # of the per-epoch records (meta "deflation_version"); 1: before Proposition 1's margins


def save(res: DeflationResult, path) -> Path:
    """:meth:`DeflationResult.save`: the whole result, state included, atomically."""
    arrays = {"U": res.target.U, "a": res.target.a, "W": res.W, "member": res.member,
              "armed": res.armed}
    for group in GROUPS:
        for k, v in getattr(res, group).items():
            arrays[f"{group}/{k}"] = v
    meta = dict(order=res.target.order, m=res.m, seed=res.seed,
                schedule=res.schedule.to_dict(), options=res.options, beta=res.beta,
                epoch=res.epoch, t=res.t, rng_state=res.rng_state, status=res.status,
                warnings=list(res.warnings), wall_time=res.wall_time,
                d=res.target.dim, r=res.target.rank, deflation_version=VERSION)
    return io.save_npz(path, arrays, meta, kind=KIND)


def load(path) -> DeflationResult:
    """:meth:`DeflationResult.load`: read and check a file written by :func:`save`."""
    path = io.npz_path(path)
    return from_npz(path, *io.load_npz(path, kind=KIND))


def from_npz(path, arrays: dict, meta: dict) -> DeflationResult:
    """The result in the ``arrays`` and ``meta`` that :func:`tdflow.io.load_npz` read from
    ``path`` (named in errors), checked as :func:`load` does."""
    try:
        if meta.get("deflation_version", 1) != VERSION:
            raise ValueError(f"its records are version {meta.get('deflation_version', 1)}, "
                             f"this tdflow reads version {VERSION} (Proposition 1's margins, "
                             "Definition 2's partitions): rerun it")
        d, r, m = (positive_int(meta[k], k, minimum=0) for k in ("d", "r", "m"))
        for name, shape in (("U", (d, r)), ("a", (r,)), ("W", (d, m)), ("member", (m,)),
                            ("armed", (m,))):
            if name not in arrays:
                raise ValueError(f"lacks the array {name!r}")
            if arrays[name].shape != shape:
                raise ValueError(f"array {name!r} has shape {arrays[name].shape}, expected {shape}")
        groups = {g: {} for g in GROUPS}
        for k, v in arrays.items():
            if "/" in k:
                g, name = k.split("/", 1)
                if g in groups:
                    groups[g][name] = v
        for g, fields in (("epochs", EPOCH_FIELDS), ("events", EVENT_FIELDS),
                          ("redraws", REDRAW_FIELDS), ("partitions", PARTITION_FIELDS),
                          ("directions", DIRECTION_FIELDS)):
            missing = [f for f in fields if f not in groups[g]]
            if missing:
                raise ValueError(f"lacks the {g} arrays {missing}")
            sizes = {groups[g][f].shape[0] for f in fields}
            if len(sizes) > 1:
                raise ValueError(f"{g} arrays disagree in length")
        if groups["directions"]["fitted_t"].shape != (r,):
            raise ValueError("direction records do not match the rank r")
        if groups["records"] and groups["records"]["norms"].shape[1:] != (m,):
            raise ValueError("recorded norms do not match m")
        target = Target(arrays["U"], arrays["a"], positive_int(meta["order"], "order"))
        schedule = Schedule.from_dict(meta["schedule"])
        _check_file_state(arrays, meta, groups, r)
        res = DeflationResult(target=target, m=m, seed=positive_int(meta["seed"], "seed", minimum=-1),  # -1: a Generator was consumed
                  schedule=schedule,
                  **_options(meta["options"]), W=real_array(arrays["W"], "W", 2, (d, m)),
                  member=arrays["member"].astype(np.int64), armed=arrays["armed"].astype(bool),
                  beta=real_number(meta["beta"], "beta", minimum=0.0, strict=True),
                  epoch=positive_int(meta["epoch"], "epoch", minimum=0),
                  t=real_number(meta["t"], "t", minimum=0.0),
                  rng_state=meta["rng_state"], status=status_arg(meta["status"], STATUSES),
                  warnings=list(meta["warnings"]), wall_time=real_number(meta["wall_time"], "wall_time", minimum=0.0),
                  **groups)
        rng_from_state(res.rng_state)  # validates the state
    except (ValueError, TypeError) as err:  # TypeError: a value of the wrong type (the checks)
        raise ValueError(f"{path} is not a valid deflation result: {err}") from None
    except KeyError as err:
        raise ValueError(f"{path} is not a valid deflation result: missing or bad {err}") from None
    return res


def _check_file_state(arrays, meta, groups, r) -> None:
    """Consistency of a loaded run (a file that passed its checksum can still come from an older
    format or another program): ``ValueError`` saying what does not fit."""
    member = arrays["member"]
    if member.dtype.kind not in "iu" or np.any((member < -1) | (member >= r)):
        raise ValueError(f"member must hold directions -1..{r - 1}")
    if positive_int(meta["epoch"], "epoch", minimum=0) != groups["epochs"]["beta"].size:
        raise ValueError(f"epoch {meta['epoch']!r} does not match the "
                         f"{groups['epochs']['beta'].size} epoch records")


def _options(options) -> dict:
    """``solver`` and ``active_tol`` of a file's integrator options, checked as ``deflate``
    checks them (older files lack the SolverOptions fields added since: they take their
    defaults; every file holds OPTION_NAMES)."""
    missing = [k for k in OPTION_NAMES if not isinstance(options, dict) or k not in options]
    if missing:
        raise ValueError(f"integrator options lack {missing}; a deflation file holds "
                         f"{list(OPTION_NAMES)}")
    try:
        return dict(solver=SolverOptions.from_dict({k: v for k, v in options.items()
                                                    if k != "active_tol"}),
                    active_tol=real_number(options["active_tol"], "active_tol", minimum=0.0))
    except (TypeError, ValueError) as err:
        raise ValueError(f"integrator options: {err}") from None


def jsonable_state(state):
    """``Generator.bit_generator.state`` as JSON-able data (arrays, e.g. Philox's, tagged)."""
    if isinstance(state, dict):
        return {k: jsonable_state(v) for k, v in state.items()}
    if isinstance(state, np.ndarray):
        return {"__ndarray__": state.tolist(), "dtype": state.dtype.str}
    if isinstance(state, np.integer):
        return int(state)
    return state


def _from_jsonable(state):
    if isinstance(state, dict):
        if "__ndarray__" in state:
            return np.array(state["__ndarray__"], dtype=np.dtype(state["dtype"]))
        return {k: _from_jsonable(v) for k, v in state.items()}
    return state


def rng_from_state(state: dict) -> np.random.Generator:
    """A Generator whose bit generator (named in the state, e.g. PCG64) holds ``state``."""
    state = _from_jsonable(state)
    name = state.get("bit_generator") if isinstance(state, dict) else None
    bitgen = getattr(np.random, str(name), None)
    if not (isinstance(bitgen, type) and issubclass(bitgen, np.random.BitGenerator)):
        raise ValueError(f"unknown bit generator {name!r} in the RNG state")
    bg = bitgen()
    bg.state = state
    return np.random.Generator(bg)


def check_same_run(res, target, m, seed, schedule, solver, active_tol, path) -> None:
    """``ValueError`` unless the checkpoint ``res`` is the run that ``deflate`` was asked for
    (the limits ``max_epochs`` and ``max_time`` may differ)."""
    diffs = []
    if res.target.order != target.order or res.target.U.shape != target.U.shape or \
            not np.array_equal(res.target.U, target.U) or not np.array_equal(res.target.a, target.a):
        diffs.append("target")
    if res.m != m:
        diffs.append(f"m ({res.m} vs {m})")
    if res.seed != seed:
        diffs.append(f"seed ({res.seed} vs {seed})")
    limits = dict(max_epochs=schedule.max_epochs, max_time=schedule.max_time)
    if dataclasses.replace(res.schedule, **limits) != schedule:
        diffs.append("schedule")
    if res.solver != solver or res.active_tol != active_tol:
        diffs.append("integrator options")
    if diffs:
        raise ValueError(f"the checkpoint {path} belongs to another run: it differs in "
                         + ", ".join(diffs))


def set_limits(res: DeflationResult, schedule: Schedule) -> None:
    """Adopt the limits of ``schedule``; re-open a run that stopped only at an old limit."""
    res.schedule = schedule
    if res.status in (Status.MAX_EPOCHS, Status.MAX_TIME):
        cut = res.n_epochs and res.epochs["t_end"][-1] < (
            res.epochs["t_start"][-1] + res.epochs["t2"][-1]) - 1e-12
        if res.status == Status.MAX_TIME and cut:
            return  # the last epoch was cut short: it cannot be continued bitwise
        if res.epoch < schedule.max_epochs and res.t < schedule.max_time:
            res.status = Status.RUNNING
            res.warnings = [w for w in res.warnings if not w.startswith("stopped (max-")]


def save_checkpoint(res: DeflationResult, path, warn: bool) -> bool:
    """Checkpoint; a failed write (disk full, folder gone) warns and the run goes on in memory."""
    try:
        res.save(path)
        return True
    except OSError as err:
        if warn:
            warnings.warn(f"{err}; the run goes on and its result is returned (save it elsewhere "
                          "with result.save(path))", RuntimeWarning, stacklevel=4)
        return False

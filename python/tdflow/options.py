"""How an integration steps and records: :class:`SolverOptions`, one validated object for every
stepper call of tdflow.

``GradientFlow.integrate`` / ``integrate_batch``, ``DeepLinearFlow.integrate``, ``deflate`` (each
phase), the sweep kinds and the command line (``tdflow fig1``, ``tdflow deflate``) all take it,
either as ``options=SolverOptions(...)`` or as the same names given as keywords
(``integrate(W0, t_span, method="dop853", rtol=1e-8)``), from which :meth:`SolverOptions.resolve`
builds it: the keyword set is checked once, there, as SciPy's ``solve_ivp`` checks its own, and
the object travels unchanged through every layer down to the compiled core.

What is *not* a solver option, and why: the flow's ``active_tol`` (it changes the right-hand side
being integrated, so it belongs to :class:`~tdflow.GradientFlow`; ``deflate`` takes it beside the
options because it builds the flow) and ``progress`` (it shows a run, it does not change one: a
checkpoint's identity and a sweep run's id leave it out).
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Mapping, Optional, Tuple

import numpy as np

from . import _core
from ._checks import choice, positive_int, real_array, real_number, show

# The steppers are the tableaux of the core (tableaux.hpp): a method added there appears here, in
# the command line's choices, in deflate, the sweeps and the torch backend. A method is adaptive
# when its tableau has an embedded error estimate (and so the step-size controller).
METHODS = tuple(_core.methods())
ADAPTIVE = tuple(m for m in METHODS if _core.tableau(m)["adaptive"])
MAX_STEPS = 2**62  # the longest step budget the core can count (a C long)


def _help(text: str) -> dict:
    return {"help": text}


@dataclasses.dataclass(frozen=True, eq=False)
class SolverOptions:
    """The stepper, its tolerances and where it records.

    Parameters
    ----------
    method : {"dopri5", "dop853", "tsit5", "rk4", "euler"}
        One of :data:`METHODS` (the core's tableaux). Adaptive Dormand-Prince 5(4) (the
        default), DOP853 (order 8: fewer right-hand sides at tight tolerances, 7th-order dense
        output at 3 extra RHS per step that holds a recording time) or Tsitouras 5(4) (order
        5 like dopri5, coefficients tuned for a smaller error per step), all with error control
        ``||err_j|| <~ atol + rtol ||y_j||`` per column (or layer); or fixed-step classic RK4 /
        explicit Euler with step ``h`` (required; shortened where needed so that every
        recording time is hit exactly).
    rtol, atol : float
        Tolerances of the adaptive methods (>= 0; not both 0).
    h : float, optional
        Fixed-step methods: the step (required). Adaptive methods: the first step (None:
        chosen automatically).
    max_step : float
        Upper bound on the adaptive step (inf: none; ``None`` is read as inf).
    max_steps : int
        Step budget (0: none); when it runs out the solution returns with status
        ``"max-steps"``.
    t_eval : array, optional
        Recording times inside ``t_span`` (default: ``n_records`` evenly spaced times). As in
        SciPy's ``solve_ivp`` the run always covers all of ``t_span``: when ``t_eval`` ends
        before ``t1`` nothing is recorded after its last time, but the final state is that of
        ``t1``.
    n_records : int
        Number of evenly spaced recording times when ``t_eval`` is None (>= 2).

    The object is frozen and checked when made: a bad value is a ``TypeError`` / ``ValueError``
    naming the field. ``replace(**changes)`` gives a modified copy; ``to_dict`` / ``from_dict``
    write and read it as JSON-able data (files, sweep rows).
    """

    method: str = dataclasses.field(default="dopri5", metadata=_help("integrator"))
    rtol: float = dataclasses.field(default=1e-8, metadata=_help(
        "relative tolerance of the adaptive methods"))
    atol: float = dataclasses.field(default=0.0, metadata=_help(
        "absolute tolerance of the adaptive methods"))
    h: Optional[float] = dataclasses.field(default=None, metadata=_help(
        "step of the fixed-step methods; first step of the adaptive ones"))
    max_step: float = dataclasses.field(default=math.inf, metadata=_help(
        "largest adaptive step"))
    max_steps: int = dataclasses.field(default=0, metadata=_help("step budget (0: none)"))
    t_eval: Optional[np.ndarray] = dataclasses.field(default=None, metadata=_help(
        "recording times"))
    n_records: int = dataclasses.field(default=501, metadata=_help(
        "evenly spaced recording times"))

    def __post_init__(self):
        set_ = object.__setattr__  # frozen: each field is stored once, in its checked form
        method = choice(self.method, "method", METHODS)
        set_(self, "method", method)
        set_(self, "rtol", real_number(self.rtol, "rtol", minimum=0.0))
        set_(self, "atol", real_number(self.atol, "atol", minimum=0.0))
        if self.h is None:
            if method not in ADAPTIVE:
                raise ValueError(f"method {method!r} needs a step h")
        else:
            set_(self, "h", real_number(self.h, "h", minimum=0.0, strict=True))
        set_(self, "max_step", _max_step(self.max_step))
        max_steps = positive_int(self.max_steps, "max_steps", minimum=0)
        if max_steps > MAX_STEPS:
            raise ValueError(f"max_steps must be <= 2**62 (0: no limit), got {max_steps}")
        set_(self, "max_steps", max_steps)
        if self.t_eval is not None:
            t_eval = real_array(self.t_eval, "t_eval", 1).copy()
            if t_eval.size == 0 or np.any(np.diff(t_eval) < 0):
                raise ValueError("t_eval must be non-empty, non-decreasing and inside t_span")
            t_eval.flags.writeable = False
            set_(self, "t_eval", t_eval)
        set_(self, "n_records", positive_int(self.n_records, "n_records", minimum=2))

    # -- building -----------------------------------------------------------------------------
    @classmethod
    def resolve(cls, options: Optional["SolverOptions"] = None,
                given: Optional[Mapping[str, Any]] = None,
                defaults: Optional[Mapping[str, Any]] = None,
                where: str = "integrate") -> "SolverOptions":
        """The options of a call: ``options`` (a SolverOptions, or None for ``defaults``, the
        caller's own defaults over the class's) with the keywords ``given`` laid over it.

        The one place where solver keywords become an object: an unknown keyword is a
        ``TypeError`` naming it and listing the known ones (``where`` names the function)."""
        given = dict(given or {})
        unknown = sorted(set(given) - set(FIELDS))
        if unknown:
            raise TypeError(f"{where}() got unexpected keyword argument(s) {unknown}; the solver "
                            f"options are {list(FIELDS)}")
        if options is None:
            return cls(**{**dict(defaults or {}), **given})
        if not isinstance(options, SolverOptions):
            raise TypeError(f"options must be a tdflow.SolverOptions or None, got {show(options)}")
        return options.replace(**given) if given else options

    def replace(self, **changes) -> "SolverOptions":
        """A copy with ``changes`` (checked as the constructor checks)."""
        return dataclasses.replace(self, **changes)

    # -- what the core is handed --------------------------------------------------------------
    @property
    def adaptive(self) -> bool:
        return self.method in ADAPTIVE

    def grid(self, t_span) -> Tuple[float, float, np.ndarray, int]:
        """``(t0, t1, t_eval, n)`` for a run over ``t_span``: the recording times the core gets
        and how many of them the caller keeps. A ``t_eval`` that ends before ``t1`` gets ``t1``
        appended, so that the run covers all of ``t_span`` as SciPy's ``solve_ivp`` does; the
        caller drops that record (:func:`tdflow.solution.trim_records`)."""
        t_span = real_array(t_span, "t_span", 1, (2,))
        t0, t1 = float(t_span[0]), float(t_span[1])
        if t1 < t0:
            raise ValueError(f"t_span must have t1 >= t0, got {tuple(t_span)}")
        if self.t_eval is None:
            t_eval = np.linspace(t0, t1, self.n_records)
        else:
            t_eval = self.t_eval
            if t_eval[0] < t0 or t_eval[-1] > t1:
                raise ValueError("t_eval must be non-empty, non-decreasing and inside t_span")
        n = t_eval.size
        if t_eval[-1] < t1:
            t_eval = np.append(t_eval, t1)
        if not self.adaptive:
            n_steps = (t1 - t0) / self.h
            if n_steps > 2.0**53:
                raise ValueError(f"h = {self.h:g} over t_span ({t0:g}, {t1:g}) needs "
                                 f"{n_steps:.3g} steps, more than 2^53 (9.0e15) can be counted: "
                                 "use a larger h")
        return t0, t1, t_eval, n

    def stepping(self) -> tuple:
        """``(method, h, rtol, atol, max_step, max_steps)``: the stepping arguments of the core's
        integrate functions, in their order (``h`` NaN: chosen automatically)."""
        h = math.nan if self.h is None else self.h
        return (self.method, h, self.rtol, self.atol, self.max_step, self.max_steps)

    # -- records ------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """JSON-able: ``max_step`` None for inf, ``t_eval`` a list or None."""
        out = {f: getattr(self, f) for f in FIELDS}
        out["max_step"] = None if math.isinf(self.max_step) else self.max_step
        out["t_eval"] = None if self.t_eval is None else self.t_eval.tolist()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SolverOptions":
        """From :meth:`to_dict`'s form; missing fields take their defaults (files written before
        a field existed), unknown ones are an error."""
        if not isinstance(data, Mapping):
            raise TypeError(f"solver options must be a mapping, got {show(data)}")
        unknown = sorted(map(str, set(data) - set(FIELDS)))
        if unknown:
            raise ValueError(f"unknown solver options {unknown}; known: {list(FIELDS)}")
        return cls(**data)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "SolverOptions":
        """From the fields of SolverOptions that ``params`` holds (a sweep run's parameters):
        the others are left out, the missing ones take their defaults."""
        return cls(**{k: params[k] for k in FIELDS if k in params})

    def __eq__(self, other) -> bool:
        if not isinstance(other, SolverOptions):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # t_eval is an array: equal options need not hash alike

    def __repr__(self) -> str:
        changed = [f"{f}={getattr(self, f)!r}" for f in FIELDS
                   if f != "t_eval" and getattr(self, f) != getattr(DEFAULT, f)]
        if self.t_eval is not None:
            changed.append(f"t_eval=<{self.t_eval.size} times>")
        return f"SolverOptions({', '.join(changed)})"


def _max_step(x) -> float:
    """``max_step``: a number > 0, inf (or None) for no limit."""
    if x is None:
        return math.inf
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Real):
        raise TypeError(f"max_step must be a number > 0 (inf: no limit), got {show(x)}")
    x = float(x)
    if not x > 0:
        raise ValueError(f"max_step must be > 0, got {x}")
    return x


FIELDS = tuple(f.name for f in dataclasses.fields(SolverOptions))
DEFAULT = SolverOptions()

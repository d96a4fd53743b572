"""The parameters of Algorithm 2 of Ge, Ren, Wang, Zhou (2021): :class:`Schedule`."""
from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Mapping, Union

import numpy as np

from . import analysis, theory
from ._checks import positive_int, real_number, show


def parse_fit_tol(text: str):
    """``fit_tol`` from text (a command-line flag): a rule name or a number."""
    if text in analysis.FIT_RULES:
        return text
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"must be 'paper', 'eps-floor' or a number, got {text!r}") from None


def _field(default, help: str, parse=None):
    """A Schedule field: ``help`` its description, ``parse`` how to read it from text (None: by
    the type of its default)."""
    return dataclasses.field(default=default, metadata={"help": help, "parse": parse})


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Parameters of Algorithm 2 of Ge et al. 2021 (all explicit; their roles: the steps in :mod:`tdflow.deflation`).

    Phase lengths, measured from the start of epoch s (``beta = beta^(s)``)::

        t1  = t1' + t1'' + t1'''                       (Lemma 4)
        t1' = c1 d / (beta log d),  t1'' = c1pp d / (beta log^3 d),  t1''' = c1ppp log(d/alpha) / beta
        t2  = t1 + c2 (log(1/delta1) + log(1/lam)) / beta      (Lemma 6; t2 is the epoch end)

    (the ``log(1/lam)`` term is dropped when ``lam = 0``, and the bracket is floored at 1).
    ``c_rho`` is Definition 2's constant (``rho_i = c_rho Gamma_i``). ``fit_tol``: when a
    direction counts as fitted (``a_i - â_i <= tol``): ``None`` / ``"paper"``: ``2 lam``;
    ``"eps-floor"``: tdflow's ``max(2 lam, eps)``; or a number. ``margin`` is the factor of
    tdflow's escape-time labels of re-drawn columns (:func:`tdflow.analysis.classify_by_escape_time`).

    :meth:`theory` gives Theorem 1's parameters. The defaults are **tdflow's practical choice**
    (not the paper's): ``delta0 = 1e-3``, ``delta1 = 1e-2``, ``alpha = 0.3``, ``gamma = 0.3``,
    ``lam = 1e-4``, ``eps = 5e-4``, ``c1 = 1``, ``c1pp = c1ppp = 0`` (``t1 = t1'``), ``c2 = 1``,
    for targets with ``sum a_i = 1`` (the scale of :func:`tdflow.geometric_weights`). Where they
    work was measured: ``docs/deflation_table.md`` (``bench/table_deflation.py``): orthogonal
    targets with d from 10 to 50, r up to 20, weight spans 30 and 100, ``m >= 4 r`` recovered
    every direction in every case tried. Where they break:

    * ``m`` too small (``m = r`` always fails, ``m = 1.5 r`` mostly, ``m = 2 r`` mostly works):
      several fresh columns per epoch grow with the same large direction and stay in its
      ``S_i``; once every column has been absorbed the run stops with status ``"stalled"``.
    * weights at or below ``2 lam`` (or ``eps``) are not resolved (a warning says so).
    * the constants assume ``sum a_i ~ 1``: ``lam`` and ``eps`` are absolute; rescale them with
      the target (``t1, t2`` scale with ``1/beta`` by themselves).

    ``eps`` must exceed the weight-decay floor ``sqrt(r) lam / 2`` (each fitted direction keeps
    the gap ``a_i - â_i = lam/2``, see :mod:`tdflow.analysis`).
    """

    # each field's metadata "help" is its one-line description (tdflow deflate's --help)
    delta0: float = _field(1e-3, "initialisation / re-draw radius")
    delta1: float = _field(1e-2, "re-draw threshold and S_i norm threshold")
    alpha: float = _field(0.3, "S_i alignment: wbar_i^2 >= 1 - alpha^2")
    gamma: float = _field(0.3, "beta <- beta (1 - gamma) each epoch")
    lam: float = _field(1e-4, "weight decay lambda")
    eps: float = _field(5e-4, "stop when ||T - T*||_F <= eps")
    c1: float = _field(1.0, "t1' = c1 d / (beta log d) (Lemma 4)")
    c1pp: float = _field(0.0, "t1'' = c1pp d / (beta log^3 d) (Lemma 4)")
    c1ppp: float = _field(0.0, "t1''' = c1ppp log(d/alpha) / beta (Lemma 4)")
    c2: float = _field(1.0, "t2 - t1 = c2 (log 1/delta1 + log 1/lam) / beta (Lemma 6)")
    c_rho: float = _field(0.1, "Definition 2: rho_i = c_rho Gamma_i")
    max_epochs: int = _field(100, "maximum number of epochs")
    max_time: float = _field(math.inf, "maximum simulated time")
    fit_tol: Union[None, str, float] = _field(
        None, "fitted when a_i - a_hat_i <= tol: 'paper' (2 lam), 'eps-floor' (max(2 lam, eps)) "
        "or a number", parse=parse_fit_tol)
    margin: float = _field(1.0, "escape-time labels of re-drawn columns: near-tie factor")

    def __post_init__(self):
        for name in ("delta0", "delta1", "eps", "c1", "c2"):
            real_number(getattr(self, name), name, minimum=0.0, strict=True)
        real_number(self.alpha, "alpha", minimum=0.0, strict=True, maximum=1.0, strict_max=True)
        real_number(self.gamma, "gamma", minimum=0.0, maximum=1.0, strict_max=True)
        for name in ("lam", "margin", "c1pp", "c1ppp", "c_rho"):
            real_number(getattr(self, name), name, minimum=0.0)
        if not self.delta0 < self.delta1:
            raise ValueError(f"delta0 must be < delta1, got delta0={self.delta0}, delta1={self.delta1}")
        positive_int(self.max_epochs, "max_epochs")
        if not (isinstance(self.max_time, numbers.Real) and not isinstance(self.max_time, (bool, np.bool_))
                and self.max_time > 0):  # inf allowed: no limit
            raise (ValueError if isinstance(self.max_time, numbers.Real) else TypeError)(
                f"max_time must be a number > 0 (inf: no limit), got {show(self.max_time)}")
        if isinstance(self.fit_tol, str):
            if self.fit_tol not in analysis.FIT_RULES:
                raise ValueError(f"fit_tol must be one of {analysis.FIT_RULES} or a number, got "
                                 f"{self.fit_tol!r}")
        elif self.fit_tol is not None:
            real_number(self.fit_tol, "fit_tol", minimum=0.0)

    @classmethod
    def theory(cls, d: int, eps: float, m: int, *, gamma: float = 0.5, c1: float = 1.0,
               c1pp: float = 1.0, c1ppp: float = 1.0, c2: float = 1.0, c_rho: float = 0.1,
               **constants) -> "Schedule":
        """Theorem 1 of Ge et al. 2021: ``lam, alpha, delta1, delta0`` from
        :func:`tdflow.theory.theorem1_parameters` (its keywords ``c_lam_d, c_lam_eps, c_alpha_d,
        c_alpha_lam, c_alpha_eps, c_delta1, c_delta0`` go in ``constants``, default 1),
        ``gamma = Θ(1)`` (default 1/2), the Θ constants ``c1, c1pp, c1ppp`` of Lemma 4's
        ``t1', t1'', t1'''`` and ``c2`` of Lemma 6's ``t2 - t1`` (default 1), ``c_rho`` of
        Definition 2. ``m`` is the number of columns (the theorem: poly(d); see
        :func:`tdflow.theory.suggest_m`). Other keywords in ``constants`` that name a field
        (``max_epochs``, ``max_time``, ``fit_tol``, ...) replace it.

        Example, ``Schedule.theory(10, 1e-2, 200)``: ``lam = 3.162e-3``, ``alpha = 1e-8``,
        ``delta1 = 7.071e-14``, ``delta0 = 4.660e-22``, ``gamma = 0.5``; with ``beta = beta^(s)``:
        ``t1' = 4.343/beta``, ``t1'' = 0.819/beta``, ``t1''' = 20.72/beta`` (``t1 = 25.89/beta``)
        and ``t2 - t1 = 36.04/beta``. On Figure 1's target (d = 10, r = 5, ratio 1.2, sum 1;
        ``beta^(0) = ||T*||_F = 0.462``) epoch 0 is ``t1 = 56.1``, ``t2 = 134.1``, and every
        epoch is twice as long as the one before. What a run costs, measured
        (``deflate(target, 200, Schedule.theory(10, 1e-2, 200), rng=0)``, dopri5, rtol 1e-7, one
        thread): 2 epochs, simulated time 402, 607 steps, 3710 right-hand sides, 0.40 s (m = 691:
        3.5 s).
        """
        fields = {f.name for f in dataclasses.fields(cls)}
        overrides = {k: constants.pop(k) for k in list(constants) if k in fields}
        p = theory.theorem1_parameters(d, eps, m, **constants)
        params = dict(p, gamma=gamma, eps=float(eps), c1=c1, c1pp=c1pp, c1ppp=c1ppp, c2=c2,
                      c_rho=c_rho)
        params.update(overrides)
        return cls(**params)

    def t1_parts(self, beta: float, d: int) -> tuple:
        """Lemma 4's ``(t1', t1'', t1''')``: ``c1 d/(beta log d)``, ``c1pp d/(beta log^3 d)``,
        ``c1ppp log(d/alpha)/beta``."""
        log_d = math.log(max(d, 2))
        return (self.c1 * d / (beta * log_d), self.c1pp * d / (beta * log_d ** 3),
                self.c1ppp * math.log(d / self.alpha) / beta)

    def t1(self, beta: float, d: int) -> float:
        """Phase-1 length ``t1 = t1' + t1'' + t1'''`` (Lemma 4)."""
        return sum(self.t1_parts(beta, d))

    def phase2(self, beta: float) -> float:
        """Phase-2 length ``t2 - t1 = c2 (log(1/delta1) + log(1/lam)) / beta`` (Lemma 6; no lam
        term for lam = 0; the bracket floored at 1)."""
        logs = math.log(1.0 / self.delta1) + (math.log(1.0 / self.lam) if self.lam > 0 else 0.0)
        return self.c2 * max(logs, 1.0) / beta

    def t2(self, beta: float, d: int) -> float:
        """The paper's ``t2``: the end of the epoch, ``t1 + (t2 - t1)``, from its start."""
        return self.t1(beta, d) + self.phase2(beta)

    @classmethod
    def field_names(cls) -> tuple:
        """The parameters, in order (the keys of :meth:`to_dict`)."""
        return tuple(f.name for f in dataclasses.fields(cls))

    def to_dict(self) -> dict:
        """The parameters as a plain dict (``max_time = inf`` as ``None``), as files hold them."""
        out = dataclasses.asdict(self)
        if math.isinf(out["max_time"]):
            out["max_time"] = None  # JSON has no inf
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "Schedule":
        """From a mapping (e.g. a TOML table); unknown keys are an error."""
        if not isinstance(data, Mapping):
            raise TypeError(f"a schedule must be a mapping of parameters, got {show(data)}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(map(str, set(data) - names))
        if unknown:
            raise ValueError(f"unknown schedule parameters {unknown}; known: {sorted(names)}")
        data = dict(data)
        if data.get("max_time", 0) is None:
            data["max_time"] = math.inf
        return cls(**data)


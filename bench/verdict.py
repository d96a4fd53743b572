"""Equal accuracy first, then time-to-solution ratios: how the whole-run benchmarks compare.

Every run (tdflow's and each peer's) is checked before its time counts: every direction fitted,
in the order of the weights (largest first), final loss below ``LOSS_MAX``, fit times within a
tolerance of a reference run's. A run that fails is flagged and left out of "best peer" (and a
failing tdflow run out of "best tdflow"). The table then gives each run's time-to-solution (the
minimum of N runs; JAX compile time apart) and the ratios of tdflow against the best peer and
against each peer.
"""
from __future__ import annotations

import dataclasses
from typing import List, Optional

import numpy as np

from common import fit_times, table

LOSS_MAX = 1e-10


@dataclasses.dataclass
class Run:
    """One method's whole run. ``fit_times`` (r,) or (replicas, r); ``final_loss`` scalar or
    (replicas,); ``seconds`` the time-to-solution (min of ``repeat`` runs); ``compile`` the JAX
    first call less the best later call (NaN: nothing compiled)."""

    name: str
    seconds: float
    n_rhs: object
    fit_times: np.ndarray
    final_loss: object
    tdflow: bool
    repeat: int = 1
    compile: float = float("nan")
    note: str = ""
    problems: List[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def peer_run(name, U, a, states, t, seconds, n_rhs, **kw) -> Run:
    """A peer's Run from its recorded states (n, d, m), or (replicas, n, d, m) for replicas."""
    import tdflow

    flow = tdflow.GradientFlow(tdflow.Target(U, a), active_tol=0.0)
    states = np.asarray(states)
    many = states if states.ndim == 4 else states[None]
    times = np.stack([fit_times(U, a, S, t) for S in many])
    loss = np.array([flow.loss(S[-1]) for S in many])
    if states.ndim == 3:
        times, loss = times[0], loss[0]
    return Run(name, seconds, n_rhs, times, loss, tdflow=False, **kw)


def tdflow_run(name, trajs, seconds, **kw) -> Run:
    """tdflow's Run from one Trajectory or a list of them (replicas)."""
    many = trajs if isinstance(trajs, list) else [trajs]
    times = np.stack([tr.fit_times() for tr in many])
    loss = np.array([tr.loss[-1] for tr in many])
    n_rhs = many[0].n_rhs if len(many) == 1 else f"{int(np.mean([tr.n_rhs for tr in many]))} (mean)"
    if not isinstance(trajs, list):
        times, loss = times[0], loss[0]
    return Run(name, seconds, n_rhs, times, loss, tdflow=True, **kw)


def check(run: Run, a, reference: Optional[np.ndarray], atol: float) -> Run:
    """Fill ``run.problems``: unfitted directions, wrong order, final loss, fit times off the reference."""
    times = np.atleast_2d(run.fit_times)
    loss = np.atleast_1d(np.asarray(run.final_loss, dtype=float))
    order = np.argsort(-np.asarray(a), kind="stable")
    bad = ~np.isfinite(times).all(axis=1)
    if bad.any():
        run.problems.append(f"{bad.sum()} run(s) left directions unfitted")
    ordered = np.all(np.diff(times[:, order], axis=1) >= 0, axis=1)
    if not ordered[~bad].all():
        run.problems.append(f"{(~ordered[~bad]).sum()} run(s) fitted out of weight order")
    if not (loss < LOSS_MAX).all():
        run.problems.append(f"final loss {loss.max():.2g} >= {LOSS_MAX:g}")
    if reference is not None:
        off = np.nanmax(np.abs(times - np.atleast_2d(reference)))
        if not off <= atol:
            run.problems.append(f"fit times differ from the reference's by {off:.2g} > {atol:g}")
    return run


def _best(runs, tdflow):
    ok = [r for r in runs if r.tdflow == tdflow and r.ok]
    return min(ok, key=lambda r: r.seconds) if ok else None


def _fmt_times(times):
    times = np.asarray(times)
    if times.ndim == 1:
        return np.array2string(times, precision=1, max_line_width=200)
    return f"{times.shape[0]} runs, last fit {np.nanmean(times[:, -1]):.1f} on average"


def report(runs: List[Run], title: str, unit: str = "s") -> None:
    """Print the table of runs and the ratios of tdflow against the best peer and each peer."""
    ours, peer = _best(runs, True), _best(runs, False)
    rows = []
    for r in runs:
        vs = f"{r.seconds / ours.seconds:.2f}x" if ours and np.isfinite(r.seconds) else "-"
        comp = f"{r.compile:.1f} s" if np.isfinite(r.compile) else "-"
        loss = np.max(np.atleast_1d(np.asarray(r.final_loss, dtype=float)))
        rows.append([r.name + (f" {r.note}" if r.note else ""), f"{r.seconds:.4g} {unit}", r.repeat, comp,
                     r.n_rhs, f"{loss:.1e}", "yes" if r.ok else "NO: " + "; ".join(r.problems),
                     vs, _fmt_times(r.fit_times)])
    print(title)
    print(table(rows, ["method", "time-to-solution", "N", "compile", "RHS evals", "final loss",
                       "equal accuracy", "/ best tdflow", "fit times"]))
    if peer is None:
        print("no peer reached equal accuracy: no ratio against the best peer")
        return
    print(f"best peer at equal accuracy: {peer.name} ({peer.seconds:.4g} {unit}"
          + (f", compile {peer.compile:.1f} s apart)" if np.isfinite(peer.compile) else ")"))
    mine = [r for r in runs if r.tdflow]
    rows = [["BEST PEER " + peer.name] + [f"{peer.seconds / r.seconds:.2f}x" for r in mine]]
    rows += [[p.name + ("" if p.ok else " (NOT equal accuracy)")] + [f"{p.seconds / r.seconds:.2f}x" for r in mine]
             for p in runs if not p.tdflow]
    print(table(rows, ["peer time / tdflow time"] + [r.name + ("" if r.ok else " (NOT ok)") for r in mine]))

"""The machinery of one run of Algorithm 2 (:func:`tdflow.deflate`): the initial draw
(:func:`start`) and one epoch at a time (:class:`Runner`): phase 1, the re-draw below
``delta1``, phase 2, with the bookkeeping of Definitions 1-2, Lemma 5 and Proposition 1 in the
:class:`DeflationResult`. The algorithm as printed is in :mod:`tdflow.deflation`'s docstring.
"""
from __future__ import annotations

import time
from typing import Callable, Optional

import numpy as np

from . import _core, analysis
from .checkpoint import jsonable_state, rng_from_state
from .deflation_result import (EPOCH_FIELDS, EVENT_FIELDS, PARTITION_FIELDS, RECORD_FIELDS,
                               REDRAW_FIELDS, DeflationResult, append_rows)
from .flow import GradientFlow
from .solution import IntegrationError, Status


def _draw(rng: np.random.Generator, d: int, n: int, radius: float) -> np.ndarray:
    X = rng.standard_normal((d, n))
    X /= np.linalg.norm(X, axis=0, keepdims=True)
    return radius * X


def start(target, m, seed, schedule, solver, active_tol, rng) -> DeflationResult:
    d, r = target.dim, target.rank
    W = np.asfortranarray(_draw(rng, d, m, schedule.delta0))
    flow = GradientFlow(target, schedule.lam, active_tol=active_tol)
    beta0 = flow.residual_norm(W)
    if not beta0 > 0:
        raise ValueError("||T - T*||_F is 0 at the initial state: nothing to fit")
    res = DeflationResult(target=target, m=m, seed=seed, schedule=schedule, solver=solver,
                          active_tol=active_tol, W=W,
                          member=np.full(m, -1, dtype=np.int64), armed=np.ones(m, dtype=bool),
                          beta=float(beta0), epoch=0, t=0.0,
                          rng_state=jsonable_state(rng.bit_generator.state))
    res.directions = {"discovered_t": np.full(r, np.nan), "discovered_epoch": np.full(r, -1, np.int64),
                      "fitted_t": np.full(r, np.nan), "fitted_epoch": np.full(r, -1, np.int64)}
    unfitted = np.ones(r, dtype=bool)
    labels, pred = analysis.classify_by_escape_time(W, target.U, target.a, unfitted,
                                                    schedule.t1(beta0, d), order=target.order,
                                                    margin=schedule.margin)
    append_rows(res.redraws, REDRAW_FIELDS, dict(
        epoch=np.zeros(m), kind=np.zeros(m), column=np.arange(m), t=np.zeros(m),
        previous=np.full(m, -1), escape_label=labels, escape_predicted=pred,
        joined=np.full(m, -1)))
    tol = res.fit_tol
    if np.any(np.asarray(target.a) <= tol):
        res.warnings.append("some weights a_i are within fit_tol of 0: they count as fitted from "
                            "the start")
    return res


def _partition(res: DeflationResult, t1p: float) -> Optional[analysis.Partition]:
    """Definition 2 at the epoch start, or None where it does not apply (order != 4 or a
    non-orthonormal target)."""
    tg, s = res.target, res.schedule
    U = tg.U
    if tg.order != 4 or (U.shape[1] and np.max(np.abs(U.T @ U - np.eye(U.shape[1]))) > 1e-10):
        return None
    discovered = np.zeros(tg.rank, bool)
    discovered[res.member[res.member >= 0]] = True
    return analysis.partition(res.W, U, tg.a, discovered, lam=s.lam, t1=t1p, c_rho=s.c_rho)


class Runner:
    """One run's machinery (flow, RNG) around a DeflationResult."""

    def __init__(self, res: DeflationResult, backend: str = "cpu"):
        self.res = res
        self.flow = GradientFlow(res.target, res.schedule.lam, active_tol=res.active_tol,
                                 backend=backend)
        self.rng = rng_from_state(res.rng_state)
        self.tol = res.fit_tol
        self.n_steps = 0
        self.n_rhs = 0
        self.tick: Optional[Callable[[float], None]] = None  # progress: simulated time reached

    def phase(self, length: float, phase: int, beta: float) -> dict:
        """Run one phase; returns Proposition 1's worst margins and their times over it."""
        res, opt, s = self.res, self.res.solver, self.res.schedule
        t0, t1 = res.t, res.t + length
        t_eval = np.linspace(t0, t1, opt.n_records)
        member_before = res.member.copy()
        args = (res.W, t0, t_eval, *opt.stepping(), True, False, res.member, s.delta1, s.alpha,
                res.epoch, beta, s.gamma, self.tick, 0.25)
        if self.flow._torch is not None:
            raw = self.flow._torch.integrate_joins(*args)
        else:
            raw = _core.integrate_joins(self.flow._core, *args)
        if raw["error"] is not None:
            raise raw["error"]
        if raw["status"] != Status.FINISHED:
            traj = self.flow._trajectory(raw, opt.method, 0.0)
            raise IntegrationError(f"phase {phase} of epoch {res.epoch} stopped at "
                                   f"t = {raw['t_final']:g}: {raw['status']}", traj)
        self.n_steps += int(raw["n_steps"])
        self.n_rhs += int(raw["n_rhs"])
        res.W = np.asfortranarray(raw["W"])
        res.t = float(t1)
        n_ev = raw["crossing_column"].size
        ev = dict(column=raw["crossing_column"], direction=raw["crossing_direction"],
                  t=raw["crossing_t"], epoch=np.full(n_ev, res.epoch), phase=np.full(n_ev, phase),
                  norm=raw["crossing_norm"], misalignment=raw["crossing_misalignment"],
                  upward=raw["crossing_upward"], joined=raw["crossing_joined"])
        append_rows(res.events, EVENT_FIELDS, ev)
        res.member = raw["member"].astype(np.int64)
        res.armed = res.member < 0
        joined = np.asarray(ev["joined"], bool)
        ev_col = np.asarray(ev["column"], np.int64)[joined]
        ev_dir = np.asarray(ev["direction"], np.int64)[joined]
        ev_t = np.asarray(ev["t"], float)[joined]
        # the latest draw of each joining column records where it went
        for k, i in zip(ev_col, ev_dir):
            last = np.flatnonzero(res.redraws["column"] == k)[-1]
            res.redraws["joined"][last] = i
        dr = res.directions
        for i, t in zip(ev_dir, ev_t):
            if dr["discovered_epoch"][i] < 0:
                dr["discovered_t"][i] = t
                dr["discovered_epoch"][i] = res.epoch
        # â_i on the recording grid: members at each time = members before + joins so far
        norms = raw["norms"]
        n = norms.shape[0]
        r = res.target.rank
        ahat = np.zeros((n, r))
        for j, tj in enumerate(raw["t"]):
            mem = member_before.copy()
            done = ev_t <= tj
            mem[ev_col[done]] = ev_dir[done]
            ok = mem >= 0
            np.add.at(ahat[j], mem[ok], norms[j, ok] ** 2)
        fit = np.asarray(res.target.a)[None, :] - ahat <= self.tol[None, :]
        for i in range(r):
            hits = np.flatnonzero(fit[:, i])
            if hits.size and dr["fitted_epoch"][i] < 0:
                dr["fitted_t"][i] = raw["t"][hits[0]]
                dr["fitted_epoch"][i] = res.epoch
        rows = dict(t=raw["t"], loss=raw["loss"], residual_norm=raw["residual_norm"],
                    directional_residual=raw["directional_residual"], a_hat=ahat, norms=norms,
                    record_epoch=np.full(n, res.epoch, dtype=np.int64),
                    record_phase=np.full(n, phase, dtype=np.int64))
        append_rows(res.records, RECORD_FIELDS, rows)
        return {c: (float(raw["prop1_margin"][c]), float(raw["prop1_t"][c]))
                for c in analysis.PROP1_CONDITIONS}

    def start_partition(self, t1p: float) -> tuple:
        """Definition 2 at (s, 0) over S_∅: recorded per column; returns (partition, fresh)."""
        res = self.res
        part = _partition(res, t1p)
        fresh = res.member < 0
        if part is None:
            return None, fresh
        cols = np.flatnonzero(fresh)
        good, pot = part.good[cols], part.potential[cols]
        label = np.where(good.any(axis=1), 0, np.where(part.bad[cols], 2,
                                                         np.where(pot.any(axis=1), 1, 3)))
        direction = np.where(good.any(axis=1), good.argmax(axis=1),
                             np.where(label == 1, pot.argmax(axis=1), -1))
        append_rows(res.partitions, PARTITION_FIELDS, dict(
            epoch=np.full(cols.size, res.epoch), column=cols, label=label, direction=direction))
        return part, fresh

    def epoch(self) -> None:
        res, s = self.res, self.res.schedule
        start_wall = time.perf_counter()
        self.n_steps = self.n_rhs = 0
        d = res.target.dim
        beta, t_start = res.beta, res.t
        t1p = s.t1_parts(beta, d)[0]
        t1, t2 = s.t1(beta, d), s.phase2(beta)
        cut = False
        if t_start + t1 >= s.max_time:
            t1, t2, cut = s.max_time - t_start, 0.0, True
        elif t_start + t1 + t2 >= s.max_time:
            t2, cut = s.max_time - t_start - t1, True
        fitted_before = res.fitted_now
        n_ev0 = res.events["column"].size
        part, fresh = self.start_partition(t1p)
        large0 = np.linalg.norm(res.W, axis=0) >= s.delta1
        margins = self.phase(t1, 1, beta)
        # Lemma 5 at t1, before the re-draw
        ev = {k: v[n_ev0:] for k, v in res.events.items()}
        reached = np.zeros(res.m, bool)
        reached[ev["column"][ev["upward"]]] = True
        reached |= fresh & large0
        discovered_t1 = np.zeros(res.target.rank, bool)
        discovered_t1[res.member[res.member >= 0]] = True
        l5 = None if part is None else analysis.lemma5_outcome(part, fresh, reached,
                                                                res.member >= 0, discovered_t1)
        # re-draw every column below delta1
        norms = np.linalg.norm(res.W, axis=0)
        small = np.flatnonzero(norms < s.delta1)
        unfitted = ~res.fitted_now
        n_new = small.size
        if not cut or t2 > 0:
            fresh_cols = _draw(self.rng, d, n_new, s.delta0)
            res.W = np.asfortranarray(res.W)
            res.W[:, small] = fresh_cols
            previous = res.member[small].copy()
            res.member = res.member.copy()
            res.member[small] = -1
            res.armed = res.member < 0
            horizon = t2 + s.t1(beta * (1.0 - s.gamma), d)
            labels, pred = analysis.classify_by_escape_time(
                fresh_cols, res.target.U, res.target.a, unfitted, horizon,
                order=res.target.order, margin=s.margin)
            append_rows(res.redraws, REDRAW_FIELDS, dict(
                epoch=np.full(n_new, res.epoch), kind=np.ones(n_new), column=small,
                t=np.full(n_new, res.t), previous=previous, escape_label=labels,
                escape_predicted=pred, joined=np.full(n_new, -1)))
        else:
            n_new = 0
        if t2 > 0:
            m2 = self.phase(t2, 2, beta)
            margins = {c: min(margins[c], m2[c], key=lambda v: v[0]) for c in margins}
        now = res.fitted_now
        lost = analysis.still_fitted(fitted_before, now)
        rn = float(res.records["residual_norm"][-1])
        stalled = n_new == 0 and not now.all() and not cut
        ev = {k: v[n_ev0:] for k, v in res.events.items()}
        counts = (-1, -1, -1) if part is None else part.counts(fresh)
        row = dict(
            beta=beta, t_start=t_start, t1p=t1p, t1=t1, t2=t1 + t2, t_end=res.t, n_redrawn=n_new,
            n_joined=int(ev["joined"].sum()), n_crossed_unjoined=int((~ev["joined"]).sum()),
            n_discovered=int(np.sum(res.directions["discovered_epoch"] >= 0)),
            n_fitted=int(now.sum()), loss=float(res.records["loss"][-1]), residual_norm=rn,
            n_good=counts[0], n_potential=counts[1], n_bad=counts[2],
            lemma5_large_not_potential=-1 if l5 is None else l5.large_not_potential,
            lemma5_good_undiscovered=-1 if l5 is None else l5.good_undiscovered,
            lemma5_large_unjoined=-1 if l5 is None else l5.large_unjoined,
            **{f"prop1_{c}": v[0] for c, v in margins.items()},
            **{f"prop1_{c}_t": v[1] for c, v in margins.items()},
            n_unfitted_again=len(lost),
            wall_time=time.perf_counter() - start_wall, n_steps=self.n_steps, n_rhs=self.n_rhs)
        append_rows(res.epochs, EPOCH_FIELDS, {k: np.array([v]) for k, v in row.items()})
        res.wall_time += row["wall_time"]
        res.beta = beta * (1.0 - s.gamma)
        res.epoch += 1
        res.rng_state = jsonable_state(self.rng.bit_generator.state)
        if rn <= s.eps:
            res.status = Status.RECOVERED
        elif stalled:
            res.status = Status.STALLED
            missing = np.flatnonzero(~now).tolist()
            res.warnings.append(
                f"epoch {res.epoch - 1}: no column below delta1 = {s.delta1:g} to re-draw, so no "
                f"fresh column is left to find the unfitted directions {missing}: all m = {res.m} "
                "columns were absorbed by the directions found so far. Increase m (or lower "
                "delta0 / raise delta1 so that fewer columns per direction cross delta1).")
        elif cut or res.t >= s.max_time:
            res.status = Status.MAX_TIME
        elif res.epoch >= s.max_epochs:
            res.status = Status.MAX_EPOCHS
        if res.finished and res.status != Status.RECOVERED:
            missing = np.flatnonzero(~now).tolist()
            if res.status != Status.STALLED:
                res.warnings.append(
                    f"stopped ({res.status}) with ||T-T*||_F = {rn:.3g} > eps = {s.eps:g}; "
                    f"unfitted directions {missing}")
        failed = [c for c, v in margins.items() if v[0] < 0]
        if failed:
            res.warnings.append(
                f"epoch {res.epoch - 1}: Proposition 1 ({', '.join(failed)}) violated: worst "
                "margins " + ", ".join(f"{c} {margins[c][0]:.3g} at t = {margins[c][1]:.4g}"
                                       for c in failed))
        if lost:
            res.warnings.append(f"epoch {res.epoch - 1}: directions {list(lost)} were fitted "
                                "before and are not any more")

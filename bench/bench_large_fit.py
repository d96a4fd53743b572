"""A larger fit: d=50, m=2000, 10 orthogonal directions (ratio 1.2), radius 1e-10, t in [0, 350].

    python bench/bench_large_fit.py [--repeat 3] [--peer-repeat 1] [--diffrax Dopri5] [--skip-scipy] [--threads N]

tdflow's adaptive steppers (dopri5, dop853; rtol 1e-6, 351 recorded states) against peers
measured in this run on the same initial state: diffrax under jax.jit (Dopri5 by default;
--diffrax Dopri5,Dopri8,Tsit5 for more; compile time apart) and SciPy's solve_ivp RK45 on the
well-written NumPy right-hand side. Every run is checked first (all 10 directions fitted, in
weight order, at tdflow dopri5's fit times within 2, final loss < 1e-10). tdflow's times are the
minimum of --repeat runs; the slow peers' (a diffrax run takes ~40 s, SciPy ~1 min on a quiet
2-core machine) of --peer-repeat runs.
"""
import argparse

import numpy as np
from scipy.integrate import solve_ivp

import peers_jax
import tdflow
from common import best_run, numpy_rhs
from verdict import check, peer_run, report, tdflow_run

D, M, R, T_END, RTOL = 50, 2000, 10, 350.0, 1e-6


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=3, help="tdflow's time = min of this many runs")
    p.add_argument("--peer-repeat", type=int, default=1, help="the same for diffrax and SciPy")
    p.add_argument("--diffrax", default="Dopri5", help="comma-separated diffrax solvers ('' for none)")
    p.add_argument("--skip-scipy", action="store_true")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        tdflow.set_num_threads(args.threads)
    a = tdflow.geometric_weights(R, 1.2)
    target = tdflow.Target.orthogonal(D, a)
    U = target.U
    W0 = tdflow.sphere(D, M, 1e-10, np.random.default_rng(0))
    t_rec = np.linspace(0, T_END, 351)
    flow = tdflow.GradientFlow(target)
    runs = []

    for method in ("dopri5", "dop853"):
        tr, s = best_run(lambda: flow.integrate(W0, (0, T_END), method=method, rtol=RTOL, t_eval=t_rec), args.repeat)
        runs.append(tdflow_run(f"tdflow {method}", tr, s, repeat=args.repeat))
        print(f"tdflow {method}: {s:.2f} s, {tr.n_rhs} RHS", flush=True)
    reference = runs[0].fit_times

    solvers = [x for x in args.diffrax.split(",") if x]
    if solvers and not peers_jax.AVAILABLE:
        print(peers_jax.SKIPPED)
    elif solvers:
        for solver in solvers:
            states, n_rhs, s, comp = peers_jax.solve_timed(U, a, W0, t_rec, solver, RTOL, args.peer_repeat)
            runs.append(peer_run(f"diffrax {solver} jit", U, a, states, t_rec, s, n_rhs,
                                 repeat=args.peer_repeat, compile=comp))
            del states
            print(f"diffrax {solver}: {s:.2f} s (+{comp:.1f} s compile), {n_rhs} RHS", flush=True)

    if not args.skip_scipy:
        count = [0]

        def f(t, y):
            count[0] += 1
            return numpy_rhs(U, a, y.reshape(D, M, order="F")).ravel(order="F")

        sol, s = best_run(lambda: solve_ivp(f, (0, T_END), W0.ravel(order="F"), method="RK45", rtol=RTOL,
                                            atol=1e-30, t_eval=t_rec), args.peer_repeat)
        states = sol.y.T.reshape(-1, M, D).transpose(0, 2, 1)
        runs.append(peer_run("SciPy RK45 + NumPy RHS", U, a, states, sol.t, s, count[0] // args.peer_repeat,
                             repeat=args.peer_repeat))
        print(f"SciPy RK45: {s:.2f} s, {count[0] // args.peer_repeat} RHS", flush=True)

    for run in runs:
        check(run, a, reference, atol=2.0)
    report(runs, f"d={D}, m={M}, r={R}, radius 1e-10, t in [0, {T_END}], rtol={RTOL}, "
                 f"tdflow threads: {tdflow.get_num_threads()}")


if __name__ == "__main__":
    main()

"""A whole Figure 1 run: d=10, m=50, 5 directions (ratio 1.2), radius 1e-15, t from 0 to 250.

    python bench/bench_fig1.py [--repeat 3] [--naive] [--no-diffrax] [--threads N]

tdflow (RK4 h=0.05, adaptive dopri5 and DOP853 at rtol 1e-8, 501 recorded states) against peers
measured in this run on the same initial state (seed 0, as tdflow's figure1): diffrax Dopri5,
Dopri8 and Tsit5 under jax.jit (rtol 1e-8, SaveAt 501 times; compile time apart), SciPy
solve_ivp (RK45 / DOP853 at rtol 1e-8) on the NumPy right-hand side, hand-written NumPy RK4
(h=0.05), PyTorch RK4 when installed. Each run's answer is checked first (every direction fitted,
in weight order, at tdflow DOP853's fit times within 1, final loss < 1e-10); the times are the
minimum of --repeat runs; ratios are against the best peer at equal accuracy.
"""
import argparse

import numpy as np
from scipy.integrate import solve_ivp

import peers_jax
import tdflow
from common import best_run, numpy_rhs, numpy_rhs_naive, rk4, torch, torch_rhs
from verdict import check, peer_run, report, tdflow_run

D, M, R, T_END, H, RTOL = 10, 50, 5, 250.0, 0.05, 1e-8


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=3, help="time-to-solution = min of this many runs")
    p.add_argument("--naive", action="store_true", help="also time the naive NumPy RHS (slow)")
    p.add_argument("--no-diffrax", action="store_true", help="leave the JAX peers out")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        tdflow.set_num_threads(args.threads)
    n = args.repeat
    a = tdflow.geometric_weights(R, 1.2)
    target = tdflow.Target.orthogonal(D, a)
    U = target.U
    flow = tdflow.GradientFlow(target)
    W0 = tdflow.sphere(D, M, 1e-15, np.random.default_rng(0))
    t_rec = np.linspace(0, T_END, 501)
    runs = []

    flow.integrate(W0, (0, 1), method="rk4", h=H)  # warm up
    for name, kw in [("tdflow RK4 h=0.05", dict(method="rk4", h=H)),
                     ("tdflow dopri5 rtol=1e-8", dict(method="dopri5", rtol=RTOL)),
                     ("tdflow dop853 rtol=1e-8", dict(method="dop853", rtol=RTOL))]:
        tr, s = best_run(lambda: flow.integrate(W0, (0, T_END), t_eval=t_rec, **kw), n)
        runs.append(tdflow_run(name, tr, s, repeat=n))
    reference = runs[-1].fit_times

    if args.no_diffrax or not peers_jax.AVAILABLE:
        print("diffrax: " + ("left out (--no-diffrax)" if args.no_diffrax else peers_jax.SKIPPED))
    else:
        for solver in peers_jax.SOLVERS:
            states, n_rhs, s, comp = peers_jax.solve_timed(U, a, W0, t_rec, solver, RTOL, n)
            runs.append(peer_run(f"diffrax {solver} jit rtol=1e-8", U, a, states, t_rec, s, n_rhs,
                                 repeat=n, compile=comp))

    for method in ("RK45", "DOP853"):
        count = [0]

        def f(t, y):
            count[0] += 1
            return numpy_rhs(U, a, y.reshape(D, M, order="F")).ravel(order="F")

        sol, s = best_run(lambda: solve_ivp(f, (0, T_END), W0.ravel(order="F"), method=method,
                                            rtol=RTOL, atol=1e-30, t_eval=t_rec), n)
        states = sol.y.T.reshape(-1, M, D).transpose(0, 2, 1)
        runs.append(peer_run(f"SciPy solve_ivp {method} rtol=1e-8", U, a, states, sol.t, s, count[0] // n, repeat=n))

    n_steps = int(round(T_END / H))
    every = n_steps // 500

    def rk4_run(f, W):
        states = [W]
        for _ in range(500):
            W = rk4(f, W, H, every)
            states.append(W)
        return states

    rhs = [("NumPy RK4 h=0.05 (well written)", lambda W: numpy_rhs(U, a, W))]
    if args.naive:
        rhs.append(("NumPy RK4 h=0.05 (naive)", lambda W: numpy_rhs_naive(U, a, W)))
    for name, f in rhs:
        states, s = best_run(lambda: rk4_run(f, W0.copy()), n)
        runs.append(peer_run(name, U, a, states, t_rec, s, 4 * n_steps, repeat=n))
    if torch is not None:
        Ut, at = torch.from_numpy(U.copy()), torch.from_numpy(a)
        states, s = best_run(lambda: [X.numpy() for X in rk4_run(lambda X: torch_rhs(Ut, at, X),
                                                                  torch.from_numpy(W0.copy()))], n)
        runs.append(peer_run("PyTorch CPU RK4 h=0.05", U, a, states, t_rec, s, 4 * n_steps, repeat=n))
    else:
        print("PyTorch not installed: skipped")

    for run in runs:
        check(run, a, reference, atol=1.0)
    report(runs, f"Figure 1 run (d={D}, m={M}, r={R}, t in [0, {T_END}], seed 0), "
                 f"tdflow threads: {tdflow.get_num_threads()}")


if __name__ == "__main__":
    main()

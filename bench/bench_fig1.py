"""A whole Figure 1 run: d=10, m=50, 5 directions (ratio 1.2), radius 1e-15, t from 0 to 250.

    python bench/bench_fig1.py [--naive] [--threads N]

tdflow (RK4 h=0.05, adaptive dopri5 and DOP853, and 5 seeds as one batch) against peers measured
in this run: hand-written NumPy RK4 (h=0.05), SciPy solve_ivp (RK45 / DOP853 at rtol 1e-8) on
the NumPy right-hand side, PyTorch RK4 when installed. Every peer's fit times are checked
against tdflow's before the table is printed.
"""
import argparse

import numpy as np
from scipy.integrate import solve_ivp

import tdflow
from common import fit_times, numpy_rhs, numpy_rhs_naive, rk4, table, timed, torch, torch_rhs

D, M, R, T_END, H = 10, 50, 5, 250.0, 0.05


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--naive", action="store_true", help="also time the naive NumPy RHS (slow)")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        tdflow.set_num_threads(args.threads)
    a = tdflow.geometric_weights(R, 1.2)
    target = tdflow.Target.orthogonal(D, a)
    U = target.U
    flow = tdflow.GradientFlow(target)
    W0s = np.stack([tdflow.sphere(D, M, 1e-15, s) for s in range(5)])
    W0 = W0s[0]
    t_rec = np.linspace(0, T_END, 501)
    rows = []

    def row(name, seconds, n_rhs, times, per_seed=True):
        rows.append([name, seconds, n_rhs, times])

    flow.integrate(W0, (0, 1), method="rk4", h=H)  # warm up
    tr, s = timed(lambda: flow.integrate(W0, (0, T_END), method="rk4", h=H, t_eval=t_rec))
    reference_times = tr.fit_times()
    row("tdflow RK4 h=0.05", s, tr.n_rhs, tr.fit_times())
    tr, s = timed(lambda: flow.integrate(W0, (0, T_END), method="dopri5", rtol=1e-8, t_eval=t_rec))
    row("tdflow dopri5 rtol=1e-8", s, tr.n_rhs, tr.fit_times())
    tr, s = timed(lambda: flow.integrate(W0, (0, T_END), method="dop853", rtol=1e-8, t_eval=t_rec))
    row("tdflow dop853 rtol=1e-8", s, tr.n_rhs, tr.fit_times())
    t_ours = s
    trs, s = timed(lambda: flow.integrate_batch(W0s, (0, T_END), method="dop853", rtol=1e-8, t_eval=t_rec))
    row("tdflow dop853, 5 seeds batched (per seed)", s / 5, trs[0].n_rhs, trs[0].fit_times())
    t_batch = s / 5

    n_steps = int(round(T_END / H))
    record_every = n_steps // 500

    def numpy_rk4(f):
        W, states = W0.copy(), [W0.copy()]
        for _ in range(500):
            W = rk4(f, W, H, record_every)
            states.append(W)
        return states

    states, s = timed(lambda: numpy_rk4(lambda W: numpy_rhs(U, a, W)))
    row("NumPy RK4 h=0.05 (well written)", s, 4 * n_steps, fit_times(U, a, states, t_rec))
    if args.naive:
        states, s = timed(lambda: numpy_rk4(lambda W: numpy_rhs_naive(U, a, W)))
        row("NumPy RK4 h=0.05 (naive)", s, 4 * n_steps, fit_times(U, a, states, t_rec))
    for method in ("RK45", "DOP853"):
        count = [0]

        def f(t, y):
            count[0] += 1
            return numpy_rhs(U, a, y.reshape(D, M, order="F")).ravel(order="F")

        sol, s = timed(lambda: solve_ivp(f, (0, T_END), W0.ravel(order="F"), method=method,
                                         rtol=1e-8, atol=1e-30, t_eval=t_rec))
        states = [sol.y[:, k].reshape(D, M, order="F") for k in range(sol.y.shape[1])]
        row(f"SciPy solve_ivp {method} rtol=1e-8", s, count[0], fit_times(U, a, states, sol.t))
    if torch is not None:
        Ut, at = torch.from_numpy(U.copy()), torch.from_numpy(a)

        def torch_run():
            W, states = torch.from_numpy(W0.copy()), [W0.copy()]
            for _ in range(500):
                W = rk4(lambda X: torch_rhs(Ut, at, X), W, H, record_every)
                states.append(W.numpy().copy())
            return states

        states, s = timed(torch_run)
        row("PyTorch CPU RK4 h=0.05", s, 4 * n_steps, fit_times(U, a, states, t_rec))

    for name, seconds, n_rhs, times in rows:
        if not np.allclose(times, reference_times, atol=1.0):
            raise SystemExit(f"{name}: fit times {times} disagree with {reference_times}")
    out = [[name, f"{seconds:.4f} s", n_rhs, f"{seconds / t_ours:.1f}x", f"{seconds / t_batch:.1f}x",
            np.array2string(times, precision=1)] for name, seconds, n_rhs, times in rows]
    print(f"Figure 1 run (d={D}, m={M}, r={R}, t in [0, {T_END}]), tdflow threads: {tdflow.get_num_threads()}")
    print(table(out, ["method", "wall", "RHS evals", "vs tdflow dop853", "vs tdflow batched", "fit times"]))


if __name__ == "__main__":
    main()

"""A larger fit: d=50, m=2000, 10 orthogonal directions (ratio 1.2), radius 1e-10, t in [0, 350].

    python bench/bench_large_fit.py [--skip-scipy] [--threads N]

tdflow's adaptive stepper against SciPy's solve_ivp (RK45, same rtol) on the well-written NumPy
right-hand side, measured in this run; the fit times of both must agree.
"""
import argparse
import time

import numpy as np
from scipy.integrate import solve_ivp

import tdflow
from common import fit_times, numpy_rhs, table

D, M, R, T_END, RTOL = 50, 2000, 10, 350.0, 1e-6


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--skip-scipy", action="store_true")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        tdflow.set_num_threads(args.threads)
    a = tdflow.geometric_weights(R, 1.2)
    target = tdflow.Target.orthogonal(D, a)
    W0 = tdflow.sphere(D, M, 1e-10, 0)
    t_rec = np.linspace(0, T_END, 351)
    rows = []

    start = time.perf_counter()
    tr = tdflow.GradientFlow(target).integrate(W0, (0, T_END), method="dopri5", rtol=RTOL, t_eval=t_rec)
    t_ours = time.perf_counter() - start
    ours = tr.fit_times()
    rows.append(["tdflow dopri5", f"{t_ours:.2f} s", tr.n_rhs, "1.0x", np.array2string(ours, precision=0)])
    print(f"tdflow: {t_ours:.2f} s, {tr.n_rhs} RHS, all fitted: {np.isfinite(ours).all()}", flush=True)

    if not args.skip_scipy:
        count = [0]

        def f(t, y):
            count[0] += 1
            return numpy_rhs(target.U, a, y.reshape(D, M, order="F")).ravel(order="F")

        start = time.perf_counter()
        sol = solve_ivp(f, (0, T_END), W0.ravel(order="F"), method="RK45", rtol=RTOL, atol=1e-30, t_eval=t_rec)
        t_scipy = time.perf_counter() - start
        states = [sol.y[:, k].reshape(D, M, order="F") for k in range(sol.y.shape[1])]
        theirs = fit_times(target.U, a, states, sol.t)
        if not np.allclose(theirs, ours, atol=2.0):
            raise SystemExit(f"fit times disagree: scipy {theirs} vs tdflow {ours}")
        rows.append(["SciPy RK45 + NumPy RHS", f"{t_scipy:.2f} s", count[0], f"{t_scipy / t_ours:.1f}x",
                     np.array2string(theirs, precision=0)])
    print(f"d={D}, m={M}, r={R}, rtol={RTOL}, tdflow threads: {tdflow.get_num_threads()}")
    print(table(rows, ["method", "wall", "RHS evals", "vs tdflow", "fit times"]))


if __name__ == "__main__":
    main()

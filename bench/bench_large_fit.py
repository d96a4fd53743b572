"""A larger fit: d=50, m=2000, 10 orthogonal directions (ratio 1.2), radius 1e-10, t in [0, 350].

    python bench/bench_large_fit.py [--skip-scipy] [--threads N]

tdflow's adaptive steppers (dopri5, dop853) against SciPy's solve_ivp (RK45, same rtol) on the well-written NumPy
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

    ours, t_ours = None, {}
    for method in ("dopri5", "dop853"):
        start = time.perf_counter()
        tr = tdflow.GradientFlow(target).integrate(W0, (0, T_END), method=method, rtol=RTOL, t_eval=t_rec)
        t_ours[method] = time.perf_counter() - start
        times = tr.fit_times()
        ours = times if ours is None else ours
        rows.append([f"tdflow {method}", f"{t_ours[method]:.2f} s", tr.n_rhs, t_ours[method],
                     np.array2string(times, precision=0)])
        print(f"tdflow {method}: {t_ours[method]:.2f} s, {tr.n_rhs} RHS, all fitted: {np.isfinite(times).all()}",
              flush=True)
        if not np.allclose(times, ours, atol=2.0):
            raise SystemExit(f"fit times disagree: {method} {times} vs dopri5 {ours}")

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
        rows.append(["SciPy RK45 + NumPy RHS", f"{t_scipy:.2f} s", count[0], t_scipy,
                     np.array2string(theirs, precision=0)])
    best = min(t_ours.values())
    peer = rows[-1][3] if not args.skip_scipy else None
    for row in rows:
        seconds = row[3]
        row[3] = f"{seconds / best:.1f}x"
        row.insert(4, f"{peer / seconds:.1f}x" if peer else "-")
    print(f"d={D}, m={M}, r={R}, rtol={RTOL}, tdflow threads: {tdflow.get_num_threads()}")
    print(table(rows, ["method", "wall", "RHS evals", "vs fastest tdflow", "SciPy RK45 / this", "fit times"]))


if __name__ == "__main__":
    main()

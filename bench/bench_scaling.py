"""Cost of one right-hand side as m grows, d = 100, r = 10 orthogonal directions.

    python bench/bench_scaling.py [--ms 1000,10000,100000] [--dense 8000] [--threads N]

Plateau state: every column on the sphere of radius 1e-15 (--radius) except three that have fitted the
three largest directions, as midway through a small-initialisation run. The active set leaves the
tiny columns out of the residual, so one RHS costs O(m (r + active) d) instead of O(m^2 d); the
exact evaluation (active_tol = 0) is timed beside it where it fits in a few seconds. Also a dense
state (every column large), against NumPy's DGEMM rate. Peak RSS of this process is printed
after each size (it only grows).
"""
import argparse

import numpy as np

import tdflow
from common import best_time, dgemm_peak, numpy_rhs, peak_rss_mib, table

D, R = 100, 10


def plateau_state(m, target, radius, rng=0):
    W = tdflow.sphere(D, m, radius, rng)
    for i in range(3):
        W[:, i] = 0.0
        W[i, i] = np.sqrt(target.a[i])
    return W


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ms", default="1000,3000,10000,30000,100000")
    p.add_argument("--dense", default="2000,8000", help="m values for the dense state")
    p.add_argument("--radius", type=float, default=1e-15, help="norm of the unfitted columns")
    p.add_argument("--active-tol", type=float, default=1e-16, help="GradientFlow(active_tol=...)")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        tdflow.set_num_threads(args.threads)
    target = tdflow.Target.orthogonal(D, tdflow.geometric_weights(R, 1.2))
    flow = tdflow.GradientFlow(target, active_tol=args.active_tol)
    exact = flow.exact()
    rows, base = [], None
    for m in map(int, args.ms.split(",")):
        W = plateau_state(m, target, args.radius)
        fast = flow.rhs(W)
        n_active = flow._core.n_active
        if m <= 3000:
            np.testing.assert_allclose(fast, numpy_rhs(target.U, target.a, W), rtol=1e-9, atol=1e-14)  # fitted columns: dW is rounding
        t = best_time(lambda: flow.rhs(W), repeat=5, number=max(1, 20000 // m))
        base = base or (m, t)
        t_exact = best_time(lambda: exact.rhs(W), repeat=2) if m <= 30000 else float("nan")
        rows.append([m, n_active, f"{t * 1e3:.2f} ms", f"{t / base[1]:.1f}x for {m / base[0]:.0f}x m",
                     f"{t_exact * 1e3:.1f} ms" if np.isfinite(t_exact) else "-",
                     f"{peak_rss_mib():.0f} MiB"])
    print(f"Plateau state, d={D}, r={R}, radius {args.radius:g}, active_tol {args.active_tol:g}, "
          f"tdflow threads: {tdflow.get_num_threads()}")
    print(table(rows, ["m", "active", "RHS", "growth", "exact RHS", "peak RSS"]))

    peak = dgemm_peak()
    rows = []
    for m in map(int, args.dense.split(",")):
        rng = np.random.default_rng(0)
        W = np.asfortranarray(tdflow.sphere(D, m, 1.0, rng) * rng.uniform(0.5, 1.5, m))
        t = best_time(lambda: flow.rhs(W), repeat=3)
        gflops = 4 * m * (m + R) * D / t / 1e9
        rows.append([m, f"{t * 1e3:.1f} ms", f"{gflops:.1f}", f"{100 * gflops / peak:.0f}%", f"{peak_rss_mib():.0f} MiB"])
    print(f"\nDense state, NumPy DGEMM (2000^3) = {peak:.1f} GFLOP/s")
    print(table(rows, ["m", "RHS", "GFLOP/s", "% of DGEMM", "peak RSS"]))


if __name__ == "__main__":
    main()

"""The closing-note table of issue 3: does Algorithm 2 with the default Schedule recover every
direction of an orthogonal target? One row per (d, r, m, spectrum, seed).

    python bench/table_deflation.py [--threads 1] [--quick]

"recovered" = status "recovered" (||T - T*||_F <= eps) AND every direction fitted by tdflow's
"eps-floor" rule (a_i - â_i <= max(2 lam, eps); the run itself does not depend on the rule).
"P1" = every margin of Proposition 1 of Ge et al. 2021 >= 0 at every step of every epoch.
"fit order": exact = directions fitted from the largest weight to
the smallest; "by epoch": no direction fitted in a later epoch than a smaller one. Spectra span a factor ``--span`` between the largest and smallest weight,
normalised to sum 1 (Target.from_spec's span): "geo" = geometric, "pow" = power law i^-p.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import tdflow


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--span", type=float, default=30.0)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    tdflow.set_num_threads(args.threads)
    grid = [
        # d, r, m, spectrum
        (10, 5, 40, "geo"), (10, 5, 40, "pow"),
        (20, 10, 60, "geo"), (20, 10, 60, "pow"),
        (30, 10, 80, "geo"), (30, 10, 80, "pow"),
        (50, 10, 100, "geo"), (50, 10, 100, "pow"),
        (50, 20, 200, "geo"),
        # where the default breaks: too few columns
        (10, 5, 5, "geo"), (10, 5, 8, "geo"), (20, 10, 10, "geo"), (20, 10, 15, "geo"),
        (20, 10, 20, "geo"), (50, 10, 20, "geo"),
    ]
    if args.quick:
        grid = grid[:2]
    print(f"| d | r | m | spectrum (span {args.span:g}) | seed | status | recovered | epochs | "
          f"fitted/r | fit order | by epoch | P1 | sim. time | wall (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for d, r, m, kind in grid:
        target = tdflow.Target.from_spec(d=d, r=r, spectrum=kind, span=args.span)
        a = target.a
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            res = tdflow.deflate(target, m, tdflow.Schedule(fit_tol="eps-floor"), seed,
                                 progress=False)
            wall = time.perf_counter() - t0
            ok = res.recovered and res.all_fitted
            # larger weights never fitted in a later epoch than smaller ones
            fe = res.directions["fitted_epoch"][np.argsort(-a, kind="stable")]
            fe = np.where(fe < 0, np.iinfo(np.int64).max, fe)
            epoch_order = bool(np.all(np.diff(fe) >= 0))
            print(f"| {d} | {r} | {m} | {kind} | {seed} | {res.status} | {'yes' if ok else 'NO'} | "
                  f"{res.n_epochs} | {int(res.fitted_now.sum())}/{r} | "
                  f"{'exact' if np.array_equal(res.fit_order, np.arange(r)) else 'swaps'} | "
                  f"{'yes' if epoch_order else 'no'} | "
                  f"{'yes' if res.proposition1_ok.all() else 'NO'} | {res.t:.0f} | {wall:.2f} |", flush=True)


if __name__ == "__main__":
    main()

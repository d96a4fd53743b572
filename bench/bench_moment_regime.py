"""One dense RHS where m >> d^(l-1): d=10, order 4, m = 1e5 and 1e6 (the moment-tensor regime).

    python bench/bench_moment_regime.py [--ms 100000,1000000] [--max-seconds 300] [--repeat 1] [--threads N]
    python bench/bench_moment_regime.py --crossover [--threads N] [--rounds 7]

Each (path, m) runs in a fresh Python process, so that its peak memory is its own: the state is
every column drawn on the unit sphere and scaled by U(0.5, 1.5), the target 5 orthogonal
directions (ratio 1.2). Printed: the time of one RHS (min of --repeat after one warm-up call),
the process's peak RSS and its growth during the RHS calls against the size of the state
(m*d*8 bytes: an O(m*d) path stays within a few times it), and the largest relative error of 8
columns of the RHS against a column-by-column NumPy evaluation (O(m*d) per column).

Two paths: contraction="gram" (Gram blocks, O(m^2 d) time) and contraction="moment" (the
residual's unfolding, O(m d^l / (l-1)!) time). A size whose time, scaled from the last size
measured (by (m/m_prev)^2 for an O(m^2 d) path, m/m_prev for an O(m d^l) one), would make the
warm-up and --repeat calls exceed --max-seconds is printed "skipped (estimated N s)", N the
estimated time of one RHS.

--crossover measures where the moment path overtakes the Gram path: for several (d, l), one
dense RHS at m = n/4 .. 8n (n = C(d+l-2, l-1), the unfolding's distinct rows) by both paths in
alternating rounds (min of --rounds), and beside it the path contraction="auto" takes there
(the cost model's constants, in cpp/include/tdflow/moment.hpp, are set from this table).
"""
import argparse
import inspect
import json
import math
import resource
import subprocess
import sys
import time

import numpy as np

import tdflow
from common import best_time, table

D, R, ORDER = 10, 5, 4

# The paths timed: (label, keywords of tdflow.GradientFlow, cost growth in m).
# MOMENT PATH: when GradientFlow grows a keyword that chooses the moment-tensor contraction
# (O(m d^l) through M = sum_j ||w_j||^2 wbar_j^(x)l), add its row here, e.g.
#     ("tdflow moment tensor, O(m d^l)", {"<keyword>": "<value>"}, 1),
# A row whose keywords GradientFlow does not accept is printed as "not available in this tdflow".
PATHS = [
    ("tdflow Gram blocks, O(m^2 d)", {"contraction": "gram"}, 2),
    ("tdflow moment tensor, O(m d^l)", {"contraction": "moment"}, 1),
]
CROSSOVER_CASES = [(5, 3), (10, 3), (20, 3), (50, 3), (5, 4), (10, 4), (20, 4), (8, 5), (10, 5), (6, 6)]


def rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reference_columns(U, a, W, cols, order=ORDER):
    """-grad L for the columns ``cols`` only, each in O(m d): the deflation model's RHS as DESIGN.md."""
    n = np.sqrt(np.einsum("ij,ij->j", W, W))
    Wb = W / n
    out = np.empty((W.shape[0], len(cols)))
    for c, j in enumerate(cols):
        g = U @ (a * (U.T @ Wb[:, j]) ** (order - 1)) - Wb @ (n**2 * (Wb.T @ Wb[:, j]) ** (order - 1))
        out[:, c] = order * n[j] * g - (order - 2) * (g @ Wb[:, j]) * W[:, j]
    return out


def child(m, path, repeat, threads):
    """Measure one (path, m) in this process; print a JSON line."""
    if threads:
        tdflow.set_num_threads(threads)
    label, kw, _ = PATHS[path]
    target = tdflow.Target.orthogonal(D, tdflow.geometric_weights(R, 1.2), order=ORDER)
    flow = tdflow.GradientFlow(target, **kw)
    rng = np.random.default_rng(0)
    W = np.asfortranarray(tdflow.sphere(D, m, 1.0, rng) * rng.uniform(0.5, 1.5, m))
    before = rss_mib()
    out = flow.rhs(W)
    best = np.inf
    for _ in range(repeat):
        start = time.perf_counter()
        out = flow.rhs(W)
        best = min(best, time.perf_counter() - start)
    peak = rss_mib()
    cols = np.random.default_rng(1).choice(m, size=8, replace=False)
    ref = reference_columns(target.U, target.a, W, cols)
    err = np.max(np.abs(out[:, cols] - ref) / np.max(np.abs(ref), axis=0))
    print(json.dumps(dict(seconds=best, peak=peak, growth=peak - before, err=float(err),
                          threads=tdflow.get_num_threads())))


def crossover(rounds):
    """Measured and modelled crossover of the two paths, one dense RHS, r = min(5, d)."""
    rows = []
    for d, order in CROSSOVER_CASES:
        n = math.comb(d + order - 2, order - 1)
        r = min(R, d)
        target = tdflow.Target.orthogonal(d, tdflow.geometric_weights(r, 1.2), order=order)
        flows = {c: tdflow.GradientFlow(target, contraction=c) for c in ("gram", "moment", "auto")}
        measured = modelled = None
        ratios = []
        for m in sorted({max(4, int(n * 2 ** (k / 2))) for k in range(-4, 7)}):
            rng = np.random.default_rng(0)
            W = np.asfortranarray(tdflow.sphere(d, m, 1.0, rng) * rng.uniform(0.5, 1.5, m))
            number = max(1, int(2e7 / (4 * m * m * d + 4 * m * n * d)))  # ~ a few ms per timing
            best = {"gram": np.inf, "moment": np.inf}
            for i in range(rounds):
                for c in (("gram", "moment") if i % 2 == 0 else ("moment", "gram")):
                    best[c] = min(best[c], best_time(lambda: flows[c].rhs(W), repeat=1, number=number))
            flows["auto"].rhs(W)
            ratio = best["gram"] / best["moment"]
            ratios.append(f"{m}:{ratio:.2f}")
            if ratio > 1 and measured is None:
                measured = m
            if ratio <= 1:
                measured = None  # the crossover is where the moment path stays ahead
            if flows["auto"]._core.last_contraction == "moment" and modelled is None:
                modelled = m
        rows.append([d, order, n, measured or "-", modelled or "-", " ".join(ratios)])
        print(rows[-1], flush=True)
    print(f"One dense RHS, r = min({R}, d), {tdflow.get_num_threads()} threads, min of {rounds} alternating rounds")
    print(table(rows, ["d", "l", "n = C(d+l-2, l-1)", "measured crossover m", "auto switches at m",
                       "m:(Gram time / moment time)"]))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ms", default="100000,1000000")
    p.add_argument("--max-seconds", type=float, default=300.0, help="skip a size estimated to take longer")
    p.add_argument("--repeat", type=int, default=1, help="timed RHS calls after the warm-up (min taken)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--crossover", action="store_true", help="measure where the moment path overtakes the Gram path")
    p.add_argument("--rounds", type=int, default=7, help="alternating rounds per size (--crossover)")
    p.add_argument("--child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.crossover:
        if args.threads:
            tdflow.set_num_threads(args.threads)
        return crossover(args.rounds)
    if args.child:
        return child(*args.child, args.repeat, args.threads)
    accepted = inspect.signature(tdflow.GradientFlow).parameters
    rows = []
    for path, (label, kw, power) in enumerate(PATHS):
        if not set(kw) <= set(accepted):
            rows.append([label, "-", "not available in this tdflow", "", "", "", ""])
            continue
        last = None
        for m in map(int, args.ms.split(",")):
            state = m * D * 8 / 2**20
            if last is not None:
                estimate = last[1] * (m / last[0]) ** power  # one RHS; the child makes repeat + 1 calls
                if estimate * (args.repeat + 1) > args.max_seconds:
                    rows.append([label, m, f"skipped (estimated {estimate:.0f} s)", "", "", f"{state:.1f} MiB", ""])
                    continue
            cmd = [sys.executable, __file__, "--child", str(m), str(path), "--repeat", str(args.repeat),
                   "--threads", str(args.threads)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            res = json.loads(out.strip().splitlines()[-1])
            last = (m, res["seconds"])
            rows.append([label, m, f"{res['seconds']:.3f} s", f"{res['peak']:.0f} MiB", f"{res['growth']:.0f} MiB",
                         f"{state:.1f} MiB", f"{res['err']:.1e}"])
            print(f"{label}, m={m}: {res['seconds']:.3f} s ({res['threads']} threads)", flush=True)
    print(f"One dense RHS, d={D}, order {ORDER}, r={R}; min of {args.repeat} after a warm-up call")
    print(table(rows, ["path", "m", "RHS", "peak RSS", "RSS growth in RHS", "state W", "max rel err (8 cols)"]))


if __name__ == "__main__":
    main()

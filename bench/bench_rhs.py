"""One right-hand side of the deflation model's gradient flow (order 4, orthogonal target).

    python bench/bench_rhs.py [--sizes 10x50,100x2000,100x8000] [--threads N]

Dense state (every column of norm ~1, so every column is active): the two Gram GEMMs dominate,
4 m (m + r) d flops. Prints time per RHS, tdflow's speed-up over each peer measured in this run,
and tdflow's GFLOP/s as a fraction of NumPy's DGEMM rate on a 2000^3 product. The rate is
nominal, the 4 m (m + r) d flops over the time: from 1200 columns in the residual on (above
d = 16) tdflow forms the model's own Gram matrix in symmetric block pairs and does about 3/4 of
them (contract_self_add).
"""
import argparse

import numpy as np

import tdflow
from common import best_time, dgemm_peak, numpy_rhs, numpy_rhs_naive, table, torch, torch_rhs


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="10x50,100x2000,100x8000")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        tdflow.set_num_threads(args.threads)
    peak = dgemm_peak()
    print(f"NumPy DGEMM (2000^3): {peak:.1f} GFLOP/s; tdflow threads: {tdflow.get_num_threads()}")
    rows = []
    for size in args.sizes.split(","):
        d, m = map(int, size.split("x"))
        r = min(10, d)
        target = tdflow.Target.orthogonal(d, tdflow.geometric_weights(r))
        flow = tdflow.GradientFlow(target)
        rng = np.random.default_rng(0)
        W = np.asfortranarray(tdflow.sphere(d, m, 1.0, rng) * rng.uniform(0.5, 1.5, m))
        U, a = target.U, target.a
        ours = flow.rhs(W)
        np.testing.assert_allclose(ours, numpy_rhs(U, a, W), rtol=1e-9, atol=1e-9 * np.abs(ours).max())
        number = max(1, int(2e7 / (m * m * d)))
        repeat = 5 if m * m * d < 1e9 else 3
        t_ours = best_time(lambda: flow.rhs(W), repeat, number)
        peers = {
            "numpy (well written)": best_time(lambda: numpy_rhs(U, a, W), repeat, number),
            "numpy (naive G**3)": best_time(lambda: numpy_rhs_naive(U, a, W), 2 if m > 4000 else repeat, number),
        }
        if torch is not None:
            Ut, at, Wt = (torch.from_numpy(np.ascontiguousarray(x)) for x in (U, a, W))
            np.testing.assert_allclose(torch_rhs(Ut, at, Wt).numpy(), ours, rtol=1e-9, atol=1e-9 * np.abs(ours).max())
            peers["pytorch cpu"] = best_time(lambda: torch_rhs(Ut, at, Wt), repeat, number)
        gflops = 4 * m * (m + r) * d / t_ours / 1e9
        row = [f"d={d} m={m}", f"{t_ours * 1e3:.3f} ms", f"{gflops:.1f} ({100 * gflops / peak:.0f}%)"]
        row += [f"{peers[k] * 1e3:.3f} ms ({peers[k] / t_ours:.1f}x)" for k in peers]
        rows.append(row)
        header = ["size", "tdflow", "GFLOP/s (% DGEMM)"] + list(peers)
    print(table(rows, header))


if __name__ == "__main__":
    main()

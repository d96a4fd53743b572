"""Many small simulations: Figure-1-sized replicas (d=10, m=50, t in [0, 250]) per second.

    python bench/bench_replicas.py [--replicas 40] [--method dop853] [--threads N]

One call of integrate_batch (replicas spread over the OpenMP threads, one replica per thread)
against a Python loop over integrate, and against SciPy's solve_ivp (DOP853, rtol 1e-8) on the
NumPy right-hand side as the peer.
"""
import argparse
import time

import numpy as np
from scipy.integrate import solve_ivp

import tdflow
from common import numpy_rhs, table


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--replicas", type=int, default=40)
    p.add_argument("--method", choices=("dopri5", "dop853"), default="dop853", help="tdflow's stepper")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        tdflow.set_num_threads(args.threads)
    a = tdflow.geometric_weights(5, 1.2)
    target = tdflow.Target.orthogonal(10, a)
    flow = tdflow.GradientFlow(target)
    W0s = np.stack([tdflow.sphere(10, 50, 1e-15, s) for s in range(args.replicas)])
    kw = dict(method=args.method, rtol=1e-8, n_records=251)

    start = time.perf_counter()
    batch = flow.integrate_batch(W0s, (0, 250), **kw)
    t_batch = time.perf_counter() - start
    start = time.perf_counter()
    loop = [flow.integrate(W0, (0, 250), **kw) for W0 in W0s]
    t_loop = time.perf_counter() - start
    assert all(np.array_equal(x.W, y.W) for x, y in zip(batch, loop))
    n_peer = max(2, args.replicas // 10)
    start = time.perf_counter()
    for W0 in W0s[:n_peer]:
        solve_ivp(lambda t, y: numpy_rhs(target.U, a, y.reshape(10, 50, order="F")).ravel(order="F"),
                  (0, 250), W0.ravel(order="F"), method="DOP853", rtol=1e-8, atol=1e-30)
    t_peer = (time.perf_counter() - start) / n_peer * args.replicas
    rows = [[f"tdflow integrate_batch ({args.method})", f"{args.replicas / t_batch:.1f}", "1.0x"],
            ["tdflow loop over integrate", f"{args.replicas / t_loop:.1f}", f"{t_loop / t_batch:.1f}x"],
            [f"SciPy DOP853 + NumPy RHS ({n_peer} timed)", f"{args.replicas / t_peer:.2f}", f"{t_peer / t_batch:.1f}x"]]
    print(f"{args.replicas} replicas of d=10, m=50, t in [0, 250]; tdflow threads: {tdflow.get_num_threads()}")
    print(table(rows, ["method", "replicas/s", "slower than batch"]))


if __name__ == "__main__":
    main()

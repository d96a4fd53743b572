"""tdflow's power method against TensorLy's symmetric power iteration on the same tensors.

    python bench/bench_tensorly.py [--ds 10,20,40] [--orders 3,4] [--ranks 3,5] [--repeat 3]
                                   [--threads 1]

Each case: r unit components, ``orthogonal`` (a random rotation's first r columns) or
``near-orthogonal`` (those plus 1e-2 Gaussian noise, renormalised; the largest coherence
``mu = max |<u_i, u_j>|`` is printed), weights ``linspace(1, 0.5, r)``. The same tensor goes to

- tdflow CP:    ``tensor_power_method(CPTensor(U, a, l), r)`` (never forms the d^l array),
- tdflow dense: ``tensor_power_method(D, r)`` with ``D`` the ``(d,)*l`` array,
- TensorLy:     ``symmetric_parafac_power_iteration(D, r, n_repeat=10, n_iteration=10)``,

with matched effort: TensorLy's "iteration" is ``l`` power steps and its refinement as many, so
tdflow runs ``n_starts=10, n_iters=10*l``: the same number of power steps from as many starts.
Before any timing, every method's components must match the truth: ``min_i |<u_i, w_pi(i)>|
>= 1 - 1e-6`` for the best permutation ``pi`` (Hungarian on ``|U^T W|``); a failure is printed
``NO`` and left out of the ratios. Times are the minimum of ``--repeat`` runs (TensorLy seeded by
``np.random.seed``, its only generator). Peak memory: tracemalloc's peak of Python/NumPy
allocations during one more run, beyond the inputs (tdflow's C++ core allocates outside its view:
``O((k + m) d)`` doubles for a CP input; the dense array itself is the input, ``d^l`` doubles).
``--threads`` sets the OpenBLAS and OpenMP threads of both libraries before NumPy loads (default
1: on a loaded 2-core machine two OpenBLAS threads on these small products ran 2-6x slower than
one, a fair comparison either way since both libraries use the same BLAS).
"""
import argparse
import os
import sys


def _args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ds", default="10,20,40")
    p.add_argument("--orders", default="3,4")
    p.add_argument("--ranks", default="3,5")
    p.add_argument("--kinds", default="orthogonal,near-orthogonal")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="0: the libraries' defaults")
    return p.parse_args()


ARGS = _args() if __name__ == "__main__" else None
if ARGS is not None and ARGS.threads:  # before NumPy and OpenBLAS start their pools
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)

import tracemalloc  # noqa: E402

import numpy as np  # noqa: E402
from scipy.optimize import linear_sum_assignment  # noqa: E402

import tdflow  # noqa: E402
from common import best_run, table  # noqa: E402

try:
    import tensorly as tl
    from tensorly.decomposition import symmetric_parafac_power_iteration
except ImportError:  # pragma: no cover
    sys.exit("TensorLy is not installed: pip install 'tdflow[tensorly]'")

N_REPEAT, N_ITERATION = 10, 10  # TensorLy's defaults


def components(rng, d, r, kind):
    U = np.linalg.qr(rng.standard_normal((d, d)))[0][:, :r]
    if kind == "near-orthogonal":
        U = U + 1e-2 * rng.standard_normal((d, r))
        U /= np.linalg.norm(U, axis=0)
    return U


def overlap(U, W):
    """``min_i |<u_i, w_pi(i)>|`` for the best matching ``pi`` (0 when W has too few columns)."""
    if W.shape[1] < U.shape[1]:
        return 0.0
    G = np.abs(U.T @ W)
    rows, cols = linear_sum_assignment(-G)
    return float(G[rows, cols].min())


def peak_mib(fn):
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def run_case(d, order, r, kind, repeat, seed):
    rng = np.random.default_rng(seed)
    U, a = components(rng, d, r, kind), np.linspace(1.0, 0.5, r)
    T = tdflow.CPTensor(U, a, order)
    D = T.dense()
    opts = dict(n_starts=N_REPEAT, n_iters=N_ITERATION * order, rng=seed)

    def tensorly_run():
        np.random.seed(seed)
        w, F = symmetric_parafac_power_iteration(D, r, n_repeat=N_REPEAT, n_iteration=N_ITERATION)
        return tl.to_numpy(F)

    methods = {
        "tdflow CP": lambda: tdflow.tensor_power_method(T, r, **opts).components,
        "tdflow dense": lambda: tdflow.tensor_power_method(D, r, **opts).components,
        "TensorLy": tensorly_run,
    }
    out = {}
    for name, fn in methods.items():
        found = overlap(U, fn())
        ok = found >= 1 - 1e-6
        _, seconds = best_run(fn, repeat) if ok else (None, float("nan"))
        out[name] = (ok, found, seconds, peak_mib(fn))
    mu = float(np.max(np.abs(U.T @ U - np.eye(r))))
    return mu, out


def main():
    args = ARGS or _args()
    rows = []
    print(table([], HEADER), flush=True)
    for d in map(int, args.ds.split(",")):
        for order in map(int, args.orders.split(",")):
            for r in map(int, args.ranks.split(",")):
                for kind in args.kinds.split(","):
                    mu, res = run_case(d, order, r, kind, args.repeat, seed=1000 * d + 10 * order + r)
                    cp, de, tly = (res[k] for k in ("tdflow CP", "tdflow dense", "TensorLy"))

                    def ms(x):
                        return f"{x[2] * 1e3:.2f}" if x[0] else f"NO ({x[1]:.4f})"

                    def ratio(x):
                        return f"{tly[2] / x[2]:.1f}x" if x[0] and tly[0] else "-"

                    rows.append([d, order, r, kind, f"{mu:.1e}", f"{d ** order * 8 / 2**20:.2f}",
                                 ms(cp), ms(de), ms(tly), ratio(cp), ratio(de),
                                 f"{cp[3]:.2f}", f"{de[3]:.2f}", f"{tly[3]:.2f}"])
                    print(table(rows[-1:], HEADER).splitlines()[-1], flush=True)
    print(f"\ntdflow {tdflow.__version__}, TensorLy {tl.__version__} (backend {tl.get_backend()}), "
          f"threads {args.threads or 'default'}, tdflow threads {tdflow.get_num_threads()}; "
          f"matched effort: {N_REPEAT} starts, {N_ITERATION}*l power steps each (+ as many polishing)")
    print(table(rows, HEADER))


HEADER = ["d", "l", "r", "components", "mu", "D MiB", "CP ms", "dense ms", "TensorLy ms",
          "TL/CP", "TL/dense", "CP peak MiB", "dense peak MiB", "TL peak MiB"]


if __name__ == "__main__":
    main()

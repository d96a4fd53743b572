"""The GPU backend (``backend="cuda"``, PyTorch) against the C++ core on this machine's CPU.

    python bench/bench_gpu.py [--ms 8000,100000] [--alg2-m 2000] [--skip-alg2] [--threads N]

Needs PyTorch with CUDA and a visible GPU; exits with a message otherwise. Prints, each time
against the CPU path measured in the same run, with the maximum relative disagreement
``max |gpu - cpu| / max |cpu|`` beside it:

1. one RHS, d = 100, r = 10 orthogonal directions, in a small-initialisation plateau (three
   fitted columns, the rest at radius 1e-15: the active set leaves them out) and in a dense
   state (every column of norm ~1), for each m: through ``GradientFlow.rhs`` (host arrays in
   and out, transfers included) and on device tensors (``TorchFlow.rhs``, synchronised);
2. a whole Figure 1 run (d = 10, m = 50, radius 1e-15, t to 250, dopri5 and dop853 at rtol 1e-8): fit times
   compared; too small for a GPU, shown so that nobody has to guess;
3. a whole Algorithm 2 run, ``tdflow.deflate(target, m, rng=1, backend=...)`` with the default
   schedule (dopri5, rtol 1e-7): d = 100, r = 10 (geometric, ratio 1.2), m = --alg2-m; status,
   epochs, fit order and S_i events compared.
"""
import argparse
import sys

import numpy as np

import tdflow
from common import best_time, table, timed

D, R = 100, 10


def plateau_state(m, target, radius=1e-15, rng=0):
    """As bench_scaling.py, but the three large columns sit a little short of their directions
    (at the fixed point their velocity would be pure rounding, with no digits to compare)."""
    W = tdflow.sphere(D, m, radius, rng)
    for i in range(3):
        W[:, i] = 0.0
        W[i, i] = 0.9 * np.sqrt(target.a[i])
    return W


def dense_state(m, rng=0):
    rng = np.random.default_rng(rng)
    return np.asfortranarray(tdflow.sphere(D, m, 1.0, rng) * rng.uniform(0.5, 1.5, m))


def rel(a, b):
    """max |a - b| / max |b|"""
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(np.asarray(b))))


def rel_columns(a, b):
    """max over columns of ||a_j - b_j|| / ||b_j||: the tiny columns' velocities count too."""
    return float(np.max(np.linalg.norm(a - b, axis=0) / np.linalg.norm(b, axis=0)))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ms", default="8000,100000", help="m values for the RHS timings")
    p.add_argument("--alg2-m", type=int, default=2000, help="m of the Algorithm 2 run")
    p.add_argument("--skip-alg2", action="store_true", help="leave out the Algorithm 2 run")
    p.add_argument("--threads", type=int, default=0, help="OpenMP threads of the CPU path")
    p.add_argument("--backend", choices=("cuda", "torch"), default="cuda",
                   help="torch: the same script through PyTorch on the CPU, to check it without a GPU")
    args = p.parse_args()
    backend = args.backend
    try:
        import torch
    except ImportError:
        sys.exit("bench_gpu.py needs PyTorch with CUDA: pip install 'tdflow[gpu]'")
    if backend == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_gpu.py needs a CUDA device, and torch.cuda.is_available() is False "
                 f"(torch {torch.__version__}); nothing to measure on this machine")
    if args.threads:
        tdflow.set_num_threads(args.threads)
    device = torch.cuda.get_device_name() if backend == "cuda" else "none (PyTorch on the CPU)"
    print(f"GPU: {device}, torch {torch.__version__}; CPU path: {tdflow.get_num_threads()} OpenMP threads")

    def sync():
        if backend == "cuda":
            torch.cuda.synchronize()

    target = tdflow.Target.orthogonal(D, tdflow.geometric_weights(R, 1.2))
    cpu = tdflow.GradientFlow(target)
    gpu = tdflow.GradientFlow(target, backend=backend)
    tf = gpu._torch
    rows = []
    for m in map(int, args.ms.split(",")):
        for kind, W in (("plateau", plateau_state(m, target)), ("dense", dense_state(m))):
            ref = cpu.rhs(W)
            got = gpu.rhs(W)  # also warms up cuBLAS
            repeat = 1 if kind == "dense" and m > 20000 else 3
            t_cpu = best_time(lambda: cpu.rhs(W), repeat=repeat)
            t_host = best_time(lambda: gpu.rhs(W), repeat=3)
            Wd = tf.to_device(W)

            def on_device():
                tf.rhs(Wd)
                sync()

            t_dev = best_time(on_device, repeat=3)
            flops = 4 * m * (m + R) * D if kind == "dense" else float("nan")
            rows.append([m, kind, f"{t_cpu * 1e3:.1f} ms", f"{t_host * 1e3:.1f} ms",
                         f"{t_dev * 1e3:.2f} ms", f"{t_cpu / t_dev:.1f}x",
                         f"{flops / t_dev / 1e9:.0f}" if kind == "dense" else "-",
                         f"{rel_columns(got, ref):.1e}"])
    print(f"\nOne RHS, d={D}, r={R}")
    print(table(rows, ["m", "state", "CPU core", f"{backend} (host arrays)", f"{backend} (device)",
                       "CPU/device", "device GFLOP/s", "max rel diff (per column)"]))
    if backend == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")

    rows = []
    a5 = tdflow.geometric_weights(5, 1.2)
    fig = tdflow.Target.orthogonal(10, a5)
    W0 = tdflow.sphere(10, 50, 1e-15, 0)
    c1, g1 = tdflow.GradientFlow(fig), tdflow.GradientFlow(fig, backend=backend)
    g1.integrate(W0, (0, 1), method="dopri5")  # warm up
    for method in ("dopri5", "dop853"):
        ta, s_cpu = timed(lambda: c1.integrate(W0, (0, 250), method=method, rtol=1e-8))
        tb, s_gpu = timed(lambda: g1.integrate(W0, (0, 250), method=method, rtol=1e-8))
        same = np.array_equal(ta.fit_times(), tb.fit_times(), equal_nan=True)
        rows.append([f"Figure 1 (d=10, m=50, t<=250), {method}", f"{s_cpu:.3f} s", f"{s_gpu:.3f} s",
                     f"{s_cpu / s_gpu:.2f}x", f"{ta.n_steps}/{tb.n_steps}", f"{rel(tb.W, ta.W):.1e}",
                     "same" if same else f"{ta.fit_times()} vs {tb.fit_times()}"])
    print("\nWhole runs (rtol 1e-8; wall clock, recordings included)")
    print(table(rows, ["run", "CPU core", backend, f"CPU/{backend}", f"steps cpu/{backend}", "max rel diff W",
                       "fit times"]))
    if not args.skip_alg2:
        m = args.alg2_m
        ra, s_cpu = timed(lambda: tdflow.deflate(target, m, rng=1))
        rb, s_gpu = timed(lambda: tdflow.deflate(target, m, rng=1, backend=backend))
        same_events = all(np.allclose(ra.events[k], rb.events[k], rtol=1e-6)
                          if np.shape(ra.events[k]) == np.shape(rb.events[k]) else False
                          for k in ra.events)
        row = [f"d={D}, r={R}, m={m}", f"{s_cpu:.2f} s", f"{s_gpu:.2f} s",
               f"{s_cpu / s_gpu:.2f}x", f"{ra.status}/{rb.status}", f"{ra.n_epochs}/{rb.n_epochs}",
               "same" if np.array_equal(ra.fit_order, rb.fit_order) else "differ",
               "same" if same_events else "differ", f"{rel(rb.W, ra.W):.1e}"]
        print("\nWhole Algorithm 2 run (tdflow.deflate, default schedule, seed 1)")
        print(table([row], ["problem", "CPU core", backend, f"CPU/{backend}", "status", "epochs",
                            "fit order", "S_i events", "max rel diff W"]))


if __name__ == "__main__":
    main()

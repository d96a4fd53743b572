"""2 OpenMP threads against 1 while other processes keep the cores busy (d=50, m=2000).

    python bench/bench_contention.py [--busy 2] [--rounds 7] [--block 5] [--t-end 80] [--run-rounds 3]

Starts --busy processes running ``while True: pass`` (killed by this script when it ends), then,
with tdflow.set_num_threads(1) and (2) in alternating order round after round:
- one dense right-hand side (every column of norm 0.5..1.5): a block of --block calls a round;
- a whole dopri5 run of the larger fit (r=10, radius 1e-10, rtol 1e-6) from 0 to --t-end
  (the full fit runs to 350; the default stops after the first three directions are fitted).
Prints, per thread count, the minimum over the rounds (for the RHS: of the blocks' mean call
time) and the median of the rounds, the median of each round's ratio, and the ratio
2 threads / 1 thread of each (goal: <= 1.1 by every measure). Rounds alternate which thread count
goes first so that a slow stretch of the machine does not land on one of them only.
"""
import argparse
import os
import subprocess
import sys
import time

import numpy as np

import tdflow
from common import table

D, M, R, RTOL = 50, 2000, 10, 1e-6


def busy_processes(k):
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(k)]


def alternate(rounds, work):
    """{threads: [seconds of each round]}, running work() under 1 and 2 threads in turn."""
    out = {1: [], 2: []}
    for i in range(rounds):
        for n in ((1, 2) if i % 2 == 0 else (2, 1)):
            tdflow.set_num_threads(n)
            start = time.perf_counter()
            work()
            out[n].append(time.perf_counter() - start)
    return out


def _fmt(seconds):
    return f"{seconds:.2f} s" if seconds >= 1 else f"{seconds * 1e3:.1f} ms"


def summary(name, out, per=1):
    one, two = np.array(out[1]) / per, np.array(out[2]) / per
    return [[name, "min of rounds", _fmt(one.min()), _fmt(two.min()), f"{two.min() / one.min():.2f}"],
            [name, "median of rounds", _fmt(np.median(one)), _fmt(np.median(two)),
             f"{np.median(two) / np.median(one):.2f}"],
            [name, "median of paired ratios", "", "", f"{np.median(two / one):.2f}"]]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--busy", type=int, default=2, help="busy processes started beside the benchmark")
    p.add_argument("--rounds", type=int, default=7, help="alternating rounds of the RHS blocks")
    p.add_argument("--block", type=int, default=5, help="RHS calls per block")
    p.add_argument("--t-end", type=float, default=80.0, help="end of the whole run (full fit: 350)")
    p.add_argument("--run-rounds", type=int, default=3, help="alternating rounds of the whole run (0: none)")
    args = p.parse_args()
    target = tdflow.Target.orthogonal(D, tdflow.geometric_weights(R, 1.2))
    flow = tdflow.GradientFlow(target)
    rng = np.random.default_rng(0)
    W = np.asfortranarray(tdflow.sphere(D, M, 1.0, rng) * rng.uniform(0.5, 1.5, M))
    W0 = tdflow.sphere(D, M, 1e-10, np.random.default_rng(0))
    for n in (1, 2):
        tdflow.set_num_threads(n)
        flow.rhs(W)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    procs = busy_processes(args.busy)
    try:
        time.sleep(0.5)  # let them start spinning
        rhs = alternate(args.rounds, lambda: [flow.rhs(W) for _ in range(args.block)])
        rows = summary(f"one dense RHS ({args.rounds} rounds of {args.block})", rhs, per=args.block)
        if args.run_rounds:
            run = alternate(args.run_rounds, lambda: flow.integrate(W0, (0, args.t_end), method="dopri5", rtol=RTOL))
            rows += summary(f"dopri5 run t in [0, {args.t_end:g}] ({args.run_rounds} rounds)", run)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    print(f"d={D}, m={M}: {args.busy} busy processes beside this one on {cpus} CPUs available")
    print(table(rows, ["work", "measure", "1 thread", "2 threads", "2 threads / 1 thread"]))


if __name__ == "__main__":
    main()

"""The core of each CPU level against each other: which level is worth what on this machine.

    python bench/bench_levels.py [--levels native,x86-64-v4,x86-64-v3,x86-64-v2] [--rounds 5]
                                 [--threads N] [--clock wall|cpu]

Each level is loaded in its own interpreter (TDFLOW_CPU_LEVEL=<level>) and times a whole Figure 1
run (d=10, m=50, 5 directions, radius 1e-15, t in [0, 250]) with RK4 h=0.05 and with DOP853
rtol=1e-8, and one dense right-hand side at d=100, m=8000. The levels run in turn, round after
round, and each figure is the minimum over the rounds, so that load from other processes on a
shared machine hits every level alike; ``--clock cpu`` times with the process's CPU time instead
of the wall clock, which (with ``--threads 1``) leaves out the time spent waiting for a core
while other processes run. Ratios are against the first level listed. A
-march=native core (`native`) is there only when built (-DTDFLOW_NATIVE=ON) and copied beside
the others.
"""
import argparse
import json
import os
import subprocess
import sys

import tdflow
from tdflow import _dispatch
from common import table

_WORKER = """
import json, time
import numpy as np
import tdflow
threads = {threads}
clock = time.{clock}
if threads:
    tdflow.set_num_threads(threads)

def best(fn, n):
    fn()
    out = np.inf
    for _ in range(n):
        t = clock(); fn(); out = min(out, clock() - t)
    return out

flow = tdflow.GradientFlow(tdflow.Target.orthogonal(10, tdflow.geometric_weights(5, 1.2)))
W0 = tdflow.sphere(10, 50, 1e-15, 0)
t_rec = np.linspace(0, 250, 501)
fig1_rk4 = best(lambda: flow.integrate(W0, (0, 250), method="rk4", h=0.05, t_eval=t_rec), 2)
fig1_dop853 = best(lambda: flow.integrate(W0, (0, 250), method="dop853", rtol=1e-8, t_eval=t_rec), 2)
big = tdflow.GradientFlow(tdflow.Target.orthogonal(100, tdflow.geometric_weights(10)))
rng = np.random.default_rng(0)
W = np.asfortranarray(tdflow.sphere(100, 8000, 1.0, rng) * rng.uniform(0.5, 1.5, 8000))
rhs = best(lambda: big.rhs(W), 3)
print(json.dumps({{"module": tdflow._core.__name__, "fig1 rk4": fig1_rk4,
                  "fig1 dop853": fig1_dop853, "rhs 100x8000": rhs}}))
"""


def run(level: str, threads: int, clock: str = "wall") -> dict:
    env = dict(os.environ, TDFLOW_CPU_LEVEL=level)
    code = _WORKER.format(threads=threads, clock="perf_counter" if clock == "wall" else "process_time")
    out = subprocess.run([sys.executable, "-c", code], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--levels", default=",".join(_dispatch.CHOICE.runnable),
                   help="comma-separated levels, the first one the reference")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="OpenMP threads (0: default)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall clock, or the process's CPU time (all threads)")
    args = p.parse_args()
    levels = args.levels.split(",")
    best = {lv: {} for lv in levels}
    for r in range(args.rounds):
        for lv in levels:
            for key, value in run(lv, args.threads, args.clock).items():
                if key != "module":
                    best[lv][key] = min(best[lv].get(key, float("inf")), value)
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    keys = list(best[levels[0]])
    ref = best[levels[0]]
    rows = [[lv] + [f"{best[lv][k] * 1e3:.2f} ms ({best[lv][k] / ref[k]:.2f}x)" for k in keys]
            for lv in levels]
    print(f"tdflow {tdflow.__version__}, threads {args.threads or tdflow.get_num_threads()}, "
          f"{args.clock} time, min of {args.rounds} alternating rounds; ratio to {levels[0]}")
    print(table(rows, ["level"] + keys))


if __name__ == "__main__":
    main()

"""Many small simulations: Figure 1 replicas (d=10, m=50, t in [0, 250], seeds 0..39).

    python bench/bench_replicas.py [--replicas 40] [--method dop853] [--repeat 3] [--no-diffrax] [--threads N]

One call of integrate_batch (replicas spread over the OpenMP threads) against a Python loop over
integrate, against diffrax under jax.jit(jax.vmap(diffeqsolve)) (Dopri8, Dopri5, Tsit5; rtol
1e-8, 501 saved states, compile time apart) and against SciPy's solve_ivp (DOP853, rtol 1e-8) on
the NumPy right-hand side (a few replicas timed, the time scaled to all of them). Every replica
of every run is checked first (all directions fitted, in weight order, at integrate_batch's fit
times within 1, final loss < 1e-10); times are the minimum of --repeat runs of all replicas.
"""
import argparse

import numpy as np
from scipy.integrate import solve_ivp

import peers_jax
import tdflow
from common import best_run, numpy_rhs
from verdict import check, peer_run, report, tdflow_run

D, M, R, T_END, RTOL = 10, 50, 5, 250.0, 1e-8


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--replicas", type=int, default=40)
    p.add_argument("--method", choices=("dopri5", "dop853"), default="dop853", help="tdflow's stepper")
    p.add_argument("--repeat", type=int, default=3, help="time-to-solution = min of this many runs")
    p.add_argument("--scipy-replicas", type=int, default=4, help="replicas SciPy is timed on (0: none)")
    p.add_argument("--no-diffrax", action="store_true", help="leave the JAX peers out")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        tdflow.set_num_threads(args.threads)
    n, k = args.repeat, args.replicas
    a = tdflow.geometric_weights(R, 1.2)
    target = tdflow.Target.orthogonal(D, a)
    U = target.U
    flow = tdflow.GradientFlow(target)
    W0s = np.stack([tdflow.sphere(D, M, 1e-15, np.random.default_rng(s)) for s in range(k)])
    t_rec = np.linspace(0, T_END, 501)
    kw = dict(method=args.method, rtol=RTOL, t_eval=t_rec)

    batch, s = best_run(lambda: flow.integrate_batch(W0s, (0, T_END), **kw), n)
    runs = [tdflow_run(f"tdflow integrate_batch {args.method}", batch, s, repeat=n)]
    loop, s = best_run(lambda: [flow.integrate(W0, (0, T_END), **kw) for W0 in W0s], n)
    runs.append(tdflow_run(f"tdflow loop over integrate {args.method}", loop, s, repeat=n))
    if not all(np.array_equal(x.W, y.W) for x, y in zip(batch, loop)):
        raise SystemExit("integrate_batch and integrate disagree")
    reference = runs[0].fit_times

    if args.no_diffrax or not peers_jax.AVAILABLE:
        print("diffrax: " + ("left out (--no-diffrax)" if args.no_diffrax else peers_jax.SKIPPED))
    else:
        for solver in ("Dopri8", "Dopri5", "Tsit5"):
            states, n_rhs, s, comp = peers_jax.solve_timed(U, a, W0s, t_rec, solver, RTOL, n, batch=True)
            runs.append(peer_run(f"diffrax {solver} jit(vmap)", U, a, states, t_rec, s,
                                 f"{n_rhs} (lockstep)", repeat=n, compile=comp))
    checks = [(run, reference) for run in runs]

    j = min(args.scipy_replicas, k)
    if j:
        def scipy_runs():
            sols = [solve_ivp(lambda t, y: numpy_rhs(U, a, y.reshape(D, M, order="F")).ravel(order="F"),
                              (0, T_END), W0.ravel(order="F"), method="DOP853", rtol=RTOL, atol=1e-30,
                              t_eval=t_rec) for W0 in W0s[:j]]
            return [sol.y.T.reshape(-1, M, D).transpose(0, 2, 1) for sol in sols], sum(s.nfev for s in sols) // j
        (states, nfev), s = best_run(scipy_runs, 1)
        run = peer_run("SciPy DOP853 + NumPy RHS", U, a, np.stack(states), t_rec, s * k / j, f"{nfev} (mean)",
                       note=f"({j} replicas timed, x{k / j:g})")
        checks.append((run, reference[:j]))
        runs.append(run)

    for run, ref in checks:
        check(run, a, ref, atol=1.0)
    for run in runs:
        run.note = (run.note + " " if run.note else "") + f"[{k / run.seconds:.1f} replicas/s]"
    report(runs, f"{k} Figure 1 replicas (d={D}, m={M}, t in [0, {T_END}], seeds 0..{k - 1}); "
                 f"times for all of them; tdflow threads: {tdflow.get_num_threads()}")


if __name__ == "__main__":
    main()

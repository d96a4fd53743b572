"""The deflation flow in polar coordinates: does it need fewer right-hand sides? (issue 15, item 2)

    python bench/polar_formulation.py [--rtol 1e-8] [--sweep 1e-6,...,1e-10] [--methods RK45,DOP853] [--seed 0]

DESIGN.md's right-hand side, column by column, with n = ||w||, wbar = w / n and R = T* - T,
T = sum_k w_k^(x)l / ||w_k||^(l-2) = sum_k n_k^2 wbar_k^(x)l:

    dw/dt = l R(w^(l-1), I) / n^(l-2) - (l-2) R(w^l) / n^l w - lam w
          = n (l g - (l-2) <g, wbar> wbar) - lam n wbar,     g = R(wbar^(l-1), I), <g, wbar> = R(wbar^l).

With rho = log n: d rho/dt = <wbar, dw/dt> / n = 2 R(wbar^l) - lam, and
d wbar/dt = (dw/dt - wbar d n/dt) / n = l g - l <g, wbar> wbar = l (I - wbar wbar^T) R(wbar^(l-1), I),
where, in the state (rho, wbar), g_j = sum_i a_i <u_i, wbar_j>^(l-1) u_i
- sum_k e^(2 rho_k) <wbar_k, wbar_j>^(l-1) wbar_k. The projection keeps ||wbar|| = 1 in exact
arithmetic; the RHS uses wbar as the integrator gives it (its drift is printed).

The script (1) checks the polar RHS against the Cartesian one mapped by the chain rule
(d rho = <w, dw> / n^2, d wbar = (dw - wbar <wbar, dw>) / n) for orders 3 and 4, with and without
lam, on states with norms over six decades; (2) integrates the Figure 1 run (d=10, m=50, r=5,
radius 1e-15, t in [0, 250], 501 recorded states) with SciPy solve_ivp, the Cartesian form with
atol 1e-30 (states start at 1e-15: only a relative test means anything) and the polar form with
atol 1e-30 and with atol = rtol (rho and wbar are O(1) variables), over a sweep of rtol, and prints
the RHS evaluations, wall time, final loss, fit times against the reference's, and the largest
relative deviation of the recorded states from a DOP853 rtol 1e-12 Cartesian reference. The last
lines compare the RHS counts at --rtol and at equal accuracy: the cheapest polar run of the sweep
that deviates no more than the Cartesian run at --rtol.
SciPy weighs each component's error by atol + rtol |y|: for rho (about -34.5 at radius 1e-15)
that allows an absolute error of about 35 rtol in log-norm, so the same rtol is not the same
accuracy in the two forms; hence the deviation column and the equal-accuracy comparison.
"""
import argparse
import time

import numpy as np
from scipy.integrate import solve_ivp

import tdflow
from common import fit_times, gram_powers, numpy_rhs, table

D, M, R, T_END = 10, 50, 5, 250.0


def polar_rhs(U, a, rho, Wb, order=4, lam=0.0):
    """(d rho/dt, d wbar/dt) of the deflation flow in polar coordinates (module docstring)."""
    Pu, Pw = gram_powers(U.T @ Wb, Wb.T @ Wb, order)
    g = U @ (a[:, None] * Pu) - Wb @ (np.exp(2 * rho)[:, None] * Pw)
    s = np.einsum("ij,ij->j", g, Wb)
    return 2 * s - lam, order * (g - s * Wb)


def to_polar(W):
    n = np.linalg.norm(W, axis=0)
    return np.log(n), W / n


def check_rhs():
    """Largest relative difference between the polar RHS and the chain-ruled Cartesian one."""
    rng = np.random.default_rng(7)
    worst = 0.0
    for order in (3, 4):
        for lam in (0.0, 0.1):
            U = np.linalg.qr(rng.standard_normal((6, 4)))[0]
            a = rng.uniform(0.2, 1.0, 4)
            W = rng.standard_normal((6, 30)) * 10.0 ** rng.uniform(-5, 1, 30)
            dW = numpy_rhs(U, a, W, order, lam)
            rho, Wb = to_polar(W)
            n = np.exp(rho)
            want_rho = np.einsum("ij,ij->j", W, dW) / n**2
            want_Wb = (dW - Wb * np.einsum("ij,ij->j", Wb, dW)) / n
            got_rho, got_Wb = polar_rhs(U, a, rho, Wb, order, lam)
            worst = max(worst, np.max(np.abs(got_rho - want_rho)) / np.max(np.abs(want_rho)),
                        np.max(np.abs(got_Wb - want_Wb) / np.max(np.abs(want_Wb), axis=0)))
    return worst


def run(form, method, U, a, W0, t_rec, rtol, atol=1e-30):
    """Integrate one form with solve_ivp; return (Cartesian states (n, d, m), nfev, seconds, drift)."""
    count = [0]
    if form == "cartesian":
        def f(t, y):
            count[0] += 1
            return numpy_rhs(U, a, y.reshape(D, M, order="F")).ravel(order="F")
        y0 = W0.ravel(order="F")
    else:
        def f(t, y):
            count[0] += 1
            dr, dWb = polar_rhs(U, a, y[:M], y[M:].reshape(D, M, order="F"))
            return np.concatenate([dr, dWb.ravel(order="F")])
        rho, Wb = to_polar(W0)
        y0 = np.concatenate([rho, Wb.ravel(order="F")])
    start = time.perf_counter()
    with np.errstate(over="ignore", invalid="ignore"):
        sol = solve_ivp(f, (0, T_END), y0, method=method, rtol=rtol, atol=atol, t_eval=t_rec)
    seconds = time.perf_counter() - start
    if not sol.success:
        return None, sol.nfev, seconds, np.nan
    drift = 0.0
    if form == "cartesian":
        states = sol.y.T.reshape(-1, M, D).transpose(0, 2, 1)
    else:
        Wb = sol.y[M:].T.reshape(-1, M, D).transpose(0, 2, 1)
        drift = np.max(np.abs(np.linalg.norm(Wb, axis=1) - 1))
        states = np.exp(sol.y[:M].T)[:, None, :] * Wb
    return states, sol.nfev, seconds, drift


# the forms compared: (label, form, atol as a function of rtol). Cartesian states start at 1e-15,
# so only a relative test means anything there; rho and wbar are O(1) variables, for which an
# absolute tolerance equal to rtol (SciPy's mixed test) is the natural choice.
CONFIGS = [("cartesian, atol 1e-30", "cartesian", lambda rtol: 1e-30),
           ("polar, atol 1e-30", "polar", lambda rtol: 1e-30),
           ("polar, atol = rtol", "polar", lambda rtol: rtol)]


def _fewer(c, q):
    """How polar's count q compares with the Cartesian count c, in words."""
    return f"{100 * (c - q) / c:.0f}% fewer" if q <= c else f"{100 * (q - c) / c:.0f}% more"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rtol", type=float, default=1e-8, help="the tolerance of the headline comparison")
    p.add_argument("--sweep", default="1e-6,1e-7,3e-8,1e-8,3e-9,1e-9,1e-10",
                   help="rtols of the work-precision table ('' for none)")
    p.add_argument("--methods", default="RK45,DOP853")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    print(f"polar RHS vs chain-ruled Cartesian RHS (orders 3, 4; lam 0, 0.1): max rel diff {check_rhs():.1e}")
    a = tdflow.geometric_weights(R, 1.2)
    target = tdflow.Target.orthogonal(D, a)
    U = target.U
    flow = tdflow.GradientFlow(target, active_tol=0.0)
    W0 = tdflow.sphere(D, M, 1e-15, np.random.default_rng(args.seed))
    t_rec = np.linspace(0, T_END, 501)
    ref, *_ = run("cartesian", "DOP853", U, a, W0, t_rec, 1e-12)
    ref_norm = np.linalg.norm(ref, axis=(1, 2))
    reference_times = fit_times(U, a, ref, t_rec)
    other, *_ = run("polar", "DOP853", U, a, W0, t_rec, 1e-12)
    print(f"reference: Cartesian DOP853 rtol 1e-12; polar DOP853 rtol 1e-12 deviates from it by "
          f"{np.max(np.linalg.norm(other - ref, axis=(1, 2)) / ref_norm):.1e} (relative, max over records)")
    rtols = sorted({args.rtol, *(float(x) for x in args.sweep.split(",") if x)}, reverse=True)
    rows, counts = [], {}
    for method in args.methods.split(","):
        for rtol in rtols:
            for label, form, atol in CONFIGS:
                states, nfev, seconds, drift = run(form, method, U, a, W0, t_rec, rtol, atol(rtol))
                if states is None:
                    rows.append([method, f"{rtol:g}", label, nfev, f"{seconds:.3f} s", "failed", "", "", ""])
                    continue
                times = fit_times(U, a, states, t_rec)
                loss = flow.loss(states[-1])
                ok = np.allclose(times, reference_times, atol=1.0) and loss < 1e-10
                dev = np.max(np.linalg.norm(states - ref, axis=(1, 2)) / ref_norm)
                counts[method, rtol, label] = (nfev, dev, ok)
                rows.append([method, f"{rtol:g}", label, nfev, f"{seconds:.3f} s", f"{loss:.1e}", f"{dev:.1e}",
                             f"{drift:.1e}" if form == "polar" else "-", "yes" if ok else "NO"])
    print(f"Figure 1 run (d={D}, m={M}, seed {args.seed}), SciPy solve_ivp with 501 t_eval "
          f"(DOP853's dense output costs 3 RHS a step that holds one)")
    print(table(rows, ["method", "rtol", "form", "RHS evals", "wall", "final loss", "max rel dev from ref",
                       "max | ||wbar||-1 |", "fit times and loss ok"]))
    for method in args.methods.split(","):
        c, c_dev, _ = counts[method, args.rtol, CONFIGS[0][0]]
        print(f"{method}, rtol {args.rtol:g}: Cartesian {c} RHS (deviation {c_dev:.1e})")
        for label, _, _ in CONFIGS[1:]:
            q, q_dev, _ = counts[method, args.rtol, label]
            same = [(n, r) for (mm, r, lb), (n, dv, ok) in counts.items()
                    if mm == method and lb == label and ok and dv <= c_dev]
            cheapest = min(same) if same else None
            at_equal = (f"; at the Cartesian's accuracy or better: {cheapest[0]} RHS (rtol {cheapest[1]:g}), "
                        f"{_fewer(c, cheapest[0])}" if cheapest else "; never as accurate in the sweep")
            print(f"  {label}: {q} RHS at the same rtol ({_fewer(c, q)}, deviation {q_dev:.1e})" + at_equal)


if __name__ == "__main__":
    main()

"""
Many columns: the moment path
=============================

With ``m`` columns the residual ``R = T* - T`` is contracted either through Gram blocks
``<w_j, w_k>`` (cost ``O(m^2 d)`` per right-hand side once every column is active) or through
the ``d^{l-1} x d`` unfolding of ``R`` (the *moment* path, ``O(m d^l / (l-1)!)``), the fast one
when ``m >> d^{l-1}``. ``GradientFlow(..., contraction="auto")`` (the default) picks the cheaper
at every evaluation. Here: d = 10, order 4, ``m`` from 2e4 to 1e5 columns, all of them active.
The README's benchmark goes to ``m = 1e6`` (``python bench/bench_moment_regime.py``).
"""

# %%
# One right-hand side, both paths
# -------------------------------
# At ``m = 2e4`` the Gram path already costs about 100 times the moment path; the two agree to
# rounding.
import time

import matplotlib.pyplot as plt
import numpy as np

import tdflow

d, order = 10, 4
target = tdflow.Target.orthogonal(d, tdflow.geometric_weights(5, ratio=1.2), order=order)


def state(m, seed=0):
    """m columns on the sphere of radius sqrt(0.5/m): T(W0) has norm about 1/2, every column active."""
    return tdflow.sphere(d, m, radius=np.sqrt(0.5 / m), rng=seed)


def seconds(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


W = state(20_000)
gram, t_gram = seconds(tdflow.GradientFlow(target, contraction="gram").rhs, W)
moment, t_moment = seconds(tdflow.GradientFlow(target, contraction="moment").rhs, W)
print(f"m = 20000: Gram {t_gram:.3f} s, moment {t_moment:.4f} s per right-hand side")
print("largest difference / largest entry:", np.abs(gram - moment).max() / np.abs(gram).max())

# %%
# A short flow with ``contraction="auto"``
# ----------------------------------------
# Ten RK4 steps (``t`` from 0 to 1, ``h = 0.1``, 40 right-hand sides) at each ``m``: the automatic
# choice takes the moment path, so the time grows linearly in ``m``, not like ``m^2``.
ms = [20_000, 50_000, 100_000]
flow = tdflow.GradientFlow(target)          # contraction="auto"
trajs = {}
for m in ms:
    trajs[m] = flow.integrate(state(m, seed=1), (0.0, 1.0), method="rk4", h=0.1,
                              n_records=11, progress=False)
    print(f"m = {m:6d}: {trajs[m].n_rhs} right-hand sides in {trajs[m].wall_time:.2f} s, "
          f"||T - T*||_F {trajs[m].residual_norm[0]:.3f} -> {trajs[m].residual_norm[-1]:.3f}")

fig, ax = plt.subplots(figsize=(5, 3.5), layout="constrained")
for m in ms:
    ax.plot(trajs[m].t, trajs[m].residual_norm, label=f"m = {m}")
ax.set_xlabel("t")
ax.set_ylabel("||T - T*||_F")
ax.legend()

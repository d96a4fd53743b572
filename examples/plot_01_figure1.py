"""
Figure 1 of Ge, Ren, Wang, Zhou (2021): the deflation staircase
===============================================================

Gradient flow from a tiny random initialisation fits the directions of an orthogonal target one
after the other, largest weight first: the loss falls in a staircase. This is the paper's
Figure 1 setting (d = 10, m = 50 columns of norm 1e-15, r = 5 directions with
``a_i / a_{i+1} = 1.2``, order 4, no weight decay), with three seeds instead of the five of
``tdflow fig1``.
"""

# %%
# Run the flow, one replica per seed
# ----------------------------------
# :func:`tdflow.figure1.run_figure1` integrates the replicas as one batch (RK4, ``h = 0.05``,
# as ``tdflow fig1``) and records the loss, the per-direction residuals
# ``(T* - T)(e_i^{(x)4})`` and the column norms.
import numpy as np

import tdflow
from tdflow.figure1 import run_figure1
from tdflow.plot import plot_figure1

result = run_figure1(seeds=(0, 1, 2), progress=False)

# %%
# When each direction was fitted
# ------------------------------
# Direction i counts as fitted once its residual has fallen below half its weight
# (:meth:`tdflow.Trajectory.fit_times`). Every seed fits them in the order of their weights.
print("weights a_i:", np.round(result.a, 4))
for seed, times in zip(result.seeds, result.fit_times):
    print(f"seed {seed}: fitted at t =", times)

# %%
# The figure
# ----------
# Left: the loss (log scale; dotted lines: the fit times). Middle: the per-direction residuals.
# Right: the 50 column norms, grown from 1e-15.
fig = plot_figure1(result)

# %%
# The same run from the flow itself
# ---------------------------------
# ``run_figure1`` is a thin driver: one :class:`tdflow.GradientFlow` and one initial state per
# seed. An adaptive stepper (order 8, Hairer's DOP853) reaches the same fit times.
a = tdflow.geometric_weights(5, ratio=1.2)
flow = tdflow.GradientFlow(tdflow.Target.orthogonal(10, a, order=4))
W0 = tdflow.sphere(10, 50, radius=1e-15, rng=0)
traj = flow.integrate(W0, (0, 250), method="dop853", rtol=1e-8, progress=False)
print("fit order:", traj.fit_order())
print("fit times:", traj.fit_times())
print(f"{traj.n_rhs} right-hand sides, status {traj.status}")

"""
Deep linear models: rate bounds against observed rates
======================================================

Min, Vidal, Mallada (ICML 2023) bound the exponential decay rate of the loss of gradient flow
on a deep linear model from below, using only quantities conserved along the flow (the
imbalances ``D_l = W_l^T W_l - W_{l+1} W_{l+1}^T``) and the margin of the initialisation.
:meth:`tdflow.DeepLinearFlow.rate_bound` evaluates every statement of the paper that applies and
returns the tightest; here it is compared with the rate the flow actually shows.
"""

# %%
# Two scalar layers
# -----------------
# ``f(uv) = 1/2 (1 - uv)^2`` from ``u = 2``, ``v = 0.005``: the imbalance ``d = u^2 - v^2`` is
# about 4, and the bound ``2 mu sqrt(d^2 + 4 margin^2)`` is attained at ``t = 0``.
import matplotlib.pyplot as plt
import numpy as np

import tdflow
from tdflow.linear_examples import run_linear_comparison
from tdflow.linear_three_layer import plot_three_layer, run_three_layer

flow = tdflow.DeepLinearFlow(Y=[[1.0]], hidden=(1,))
layers0 = [np.array([[2.0]]), np.array([[0.005]])]
traj = flow.integrate(layers0, (0, 3), method="dopri5", rtol=1e-10, progress=False)
bound = flow.rate_bound(layers0)
print(bound.kind, "-", bound.statement)
print(f"bound {bound.rate:.4f} <= observed min rate {traj.observed_rate('min'):.4f}")
print("imbalance drift (relative):", traj.imbalance_drift())

fig, ax = plt.subplots(figsize=(5, 3.5), layout="constrained")
ax.semilogy(traj.t, traj.gap, label="L(t) - f*")
ax.semilogy(traj.t, traj.gap[0] * np.exp(-bound.rate * traj.t), "--",
            label=f"exp(-{bound.rate:.2f} t) (the bound)")
ax.set_xlabel("t")
ax.legend()

# %%
# The bound along a run
# ---------------------
# The bound above holds uniformly in time: it uses only the conserved imbalance and the margin
# of the initialisation. With ``at_state=True`` the same statement is evaluated at one state,
# with the singular values of ``W(t)`` itself: a bound on the instantaneous rate there. Along a
# run of a 3 x 3 matrix model with one hidden layer of width 8 from an unbalanced random
# initialisation (first layer 3 times the scale of the second), both stay below the instantaneous rate ``||grad L||^2 / (L - f*)``
# (:attr:`tdflow.LinearTrajectory.rate`).
rng = np.random.default_rng(2)
Y = rng.standard_normal((3, 3))
mflow = tdflow.DeepLinearFlow(Y=Y, hidden=(8,))
start = [1.5 * rng.standard_normal((3, 8)), 0.5 * rng.standard_normal((8, 3))]
run = mflow.integrate(start, (0, 2), rtol=1e-10, n_records=41, save_states=True, progress=False)
uniform = mflow.rate_bound(start).rate
at_state = np.array([mflow.rate_bound(mflow.unpack(theta), at_state=True).rate
                     for theta in run.states])
print(f"uniform bound {uniform:.3f}; bound at the state: {at_state[0]:.3f} (t = 0) .. "
      f"{at_state[-1]:.3f} (t = 2); observed rate >= bound at every record:",
      bool(np.all(run.rate >= at_state * (1 - 1e-9))))

fig2, ax2 = plt.subplots(figsize=(5, 3.5), layout="constrained")
ax2.plot(run.t, run.rate, label="observed rate ||grad L||^2 / (L - f*)")
ax2.plot(run.t, at_state, "--", label="rate_bound(W(t), at_state=True)")
ax2.axhline(uniform, ls=":", c="gray", label="rate_bound(W(0)) (uniform in t)")
ax2.set_xlabel("t")
ax2.legend()

# %%
# Balanced against unbalanced initialisations
# -------------------------------------------
# The table of ``tdflow linear``: scalar, matrix and regression models, each from a balanced
# initialisation (imbalance 0) and from unbalanced ones. Every observed rate is at least the
# bound; the imbalance buys speed.
comparison = run_linear_comparison(progress=False)
print(comparison.summary())
print("every bound held:", comparison.holds())

# %%
# Three layers (Theorem 2)
# ------------------------
# The paper's three-layer experiment, at a smaller size so that it runs in a second (hidden
# widths 40 instead of 200, 4 draws per scheme instead of 100): Theorem 2's bound
# ``Delta*(D21, D23)`` against the observed rates for the NTK, Fan-in and Fan-out
# initialisations.
three = run_three_layer(h1=40, h2=40, draws=4, progress=False)
print(three.summary())
fig3 = plot_three_layer(three)

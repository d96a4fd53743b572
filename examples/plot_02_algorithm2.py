"""
Algorithm 2 with its per-epoch theory report
============================================

Algorithm 2 of Ge, Ren, Wang, Zhou (2021) runs gradient flow in epochs: a first phase of
length ``t1``, a re-draw of every column that is still small, a second phase up to ``t2``, and
``beta`` shrinks by ``1 - gamma``. :func:`tdflow.deflate` runs it and watches it with the
definitions of the paper's Section 5: the sets ``S_i`` (Definition 1), ``â_i``, Proposition 1's
induction hypothesis (a)-(d) on every accepted step, the good / potential / bad partition of the
fresh columns (Definition 2) and Lemma 5's prediction. Here d = 30, ten directions, 80 columns
(about two seconds); the full-size runs are the table :doc:`../deflation_table`
(``python bench/table_deflation.py``, d up to 50).
"""

# %%
# A run
# -----
# Ten orthogonal directions in dimension 30 whose weights span a factor 30, and 80 columns.
import tdflow
from tdflow.plot import plot_deflation

a = tdflow.geometric_weights(10, ratio=30 ** (1 / 9))
target = tdflow.Target.orthogonal(30, a)
res = tdflow.deflate(target, m=80, schedule=tdflow.Schedule(), rng=1, progress=False)
print(res.status, "after", res.n_epochs, "epochs; ||T - T*||_F =", f"{res.residual_norm:.2e}")
print("fit order:", res.fit_order)

# %%
# The per-epoch theory report
# ---------------------------
# One row per epoch ``s``: ``beta^(s)``, the phase ends ``t1``, ``t2``, the directions discovered
# and fitted, the worst margin of each condition of Proposition 1 over the epoch (``>= 0``: it
# held on every accepted step), Definition 2's partition at ``(s, 0)`` and Lemma 5's outcome
# (``0/0/0`` is what the lemma predicts). See :func:`tdflow.theory.epoch_report`.
print(res.theory_report())

# %%
# The same report as a table
# --------------------------
# :meth:`tdflow.DeflationResult.epochs_frame` gives those columns as a pandas DataFrame, one
# row per epoch, to filter, plot or write next to a paper's numbers (``full=True``: every
# per-epoch record the run kept).
frame = res.epochs_frame()
print(frame.columns.tolist())
print(frame[["beta", "n_discovered", "n_fitted", "prop1_d", "n_good", "n_potential", "n_bad"]].to_string())

# %%
# The run epoch by epoch, then direction by direction
# ---------------------------------------------------
print(res.summary())

# %%
# The figure of ``tdflow plot``
# -----------------------------
# The residual epoch by epoch (dotted: epoch ends), the per-direction residuals, ``â_i(t)``
# climbing to ``a_i`` (dashed), and the final ``â_i`` against ``a_i``.
fig = plot_deflation(res)

# %%
# Theorem 1's parameters
# ----------------------
# The schedule the theorem prescribes, every hidden constant explicit (default 1): far smaller
# ``alpha``, ``delta0`` and ``delta1`` than the practical defaults used above.
print(tdflow.theory.theorem1_parameters(d=30, eps=0.01, m=80))
print(tdflow.Schedule.theory(d=30, eps=0.01, m=80))

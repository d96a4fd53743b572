"""
A parameter sweep on a Dask LocalCluster
========================================

:func:`tdflow.sweep` expands a spec (parameter grid x seeds) into independent runs, runs them on
dask.distributed and writes one result file per run plus a summary table. Here: the Figure 1
target (d = 10, five directions, ratio 1.2) fitted by plain gradient flow with ``m = 10`` and
``m = 20`` columns, two seeds each, on a local cluster of two single-threaded worker
processes. The full-size sweep of the same question would be ``m = [10, 20, 50, 100]`` with
``seeds = 20`` (``tdflow sweep spec.toml`` on a cluster: one run is one task).
"""

# %%
# The spec
# --------
# The same structure as a TOML file for ``tdflow sweep``: the kind ``"flow"``
# (:func:`tdflow.sweeps.kinds.run_flow`), parameters shared by every run in ``fixed``, a grid.
import tempfile
from pathlib import Path

from distributed import Client, LocalCluster

import tdflow
from tdflow.sweeps import load_summary

spec = {
    "kind": "flow",
    "seeds": 2,
    "fixed": {"d": 10, "r": 5, "ratio": 1.2, "t_end": 150.0},
    "grid": {"m": [10, 20]},
}

# %%
# Run it on a LocalCluster
# ------------------------
# ``tdflow.sweep`` starts a ``LocalCluster`` by itself (``workers=N``); passing a client shows
# where a user's own cluster goes (``scheduler="tcp://host:port"`` reaches a remote one). The
# workers are processes started by *spawn*, which imports this script again in each of them:
# as in any script that starts processes, the work sits under ``if __name__ == "__main__"``.
if __name__ == "__main__":
    out = Path(tempfile.mkdtemp(prefix="tdflow-sweep-"))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        result = tdflow.sweep(spec, out, client=client, verbose=False, progress=False)
    print(f"{len(result.rows)} runs; in {out.name}:", sorted(p.name for p in out.iterdir() if not p.name.startswith(".")))

# %%
# The summary table
# -----------------
# One row per run (also ``OUT/summary.csv``): its parameters, seed, status, the directions
# recovered, the fit order and the final ``||T - T*||_F``. Re-running the same call skips every
# run whose file says ``ok``.
if __name__ == "__main__":
    frame = load_summary(out)
    print(frame[["m", "seed", "status", "recovered", "fit_order", "final_error"]].to_string())

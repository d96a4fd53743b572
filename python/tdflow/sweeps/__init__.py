"""Parameter sweeps: many independent runs on dask.distributed, one result file each.

``tdflow.sweep(spec, out)`` (and ``tdflow sweep SPEC.toml``) expands a spec into runs
(parameter set x seed), runs them on a Dask cluster -- a ``LocalCluster`` on this machine by
default (one single-threaded worker process per core, loopback only), or the scheduler at
``scheduler="tcp://host:port"`` -- and writes

* ``OUT/runs/<id>.npz``: one file per run (``tdflow.io`` format, kind ``"sweep-run"``), written
  atomically by the client as soon as the run completes; its metadata holds the kind, the
  parameters, the seed, the status (``"ok"`` or ``"error"``, with the message and traceback),
  the summary row, the wall time and the worker;
* ``OUT/summary.csv`` (and ``OUT/summary.parquet`` when pyarrow is importable): one row per run,
  rebuilt from the result files at the end of every invocation;
* ``OUT/spec.json``: the expanded spec.

The summary as a pandas DataFrame: ``SweepResult.to_pandas()``, or ``load_summary(out)`` for a
sweep folder (``pip install 'tdflow[pandas]'``).

Each run has a stable id, a hash of its kind, its full parameter set (defaults filled in) and its
seed. Re-running a sweep skips the runs whose result file exists, is readable and says
``status = "ok"``; runs recorded as errors, and unreadable (e.g. truncated) files, are run again.
A run that raises is recorded as an error and does not stop the others; a killed sweep loses
nothing that had finished. A run is reproducible from its kind, parameters and seed alone.
One sweep at a time works in a folder (``OUT/.lock``; a second one is refused with the first's
pid). Ctrl-C writes the summary and says "interrupted, N runs kept" (the workers print nothing);
results that cannot be written (disk full) are kept in ``SweepResult.unsaved``.

Spec format (TOML, or the same structure as a dict)
---------------------------------------------------
::

    kind = "flow"            # a registered run kind (see KINDS)
    seeds = 5                # seeds 0..4; or an explicit list, e.g. [0, 7, 11]
    threads = 1              # optional: OpenMP threads per run (default 1)
    name = "m and lambda"    # optional label, kept in OUT/spec.json

    [fixed]                  # parameters shared by every run
    d = 10
    r = 5
    t_end = 250.0

    [grid]                   # every combination of these lists (a Cartesian product)
    m = [20, 50, 100]
    lam = [0.0, 1e-3]

    [[runs]]                 # and/or explicit parameter sets, each laid over [fixed]
    m = 30
    spectrum = "uniform"

The parameter sets are the grid points (when ``[grid]`` is given) followed by the ``[[runs]]``
entries (when given); with neither, ``[fixed]`` alone is one parameter set. A key may not appear
in both ``[fixed]`` and ``[grid]``; a ``[[runs]]`` entry overrides ``[fixed]``. Unknown parameter
names are rejected before anything runs (with the list of known ones); bad values (``d = 0``) make
that run an error. Identical runs (same id) are run once.

Run kinds
---------
``KINDS`` maps a name to a :class:`RunKind`: a function ``fn(params: dict, seed: int) ->
(summary_row: dict, arrays: dict)`` and its default parameters (which also fix the accepted
names; ``defaults=None`` accepts anything). Built in:

* ``"flow"`` (:func:`run_flow`): plain gradient flow of the deflation model from a small random
  initialisation; the row holds the recovered directions, the fit order and times, the final
  ``||T - T*||_F``, the simulated time and the number of right-hand sides.
* ``"linear"`` (:func:`run_linear`): a deep linear model (``tdflow.linear``); the row holds the
  rate bound against the observed decay rates.

* ``"deflate"`` (:func:`run_deflate`): Algorithm 2 (``tdflow.deflate``) with the Schedule's
  fields as parameters; the row holds the status, the number of fitted directions, the epochs,
  the fit order, the final ``||T - T*||_F``, the simulated time and Proposition 1's verdict.

Another kind is one line, ``register_kind(name, fn, defaults)``. The function travels to the workers with each task (module-level functions by reference, others
by value), so a kind registered in a script works on any cluster that can import tdflow.

"""
from .driver import local_cluster, sweep
from .kinds import (DEFLATE_DEFAULTS, FLOW_DEFAULTS, KINDS, LINEAR_DEFAULTS, RunKind, execute,
                    register_kind, run_deflate, run_flow, run_linear, run_one)
from .spec import Run, SweepSpec, parse_spec, run_id
from .store import FILE_KIND, SweepResult, load_summary, summary_frame, summary_row, write_summary

__all__ = ["sweep", "register_kind", "run_one", "parse_spec", "run_id", "KINDS", "RunKind",
           "FLOW_DEFAULTS", "LINEAR_DEFAULTS", "DEFLATE_DEFAULTS", "run_flow", "run_linear",
           "run_deflate", "execute", "Run", "SweepSpec", "SweepResult", "FILE_KIND",
           "summary_row", "write_summary", "summary_frame", "load_summary", "local_cluster"]

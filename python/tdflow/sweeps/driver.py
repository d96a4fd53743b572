"""Running a sweep on dask.distributed: :func:`sweep` (and ``tdflow sweep``), the local cluster,
Ctrl-C handling; each finished run is written by :mod:`tdflow.sweeps.store` as it arrives."""
from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Union

from .. import io
from .._checks import flag, positive_int, show
from ..solution import Status
from .kinds import KINDS, execute
from .spec import Run, SweepSpec, parse_spec
from .store import FILE_KIND, SweepResult, read_result, result_meta, result_path, summary_row, write_summary

INSTALL_HINT = "python -m pip install 'tdflow[dask]'"


def _require_distributed():
    try:
        import distributed
    except ImportError as err:
        raise ImportError(f"tdflow sweeps run on dask.distributed, which is not installed: {INSTALL_HINT} ({err})") from None
    return distributed


def local_cluster(workers: Optional[int] = None, *, dashboard: bool = False):
    """A ``distributed.LocalCluster`` on 127.0.0.1 only: ``workers`` worker processes (default:
    one per core) of one thread each, with ``OMP_NUM_THREADS=1``.

    The scheduler's HTTP server (which serves the dashboard when ``dashboard`` is true and bokeh
    is installed) listens on a free loopback port, never on 0.0.0.0 or a fixed port.
    """
    distributed = _require_distributed()
    import dask

    n = positive_int(workers, "workers") if workers is not None else (os.cpu_count() or 1)
    # Dask sets MALLOC_TRIM_THRESHOLD_=65536 in its workers by default; glibc then returns every
    # freed temporary to the OS, which more than doubles the time of a run (measured: m = 500,
    # 1.7 s -> 4.4 s, mostly system time). Keep Dask's other settings (OMP/MKL threads = 1).
    environ = {k: v for k, v in dask.config.get("distributed.nanny.pre-spawn-environ", {}).items()
               if k != "MALLOC_TRIM_THRESHOLD_"}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
        return distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                        host="127.0.0.1", dashboard_address="127.0.0.1:0",
                                        scheduler_kwargs={"dashboard": bool(dashboard)},
                                        env={"OMP_NUM_THREADS": "1"})


def _has_bokeh() -> bool:
    import importlib.util

    return importlib.util.find_spec("bokeh") is not None


def sweep(
    spec: Union[Mapping[str, Any], str, os.PathLike],
    out=None,
    *,
    scheduler: Optional[str] = None,
    workers: Optional[int] = None,
    client=None,
    max_runs: Optional[int] = None,
    on_result: Optional[Callable[[dict], None]] = None,
    dashboard: bool = True,
    progress: Optional[bool] = None,
    verbose: bool = True,
) -> SweepResult:
    """Run every run of ``spec`` not already complete under ``out`` on dask.distributed.

    Parameters
    ----------
    spec : dict or path
        A spec (see the module docstring) or the path of a TOML file holding one.
    out : path, optional
        Output folder (default: the spec file's path without its suffix).
    scheduler : str, optional
        Address of a running scheduler (``"tcp://host:port"``); by default a ``LocalCluster`` on
        127.0.0.1 with ``workers`` single-threaded worker processes (default: one per core).
    client : distributed.Client, optional
        Use this client (and its cluster) instead of starting one.
    max_runs : int, optional
        Run at most this many of the pending runs in this invocation (the rest stay pending).
    on_result : callable, optional
        Called with each finished run's summary row, after its file is written.
    dashboard : bool
        Start the local cluster's dashboard (on 127.0.0.1, a free port) when bokeh is installed;
        its link is printed when ``verbose``.
    progress : bool, optional
        Progress bar over runs; by default only when stderr is a terminal.
    verbose : bool
        Print the cluster and the dashboard link to stderr.

    Returns
    -------
    SweepResult
        ``rows`` is the summary table (also written to ``OUT/summary.csv``).
    """
    start = time.perf_counter()
    parsed = parse_spec(spec)
    if out is None:
        if not isinstance(spec, (str, os.PathLike)):
            raise ValueError("out is required when spec is a dict")
        out = Path(spec).with_suffix("")
    out = io.path_arg(out, "out")
    if max_runs is not None:
        max_runs = positive_int(max_runs, "max_runs", minimum=0)
    if workers is not None:
        workers = positive_int(workers, "workers")
    if scheduler is not None and not isinstance(scheduler, str):
        raise TypeError(f"scheduler must be an address string, got {show(scheduler)}")
    if sum(x is not None for x in (scheduler, client)) > 1:
        raise ValueError("give at most one of scheduler and client")
    if workers is not None and (scheduler is not None or client is not None):
        raise ValueError("workers applies to the local cluster only (not with scheduler or client)")
    if on_result is not None and not callable(on_result):
        raise TypeError(f"on_result must be callable or None, got {show(on_result)}")
    progress = None if progress is None else flag(progress, "progress")
    verbose = flag(verbose, "verbose")
    io.check_writable(out / "runs" / "probe.npz", "out")  # before any run, not after
    with io.folder_lock(out, "out"):  # a second sweep on this folder would repeat our runs
        return _sweep(parsed, out, start, max_runs, (scheduler, workers, client), on_result,
                      dashboard, progress, verbose)


def _say(verbose: bool, msg: str) -> None:
    if verbose:
        print(msg, file=sys.stderr, flush=True)


def _sweep(parsed, out, start, max_runs, where, on_result, dashboard, progress, verbose):
    spec_text = json.dumps(dict(kind=parsed.kind, seeds=parsed.seeds, threads=parsed.threads,
                                param_sets=parsed.param_sets, spec=parsed.raw), indent=1)
    io.atomic_write(out / "spec.json", lambda fh: fh.write(spec_text.encode("utf-8")))

    metas: Dict[str, Optional[dict]] = {}
    todo: List[Run] = []
    damaged: List[str] = []
    for run in parsed.runs:
        meta = read_result(result_path(out, run), run, damaged)
        metas[run.id] = meta
        if meta is None or meta.get("status") != Status.OK:
            todo.append(run)
    for why in damaged[:3]:
        _say(verbose, f"tdflow sweep: run again: {why}")
    if len(damaged) > 3:
        _say(verbose, f"tdflow sweep: ... and {len(damaged) - 3} more damaged result files run again")
    skipped = len(parsed.runs) - len(todo)
    if max_runs is not None:
        todo = todo[:max_runs]
    state = dict(done=0, unsaved={})
    interrupted = False
    if todo:
        try:
            _run_on_dask(parsed, todo, out, metas, *where, on_result, dashboard, progress,
                         verbose, state)
        except KeyboardInterrupt:
            interrupted = True
    rows = [summary_row(run, metas[run.id]) for run in parsed.runs]
    try:
        files = write_summary(out, rows)
    except OSError as err:  # the rows are returned all the same
        files = []
        _say(verbose, f"tdflow sweep: {err}; the summary is in the returned SweepResult.rows")
    result = SweepResult(out=out, rows=rows, ran=state["done"], skipped=skipped,
                         errors=sum(r["status"] == Status.ERROR for r in rows),
                         pending=sum(r["status"] == Status.PENDING for r in rows), files=files,
                         wall_time=time.perf_counter() - start, unsaved=state["unsaved"])
    if interrupted:
        kept = len(rows) - result.pending - len(result.unsaved)
        _say(verbose, f"tdflow sweep: interrupted, {kept} runs kept ({state['done']} finished in "
                      f"this invocation), {result.pending} pending; run the same command to resume")
        raise KeyboardInterrupt
    return result


@contextlib.contextmanager
def _sigint_ignored():
    """SIGINT is ignored inside the block (main thread only: elsewhere it cannot be changed).

    Worker processes started inside keep ignoring it (SIG_IGN survives exec, and Python leaves an
    ignored SIGINT alone): Ctrl-C reaches the terminal's whole process group, and without this
    every worker printed its own KeyboardInterrupt traceback. The sweep process alone reacts and
    shuts its workers down; the block also covers that shutdown (a second Ctrl-C is ignored).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


@contextlib.contextmanager
def _sigint_sets(event: threading.Event):
    """Inside the block Ctrl-C sets ``event`` instead of raising (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, lambda *_: event.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


@contextlib.contextmanager
def _quiet_logs():
    """No log records from Dask while a sweep shuts down after Ctrl-C."""
    import logging

    loggers = [logging.getLogger(name) for name in ("distributed", "tornado", "asyncio")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _run_on_dask(parsed: SweepSpec, todo: List[Run], out: Path, metas: Dict[str, Optional[dict]],
                 scheduler, workers, client, on_result, dashboard, progress, verbose,
                 state: dict) -> None:
    """Run ``todo``; ``state["done"]`` counts the finished runs, ``state["unsaved"]`` keeps those
    whose file could not be written. Ctrl-C: the cluster is shut down quietly, then
    ``KeyboardInterrupt``."""
    distributed = _require_distributed()
    from ..progress import count_bar

    cluster = own_client = None
    try:
        if client is None:
            if scheduler is not None:
                own_client = client = distributed.Client(scheduler)
                _say(verbose, f"tdflow sweep: connected to {scheduler}")
            else:
                with _sigint_ignored():
                    cluster = local_cluster(workers, dashboard=dashboard and _has_bokeh())
                own_client = client = distributed.Client(cluster)
                _say(verbose, f"tdflow sweep: local cluster, {len(cluster.workers)} workers x 1 "
                              f"thread ({cluster.scheduler_address})")
        # a local cluster without bokeh serves no dashboard (only its HTTP endpoints)
        if ((cluster is None or (dashboard and _has_bokeh()))
                and "dashboard" in client.scheduler_info().get("services", {})):
            _say(verbose, f"tdflow sweep: dashboard {client.dashboard_link}")
        fn = KINDS[parsed.kind].fn
        futures = {client.submit(execute, fn, run.params, run.seed, parsed.threads, pure=False): run
                   for run in todo}
        bar = count_bar(len(todo), f"sweep {parsed.kind}", "run", progress, leave=True)
        stop = threading.Event()
        try:
            ready = distributed.as_completed(futures)
            # Ctrl-C only sets `stop`: a KeyboardInterrupt inside one of Dask's blocking calls
            # makes its event loop log a traceback (distributed.utils.sync); we stop here instead
            with _sigint_sets(stop):
                while not ready.is_empty():
                    batch = ready.next_batch(block=False)
                    if not batch:
                        stop.wait(0.05)
                    for fut in batch:
                        _collect(fut, futures[fut], out, metas, state, on_result, verbose)
                        bar.update(1)
                    if stop.is_set():
                        raise KeyboardInterrupt
        finally:
            bar.close()
            pending = [f for f in futures if not f.done()]
            if pending and cluster is None:  # our own cluster just closes (no worker log lines)
                with _sigint_ignored(), _quiet_logs():
                    client.cancel(pending)
    except KeyboardInterrupt:
        if cluster is not None:  # our workers: no log lines for the runs cut short
            with _sigint_ignored(), _quiet_logs(), contextlib.suppress(Exception):
                client.run(_silence_worker_logs)
        raise
    finally:
        with _sigint_ignored(), _quiet_logs():
            if own_client is not None:
                own_client.close()
            if cluster is not None:
                cluster.close()


def _collect(fut, run: Run, out: Path, metas, state: dict, on_result, verbose) -> None:
    """Write the result of a finished run (or keep it in ``state["unsaved"]``)."""
    try:
        res = fut.result()
    except Exception as err:  # the task itself failed (e.g. a worker died)
        res = dict(status=Status.ERROR, error=f"{type(err).__name__}: {err}",
                   traceback=traceback.format_exc(), row={}, arrays={}, wall_time=math.nan,
                   worker="")
    fut.release()
    meta = result_meta(run, res)
    try:
        io.save_npz(result_path(out, run), res["arrays"], meta, kind=FILE_KIND)
    except OSError as err:  # disk full: keep the result, go on
        if not state["unsaved"]:
            _say(verbose, f"tdflow sweep: {err}; finished runs are kept in memory "
                          "(SweepResult.unsaved)")
        state["unsaved"][run.id] = res
    metas[run.id] = meta
    state["done"] += 1
    if on_result is not None:
        on_result(summary_row(run, meta))


def _silence_worker_logs() -> None:
    """Run on each worker of an interrupted local sweep before it is closed."""
    import logging

    logging.getLogger("distributed").setLevel(logging.CRITICAL + 1)

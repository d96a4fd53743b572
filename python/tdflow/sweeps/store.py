"""What a sweep leaves on disk: one result file per run (``OUT/runs/<id>.npz``), read back to
decide what is complete, and the summary table (``OUT/summary.csv``, ``.parquet``)."""
from __future__ import annotations

import csv
import dataclasses
import io as _stdio
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from .. import io
from ..display import Summarised
from ..solution import Status
from .spec import Run

FILE_KIND = "sweep-run"


def result_path(out: Path, run: Run) -> Path:
    return out / "runs" / f"{run.id}.npz"


def read_result(path: Path, run: Run, damaged: Optional[List[str]] = None) -> Optional[dict]:
    """The metadata of a result file that belongs to ``run``; None when missing or unreadable
    (a damaged or foreign file is run again; its reason is appended to ``damaged``)."""
    try:
        _, meta = io.load_npz(path, kind=FILE_KIND)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        if damaged is not None:
            damaged.append(str(err))
        return None
    if (meta.get("id") != run.id or meta.get("kind") != run.kind or meta.get("seed") != run.seed
            or meta.get("params") != run.params or meta.get("status") not in (Status.OK, Status.ERROR)):
        if damaged is not None:
            damaged.append(f"{path} does not hold run {run.id}")
        return None
    return meta


def result_meta(run: Run, res: dict) -> dict:
    """The metadata of a run's result file."""
    from .. import __version__

    return dict(id=run.id, kind=run.kind, params=run.params, seed=run.seed, status=res["status"],
                error=res["error"], traceback=res["traceback"], row=res["row"],
                wall_time=float(res["wall_time"]), worker=res["worker"], tdflow=__version__)


RESERVED = ("id", "kind", "seed", "status", "error", "wall_time", "worker")


def summary_row(run: Run, meta: Optional[dict]) -> dict:
    """The summary-table row of ``run`` from its result metadata (None: not run yet)."""
    row: Dict[str, Any] = dict(id=run.id, kind=run.kind, seed=run.seed)
    for k, v in run.params.items():
        row[k if k not in RESERVED else f"param_{k}"] = v
    row["status"] = Status.PENDING if meta is None else Status(meta["status"])
    row["error"] = None if meta is None else meta.get("error")
    for k, v in ({} if meta is None else meta.get("row", {})).items():
        row[k if k not in row else f"result_{k}"] = v
    row["wall_time"] = None if meta is None else meta.get("wall_time")
    row["worker"] = None if meta is None else meta.get("worker")
    return row


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, (list, dict)):
        return json.dumps(v, separators=(",", ":"))
    if isinstance(v, float):
        return repr(v)
    return str(v)


def _columns(rows: Sequence[dict]) -> List[str]:
    """The union of the rows' keys in first-seen order (the summary table's columns)."""
    return list(dict.fromkeys(k for r in rows for k in r))


def summary_frame(rows: Sequence[dict]):
    """The summary rows as a pandas DataFrame (``pip install 'tdflow[pandas]'``).

    Parameters
    ----------
    rows : sequence of dict
        One row per run (:func:`summary_row`, ``SweepResult.rows``).

    Returns
    -------
    pandas.DataFrame
        One row per run, the columns of ``summary.csv`` in its order (``id, kind, seed``, the
        parameters, ``status``, ``error``, the kind's results, ``wall_time``, ``worker``); a
        status is its string, lists stay lists, a missing value is None (NaN in a numeric
        column).
    """
    from ..tables import pandas

    pd = pandas("the sweep summary")
    columns = _columns(rows)
    data = {c: [str(r[c]) if isinstance(r.get(c), Status) else r.get(c) for r in rows]
            for c in columns}
    return pd.DataFrame(data, columns=columns)


def load_summary(out):
    """The summary table of a sweep folder as a pandas DataFrame (``pip install 'tdflow[pandas]'``).

    Parameters
    ----------
    out : str or os.PathLike
        The sweep's output folder (``tdflow.sweep(spec, out)``, ``tdflow sweep --out``).

    Returns
    -------
    pandas.DataFrame
        ``OUT/summary.parquet`` when it exists and pyarrow is importable (its column types kept),
        else ``OUT/summary.csv``; one row per run. Lists (e.g. a fit order) are JSON text in
        both files (``json.loads`` reads them back).

    Raises
    ------
    FileNotFoundError
        When the folder holds no summary (no sweep ran there).
    """
    from ..tables import pandas

    pd = pandas("load_summary")
    out = Path(out)
    parquet, csv_path = out / "summary.parquet", out / "summary.csv"
    if parquet.exists():
        try:
            import pyarrow  # noqa: F401  (pandas reads Parquet with it)
        except ImportError:
            pass
        else:
            return pd.read_parquet(parquet)
    if not csv_path.exists():
        raise FileNotFoundError(f"{out} holds no sweep summary (summary.csv): is it the out "
                                "folder of a sweep?")
    return pd.read_csv(csv_path)


def write_summary(out, rows: Sequence[dict]) -> List[Path]:
    """Write ``OUT/summary.csv`` (and ``summary.parquet`` when pyarrow is importable) atomically.

    Columns are the union of the rows' keys in first-seen order; lists are written as JSON,
    missing values as empty cells. Returns the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    columns = _columns(rows)
    buf = _stdio.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([_cell(r.get(c)) for c in columns])

    paths = [out / "summary.csv"]
    io.atomic_write(paths[0], lambda fh: fh.write(buf.getvalue().encode("utf-8")))
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        try:  # a Parquet file from an earlier invocation would no longer match the CSV
            (out / "summary.parquet").unlink()
        except FileNotFoundError:
            pass
        return paths

    def cell(v):
        if isinstance(v, str):
            return str(v)  # a Status as its plain string
        return json.dumps(v, separators=(",", ":")) if isinstance(v, (list, dict)) else v

    data = {}
    for c in columns:
        col = [cell(r.get(c)) for r in rows]
        kinds = {type(v) for v in col if v is not None}
        if kinds == {int, float}:
            col = [None if v is None else float(v) for v in col]
        elif len(kinds) > 1:
            col = [None if v is None else _cell(v) for v in col]
        data[c] = col
    paths.append(out / "summary.parquet")
    io.atomic_write(paths[1], lambda fh: pq.write_table(pa.table(data), fh))
    return paths


@dataclasses.dataclass(repr=False)
class SweepResult(Summarised):
    """What :func:`sweep` did: the summary ``rows`` (one per run, in spec order) and counts."""

    out: Path
    rows: List[dict]
    ran: int
    skipped: int
    errors: int
    pending: int
    files: List[Path]
    wall_time: float
    unsaved: Dict[str, dict] = dataclasses.field(default_factory=dict)
    """Finished runs whose file could not be written (disk full, ...): run id -> the run's
    result (``status, row, arrays, ...``), so that nothing computed is lost."""

    def counts(self) -> Dict[str, int]:
        """Number of runs per status over the whole sweep."""
        out: Dict[str, int] = {}
        for r in self.rows:
            out[r["status"]] = out.get(r["status"], 0) + 1
        return out

    def to_pandas(self):
        """The summary table as a pandas DataFrame (``pip install 'tdflow[pandas]'``).

        Returns
        -------
        pandas.DataFrame
            One row per run, in spec order, the columns of ``summary.csv``; see
            :func:`summary_frame` (and :func:`load_summary` to read a sweep folder).
        """
        return summary_frame(self.rows)

    def _summary(self) -> list:
        return [("out", self.out), ("runs", len(self.rows)),
                *((f"{k}", v) for k, v in sorted(self.counts().items())),
                ("ran", self.ran), ("skipped", self.skipped), ("unsaved", len(self.unsaved)),
                ("wall_time", self.wall_time), ("files", [str(p) for p in self.files])]

    def report(self) -> str:
        c = self.counts()
        lines = [f"{len(self.rows)} runs: " + ", ".join(f"{v} {k}" for k, v in sorted(c.items()))
                 + f"; this invocation ran {self.ran}, skipped {self.skipped} already complete"
                 + f" ({self.wall_time:.1f} s)"]
        errs = [r for r in self.rows if r["status"] == Status.ERROR]
        for r in errs[:5]:
            lines.append(f"  error in run {r['id']} (seed {r['seed']}): {r['error']}")
        if len(errs) > 5:
            lines.append(f"  ... and {len(errs) - 5} more errors (see the 'error' column)")
        if self.unsaved:
            lines.append(f"  {len(self.unsaved)} finished runs could not be written to "
                         f"{self.out / 'runs'}; they are kept in SweepResult.unsaved")
        lines.extend(f"summary: {p}" for p in self.files)
        return "\n".join(lines)

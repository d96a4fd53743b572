"""Results as tables: pandas DataFrames and xarray Datasets of what a run recorded.

pandas and xarray are optional (``pip install 'tdflow[pandas]'``, ``'tdflow[xarray]'``): they are
imported when a table is asked for, and their absence is an ImportError naming the extra.

Every integration result (:class:`tdflow.solution.Solution`) has ``to_pandas`` and
``to_xarray`` from :class:`Tabular`. It describes what it recorded as a list of :class:`Record`:
a name, an array whose first axis is the record (the time ``t``) and the names of its other axes
(``("direction",)`` for the per-direction residuals, ``()`` for the loss). :func:`records_frame`
and :func:`records_dataset` lay every result out the same way (see :meth:`Tabular.to_pandas`).
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np

from ._checks import choice

LAYOUTS = ("wide", "long")


def require(module: str, extra: str, what: str):
    """Import an optional dependency.

    Parameters
    ----------
    module : str
        The module to import (``"pandas"``).
    extra : str
        tdflow's extra that installs it (``pip install 'tdflow[extra]'``).
    what : str
        What needs it, for the message (``"Trajectory.to_pandas"``).

    Returns
    -------
    types.ModuleType
        The imported module.

    Raises
    ------
    ImportError
        When it is not installed; the message names the extra.
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"{what} needs {module}, which is not installed: python -m pip install "
                          f"'tdflow[{extra}]' (or {module}) ({err})") from None


def pandas(what: str):
    """pandas, or an ImportError naming ``pip install 'tdflow[pandas]'`` and ``what`` needs it."""
    return require("pandas", "pandas", what)


def xarray(what: str):
    """xarray, or an ImportError naming ``pip install 'tdflow[xarray]'`` and ``what`` needs it."""
    return require("xarray", "xarray", what)


@dataclasses.dataclass(frozen=True)
class Record:
    """One recorded quantity: ``values`` (n, ...) over the n records, ``dims`` the names of its
    axes after the first (``()`` for one number per record)."""

    name: str
    values: np.ndarray
    dims: Tuple[str, ...] = ()


def _tabular(records: Sequence[Record]) -> List[Record]:
    """The records with at most one axis besides time (the others only fit a Dataset)."""
    return [r for r in records if len(r.dims) <= 1]


def records_frame(t: np.ndarray, records: Sequence[Record], layout: str = "wide", *,
                  what: str = "to_pandas"):
    """The records as a DataFrame.

    Parameters
    ----------
    t : numpy.ndarray
        (n,) the recording times.
    records : sequence of Record
        What was recorded; those with more than one axis besides time (whole states, matrices)
        are left out (they fit :func:`records_dataset`).
    layout : {"wide", "long"}
        ``"wide"``: one row per record, indexed by ``t``; a quantity with one value per record is
        a column of its name, one with an axis (``directional_residual``) has a column per
        element, under two column levels ``(quantity, index)`` (a quantity with one value has
        index ``""``, so ``frame["loss"]`` is a Series and ``frame["directional_residual"]`` a
        frame with a column per direction). Without such a quantity the columns are one level.
        ``"long"`` (tidy): one row per value, columns ``record`` (the record's number: times
        repeat where a run records twice, at a phase boundary), ``t``, ``quantity``, one
        column per axis name (``direction``, ``column``; ``<NA>`` where the quantity has no such
        axis) and ``value``.
    what : str
        The caller, for the message when pandas is missing.

    Returns
    -------
    pandas.DataFrame
        The table; its values are the recorded arrays (not copies of them rounded).
    """
    layout = choice(layout, "layout", LAYOUTS)
    pd = pandas(what)
    t = np.asarray(t, dtype=float)
    records = _tabular(records)
    if layout == "wide":
        return _wide(pd, t, records)
    return _long(pd, t, records)


def _wide(pd, t, records):
    index = pd.Index(t, name="t")
    blocks = [r.values.reshape(t.size, -1) for r in records]
    data = np.column_stack(blocks) if blocks else np.empty((t.size, 0))
    if all(not r.dims for r in records):
        return pd.DataFrame(data, index=index, columns=pd.Index([r.name for r in records]))
    keys = [(r.name, i) for r in records for i in (range(r.values.shape[1]) if r.dims else [""])]
    columns = pd.MultiIndex.from_tuples(keys, names=["quantity", "index"])
    return pd.DataFrame(data, index=index, columns=columns)


def _long(pd, t, records):
    n = t.size
    axes = list(dict.fromkeys(r.dims[0] for r in records if r.dims))
    parts: Dict[str, list] = {k: [] for k in ("record", "quantity", *axes, "value")}
    for r in records:
        k = r.values.shape[1] if r.dims else 1
        parts["record"].append(np.repeat(np.arange(n), k))
        parts["quantity"].append(np.full(n * k, r.name, dtype=object))
        for axis in axes:  # -1: the quantity has no such axis (<NA> below)
            parts[axis].append(np.tile(np.arange(k), n) if r.dims == (axis,) else np.full(n * k, -1))
        parts["value"].append(np.asarray(r.values, dtype=float).reshape(-1))
    cols = {k: np.concatenate(v) if v else np.zeros(0, dtype=int if k != "quantity" else object)
            for k, v in parts.items()}
    record = cols["record"].astype(np.int64)
    frame = {"record": record, "t": t[record], "quantity": cols["quantity"]}
    for axis in axes:
        frame[axis] = pd.arrays.IntegerArray(cols[axis].astype(np.int64), cols[axis] < 0)
    frame["value"] = cols["value"].astype(float)
    return pd.DataFrame(frame)


def records_dataset(t: np.ndarray, records: Sequence[Record], *,
                    coords: Mapping[str, Tuple[str, np.ndarray]] = None,
                    data: Mapping[str, Tuple[Tuple[str, ...], np.ndarray]] = None,
                    attrs: Mapping[str, object] = None, what: str = "to_xarray"):
    """The records as an xarray Dataset.

    Parameters
    ----------
    t : numpy.ndarray
        (n,) the recording times: the coordinate ``t`` of dimension ``t``.
    records : sequence of Record
        Each one a data variable of dimensions ``("t", *record.dims)``; every axis named there
        gets an integer coordinate ``0, 1, ...`` (``direction``, ``column``, ...).
    coords : mapping, optional
        More coordinates, ``name -> (dimension, values)`` (e.g. the weights ``a`` along
        ``direction``).
    data : mapping, optional
        Data variables without the time axis, ``name -> (dimensions, values)`` (a final state).
    attrs : mapping, optional
        The Dataset's attributes (numbers and strings, so that ``to_netcdf`` writes them).
    what : str
        The caller, for the message when xarray is missing.

    Returns
    -------
    xarray.Dataset
        The Dataset; its variables hold the recorded arrays without copying them.
    """
    xr = xarray(what)
    variables = {r.name: (("t", *r.dims), r.values) for r in records}
    variables.update(data or {})
    sizes: Dict[str, int] = {}
    for dims, values in variables.values():
        sizes.update(zip(dims, np.shape(values)))
    all_coords = {"t": ("t", np.asarray(t, dtype=float))}
    all_coords.update({dim: (dim, np.arange(size)) for dim, size in sizes.items() if dim != "t"})
    all_coords.update(coords or {})
    return xr.Dataset(variables, coords=all_coords, attrs=dict(attrs or {}))


class Tabular:
    """Mixin of :class:`tdflow.solution.Solution`: :meth:`to_pandas` and :meth:`to_xarray` from the
    result's ``t``, ``_records()`` (list of :class:`Record`), ``_dataset_extras()``
    (``(coords, data)``, see :func:`records_dataset`) and ``_attrs()``."""

    def to_pandas(self, layout: str = "wide"):
        """The records as a pandas DataFrame (``pip install 'tdflow[pandas]'``).

        Parameters
        ----------
        layout : {"wide", "long"}
            ``"wide"`` (the default): one row per record, indexed by ``t``, as pandas' time
            series tools (``plot``, ``loc[t0:t1]``, ``diff``) expect; each quantity with one
            value per record is a column (``loss``, ``residual_norm``, ``gap``, ...). A
            quantity with an axis has a column per element under two column levels
            ``(quantity, index)``: ``frame["directional_residual"]`` is then a frame with a
            column per direction (``.plot(logy=True)`` draws the staircase) and
            ``frame["loss"]`` a Series. ``"long"`` (tidy, for seaborn, ``groupby`` and Parquet):
            one row per value, columns ``record, t, quantity``, one column per axis
            (``direction``, ``column``; ``<NA>`` where the quantity has none) and ``value``.
            Records with more than one axis (``states``, ``products``, ``imbalances``) are
            only in :meth:`to_xarray`.

        Returns
        -------
        pandas.DataFrame
            The records; every value equals the recorded array's.
        """
        return records_frame(self.t, self._records(), layout,
                             what=f"{type(self).__name__}.to_pandas")

    def to_xarray(self):
        """The records as an xarray Dataset (``pip install 'tdflow[xarray]'``).

        Returns
        -------
        xarray.Dataset
            One data variable per record over the dimension ``t`` (coordinate: the recording
            times) and its own axes, each with an integer coordinate (``direction``,
            ``column``, ...); the final state and the target's weights where the result has
            them (``W``, coordinate ``a`` along ``direction``); the outcome (``status``,
            ``message``, ``method``, ``t_final``, ``n_steps``, ``n_rhs``, ``n_rejected``,
            ``wall_time``) as attributes.
        """
        coords, data = self._dataset_extras()
        return records_dataset(self.t, self._records(), coords=coords, data=data,
                               attrs=self._attrs(), what=f"{type(self).__name__}.to_xarray")

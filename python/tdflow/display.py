"""How results show themselves: a one-line ``repr`` and a small HTML table for Jupyter
(``_repr_html_``), both built from one list of ``(name, value)`` pairs so that they agree.

A result class inherits :class:`Summarised`, says what matters in ``_summary()`` and, when one
row per item reads better (one per epoch, per method, per case), adds ``_table()``; its
dataclass is declared with ``repr=False`` so that the dataclass does not write its own repr
(which prints whole arrays).
"""
from __future__ import annotations

import enum
import html
import numbers
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np

ROWS_SHOWN = 20  # rows of a _table() shown in HTML; the rest are counted


def short(value) -> str:
    """A value in a few characters.

    Parameters
    ----------
    value : object
        A number, string, enum (its value), array or list.

    Returns
    -------
    str
        Floats with 4 significant digits, small arrays and lists in full (8 elements at most),
        larger ones as their shape and dtype (or length).
    """
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return f"{float(value):.4g}"
    if isinstance(value, np.ndarray):
        if value.size <= 8:
            return "[" + ", ".join(short(v) for v in value.reshape(-1).tolist()) + "]"
        return f"array{value.shape} {value.dtype}"
    if isinstance(value, (list, tuple)):
        if len(value) <= 8:
            return "[" + ", ".join(short(v) for v in value) + "]"
        return f"[{len(value)} items]"
    return str(value)


def html_table(caption: str, rows: Iterable[Sequence], header: Optional[Sequence] = None) -> str:
    """A small HTML table, every cell escaped.

    Parameters
    ----------
    caption : str
        The title above the table.
    rows : iterable of sequences
        The cells of each row (formatted with :func:`short`).
    header : sequence, optional
        The column titles.

    Returns
    -------
    str
        ``<table>...</table>``.
    """
    def cells(row, tag):
        return "".join(f"<{tag}>{html.escape(short(c))}</{tag}>" for c in row)

    head = f"<thead><tr>{cells(header, 'th')}</tr></thead>" if header else ""
    body = "".join(f"<tr>{cells(row, 'td')}</tr>" for row in rows)
    return (f'<table class="tdflow"><caption style="text-align:left"><b>{html.escape(caption)}'
            f"</b></caption>{head}<tbody>{body}</tbody></table>")


class Summarised:
    """Mixin: ``__repr__`` and ``_repr_html_`` from ``_summary()`` (and ``_table()``)."""

    def _summary(self) -> List[Tuple[str, object]]:
        """The ``(name, value)`` pairs that describe the result."""
        raise NotImplementedError

    def _table(self) -> Optional[Tuple[Sequence[str], List[Sequence]]]:
        """``(header, rows)`` of a second table in the HTML summary, or None."""
        return None

    def __repr__(self) -> str:
        try:
            items = self._summary()
        except Exception as err:  # a repr must not raise, also for a half-built result
            return f"<{type(self).__name__} (no summary: {type(err).__name__}: {err})>"
        return f"{type(self).__name__}(" + ", ".join(f"{k}={short(v)}" for k, v in items) + ")"

    def _repr_html_(self) -> str:
        """The summary as an HTML table (Jupyter shows it for the result)."""
        try:
            items, table = self._summary(), self._table()
        except Exception as err:
            return (f"<pre>{html.escape(type(self).__name__)} (no summary: "
                    f"{html.escape(type(err).__name__)}: {html.escape(str(err))})</pre>")
        out = html_table(type(self).__name__, items)
        if table is not None:
            header, rows = table
            shown = rows[:ROWS_SHOWN]
            if len(rows) > len(shown):
                shown = list(shown) + [[f"... {len(rows) - len(shown)} more rows"]]
            out += html_table("", shown, header)
        return out

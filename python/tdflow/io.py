"""Saving and loading results: one ``.npz`` per result, written atomically.

A result is written to a temporary file in the destination folder and moved into place with
``os.replace``, so a killed run leaves either the old file or the new one, never a torn one.
Metadata travels as JSON in the array ``__meta__``; nothing is pickled.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Mapping, Tuple

import numpy as np

FORMAT = "tdflow"
FORMAT_VERSION = 1


def save_npz(path, arrays: Mapping[str, Any], meta: Mapping[str, Any] | None = None, *, kind: str) -> Path:
    """Write ``arrays`` (name -> array) and JSON-able ``meta`` to ``path`` atomically."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_suffix(path.suffix + ".npz") if path.suffix else path.with_suffix(".npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {"format": FORMAT, "version": FORMAT_VERSION, "kind": kind, "meta": dict(meta or {})}
    payload = {k: np.asarray(v) for k, v in arrays.items()}
    if "__meta__" in payload:
        raise ValueError("'__meta__' is a reserved array name")
    payload["__meta__"] = np.array(json.dumps(header))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez_compressed(fh, **payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def load_npz(path, *, kind: str) -> Tuple[dict, dict]:
    """Read a file written by :func:`save_npz`; returns ``(arrays, meta)``.

    Raises ``ValueError`` for a file that is not a tdflow result, is corrupt, or holds another
    kind of result than ``kind``.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise ValueError(f"{path} is not a readable tdflow result file: {err}") from None
    if "__meta__" not in arrays:
        raise ValueError(f"{path} is not a tdflow result file (no metadata)")
    try:
        header = json.loads(str(arrays.pop("__meta__")))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} has corrupt metadata: {err}") from None
    if header.get("format") != FORMAT:
        raise ValueError(f"{path} is not a tdflow result file")
    if header.get("version", 0) > FORMAT_VERSION:
        raise ValueError(f"{path} was written by a newer tdflow (format {header.get('version')})")
    if header.get("kind") != kind:
        raise ValueError(f"{path} holds a {header.get('kind')!r} result, expected {kind!r}")
    return arrays, header.get("meta", {})


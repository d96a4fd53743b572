"""Saving and loading results: one ``.npz`` per result, written atomically, checked on reading.

Every tdflow file goes through the helpers here (one rule for names, one writer, one reader):

* :func:`npz_path` -- the name rule: ``.npz`` is appended unless the name ends with it
  (``"run"`` and ``"run.npz"`` are the same file, ``"run.v2"`` is ``run.v2.npz``);
* :func:`atomic_write` -- a temporary file in the destination folder, flushed, fsynced and moved
  into place with ``os.replace``, so a killed run leaves the old file or the new one, never a torn
  one; the file is created with mode ``0666`` less the umask (like ``open``), not ``0600``;
* :func:`save_npz` / :func:`load_npz` -- arrays as ``.npy`` members of a zip, metadata as JSON in
  the member ``__meta__``, never a pickle (object arrays are refused on writing and on reading).
  The metadata holds a SHA-256 digest of the arrays and the metadata, so a damaged file
  (truncated, bit-flipped) or a file edited by hand is a ``ValueError`` naming the file, never a
  wrong result or a traceback from zlib/NumPy; :func:`read_npz` reads a file of any kind;
* :func:`check_writable` -- called before a long computation, so that a read-only or missing
  output folder is an error at the start, not after the work;
* :func:`folder_lock` -- one process at a time in an output folder (sweeps).
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import socket
import zipfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Dict, Iterator, Mapping, Tuple

import numpy as np

FORMAT = "tdflow"
FORMAT_VERSION = 2  # 2: the header holds a digest of arrays and metadata (1: no digest)
SUFFIX = ".npz"


def path_arg(path, name: str = "path") -> Path:
    """``path`` (a ``str`` or ``os.PathLike``) as a ``Path``; ``TypeError`` naming ``name`` else."""
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path (str or os.PathLike), got {type(path).__name__}")
    out = Path(path)
    if not out.name:
        raise ValueError(f"{name} must name a file, got {str(path)!r}")
    return out


def npz_path(path, name: str = "path") -> Path:
    """The file a result path names: ``.npz`` appended unless the name already ends with it.

    The one rule for every reader and writer of tdflow files (``deflate(checkpoint=...)``,
    ``resume``, ``DeflationResult.save/load``, ``tdflow deflate --out``, ``tdflow plot``).
    """
    path = path_arg(path, name)
    return path if path.name.endswith(SUFFIX) else path.with_name(path.name + SUFFIX)


def _oserror(err: OSError, what: str) -> OSError:
    """``err`` re-raised with a message that says what could not be done (same OSError subclass)."""
    if err.errno is None:
        return err
    return OSError(err.errno, f"{what}: {err.strerror}")


def _create_temp(folder: Path, stem: str) -> Tuple[Path, int]:
    """A new file ``.stem.<random>.tmp`` in ``folder``, opened for writing; mode 0666 less umask."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = folder / f".{stem}.{secrets.token_hex(6)}.tmp"
        try:
            return tmp, os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, f"cannot create a temporary file in {folder}")


def _fsync_folder(folder: Path) -> None:
    """Make a rename durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path, write: Callable[[BinaryIO], None]) -> Path:
    """Write ``path`` atomically: ``write(fh)`` fills a binary file handle on a temporary file in
    the same folder, which then replaces ``path``. The folder is created when missing.

    An ``OSError`` (read-only folder, disk full, ...) says which file could not be written; the
    temporary file is removed and an existing ``path`` is left as it was.
    """
    path = Path(path)
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp, fd = _create_temp(folder, path.name)
    except OSError as err:
        raise _oserror(err, f"cannot write {path}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise _oserror(err, f"cannot write {path}") from None
        raise
    _fsync_folder(folder)
    return path


def check_writable(path, name: str = "path") -> Path:
    """Check, before any work, that the file ``path`` can be written: its folder exists (or can be
    made) and takes a new file with one byte in it. Returns ``Path(path)``.

    Raises ``OSError`` (``PermissionError``, ``OSError(ENOSPC)``, ...) naming the argument and the
    folder, or ``ValueError`` when ``path`` is an existing folder.
    """
    path = path_arg(path, name)
    if path.is_dir():
        raise ValueError(f"{name} must be a file path, but {path} is a folder")
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp, fd = _create_temp(folder, path.name)
        try:
            os.write(fd, b"\0")
        finally:
            os.close(fd)
            os.unlink(tmp)
    except OSError as err:
        raise _oserror(err, f"{name}: cannot write to the folder {folder}") from None
    return path


class FolderLockedError(RuntimeError):
    """Another process holds the lock of an output folder (see :func:`folder_lock`)."""


@contextlib.contextmanager
def folder_lock(folder, name: str = "out") -> Iterator[Path]:
    """Hold an exclusive lock on ``folder/.lock`` while the block runs, so that two processes
    (two sweeps on one output folder) never work on the same files at once.

    The lock is ``fcntl.flock`` on POSIX: the system releases it when the holder ends, even when
    it is killed, so a stale lock never blocks. Elsewhere no lock is taken. Raises
    :class:`FolderLockedError` naming the process that holds the lock.
    """
    folder = Path(folder)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield folder
        return
    lock = folder / ".lock"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as err:
        raise _oserror(err, f"{name}: cannot write to the folder {folder}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise FolderLockedError(
                f"{name}: {folder} is in use by {holder} (a sweep writing there); wait for it "
                "to finish, or choose another output folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"tdflow, pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield folder
    finally:
        os.close(fd)  # releases the lock; the file stays (removing it would race a new holder)


def plain_arrays(arrays: Mapping[str, Any], where: str = "arrays") -> Dict[str, np.ndarray]:
    """``arrays`` (name -> array-like) as NumPy arrays that can be stored without pickle.

    Object arrays are converted when their items are plain numbers, booleans or strings of one
    shape (``np.array([1, 2.5], dtype=object)`` becomes float64); otherwise ``TypeError`` naming
    the entry: tdflow files never hold pickles.
    """
    if not isinstance(arrays, Mapping):
        raise TypeError(f"{where} must be a dict of arrays, got {type(arrays).__name__}")
    out: Dict[str, np.ndarray] = {}
    for key, value in arrays.items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"{where}: array names must be non-empty strings, got {key!r}")
        try:
            arr = np.asarray(value)
            if arr.dtype.hasobject:
                arr = np.asarray(arr.tolist())
        except (ValueError, TypeError) as err:
            raise TypeError(f"{where}[{key!r}] is not an array of numbers or strings: {err}") from None
        if arr.dtype.hasobject:
            raise TypeError(
                f"{where}[{key!r}] holds Python objects (dtype object) that tdflow cannot store "
                "without pickle; return arrays of numbers, booleans or strings")
        out[key] = arr
    return out


def _digest(arrays: Mapping[str, np.ndarray], header: Mapping[str, Any]) -> str:
    """SHA-256 of the metadata (canonical JSON, without the digest) and of every array."""
    h = hashlib.sha256()
    h.update(json.dumps({k: v for k, v in header.items() if k != "digest"}, sort_keys=True).encode())
    for key in sorted(arrays):
        arr = arrays[key]
        h.update(json.dumps([key, arr.dtype.str, list(arr.shape)]).encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return "sha256:" + h.hexdigest()


def save_npz(path, arrays: Mapping[str, Any], meta: Mapping[str, Any] | None = None, *, kind: str) -> Path:
    """Write ``arrays`` (name -> array) and JSON-able ``meta`` to ``npz_path(path)`` atomically;
    returns the path written."""
    path = npz_path(path)
    if not isinstance(kind, str) or not kind:
        raise TypeError(f"kind must be a non-empty string, got {kind!r}")
    payload = plain_arrays(arrays)
    if "__meta__" in payload:
        raise ValueError("'__meta__' is a reserved array name")
    header = {"format": FORMAT, "version": FORMAT_VERSION, "kind": kind, "meta": dict(meta or {})}
    try:
        header["digest"] = _digest(payload, header)
        payload["__meta__"] = np.array(json.dumps(header))
    except TypeError as err:
        raise TypeError(f"the metadata of {path} must be JSON-able: {err}") from None

    def write(fh):
        # what np.savez_compressed does, with allow_pickle=False
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
            for key, arr in payload.items():
                with zf.open(key + ".npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, arr, allow_pickle=False)

    return atomic_write(path, write)


def _read(path: Path) -> Tuple[Dict[str, np.ndarray], dict]:
    """Arrays and header of a tdflow file; ``ValueError`` naming the file when it is damaged."""
    def bad(why: str) -> ValueError:
        return ValueError(f"{path} is not a readable tdflow result file: it is damaged or of "
                          f"another kind ({why}); delete it or restore a copy")

    with open(path, "rb") as fh:  # a missing file, a folder or no permission: the plain OSError
        try:
            data = np.load(fh, allow_pickle=False)
            arrays = None
            if isinstance(data, np.lib.npyio.NpzFile):
                with data:
                    arrays = {k: data[k] for k in data.files}
        except Exception as err:  # zlib.error, BadZipFile, EOFError, MemoryError, ...: all damage
            raise bad(f"{type(err).__name__}: {err}") from None
    if arrays is None:
        raise bad("not an .npz archive")
    meta = arrays.pop("__meta__", None)
    if meta is None or meta.dtype.kind != "U" or meta.ndim != 0:
        raise bad("no metadata")
    try:
        header = json.loads(str(meta))
    except ValueError as err:
        raise bad(f"corrupt metadata: {err}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise bad("no tdflow header")
    version = header.get("version")
    if not isinstance(version, int) or version < 1:
        raise bad(f"format version {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(f"{path} was written by a newer tdflow (format {version}); upgrade tdflow")
    if not isinstance(header.get("meta", {}), dict):
        raise bad("the metadata is not a table")
    if version >= 2 and header.get("digest") != _digest(arrays, header):
        raise ValueError(
            f"{path} does not match the checksum tdflow stored in it: the file was damaged or "
            "edited after it was written, so it is not used; delete it or restore a copy")
    return arrays, header


def load_npz(path, *, kind: str) -> Tuple[dict, dict]:
    """Read a file written by :func:`save_npz` (``path`` as in :func:`npz_path`); returns
    ``(arrays, meta)``.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file for one that
    is damaged (truncated, bit-flipped, edited by hand), is not a tdflow file, or holds another
    kind of result than ``kind``.
    """
    found, arrays, meta = read_npz(path)
    if found != kind:
        raise ValueError(f"{npz_path(path)} holds a {found!r} result, expected {kind!r}")
    return arrays, meta


def read_npz(path) -> Tuple[Any, dict, dict]:
    """``(kind, arrays, meta)`` of any tdflow file, checked as :func:`load_npz` does: for a reader
    that chooses by the kind (``tdflow plot``), in one read of the file."""
    arrays, header = _read(npz_path(path))
    return header.get("kind"), arrays, header.get("meta", {})


def file_kind(path) -> str:
    """The kind of result (``"deflation"``, ``"figure1"``, ...) in a tdflow file, after checking
    the whole file as :func:`load_npz` does."""
    return str(read_npz(path)[0])


def load_toml(path, name: str = "path") -> dict:
    """Read a TOML file (``tomllib`` on Python >= 3.11, else the ``tomli`` package).

    ``FileNotFoundError`` for a missing file; ``ValueError`` naming the file for one that is not
    UTF-8 TOML (truncated, damaged, binary).
    """
    try:
        import tomllib  # type: ignore[import-not-found]
    except ModuleNotFoundError:  # Python < 3.11
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError:
            raise ImportError("reading TOML on Python < 3.11 needs tomli: "
                              "python -m pip install tomli") from None
    path = path_arg(path, name)
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as err:
        raise _oserror(err, f"{name}: cannot read {path}") from None
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not a TOML file (not UTF-8 text: {err})") from None
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path} is not valid TOML: {err}") from None


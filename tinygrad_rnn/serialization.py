"""Atomic file writes, JSON that stays valid, and arrays to and from ``.npz`` files without pickle.

Every file the project writes goes through ``atomic_write``: a temporary file in the target's
directory, flushed to disk, renamed over the target with ``os.replace``, then the directory
entry flushed too, so a reader (or a machine that lost power) sees either the old file or the
complete new one. A temporary file left by a process that died mid-write is removed by the
next write to the same target. Metadata (a JSON-ready dict, e.g. a trainer's epoch and
hyper-parameters) is stored as UTF-8 JSON in a uint8 array under ``META_KEY``.
"""
import contextlib
import json
import math
import os
import re
import secrets
import zipfile

import numpy as np

from tinygrad_rnn.backend import as_numpy

META_KEY = "__meta__"


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def _remove_stale_temporaries(directory, base):
    """Remove ``base``'s temporary files whose writer process no longer runs (it crashed mid-write)."""
    pattern = re.compile(rf"\.{re.escape(base)}\.(\d+)\.[0-9a-f]{{16}}\.tmp")
    for name in os.listdir(directory):
        match = pattern.fullmatch(name)
        if match and int(match.group(1)) != os.getpid() and not _alive(int(match.group(1))):
            with contextlib.suppress(FileNotFoundError):  # another writer may clean up at the same time
                os.remove(os.path.join(directory, name))


def _fsync_directory(directory):
    """Flush a directory entry (the rename) to disk; a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # Windows: directories cannot be opened, and rename is durable there
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path, mode="wb"):
    """Open a temporary file beside ``path``; on a clean exit flush it and rename it over ``path``.

    Args:
        path (str | os.PathLike): the file to write; its directory must exist.
        mode (str): ``"wb"`` or ``"w"`` (UTF-8 text).
    Yields:
        file: the open temporary file.
    """
    path = os.fspath(path)
    directory, base = os.path.split(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"atomic_write: the folder {directory} does not exist (writing {path})")
    _remove_stale_temporaries(directory, base)
    # the writer's pid in the name tells a later writer whether the file is abandoned
    tmp = os.path.join(directory, f".{base}.{os.getpid()}.{secrets.token_hex(8)}.tmp")
    # O_EXCL on a random name never clobbers another writer's temp file; mode 0o666 lets the
    # umask decide the permissions, as for any other file the user creates (mkstemp gives 0600)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_directory(directory)


def json_ready(value):
    """``value`` with every non-finite float written as the string ``"inf"``, ``"-inf"`` or ``"nan"``.

    JSON has no infinity: a diverged run's perplexity is kept as ``"inf"``, which ``float()``
    reads back. NumPy scalars become Python numbers; dicts, lists and tuples are walked.

    Args:
        value (dict | list | tuple | scalar): a JSON-like structure.
    Returns:
        dict | list | scalar: the same structure, valid for ``json.dumps(..., allow_nan=False)``.
    """
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def write_json(path, value):
    """Write ``json_ready(value)`` to ``path`` atomically (indented, valid JSON).

    Args:
        path (str | os.PathLike): the file.
        value (dict | list | tuple | scalar): a JSON-like structure.
    """
    with atomic_write(path, "w") as f:
        json.dump(json_ready(value), f, indent=1, allow_nan=False)
        f.write("\n")


def save_npz(path, arrays, meta=None):
    """Write arrays (and optional metadata) to ``path`` atomically.

    Args:
        path (str | os.PathLike): the file to write, used as given (no ``.npz`` is appended).
        arrays (dict): name (str) -> NumPy or CuPy array of a numeric dtype; names may contain
            ``/`` (layer paths such as ``lstm/cell0/Wx``).
        meta (dict, optional): JSON-ready metadata (non-finite floats are kept as strings,
            see ``json_ready``).
    Raises:
        ValueError: a name equals ``META_KEY``, or an array has an object dtype (no pickle).
        TypeError: ``meta`` is not JSON-serializable.
    """
    if META_KEY in arrays:
        raise ValueError(f"save_npz: the name {META_KEY!r} is reserved for metadata")
    payload = {name: as_numpy(a) for name, a in arrays.items()}
    objects = [name for name, a in payload.items() if a.dtype.hasobject]
    if objects:
        raise ValueError(f"save_npz: {', '.join(objects)} hold Python objects; only numeric arrays are saved "
                         "(checkpoints never use pickle)")
    if meta is not None:
        text = json.dumps(json_ready(meta), allow_nan=False)
        payload[META_KEY] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    with atomic_write(path) as f:
        np.savez(f, allow_pickle=False, **payload)


def load_npz(path):
    """Read a file written by ``save_npz`` (or any pickle-free ``.npz``).

    Args:
        path (str | os.PathLike): the file.
    Returns:
        tuple: (arrays, meta): dict name -> ndarray, and the metadata dict (None if absent).
    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a pickle-free ``.npz`` written by tinygrad_rnn (empty,
            truncated or damaged, a plain ``.npy``, pickled objects, broken metadata); one
            message names the file and what is wrong.
    """
    path = os.fspath(path)
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single array (a .npy file), not named arrays")
        with loaded as z:
            arrays = {name: z[name] for name in z.files}
        raw = arrays.pop(META_KEY, None)
        meta = None if raw is None else json.loads(raw.tobytes().decode("utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, UnicodeDecodeError, KeyError) as e:
        reason = str(e) or type(e).__name__
        if isinstance(e, EOFError) or os.path.getsize(path) == 0:
            reason = "the file is empty or truncated"
        elif "pickle" in reason:  # NumPy's advice to allow pickle would be the wrong one here
            reason = "it is neither an .npz archive nor a .npy array (checkpoints never hold pickled objects)"
        elif isinstance(e, zipfile.BadZipFile):
            reason = f"the archive is damaged or truncated ({reason})"
        raise ValueError(f"{path} is not a tinygrad_rnn checkpoint: {reason}") from None
    if meta is not None and not isinstance(meta, dict):
        raise ValueError(f"{path} is not a tinygrad_rnn checkpoint: its metadata is not a JSON object")
    return arrays, meta

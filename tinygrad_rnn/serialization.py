"""Atomic file writes, and arrays to and from ``.npz`` files without pickle.

Every file the project writes goes through ``atomic_write``: a temporary file in the target's
directory, renamed over the target with ``os.replace``, so a reader sees either the old file or
the complete new one, and a failing write leaves nothing behind. Metadata (a JSON-serializable dict, e.g. a trainer's
epoch and hyper-parameters) is stored as UTF-8 JSON in a uint8 array under ``META_KEY``.
"""
import contextlib
import json
import os
import secrets

import numpy as np

from tinygrad_rnn.backend import as_numpy

META_KEY = "__meta__"


@contextlib.contextmanager
def atomic_write(path, mode="wb"):
    """Open a temporary file beside ``path``; on a clean exit rename it over ``path``.

    Args:
        path (str | os.PathLike): the file to write; its directory must exist.
        mode (str): ``"wb"`` or ``"w"`` (UTF-8 text).
    Yields:
        file: the open temporary file.
    """
    path = os.fspath(path)
    directory, base = os.path.split(os.path.abspath(path))
    tmp = os.path.join(directory, f".{base}.{secrets.token_hex(8)}.tmp")
    # O_EXCL on a random name never clobbers another writer's temp file; mode 0o666 lets the
    # umask decide the permissions, as for any other file the user creates (mkstemp gives 0600)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_npz(path, arrays, meta=None):
    """Write arrays (and optional metadata) to ``path`` atomically.

    Args:
        path (str | os.PathLike): the file to write, used as given (no ``.npz`` is appended).
        arrays (dict): name (str) -> NumPy or CuPy array of a numeric dtype; names may contain
            ``/`` (layer paths such as ``lstm/cell0/Wx``).
        meta (dict, optional): JSON-serializable metadata.
    Raises:
        ValueError: a name equals ``META_KEY``, or an array has an object dtype (no pickle).
        TypeError: ``meta`` is not JSON-serializable.
    """
    if META_KEY in arrays:
        raise ValueError(f"save_npz: the name {META_KEY!r} is reserved for metadata")
    payload = {name: as_numpy(a) for name, a in arrays.items()}
    if meta is not None:
        payload[META_KEY] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    with atomic_write(path) as f:
        np.savez(f, allow_pickle=False, **payload)


def load_npz(path):
    """Read a file written by ``save_npz`` (or any pickle-free ``.npz``).

    Args:
        path (str | os.PathLike): the file.
    Returns:
        tuple: (arrays, meta): dict name -> ndarray, and the metadata dict (None if absent).
    Raises:
        ValueError: the file holds pickled objects.
    """
    with np.load(path, allow_pickle=False) as z:
        arrays = {name: z[name] for name in z.files}
    raw = arrays.pop(META_KEY, None)
    meta = None if raw is None else json.loads(raw.tobytes().decode("utf-8"))
    return arrays, meta

"""Arrays to and from ``.npz`` files without pickle.

A file is written to a temporary file in the target's directory and then renamed over the
target with ``os.replace``, so a reader sees either the old file or the complete new one, and
a failing save leaves nothing behind. Metadata (a JSON-serializable dict, e.g. a trainer's
epoch and hyper-parameters) is stored as UTF-8 JSON in a uint8 array under ``META_KEY``.
"""
import json
import os
import tempfile

import numpy as np

from tinygrad_rnn.backend import as_numpy

META_KEY = "__meta__"


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
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, allow_pickle=False, **payload)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


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

"""The checkpoint file: a state (``Trainer.state_dict()``) in one pickle-free ``.npz``, versioned, read all or nothing.

The file holds the state as ``serialization.save_npz`` does, arrays and JSON metadata: every
array one level down (``state[part][key]``, e.g. the model's parameters, its carried state and
the optimizer's slots) is the array ``<part>/<key>``; everything else is JSON, with the format
tag and the user's ``"run"`` information. Reading puts the two back together. What the state
holds, and whether it fits a run, is the trainer's business; this module knows neither.

Written by ``tinygrad_rnn.checkpoint/2`` (the tag of every checkpoint so far), the layout has
not changed since: files of that version load as they are.
"""
import numpy as np

from tinygrad_rnn.serialization import load_npz, save_npz

FORMAT = "tinygrad_rnn.checkpoint/2"


def save(path, state, run):
    """Write ``state`` and ``run`` to ``path``, atomically (a crash leaves the previous file intact).

    Args:
        path (str | Path): the file.
        state (dict): JSON-ready values and, one level down, arrays (``Trainer.state_dict()``).
        run (dict): JSON-ready information about the run (``Trainer.meta``).
    """
    arrays, meta = {}, {"format": FORMAT, "run": run}
    for part, value in state.items():
        if isinstance(value, dict):
            arrays.update({f"{part}/{k}": v for k, v in value.items() if isinstance(v, np.ndarray)})
            if value and all(isinstance(v, np.ndarray) for v in value.values()):
                continue  # a part of arrays only
            value = {k: v for k, v in value.items() if not isinstance(v, np.ndarray)}
        meta[part] = value
    save_npz(path, arrays, meta)


def _read_file(path):
    """The arrays and metadata of the file at ``path``; a ValueError naming it when it is not a checkpoint."""
    arrays, meta = load_npz(path)
    if meta is None or meta.get("format") != FORMAT:
        found = "no trainer metadata" if meta is None else f"format {meta.get('format')!r}"
        raise ValueError(f"{path} is not a tinygrad_rnn trainer checkpoint ({found}; expected {FORMAT!r})")
    return arrays, meta


def _read(path):
    """``(state, run)`` of the checkpoint at ``path``: its arrays put back into their parts."""
    arrays, meta = _read_file(path)
    state = {k: v for k, v in meta.items() if k not in ("format", "run")}
    for key, a in arrays.items():
        part, _, name = key.partition("/")
        if not isinstance(state.setdefault(part, {}), dict):
            raise ValueError(f"{path} is not a tinygrad_rnn trainer checkpoint (array {key!r} under a value)")
        state[part][name] = a
    return state, meta.get("run")


def read(path):
    """The parameters and metadata of a checkpoint, without a trainer (to rebuild a model from it).

    Args:
        path (str | Path): a file written by ``Trainer.save_checkpoint``.
    Returns:
        tuple: ``(parameters, meta)``: dict path -> ndarray for ``Layer.load_state_dict``, and
        the metadata (``meta["run"]`` holds what the run stored, e.g. the model's spec;
        ``meta["trainer"]`` the counters).
    Raises:
        ValueError: not a tinygrad_rnn trainer checkpoint.
    """
    arrays, meta = _read_file(path)
    return {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}, meta


def load(path, comm):
    """The state and run information of the checkpoint at ``path``, read on rank 0 and sent to every rank.

    Args:
        path (str | Path): the file (only rank 0 needs to see it).
        comm (SerialComm | MpiComm | NcclComm): the communicator; every rank calls this.
    Returns:
        tuple: ``(state, run)``: the state for ``Trainer.load_state_dict`` and the ``"run"``
        information.
    Raises:
        ValueError, OSError: not a tinygrad_rnn checkpoint (damaged, another format), or
            unreadable; raised on every rank.
    """
    return comm.from_root(lambda: _read(path))

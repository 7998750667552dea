"""The trainer's checkpoint format: what a file holds, the check that it fits the run, and an all-or-nothing load.

A checkpoint is one pickle-free ``.npz`` (``serialization.save_npz``): the arrays ``model/<path>``
(parameters), ``carried/<path>`` (the state a stateful model carries into its next window) and
``optimizer/<key>``, and JSON metadata: the format tag, the trainer's counters and running
sums, the history, the optimizer's class and hyper-parameters, the batch source's settings,
the clipping norm, the state of every random generator of the model and of every extension,
and the user's ``"run"`` information.

A checkpoint of a data-parallel run is the checkpoint one process would write: rank 0 gathers
every rank's rows of the carried state and the totals of the running sums, and writes alone; a
resume at any process count that divides the batch gives each rank its rows (and rank 0 the
totals). Rank 0 reads the file and sends it to the others, so only rank 0 needs to see it.
"""
import copy

from tinygrad_rnn.backend import as_numpy
from tinygrad_rnn.distributed import gather_rows
from tinygrad_rnn.serialization import load_npz, save_npz

FORMAT = "tinygrad_rnn.checkpoint/2"


def _part(arrays, part):
    prefix = f"{part}/"
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def _stateful(trainer):
    return {e.name: e for e in trainer.extensions if e.state_dict()}


_SUMMED = ("loss", "window_loss", "items")  # per rank while running; totals in a checkpoint


def _trainer_state(trainer, totals=True):
    sums = {k: float(v) if k in ("loss", "window_loss") else v for k, v in trainer.sums.items()}
    if totals and trainer.comm.size > 1:
        loss, window_loss, items = trainer.comm.allreduce_numbers([sums[k] for k in _SUMMED])
        sums.update(loss=loss, window_loss=window_loss, items=round(items))
    return {"epoch": trainer.epoch, "iteration": trainer.iteration, "total_iterations": trainer.total_iterations,
            "sums": sums}


def save(trainer, path):
    """Write ``trainer``'s checkpoint to ``path`` (atomically); data parallel, every rank calls it and rank 0 writes.

    Args:
        trainer (Trainer): the trainer.
        path (str | Path): the file.
    """
    model, optimizer, comm = trainer.model, trainer.optimizer, trainer.comm
    carried = model.carried_state()
    if comm.size > 1:
        carried = gather_rows(carried, comm)
    state = _trainer_state(trainer)
    if not comm.is_root:
        return
    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    arrays.update({f"optimizer/{k}": v for k, v in optimizer.state_dict().items()})
    arrays.update({f"carried/{k}": v for k, v in carried.items()})
    meta = {
        "format": FORMAT,
        "trainer": state,
        "history": trainer.history,
        "optimizer": {"class": type(optimizer).__name__, "hyperparameters": optimizer.hyperparameters()},
        "batches": None if trainer.batches is None else trainer.batches.spec(),
        "clip": trainer.clip,
        "generators": {name: g.state_dict() for name, g in model.generators().items()},
        "extensions": {name: e.state_dict() for name, e in _stateful(trainer).items()},
        "run": trainer.meta,
    }
    save_npz(path, arrays, meta)


def _differences(trainer, arrays, meta):
    """Every way the checkpoint does not fit the run, as phrases (empty: it fits)."""
    out = []
    optimizer = trainer.optimizer
    mine = {"class": type(optimizer).__name__, "hyperparameters": optimizer.hyperparameters()}
    theirs = meta["optimizer"]
    if theirs["class"] != mine["class"]:
        out.append(f"optimizer {theirs['class']} in the checkpoint, {mine['class']} in this run")
    else:
        out += [f"optimizer {k} {v} in the checkpoint, {mine['hyperparameters'].get(k)} in this run"
                for k, v in theirs["hyperparameters"].items() if mine["hyperparameters"].get(k) != v]
    spec = None if trainer.batches is None else trainer.batches.spec()
    if (spec is None) != (meta["batches"] is None):
        out.append(f"batches {meta['batches']} in the checkpoint, {spec} in this run")
    elif spec is not None:
        out += [f"batches {k} {v!r} in the checkpoint, {spec.get(k)!r} in this run"
                for k, v in meta["batches"].items() if spec.get(k) != v]
    if meta["clip"] != trainer.clip:
        out.append(f"clip {meta['clip']} in the checkpoint, {trainer.clip} in this run")
    try:
        trainer.model.check_state_dict(_part(arrays, "model"))
    except ValueError as e:
        out.append(f"model parameters: {str(e).split(': ', 1)[1]}")
    if trainer.comm.size > 1:
        rows = trainer.batches.batch_size
        out += [f"carried state {k} has {a.shape[0] if a.ndim else 0} rows, the batch {rows}"
                for k, a in _part(arrays, "carried").items() if not a.ndim or a.shape[0] != rows]
    for what, theirs, mine in (("generators", meta["generators"], trainer.model.generators()),
                               ("extensions with state", meta["extensions"], _stateful(trainer))):
        if set(theirs) != set(mine):
            out.append(f"{what} {sorted(theirs)} in the checkpoint, {sorted(mine)} in this run")
    return out


def _snapshot(trainer):
    """Everything ``_apply`` changes, in the checkpoint's own shape, so that a failed load can be undone."""
    model = trainer.model
    arrays = {f"model/{k}": as_numpy(v).copy() for k, v in model.state_dict().items()}
    arrays.update({f"optimizer/{k}": v for k, v in trainer.optimizer.state_dict().items()})
    arrays.update({f"carried/{k}": as_numpy(v).copy() for k, v in model.carried_state().items()})
    meta = {"trainer": _trainer_state(trainer, totals=False), "history": copy.deepcopy(trainer.history),
            "generators": {name: g.state_dict() for name, g in model.generators().items()},
            "extensions": {name: e.state_dict() for name, e in _stateful(trainer).items()}}
    return arrays, meta


def _apply(trainer, arrays, meta, split=True):
    """Load a checkpoint (``split``: of the combined batch, which each rank takes its part of) or a snapshot."""
    model = trainer.model
    model.load_state_dict(_part(arrays, "model"))
    carried = _part(arrays, "carried")
    split = split and trainer.comm.size > 1
    if split:
        start, stop = trainer.batches.rows()
        carried = {k: a[start:stop] for k, a in carried.items()}
    model.load_carried_state(carried)
    trainer.optimizer.load_state_dict(_part(arrays, "optimizer"))
    for name, g in model.generators().items():
        g.load_state_dict(meta["generators"][name])
    for name, e in _stateful(trainer).items():
        e.load_state_dict(meta["extensions"][name])
    state = meta["trainer"]
    trainer.epoch, trainer.iteration = state["epoch"], state["iteration"]
    trainer.total_iterations = state["total_iterations"]
    trainer.sums = dict(state["sums"])
    if split and not trainer.comm.is_root:  # the totals are rank 0's to carry on
        trainer.sums.update({k: 0 if k == "items" else 0.0 for k in _SUMMED})
    trainer.history = copy.deepcopy(meta["history"])


def _read_meta(path):
    arrays, meta = load_npz(path)
    if meta is None or meta.get("format") != FORMAT:
        found = "no trainer metadata" if meta is None else f"format {meta.get('format')!r}"
        raise ValueError(f"{path} is not a tinygrad_rnn trainer checkpoint ({found}; expected {FORMAT!r})")
    return arrays, meta


def read(path):
    """The parameters and metadata of a checkpoint, without a trainer (to rebuild a model from it).

    Args:
        path (str | Path): a file written by ``Trainer.save_checkpoint``.
    Returns:
        tuple: ``(parameters, meta)``: dict path -> ndarray for ``Layer.load_state_dict``, and
        the metadata (``meta["run"]`` holds what the run stored, e.g. the model's spec).
    Raises:
        ValueError: not a tinygrad_rnn trainer checkpoint.
    """
    arrays, meta = _read_meta(path)
    return _part(arrays, "model"), meta


def load(trainer, path):
    """Restore ``trainer`` from the checkpoint at ``path``; on any error nothing has changed.

    Args:
        trainer (Trainer): a trainer built like the one that wrote the file.
        path (str | Path): the file.
    Returns:
        dict: the checkpoint's ``"run"`` metadata.
    Raises:
        ValueError: not a tinygrad_rnn checkpoint (damaged, another format), or it does not
            fit the run: the message names the file and lists every difference.
    """
    arrays, meta = _read_meta(path) if trainer.comm.size == 1 else _read_on_root(trainer.comm, path)
    differences = _differences(trainer, arrays, meta)
    if differences:
        raise ValueError(f"Trainer.resume: {path} does not fit this run: " + "; ".join(differences))
    before = _snapshot(trainer)
    try:
        _apply(trainer, arrays, meta)
    except BaseException:
        _apply(trainer, *before, split=False)
        raise
    return meta["run"]


def _read_on_root(comm, path):
    """Rank 0 reads the file and sends its contents, or its error, to every rank (which all raise it)."""
    try:
        loaded = _read_meta(path) if comm.is_root else None
    except (OSError, ValueError) as e:
        loaded = e
    loaded = comm.bcast_obj(loaded)
    if isinstance(loaded, BaseException):
        raise loaded
    return loaded

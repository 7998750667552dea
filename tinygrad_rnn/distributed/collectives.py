"""What data parallelism moves: the layout check, parameters and optimizer state from rank 0, and the gradients.

Parameters are visited in ``namedparams()`` order, which is the order the layers assigned them
and so the same in every process that built the same model; ``check_layout`` proves it before
the first collective, because ranks that disagree would otherwise wait on each other forever.
Arrays travel packed (``tinygrad_rnn.packing``): one flat buffer per (dtype, device) group, so that
a step costs one collective per group, not one per parameter, and a float64 model is reduced in
float64.
"""
import numpy as np

from tinygrad_rnn import packing
from tinygrad_rnn.backend import as_numpy, is_cupy_array
from tinygrad_rnn.core import Variable


def _device(array):
    return "gpu" if is_cupy_array(array) else "cpu"


def layout(model):
    """What every rank must agree on: each parameter's name, shape, dtype and device kind.

    Args:
        model (Layer): the model.
    Returns:
        list of tuple: ``(name, shape, dtype name, "cpu" | "gpu")`` in ``namedparams()`` order.
    """
    return [(name, tuple(p.shape), str(p.data.dtype), _device(p.data)) for name, p in model.namedparams()]


def check_layout(model, comm):
    """Raise on every rank, naming the difference, unless all ranks hold the same parameters.

    Args:
        model (Layer): this rank's model.
        comm (SerialComm | MpiComm | NcclComm): the communicator.
    Raises:
        ValueError: the parameter names, order, shapes, dtypes or devices differ between ranks.
    """
    layouts = comm.allgather_obj(layout(model))
    reference = layouts[0]
    problems = []
    for rank, theirs in enumerate(layouts[1:], start=1):
        if [entry[0] for entry in theirs] != [entry[0] for entry in reference]:
            names, root = {e[0] for e in theirs}, {e[0] for e in reference}
            extra, missing = sorted(names - root), sorted(root - names)
            problems.append(f"rank {rank} has other parameter names than rank 0 (only on rank {rank}: "
                            f"{extra or 'none'}; only on rank 0: {missing or 'none'}; or another order)")
            continue
        for (name, *mine), (_, *root) in zip(theirs, reference):
            if mine != root:
                problems.append(f"{name} is {_describe(mine)} on rank {rank}, {_describe(root)} on rank 0")
    if problems:
        raise ValueError("distributed: the ranks hold different models: " + "; ".join(problems))


def _describe(entry):
    shape, dtype, device = entry
    return f"{shape} {dtype} on the {device}"


def broadcast_parameters(model, comm):
    """Overwrite every rank's parameters with rank 0's, in place (one broadcast per dtype and device).

    Args:
        model (Layer): this rank's model, of the same layout on every rank (``check_layout``).
        comm (SerialComm | MpiComm | NcclComm): the communicator.
    """
    if comm.size == 1:
        return
    for members in packing.groups(model.namedparams()).values():
        params = [p for _, p in members]
        shapes = [p.shape for p in params]
        flat, parts = packing.pack(params[0].data, shapes, [p.data for p in params])
        comm.bcast(flat)
        for p, part in zip(params, parts):
            p.data[...] = part


def broadcast_optimizer_state(optimizer, comm):
    """Give every rank rank 0's optimizer state: slots, step counters and learning rate.

    Args:
        optimizer (Optimizer): set up on this rank's model.
        comm (SerialComm | MpiComm | NcclComm): the communicator.
    """
    if comm.size == 1:
        return
    state = optimizer.state_dict() if comm.is_root else None
    shapes = comm.bcast_obj(None if state is None else [(k, a.shape, a.dtype.str) for k, a in state.items()])
    arrays = {}
    by_dtype = {}
    for key, shape, dtype in shapes:
        by_dtype.setdefault(dtype, []).append((key, shape))
    for dtype, entries in by_dtype.items():
        shapes = [shape for _, shape in entries]
        mine = [state[key] for key, _ in entries] if comm.is_root else []  # the others receive
        flat, parts = packing.pack(np.empty(0, dtype=dtype), shapes, mine)
        comm.bcast(flat)
        arrays.update((key, part) for (key, _), part in zip(entries, parts))
    if not comm.is_root:
        optimizer.load_state_dict(arrays)


def allreduce_grads(model, comm, weight=None):
    """Average the gradients over the ranks, weighted by each rank's share of the loss.

    A rank's weight is the number of terms its mean loss covers (tokens, examples); every
    gradient becomes ``sum_r weight_r * grad_r / sum_r weight_r``, the gradient of the mean over
    the combined batch. Without weights every rank counts equally (``1 / size``). A parameter
    that has a gradient on some rank but not here counts as zeros here; one that has none on
    any rank keeps none (the optimizer skips it, as one process would). The reduced gradients
    are new Variables (views of the packed buffer), equal on every rank.

    Args:
        model (Layer): this rank's model after ``backward``.
        comm (SerialComm | MpiComm | NcclComm): the communicator.
        weight (float, optional): this rank's weight (>= 0, a host number); None on every rank
            or on none.
    Returns:
        float: this rank's share ``weight_r / sum_r weight_r`` (``1 / size`` without weights).
    Raises:
        ValueError: weights given on some ranks only, a negative weight, or all weights 0.
        TypeError: a gradient whose dtype differs from its parameter's (it would be cast).
    """
    if comm.size == 1:
        return 1.0
    if weight is not None and not weight >= 0:
        raise ValueError(f"distributed.allreduce_grads: weight must be >= 0, got {weight}")
    pairs = list(model.namedparams())
    for name, p in pairs:
        if p.grad is not None and p.grad.data.dtype != p.data.dtype:
            raise TypeError(f"distributed.allreduce_grads: the gradient of {name} is {p.grad.data.dtype}, the "
                            f"parameter {p.data.dtype}; it would be cast silently")
    # one small host reduction: the weights, how many ranks gave one, and who has which gradient
    summed = comm.allreduce_numbers([weight or 0.0, weight is not None] + [p.grad is not None for _, p in pairs])
    total, weighted = summed[0], round(summed[1])
    if weighted not in (0, comm.size):
        raise ValueError(f"distributed.allreduce_grads: {weighted} of {comm.size} ranks gave a weight; give one "
                         "on every rank or on none")
    if weighted and not total > 0:
        raise ValueError("distributed.allreduce_grads: the weights of all ranks sum to 0 (no loss terms)")
    share = weight / total if weighted else 1.0 / comm.size
    reduced = [(name, p) for (name, p), count in zip(pairs, summed[2:]) if count]
    for members in packing.groups(reduced).values():
        params = [p for _, p in members]
        shapes = [p.shape for p in params]
        grads = [None if p.grad is None else p.grad.data for p in params]  # None: zeros, as no gradient here
        flat, parts = packing.pack(params[0].data, shapes, grads)
        flat *= flat.dtype.type(share)
        comm.allreduce(flat)
        for p, part in zip(params, parts):
            p.grad = Variable(part)
    return share


def gather_rows(arrays, comm):
    """Rank 0 gets every rank's arrays joined along the first axis in rank order (carried state rows).

    Args:
        arrays (dict[str, ndarray]): this rank's rows, the same keys on every rank.
        comm (SerialComm | MpiComm | NcclComm): the communicator.
    Returns:
        dict[str, numpy.ndarray] | None: the joined arrays on rank 0 (on the CPU); None elsewhere.
    """
    parts = comm.gather_obj({k: as_numpy(v) for k, v in arrays.items()})
    if parts is None:
        return None
    return {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}

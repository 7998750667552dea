"""Flat buffers: arrays of one dtype and device laid end to end in one array, each a view of it.

The optimizer keeps each group of parameters (their data, gradients and state) in flat buffers,
so that an update is a few whole-buffer operations instead of a few per parameter; data
parallelism moves gradients, parameters and optimizer state packed, one collective per group.
Each array starts at a multiple of 256 bytes (CuPy's allocation alignment), so that a view is
aligned as well as an array of its own for a kernel's vector loads; the gaps hold zeros.

    flat = buffer(like, shapes)          # zeros, of like's dtype, device and array type
    parts = views(flat, shapes)          # one view a shape, no copy
    fill(parts, arrays)                  # copy each array into its view
    flat, parts = pack(like, shapes, arrays)  # the three at once
"""
from math import prod

from tinygrad_rnn.backend import device_of, get_array_module

_ALIGN_BYTES = 256


def groups(pairs):
    """Group parameters by the dtype and device of their data.

    Args:
        pairs (iterable of (str, Parameter)): e.g. ``model.namedparams()``.
    Returns:
        dict: ``(dtype, device)`` -> list of ``(name, Parameter)``, groups in the order of their
        first member and members in the order given (``device`` as ``backend.device_of``).
    """
    out = {}
    for name, p in pairs:
        out.setdefault((p.data.dtype, device_of(p.data)), []).append((name, p))
    return out


def _starts(shapes, itemsize):
    """The offset of each shape's view and the total length, every offset aligned."""
    step = max(1, _ALIGN_BYTES // itemsize)
    starts, end = [], 0
    for shape in shapes:
        start = -(-end // step) * step
        starts.append(start)
        end = start + prod(shape)
    return starts, end


def buffer(like, shapes):
    """A zero flat buffer with room for one array of each shape.

    Args:
        like (ndarray): NumPy or CuPy array (any shape) whose dtype, device and array type
            (``zeros_like`` keeps an ndarray subclass) the buffer takes.
        shapes (sequence of tuple): the shapes ``views`` will cut from it.
    Returns:
        ndarray: (L,) zeros, ``L`` at least the total size.
    """
    return get_array_module(like).zeros_like(like, shape=(_starts(shapes, like.dtype.itemsize)[1],))


def views(flat, shapes):
    """The arrays of ``shapes`` in ``flat``, as views (writing one writes ``flat``).

    Args:
        flat (ndarray): (L,) from ``buffer(..., shapes)``.
        shapes (sequence of tuple): as given to ``buffer``.
    Returns:
        list of ndarray: one C-contiguous view a shape.
    """
    starts, _ = _starts(shapes, flat.dtype.itemsize)
    return [flat[start:start + prod(shape)].reshape(shape) for start, shape in zip(starts, shapes)]


def fill(parts, arrays, factor=None):
    """Copy each array into its view, times ``factor`` when one is given, in the views' dtype.

    Args:
        parts (list of ndarray): views from ``views``.
        arrays (list of ndarray | None): one a view, of its shape (or broadcastable to it) and
            device; None leaves its view as it is.
        factor (number | ndarray, optional): a scalar or a () array on the views' device.
    """
    for part, a in zip(parts, arrays):
        if a is None:
            continue
        if factor is None:
            part[...] = a
        else:
            get_array_module(part).multiply(a, factor, out=part)


def pack(like, shapes, arrays):
    """A new flat buffer (``buffer``) with each array copied into its view (``views``, ``fill``).

    Args:
        like (ndarray): gives the buffer's dtype, device and array type.
        shapes (sequence of tuple): one a view.
        arrays (list of ndarray | None): one a view; None leaves that view zero.
    Returns:
        tuple: ``(flat, parts)``, the (L,) buffer and its views.
    """
    flat = buffer(like, shapes)
    parts = views(flat, shapes)
    fill(parts, arrays)
    return flat, parts

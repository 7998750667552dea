"""Shape ops: reshape, transpose, getitem, embed_id, concat, split, stack, broadcast_to, sum_to."""
import itertools
import math

import numpy as np

from tinygrad_rnn import compiled
from tinygrad_rnn.backend import get_array_module
from tinygrad_rnn.core import Config, Function, Variable, as_variable, dual


def accumulation_dtype(dtype):
    """The dtype a sum or mean over ``dtype`` runs in: float32 at least, so that a float16 mean
    over many elements neither overflows nor stalls (each result is cast back to ``dtype``).

    Args:
        dtype (dtype): the inputs' float dtype.
    Returns:
        numpy.dtype: float32 for float16 and float32, float64 for float64.
    """
    return np.promote_types(dtype, np.float32)


def _sum_to_array(x, shape):
    """Sum ``x`` over the axes that broadcasting added or stretched, so that it takes ``shape`` (a tuple)."""
    if x.shape == shape:
        return x
    lead = x.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, s in enumerate(shape) if s == 1 and x.shape[lead + i] != 1)
    acc = accumulation_dtype(x.dtype)
    return x.sum(axis=axes, keepdims=True, dtype=acc).astype(x.dtype, copy=False).reshape(shape)


def unbroadcast(g, shape):
    """Reduce gradient ``g`` (array or Variable) back to an input's ``shape`` after broadcasting."""
    return g if g.shape == tuple(shape) else dual(SumTo(shape), g)


class Reshape(Function):
    def __init__(self, shape):
        self.shape = shape

    def forward(self, x):
        self.in_shape = x.shape
        return x.reshape(self.shape)

    def backward(self, gy):
        return gy.reshape(self.in_shape)


def reshape(x, shape):
    """Reshape without copying where possible.

    Args:
        x (Variable | ndarray): any shape.
        shape (tuple): new shape with the same size; one entry may be -1.
    Returns:
        Variable: ``shape``.
    """
    return Reshape(tuple(shape))(x)


class Transpose(Function):
    def __init__(self, axes=None):
        self.axes = axes

    def forward(self, x):
        if self.axes is None:
            self.inverse = None
        else:
            self.inverse = tuple(np.argsort([a % x.ndim for a in self.axes]))
        return x.transpose(self.axes)

    def backward(self, gy):
        return gy.transpose(self.inverse)


def transpose(x, axes=None):
    """Permute axes (reverse them when ``axes`` is None).

    Args:
        x (Variable | ndarray): shape (d0, ..., dn).
        axes (tuple, optional): a permutation of ``range(x.ndim)``; negative axes allowed.
    Returns:
        Variable: the permuted shape.
    """
    return Transpose(None if axes is None else tuple(axes))(x)


def _is_basic(index):
    parts = index if isinstance(index, tuple) else (index,)
    return all(p is None or p is Ellipsis or isinstance(p, (slice, int, np.integer)) for p in parts)


class GetItem(Function):
    op = "getitem"
    fresh_grads = True  # GetItemGrad's zeros

    def __init__(self, index):
        self.index = index

    def forward(self, x):
        self.in_shape = x.shape
        return x[self.index]

    def backward(self, gy):
        return dual(GetItemGrad(self.index, self.in_shape), gy)


class GetItemGrad(Function):
    """Scatter-add of a gradient into zeros of the indexed array's shape (GetItem's backward)."""

    def __init__(self, index, shape):
        self.index = index
        self.shape = shape

    def forward(self, gy):
        xp = get_array_module(gy)
        gx = xp.zeros(self.shape, dtype=gy.dtype)
        if _is_basic(self.index):  # basic indexing never repeats an element: plain assignment
            gx[self.index] = gy
        else:
            _add_at(gx, self.index, gy)
        return gx

    def backward(self, ggx):
        return dual(GetItem(self.index), ggx)


def _add_at(gx, index, gy):
    """``add.at(gx, index, gy)``, unbuffered: repeated indices accumulate.

    Where ``index`` is one NumPy integer array (rows of axis 0, as embed_id's ids) and the ``cpu``
    extra serves ``gy`` (``compiled.kernels``), its compiled loop runs instead of NumPy's ufunc.at,
    which is many times slower: the same additions in the same order, so the same bits, and an id
    out of range raises NumPy's IndexError.
    """
    kernels = None
    if isinstance(index, np.ndarray) and index.dtype.kind in "iu" and gy.shape == index.shape + gx.shape[1:]:
        kernels = compiled.kernels("tinygrad_rnn.functions._cpu_kernels", gy)
    if kernels is None:
        get_array_module(gx).add.at(gx, index, gy)
        return
    ids, width = index.reshape(-1), math.prod(gx.shape[1:])
    bad = kernels.scatter_add_rows(gx.reshape(len(gx), width), ids, gy.reshape(ids.size, width))
    if bad >= 0:
        raise IndexError(f"index {ids[bad:bad + 1].astype(np.intp)[0]} is out of bounds for axis 0 with size {len(gx)}")


def getitem(x, index):
    """NumPy indexing: slices, integers, None, Ellipsis and integer arrays.

    Repeated integer indices accumulate their gradients (scatter-add).

    Args:
        x (Variable | ndarray): any shape.
        index (int | slice | tuple | ndarray | Variable): anything NumPy accepts; Variables used as
            indices are read as arrays.
    Returns:
        Variable: ``x[index]``.
    """
    if isinstance(index, Variable):
        index = index.data
    elif isinstance(index, tuple):
        index = tuple(i.data if isinstance(i, Variable) else i for i in index)
    return GetItem(index)(x)


def _bounded(ids, size):
    """NumPy ids with each negative one replaced by ``size``, so that NumPy's bounds check refuses
    it instead of wrapping it to the last rows; CuPy ids are returned unchanged."""
    if isinstance(ids, np.ndarray) and ids.dtype.kind == "i":
        return np.where(ids < 0, size, ids)
    return ids


def index_range_error(op, what, ids, size):
    """The error for ``ids`` outside [0, size): names the op and the range found (reads the ids back).

    Args:
        op (str): the op, e.g. ``"embed_id"``.
        what (str): ``"ids"`` or ``"labels"``.
        ids (ndarray): the (counted) integer ids, not empty.
        size (int): the number of valid ids.
    Returns:
        IndexError: to raise.
    """
    lo, hi = int(ids.min()), int(ids.max())
    return IndexError(f"{op}: {what} must lie in [0, {size}), got range [{lo}, {hi}]")


def check_index_range(op, what, ids, size):
    """Raise ``index_range_error`` when an id lies outside [0, size); a host read, so the ops call
    it only under ``debug_mode()`` (and NumPy ops when NumPy's bounds check has failed)."""
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= size):
        raise index_range_error(op, what, ids, size)


class EmbedID(Function):
    int_inputs = (0,)
    fresh_grads = True  # GetItemGrad's zeros

    def forward(self, ids, W):
        # the checked ids are kept: a signed id array changed before backward cannot move the gradient
        self.ids, self.W_shape = _bounded(ids, W.shape[0]), W.shape
        return W[self.ids]

    def backward(self, gy):
        try:
            return None, dual(GetItemGrad(self.ids, self.W_shape), gy)
        except IndexError:  # unsigned ids changed out of range since forward
            raise index_range_error("embed_id", "ids", self.ids, self.W_shape[0]) from None


def embed_id(ids, W):
    """Row lookup ``W[ids]``; the gradient of a row used several times accumulates.

    Ids are validated where data enters (batch sources, data sets). NumPy refuses an id out of
    range here too; on the GPU the range is checked only under ``debug_mode()`` (checking costs
    a device-to-host read in every step).

    Args:
        ids (ndarray | Variable): integer ids of any shape S, each in [0, V).
        W (Variable): (V, D) embedding matrix.
    Returns:
        Variable: S + (D,).
    Raises:
        TypeError: ``ids`` is not an integer array.
        ValueError: ``W`` is not 2-D.
        IndexError: an id lies outside [0, V) (see above).
    """
    ids_data = ids.data if isinstance(ids, Variable) else ids
    xp = get_array_module(ids_data)
    ids_data = xp.asanyarray(ids_data)
    W = as_variable(W)
    if ids_data.dtype.kind not in "iu":
        raise TypeError(f"embed_id: ids must be integers, got dtype {ids_data.dtype}")
    if W.ndim != 2:
        raise ValueError(f"embed_id: W must be (V, D), got shape {W.shape}")
    if Config.debug:
        check_index_range("embed_id", "ids", ids_data, W.shape[0])
    try:
        return EmbedID()(ids_data if not isinstance(ids, Variable) else ids, W)
    except IndexError:  # NumPy's bounds check: say it in this op's words
        raise index_range_error("embed_id", "ids", ids_data, W.shape[0]) from None


class Concat(Function):
    def __init__(self, axis):
        self.axis = axis

    def forward(self, *xs):
        xp = get_array_module(*xs)
        self.cuts = list(itertools.accumulate(x.shape[self.axis] for x in xs))[:-1]
        return xp.concatenate(xs, axis=self.axis)

    def backward(self, gy):
        gxs = dual(Split(self.cuts, self.axis), gy)
        return tuple(gxs) if isinstance(gxs, (list, tuple)) else gxs


def concat(xs, axis=0):
    """Join arrays along an existing axis.

    Args:
        xs (sequence of Variable | ndarray): equal shapes except along ``axis``.
        axis (int): may be negative.
    Returns:
        Variable: the joined array.
    Raises:
        ValueError: the shapes differ outside ``axis`` or the ranks differ.
    """
    xs = [as_variable(x) for x in xs]
    if not xs:
        raise ValueError("concat: needs at least one input")
    ndim = xs[0].ndim
    if any(x.ndim != ndim for x in xs) or not -ndim <= axis < ndim:
        raise ValueError(f"concat: cannot join shapes {', '.join(str(x.shape) for x in xs)} along axis {axis}")
    ax = axis % ndim
    rest = {x.shape[:ax] + x.shape[ax + 1:] for x in xs}
    if len(rest) > 1:
        raise ValueError(f"concat: shapes {', '.join(str(x.shape) for x in xs)} differ outside axis {axis}")
    return Concat(ax)(*xs)


class Split(Function):
    def __init__(self, cuts, axis):
        self.cuts = cuts
        self.axis = axis

    def forward(self, x):
        xp = get_array_module(x)
        return tuple(xp.split(x, self.cuts, axis=self.axis))

    def backward(self, *gys):
        return dual(Concat(self.axis), *gys)


def split(x, indices_or_sections, axis=0):
    """Split into pieces along ``axis``, like ``numpy.split``.

    Args:
        x (Variable | ndarray): any shape.
        indices_or_sections (int | sequence of int): number of equal pieces, or cut points.
        axis (int): may be negative.
    Returns:
        list of Variable: the pieces (a list also when there is one piece).
    Raises:
        ValueError: an int that does not divide the axis.
    """
    x = as_variable(x)
    n = x.shape[axis]
    if isinstance(indices_or_sections, (int, np.integer)):
        if indices_or_sections <= 0 or n % indices_or_sections:
            raise ValueError(f"split: axis {axis} of shape {x.shape} does not split into "
                             f"{indices_or_sections} equal parts")
        step = n // indices_or_sections
        cuts = list(range(step, n, step))
    else:
        cuts = list(indices_or_sections)
    pieces = Split(cuts, axis % x.ndim)(x)
    return pieces if isinstance(pieces, list) else [pieces]


class Stack(Function):
    def __init__(self, axis):
        self.axis = axis

    def forward(self, *xs):
        xp = get_array_module(*xs)
        return xp.stack(xs, axis=self.axis)

    def backward(self, gy):
        lead = (slice(None),) * self.axis
        return tuple(gy[lead + (i,)] for i in range(gy.shape[self.axis]))


def stack(xs, axis=0):
    """Join equal-shape arrays along a new axis.

    Args:
        xs (sequence of Variable | ndarray): all of shape S.
        axis (int): position of the new axis in the result, may be negative.
    Returns:
        Variable: S with ``len(xs)`` inserted at ``axis``.
    Raises:
        ValueError: the shapes differ.
    """
    xs = [as_variable(x) for x in xs]
    if not xs:
        raise ValueError("stack: needs at least one input")
    shapes = {x.shape for x in xs}
    if len(shapes) != 1:
        raise ValueError(f"stack: shapes {', '.join(str(x.shape) for x in xs)} differ")
    ndim = xs[0].ndim + 1
    if not -ndim <= axis < ndim:
        raise ValueError(f"stack: axis {axis} out of range for {ndim}-d result")
    return Stack(axis % ndim)(*xs)


class BroadcastTo(Function):
    def __init__(self, shape):
        self.shape = shape

    def forward(self, x):
        xp = get_array_module(x)
        self.in_shape = x.shape
        return xp.broadcast_to(x, self.shape)

    def backward(self, gy):
        return unbroadcast(gy, self.in_shape)


def broadcast_to(x, shape):
    """Broadcast like ``numpy.broadcast_to``; the gradient is summed back.

    Args:
        x (Variable | ndarray): a shape broadcastable to ``shape``.
        shape (tuple): target shape.
    Returns:
        Variable: ``shape`` (a read-only view).
    Raises:
        ValueError: the shapes are not compatible.
    """
    return BroadcastTo(tuple(shape))(x)


class SumTo(Function):
    def __init__(self, shape):
        self.shape = tuple(shape)

    def forward(self, x):
        self.in_shape = x.shape
        return _sum_to_array(x, self.shape)

    def backward(self, gy):
        return dual(BroadcastTo(self.in_shape), gy)


def sum_to(x, shape):
    """Sum over broadcast axes so that the result has ``shape`` (the inverse of broadcast_to).

    Args:
        x (Variable | ndarray): a shape that ``shape`` broadcasts to.
        shape (tuple): target shape.
    Returns:
        Variable: ``shape``.
    Raises:
        ValueError: ``shape`` does not broadcast to ``x.shape``.
    """
    x, shape = as_variable(x), tuple(shape)
    lead = x.ndim - len(shape)
    if lead < 0 or any(s != 1 and s != d for s, d in zip(shape, x.shape[lead:])):
        raise ValueError(f"sum_to: shape {x.shape} cannot be summed to {shape} ({shape} does not broadcast to it)")
    return SumTo(shape)(x)

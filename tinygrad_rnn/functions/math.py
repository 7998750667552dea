"""Elementwise arithmetic and reductions: add, sub, mul, div, neg, pow, exp, log, sum, mean, max, min, clip."""
import builtins

import numpy as np

from tinygrad_rnn.backend import get_array_module
from tinygrad_rnn.core import Function, Variable, dual
from tinygrad_rnn.functions.array import BroadcastTo, accumulation_dtype, unbroadcast


def _constant(v, other):
    """``v`` as a scalar of ``other``'s dtype when it is a Python or NumPy number, else None.

    A constant operand stays a scalar hyper-parameter of its op: ``x * 2`` keeps float32 (a
    float64 scalar would promote it) and no 0-d array is copied to the GPU for it.
    """
    if not isinstance(v, (bool, int, float, np.generic)):
        return None
    dtype = (other.data if isinstance(other, Variable) else other).dtype
    return dtype.type(v)


def _dispatch(x0, x1, binary, right, left):
    """``binary()(x0, x1)``, or ``right(c)(x0)`` when ``x1`` is a number ``c``, or ``left(c)(x1)`` when ``x0`` is."""
    c = _constant(x1, x0)
    if c is not None:
        return right(c)(x0)
    c = _constant(x0, x1)
    if c is not None:
        return left(c)(x1)
    return binary()(x0, x1)


class Add(Function):
    def forward(self, x0, x1):
        self.shapes = (x0.shape, x1.shape)
        return x0 + x1

    def backward(self, gy):
        return unbroadcast(gy, self.shapes[0]), unbroadcast(gy, self.shapes[1])


class AddConstant(Function):
    op = "add"

    def __init__(self, c):
        self.c = c

    def forward(self, x):
        return x + self.c

    def backward(self, gy):
        return gy


def add(x0, x1):
    """``x0 + x1`` with NumPy broadcasting; a number operand takes the other's dtype.

    Args:
        x0 (Variable | ndarray | scalar): broadcastable with ``x1``.
        x1 (Variable | ndarray | scalar): broadcastable with ``x0``.
    Returns:
        Variable: the broadcast shape.
    Raises:
        ValueError: the shapes do not broadcast.
    """
    return _dispatch(x0, x1, Add, AddConstant, AddConstant)


class Sub(Function):
    def forward(self, x0, x1):
        self.shapes = (x0.shape, x1.shape)
        return x0 - x1

    def backward(self, gy):
        return unbroadcast(gy, self.shapes[0]), unbroadcast(-gy, self.shapes[1])


class RSubConstant(Function):
    """``c - x`` for a constant ``c``."""

    op = "sub"

    def __init__(self, c):
        self.c = c

    def forward(self, x):
        return self.c - x

    def backward(self, gy):
        return -gy


def sub(x0, x1):
    """``x0 - x1`` with NumPy broadcasting (see ``add``)."""
    return _dispatch(x0, x1, Sub, lambda c: AddConstant(-c), RSubConstant)  # x - c and x + (-c) round alike


class Mul(Function):
    def forward(self, x0, x1):
        return x0 * x1

    def backward(self, gy):
        x0, x1 = self.arg(0), self.arg(1)
        return unbroadcast(gy * x1, x0.shape), unbroadcast(gy * x0, x1.shape)


class MulConstant(Function):
    op = "mul"

    def __init__(self, c):
        self.c = c

    def forward(self, x):
        return x * self.c

    def backward(self, gy):
        return gy * self.c


def mul(x0, x1):
    """``x0 * x1`` with NumPy broadcasting (see ``add``)."""
    return _dispatch(x0, x1, Mul, MulConstant, MulConstant)


class Div(Function):
    def forward(self, x0, x1):
        return x0 / x1

    def backward(self, gy):
        x0, x1 = self.arg(0), self.arg(1)
        gx0 = gy / x1
        return unbroadcast(gx0, x0.shape), unbroadcast(-gx0 * x0 / x1, x1.shape)


class DivConstant(Function):
    """``x / c`` for a constant ``c``."""

    op = "div"

    def __init__(self, c):
        self.c = c

    def forward(self, x):
        return x / self.c

    def backward(self, gy):
        return gy / self.c


class RDivConstant(Function):
    """``c / x`` for a constant ``c``."""

    op = "div"

    def __init__(self, c):
        self.c = c

    def forward(self, x):
        return self.c / x

    def backward(self, gy):
        x = self.arg(0)
        return -gy * self.c / (x * x)


def div(x0, x1):
    """``x0 / x1`` with NumPy broadcasting (see ``add``)."""
    return _dispatch(x0, x1, Div, DivConstant, RDivConstant)


class Neg(Function):
    def forward(self, x):
        return -x

    def backward(self, gy):
        return -gy


def neg(x):
    """``-x``; any shape."""
    return Neg()(x)


class Pow(Function):
    def __init__(self, c):
        self.c = c

    def forward(self, x):
        return x ** self.c

    def backward(self, gy):
        x = self.arg(0)
        return unbroadcast(gy * self.c * x ** (self.c - 1), x.shape)


def pow(x, c):
    """``x ** c`` for a constant exponent.

    Args:
        x (Variable | ndarray): any shape, float.
        c (scalar | ndarray): constant exponent broadcastable with ``x``; not differentiated.
    Returns:
        Variable: the broadcast shape.
    Raises:
        TypeError: ``c`` is a Variable (only constant exponents are supported).
    """
    if isinstance(c, Variable):
        raise TypeError("pow: the exponent must be a constant (scalar or array), not a Variable")
    x_data = x.data if isinstance(x, Variable) else x
    scalar = _constant(c, x_data)
    return Pow(get_array_module(x_data).asarray(c, dtype=x_data.dtype) if scalar is None else scalar)(x)


class Exp(Function):
    def forward(self, x):
        return get_array_module(x).exp(x)

    def backward(self, gy):
        return gy * self.out()


def exp(x):
    """Elementwise ``e ** x``; any shape, float."""
    return Exp()(x)


class Log(Function):
    def forward(self, x):
        return get_array_module(x).log(x)

    def backward(self, gy):
        return gy / self.arg(0)


def log(x):
    """Elementwise natural logarithm; any shape, positive floats."""
    return Log()(x)


def _keep_shape(shape, axis):
    if axis is None:
        return (1,) * len(shape)
    axes = {a % len(shape) for a in (axis if isinstance(axis, tuple) else (axis,))}
    return tuple(1 if i in axes else s for i, s in enumerate(shape))


class Sum(Function):
    def __init__(self, axis, keepdims):
        self.axis = axis
        self.keepdims = keepdims

    def forward(self, x):
        self.in_shape = x.shape
        self.keep_shape = _keep_shape(x.shape, self.axis)
        acc = accumulation_dtype(x.dtype)
        return x.sum(axis=self.axis, keepdims=self.keepdims, dtype=acc).astype(x.dtype, copy=False)

    def backward(self, gy):
        return dual(BroadcastTo(self.in_shape), gy.reshape(self.keep_shape))


def _axis(axis):
    return tuple(axis) if isinstance(axis, list) else axis


def sum(x, axis=None, keepdims=False):
    """Sum over ``axis``.

    Args:
        x (Variable | ndarray): any shape.
        axis (int | tuple, optional): axes to reduce, negative allowed; all when None.
        keepdims (bool): keep reduced axes with size 1.
    Returns:
        Variable: the reduced shape.
    """
    return Sum(_axis(axis), keepdims)(x)


class Mean(Function):
    def __init__(self, axis, keepdims):
        self.axis = axis
        self.keepdims = keepdims

    def forward(self, x):
        self.in_shape = x.shape
        self.keep_shape = _keep_shape(x.shape, self.axis)
        self.scale = float(np.prod(self.keep_shape) / builtins.max(x.size, 1))  # 1 / (elements averaged)
        acc = accumulation_dtype(x.dtype)
        return x.mean(axis=self.axis, keepdims=self.keepdims, dtype=acc).astype(x.dtype, copy=False)

    def backward(self, gy):
        return dual(BroadcastTo(self.in_shape), gy.reshape(self.keep_shape) * self.scale)


def mean(x, axis=None, keepdims=False):
    """Mean over ``axis`` (arguments as ``sum``)."""
    return Mean(_axis(axis), keepdims)(x)


class Max(Function):
    """Max (or min) over axes; tied maxima share the gradient equally."""

    def __init__(self, axis, keepdims, use_min=False):
        self.axis = axis
        self.keepdims = keepdims
        self.use_min = use_min

    def forward(self, x):
        y = x.min(axis=self.axis, keepdims=True) if self.use_min else x.max(axis=self.axis, keepdims=True)
        hit = (x == y).astype(x.dtype)
        self.mask = hit / hit.sum(axis=self.axis, keepdims=True)
        self.in_shape = x.shape
        self.keep_shape = y.shape
        return y if self.keepdims else y.reshape(_reduced_shape(x.shape, self.axis))

    def backward(self, gy):
        return dual(BroadcastTo(self.in_shape), gy.reshape(self.keep_shape)) * self.mask


def _reduced_shape(shape, axis):
    if axis is None:
        return ()
    axes = {a % len(shape) for a in (axis if isinstance(axis, tuple) else (axis,))}
    return tuple(s for i, s in enumerate(shape) if i not in axes)


class Min(Max):
    def __init__(self, axis, keepdims):
        super().__init__(axis, keepdims, use_min=True)


def max(x, axis=None, keepdims=False):
    """Maximum over ``axis`` (arguments as ``sum``); ties share the gradient."""
    return Max(_axis(axis), keepdims)(x)


def min(x, axis=None, keepdims=False):
    """Minimum over ``axis`` (arguments as ``sum``); ties share the gradient."""
    return Min(_axis(axis), keepdims)(x)


class Clip(Function):
    def __init__(self, lo, hi):
        self.lo = lo
        self.hi = hi

    def forward(self, x):
        xp = get_array_module(x)
        self.mask = ((x >= self.lo) & (x <= self.hi)).astype(x.dtype)
        return xp.clip(x, self.lo, self.hi)

    def backward(self, gy):
        return gy * self.mask


def clip(x, lo, hi):
    """Clamp to [lo, hi]; the gradient is zero outside.

    Args:
        x (Variable | ndarray): any shape, float.
        lo (float): lower bound.
        hi (float): upper bound, ``lo <= hi``.
    Returns:
        Variable: same shape.
    """
    if lo > hi:
        raise ValueError(f"clip: lo={lo} > hi={hi}")
    return Clip(lo, hi)(x)

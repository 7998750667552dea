"""Activations: tanh, sigmoid, relu, softmax, log_softmax."""
from tinygrad_rnn.backend import get_array_module
from tinygrad_rnn.core import Function, dual
from tinygrad_rnn.functions.math import Exp


class Tanh(Function):
    def forward(self, x):
        return get_array_module(x).tanh(x)

    def backward(self, gy):
        y = self.out()
        return gy * (1 - y * y)


def tanh(x):
    """Elementwise hyperbolic tangent.

    Args:
        x (Variable | ndarray): any shape, float.
    Returns:
        Variable: same shape and dtype as ``x``.
    """
    return Tanh()(x)


class Sigmoid(Function):
    def forward(self, x):
        # tanh form of the sigmoid: no overflow for large |x|
        return get_array_module(x).tanh(x * 0.5) * 0.5 + 0.5

    def backward(self, gy):
        y = self.out()
        return gy * y * (1 - y)


def sigmoid(x):
    """Elementwise logistic function 1 / (1 + e^-x), stable for any x; shape and dtype kept."""
    return Sigmoid()(x)


class ReLU(Function):
    op = "relu"

    def forward(self, x):
        self.mask = (x > 0).astype(x.dtype)
        return x * self.mask

    def backward(self, gy):
        return gy * self.mask


def relu(x):
    """Elementwise max(x, 0); shape and dtype kept."""
    return ReLU()(x)


class Softmax(Function):
    def __init__(self, axis):
        self.axis = axis

    def forward(self, x):
        xp = get_array_module(x)
        y = xp.exp(x - x.max(axis=self.axis, keepdims=True))
        y /= y.sum(axis=self.axis, keepdims=True)
        return y

    def backward(self, gy):
        y = self.out()
        gx = y * gy
        return gx - y * gx.sum(axis=self.axis, keepdims=True)


def softmax(x, axis=-1):
    """Softmax along ``axis``, stable for large inputs.

    Args:
        x (Variable | ndarray): any shape, float.
        axis (int): the normalized axis.
    Returns:
        Variable: same shape; sums to 1 along ``axis``.
    """
    return Softmax(axis)(x)


class LogSoftmax(Function):
    def __init__(self, axis):
        self.axis = axis

    def forward(self, x):
        xp = get_array_module(x)
        s = x - x.max(axis=self.axis, keepdims=True)
        return s - xp.log(xp.exp(s).sum(axis=self.axis, keepdims=True))

    def backward(self, gy):
        return gy - dual(Exp(), self.out()) * gy.sum(axis=self.axis, keepdims=True)


def log_softmax(x, axis=-1):
    """log(softmax(x)) along ``axis``, computed stably (log-sum-exp); shape kept."""
    return LogSoftmax(axis)(x)

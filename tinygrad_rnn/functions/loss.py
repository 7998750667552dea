"""Losses and metrics: softmax_cross_entropy, sigmoid_cross_entropy, mean_squared_error, accuracy."""
from tinygrad_rnn.backend import get_array_module
from tinygrad_rnn.core import Config, Function, Variable, as_variable
from tinygrad_rnn.functions.array import _bounded, check_index_range, index_range_error


def _labels(t, op):
    t = t.data if isinstance(t, Variable) else t
    if not hasattr(t, "dtype") or t.dtype.kind not in "iu":
        raise TypeError(f"{op}: labels must be an integer array, got {getattr(t, 'dtype', type(t).__name__)}")
    return t


class SoftmaxCrossEntropy(Function):
    int_inputs = (1,)
    twice_differentiable = False

    def __init__(self, ignore_label):
        self.ignore_label = ignore_label

    def forward(self, x, t):
        xp = get_array_module(x)
        self.x_shape = x.shape
        x2 = x.reshape(-1, x.shape[-1])
        t1 = _bounded(t.ravel(), x.shape[-1])
        self.mask = None if self.ignore_label is None else (t.ravel() != self.ignore_label)
        if self.mask is None:
            self.count = max(t1.size, 1)  # 0 rows: a loss of 0, not 0 / 0
        else:
            t1 = xp.where(self.mask, t1, 0)
            # on the device: no host read in a training step
            self.count = xp.maximum(self.mask.sum(), 1).astype(x.dtype)
        self.t = t1
        rows = xp.arange(t1.size)
        z = x2 - x2.max(axis=1, keepdims=True)
        z_target = z[rows, t1]
        # in place: the (N, C) scores are the largest arrays of a language model. Backward
        # normalizes as it scales, so the softmax itself is never written: one pass less.
        self.e = xp.exp(z, out=z)
        self.s = self.e.sum(axis=1)
        logp = z_target - xp.log(self.s)
        if self.mask is not None:
            logp = logp * self.mask
        return xp.asanyarray(-logp.sum() / self.count, dtype=x.dtype)

    def backward(self, gy):
        xp = get_array_module(gy)
        scale = gy / self.count
        gx = self.e * (scale / self.s)[:, None]  # softmax * scale; a new array: e stays for a second backward
        gx[xp.arange(self.t.size), self.t] -= scale
        if self.mask is not None:
            gx *= self.mask[:, None]
        return gx.reshape(self.x_shape), None


def softmax_cross_entropy(x, t, ignore_label=None):
    """Mean cross-entropy of softmax(x) against integer labels, stable for large logits.

    Labels are validated where data enters (batch sources, data sets). NumPy refuses a label out
    of range here too; on the GPU the range is checked only under ``debug_mode()`` (checking
    costs a device-to-host read in every step).

    Args:
        x (Variable | ndarray): (..., C) scores.
        t (ndarray): (...) integer labels in [0, C), or ``ignore_label``.
        ignore_label (int, optional): entries with this label count neither in the sum nor
            in the mean.
    Returns:
        Variable: () the mean over the counted entries (0 when none counts, also for 0 rows).
    Raises:
        TypeError: ``t`` is not an integer array.
        ValueError: ``t.shape != x.shape[:-1]``.
        IndexError: a label outside [0, C) that is not ``ignore_label`` (see above).
    """
    x = as_variable(x)
    t = _labels(t, "softmax_cross_entropy")
    if x.ndim < 1 or t.shape != x.shape[:-1]:
        raise ValueError(f"softmax_cross_entropy: labels of shape {t.shape} do not match scores "
                         f"of shape {x.shape} (need t.shape == x.shape[:-1])")
    if Config.debug:
        check_index_range("softmax_cross_entropy", "labels", _counted(t, ignore_label), x.shape[-1])
    try:
        return SoftmaxCrossEntropy(ignore_label)(x, t)
    except IndexError:  # NumPy's bounds check: say it in this op's words
        raise index_range_error("softmax_cross_entropy", "labels", _counted(t, ignore_label), x.shape[-1]) from None


def _counted(t, ignore_label):
    return t if ignore_label is None else t[t != ignore_label]


class SigmoidCrossEntropy(Function):
    int_inputs = (1,)
    twice_differentiable = False

    def __init__(self, ignore_label):
        self.ignore_label = ignore_label

    def forward(self, x, t):
        xp = get_array_module(x)
        self.mask = (t != self.ignore_label).astype(x.dtype)
        self.count = xp.maximum(self.mask.sum(), 1)  # on the device: no host read
        self.t = t
        # max(x, 0) - x t + log(1 + e^-|x|): the softplus form that never overflows
        loss = xp.maximum(x, 0) - x * t + xp.log1p(xp.exp(-xp.abs(x)))
        mean = (loss * self.mask).sum() / self.count
        # a label outside {0, 1, ignore_label} makes the loss NaN, checked on the device (no host read)
        invalid = ((t != 0) & (t != 1) & (t != self.ignore_label)).any()
        return xp.asanyarray(xp.where(invalid, xp.nan, mean), dtype=x.dtype)

    def backward(self, gy):
        x = self.inputs[0].data
        xp = get_array_module(x)
        p = xp.tanh(x * 0.5) * 0.5 + 0.5
        # integer labels would promote p - t to float64: the gradient keeps the scores' dtype
        return (p - self.t.astype(x.dtype)) * self.mask * (gy / self.count), None


def sigmoid_cross_entropy(x, t, ignore_label=-1):
    """Mean binary cross-entropy of sigmoid(x) against 0/1 labels, stable for any x.

    Args:
        x (Variable | ndarray): any shape S, scores (logits).
        t (ndarray): S integer labels in {0, 1}, or ``ignore_label``.
        ignore_label (int): entries not counted.
    Returns:
        Variable: () the mean over the counted entries (0 when none counts); NaN when a label
        lies outside {0, 1, ignore_label}, found on the device without a host read.
    Raises:
        TypeError: ``t`` is not an integer array.
        ValueError: ``t.shape != x.shape``, or, under ``debug_mode()`` (which reads the labels
            back), a label outside {0, 1, ignore_label}.
    """
    x = as_variable(x)
    t = _labels(t, "sigmoid_cross_entropy")
    if t.shape != x.shape:
        raise ValueError(f"sigmoid_cross_entropy: labels of shape {t.shape} do not match scores of shape {x.shape}")
    if Config.debug and bool(((t != 0) & (t != 1) & (t != ignore_label)).any()):
        raise ValueError(f"sigmoid_cross_entropy: labels must be 0, 1 or {ignore_label}")
    return SigmoidCrossEntropy(ignore_label)(x, t)


class MeanSquaredError(Function):
    def forward(self, x0, x1):
        diff = x0 - x1
        return (diff * diff).sum() / diff.size

    def backward(self, gy):
        x0, x1 = self.arg(0), self.arg(1)
        g = gy * (x0 - x1) * (2.0 / x0.size)
        return g, -g


def mean_squared_error(x0, x1):
    """Mean of (x0 - x1)^2 over all elements.

    Args:
        x0 (Variable | ndarray): any shape.
        x1 (Variable | ndarray): the shape of ``x0`` (no broadcasting).
    Returns:
        Variable: ().
    Raises:
        ValueError: the shapes differ.
    """
    x0, x1 = as_variable(x0), as_variable(x1)
    if x0.shape != x1.shape:
        raise ValueError(f"mean_squared_error: shapes {x0.shape} and {x1.shape} differ")
    return MeanSquaredError()(x0, x1)


def accuracy(y, t, ignore_label=None):
    """Fraction of rows whose argmax equals the label; no gradient.

    Args:
        y (Variable | ndarray): (..., C) scores.
        t (ndarray): (...) integer labels.
        ignore_label (int, optional): entries not counted.
    Returns:
        Variable: () float32, a leaf (no creator).
    Raises:
        ValueError: ``t.shape != y.shape[:-1]``.
    """
    y = y.data if isinstance(y, Variable) else y
    t = _labels(t, "accuracy")
    if t.shape != y.shape[:-1]:
        raise ValueError(f"accuracy: labels of shape {t.shape} do not match scores of shape {y.shape}")
    xp = get_array_module(y)
    hit = y.argmax(axis=-1) == t
    if ignore_label is not None:
        counted = t != ignore_label
        value = (hit & counted).sum() / max(int(counted.sum()), 1)
    else:
        value = hit.mean()
    return Variable(xp.asarray(value, dtype=xp.float32))

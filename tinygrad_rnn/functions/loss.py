"""Losses and metrics: softmax_cross_entropy, linear_softmax_cross_entropy, sigmoid_cross_entropy,
mean_squared_error, accuracy.

Each loss sums and averages in ``accumulation_dtype`` (float32 at least) and returns the mean in
the scores' dtype: a float16 loss over many rows neither overflows nor stalls. Gradients keep
the scores' dtype.
"""
import numpy as np

from tinygrad_rnn.backend import get_array_module
from tinygrad_rnn.core import Config, Function, Variable, _to_array, as_variable
from tinygrad_rnn.functions.array import _bounded, accumulation_dtype, check_index_range, index_range_error
from tinygrad_rnn.functions.linalg import check_linear, linear_grads


_BLOCK = 1 << 16  # elements of a row block of softmax_cross_entropy on the CPU: 256 KiB of float32


def _labels(t, op):
    t = t.data if isinstance(t, Variable) else t
    if not hasattr(t, "dtype") or t.dtype.kind not in "iu":
        raise TypeError(f"{op}: labels must be an integer array, got {getattr(t, 'dtype', type(t).__name__)}")
    return _to_array(t, op)


def _classes(op, x):
    """Refuse scores without a class axis or with an empty one, naming ``op`` and the shape."""
    if x.ndim < 1 or x.shape[-1] == 0:
        raise ValueError(f"{op}: scores of shape {x.shape} have no classes (need (..., C) with C >= 1)")


class SoftmaxCrossEntropy(Function):
    int_inputs = (1,)
    twice_differentiable = False

    def __init__(self, ignore_label):
        self.ignore_label = ignore_label

    def forward(self, x, t):
        self.x_shape = x.shape
        x2 = x.reshape(-1, x.shape[-1])
        return self._mean(x2, get_array_module(x).empty(x2.shape, x.dtype), t)

    def backward(self, gy):
        return self._scores_grad(gy).reshape(self.x_shape), None

    def _mean(self, scores, e, t, b=None):
        """The mean loss of the (n, C) ``scores`` (plus ``b``, (C,)) against the labels ``t``.

        Keeps in ``e`` (n, C), which may be ``scores`` itself, the exponentials of the shifted
        scores, and what backward needs on ``self``.
        """
        xp = get_array_module(scores)
        acc = accumulation_dtype(scores.dtype)
        n, classes = scores.shape
        t1 = _bounded(t.ravel(), classes)
        self.mask = None if self.ignore_label is None else (t.ravel() != self.ignore_label)
        if self.mask is None:
            self.count = max(t1.size, 1)  # 0 rows: a loss of 0, not 0 / 0
        else:
            t1 = xp.where(self.mask, t1, 0)
            # on the device: no host read in a training step
            self.count = xp.maximum(self.mask.sum(), 1).astype(acc)
        self.t = t1
        # Backward normalizes as it scales, so the softmax itself is never written: one pass less.
        self.e, self.s, self.dtype = e, xp.empty(n, acc), scores.dtype
        z_target = xp.empty(n, scores.dtype)
        # On the CPU, row blocks small enough that the bias, the max, the shift, exp and the sum find
        # the block in the cache (the (N, C) scores of a language model are far larger than the
        # cache): the same operations on the same rows, so the same bits as one block.
        step = n if xp is not np else max(1, _BLOCK // classes)
        for start in range(0, n, step):
            rows = slice(start, start + step)
            block = scores[rows] if b is None else xp.add(scores[rows], b, out=e[rows])
            z = xp.subtract(block, block.max(axis=1, keepdims=True), out=e[rows])
            z_target[rows] = z[xp.arange(z.shape[0]), t1[rows]]
            xp.exp(z, out=z)
            z.sum(axis=1, dtype=acc, out=self.s[rows])
        logp = z_target - xp.log(self.s)
        if self.mask is not None:
            logp = logp * self.mask
        return xp.asanyarray(-logp.sum() / self.count, dtype=scores.dtype)

    def _scores_grad(self, gy):
        """The (n, C) gradient of the scores: softmax * scale, less scale at the labels.

        When the graph is freed after this backward (``final``), it is written over the
        exponentials, which no later backward needs; otherwise it is a new array.
        """
        xp = get_array_module(gy)
        if self.e is None:
            raise RuntimeError(f"{self.op}: a backward that was refused already used what forward saved; "
                               "run the forward again")
        scale = gy.astype(self.s.dtype, copy=False) / self.count
        ratio = (scale / self.s)[:, None]
        if self.final and self.e.dtype == ratio.dtype:  # float16 scores: scaled in float32, as below
            gx, self.e = xp.multiply(self.e, ratio, out=self.e), None
        else:
            gx = self.e * ratio
        gx[xp.arange(self.t.size), self.t] -= scale
        if self.mask is not None:
            gx *= self.mask[:, None]
        return gx.astype(self.dtype, copy=False)


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
        ValueError: ``t.shape != x.shape[:-1]``, or ``x`` has no classes (``C == 0``).
        IndexError: a label outside [0, C) that is not ``ignore_label`` (see above).
    """
    x = as_variable(x)
    t = _labels(t, "softmax_cross_entropy")
    _classes("softmax_cross_entropy", x)
    if t.shape != x.shape[:-1]:
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


class LinearSoftmaxCrossEntropy(SoftmaxCrossEntropy):
    fresh_grads = True

    def __init__(self, ignore_label, bias):
        super().__init__(ignore_label)
        self.bias = bias
        self.int_inputs = (3,) if bias else (2,)  # the labels come last

    def forward(self, x, W, *rest):
        scores = x.reshape(-1, x.shape[-1]) @ W  # no one else sees them: the exponentials overwrite them
        return self._mean(scores, scores, rest[-1], *rest[:-1])

    def backward(self, gy):
        return (*linear_grads(self, self._scores_grad(gy), self.bias), None)


def linear_softmax_cross_entropy(x, W, b, t, ignore_label=None):
    """``softmax_cross_entropy(linear(x, W, b), t, ignore_label)`` as one op: the loss of an output layer.

    The same operations in the same order, so the same loss and gradients, bit for bit, as the two
    ops; but the (..., C) scores are never a Variable of their own: the exponentials are written
    over them, and backward writes the scores' gradient over those (unless the graph is
    retained), so the largest arrays of a language model's step exist once.

    Args:
        x (Variable | ndarray): (..., D).
        W (Variable | ndarray): (D, C).
        b (Variable | ndarray | None): (C,), or None for no bias.
        t (ndarray): (...) integer labels in [0, C), or ``ignore_label``.
        ignore_label (int, optional): as ``softmax_cross_entropy``.
    Returns:
        Variable: () the mean over the counted entries.
    Raises:
        TypeError: ``t`` is not an integer array.
        ValueError: the shapes do not fit (as ``linear``), ``t.shape != x.shape[:-1]``, or C == 0.
        IndexError: a label outside [0, C) (as ``softmax_cross_entropy``).
    """
    op = "linear_softmax_cross_entropy"
    x, W = as_variable(x), as_variable(W)
    b = None if b is None else as_variable(b)
    t = _labels(t, op)
    check_linear(op, x, W, b)
    _classes(op, W)
    if t.shape != x.shape[:-1]:
        raise ValueError(f"{op}: labels of shape {t.shape} do not match inputs of shape {x.shape} "
                         "(need t.shape == x.shape[:-1])")
    if Config.debug:
        check_index_range(op, "labels", _counted(t, ignore_label), W.shape[1])
    func = LinearSoftmaxCrossEntropy(ignore_label, b is not None)
    try:
        return func(x, W, t) if b is None else func(x, W, b, t)
    except IndexError:  # NumPy's bounds check: say it in this op's words
        raise index_range_error(op, "labels", _counted(t, ignore_label), W.shape[1]) from None


class SigmoidCrossEntropy(Function):
    int_inputs = (1,)
    twice_differentiable = False

    def __init__(self, ignore_label):
        self.ignore_label = ignore_label

    def forward(self, x, t):
        xp = get_array_module(x)
        acc = accumulation_dtype(x.dtype)
        self.mask = (t != self.ignore_label).astype(x.dtype)
        self.count = xp.maximum(self.mask.sum(dtype=acc), 1)  # on the device: no host read
        self.t = (t == 1).astype(x.dtype)  # in the scores' dtype: integer labels would promote to float64
        # max(x, 0) - x t + log(1 + e^-|x|): the softplus form that never overflows
        loss = xp.maximum(x, 0) - x * self.t + xp.log1p(xp.exp(-xp.abs(x)))
        mean = (loss * self.mask).sum(dtype=acc) / self.count
        # a label outside {0, 1, ignore_label} (only the GPU gets here with one: see the wrapper) makes
        # the loss and the gradient NaN, found on the device without a host read
        self.invalid = ((t != 0) & (t != 1) & (t != self.ignore_label)).any()
        return xp.asanyarray(xp.where(self.invalid, xp.nan, mean), dtype=x.dtype)

    def backward(self, gy):
        x = self.inputs[0].data
        xp = get_array_module(x)
        p = xp.tanh(x * 0.5) * 0.5 + 0.5
        scale = xp.where(self.invalid, xp.nan, gy.astype(self.count.dtype, copy=False) / self.count)
        return ((p - self.t) * self.mask * scale).astype(x.dtype, copy=False), None


def sigmoid_cross_entropy(x, t, ignore_label=-1):
    """Mean binary cross-entropy of sigmoid(x) against 0/1 labels, stable for any x.

    Args:
        x (Variable | ndarray): any shape S, scores (logits).
        t (ndarray): S integer labels in {0, 1}, or ``ignore_label``.
        ignore_label (int): entries not counted.
    Returns:
        Variable: () the mean over the counted entries (0 when none counts).
    Raises:
        TypeError: ``t`` is not an integer array.
        ValueError: ``t.shape != x.shape``, or a label outside {0, 1, ignore_label}. NumPy labels
            are always checked; CuPy labels only under ``debug_mode()`` (checking reads them back
            to the host), and otherwise such a label makes the loss and its gradient NaN.
    """
    x = as_variable(x)
    t = _labels(t, "sigmoid_cross_entropy")
    if t.shape != x.shape:
        raise ValueError(f"sigmoid_cross_entropy: labels of shape {t.shape} do not match scores of shape {x.shape}")
    if Config.debug or isinstance(t, np.ndarray):
        bad = t[(t != 0) & (t != 1) & (t != ignore_label)]
        if bad.size:
            raise ValueError(f"sigmoid_cross_entropy: labels must be 0, 1 or {ignore_label} (ignore_label), "
                             f"got {int(bad.size)} other(s), among them {sorted({int(v) for v in bad[:5]})}")
    return SigmoidCrossEntropy(ignore_label)(x, t)


class MeanSquaredError(Function):
    def forward(self, x0, x1):
        xp = get_array_module(x0)
        diff = x0 - x1
        wide = diff.astype(accumulation_dtype(diff.dtype), copy=False)  # float16 squares overflow above 256
        return xp.asarray((wide * wide).sum() / diff.size, dtype=diff.dtype)

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
        ValueError: ``t.shape != y.shape[:-1]``, or ``y`` has no classes (``C == 0``).
    """
    y = as_variable(y).data
    t = _labels(t, "accuracy")
    _classes("accuracy", y)
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

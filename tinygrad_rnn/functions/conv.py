"""Image ops on (N, C, H, W) arrays: conv2d (im2col and one matmul), max_pool2d, flatten.

Both ops read every sliding window through one strided view of the (padded) input: conv2d
copies it once into the im2col matrix and does one matmul, max_pool2d takes a running max over
its kernel offsets. Their backward passes loop over the KH * KW kernel offsets, adding one
strided slice each (col2im), which needs only basic indexing and so runs unchanged on NumPy
and CuPy.
"""
from tinygrad_rnn.backend import get_array_module
from tinygrad_rnn.core import Function, as_variable
from tinygrad_rnn.functions.array import Reshape


def _pair(value, what, op, minimum):
    """``value`` as an (int, int) pair for the height and width axes."""
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2 or any(int(v) != v or v < minimum for v in pair):
        raise ValueError(f"{op}: {what} must be an int >= {minimum} or a pair of them, got {value!r}")
    return int(pair[0]), int(pair[1])


def _windows(x, kernel, stride, pad, fill):
    """Every window of ``x``, padded with ``fill``, as a read-only strided view.

    Args:
        x (ndarray): (N, C, H, W).
        kernel, stride, pad (tuple): (height, width) pairs.
        fill (float): value of the padding.
    Returns:
        ndarray: (KH, KW, C, N, OH, OW), a view that repeats elements (no copy). Kernel
        offsets lead so that reducing over them (pooling) or contracting them (the conv
        matmul) works on long contiguous rows; NumPy's batched matmul and reductions over a
        short last axis are several times slower.
    """
    xp = get_array_module(x)
    (kh, kw), (sy, sx), (py, px) = kernel, stride, pad
    if py or px:
        x = xp.pad(x, ((0, 0), (0, 0), (py, py), (px, px)), constant_values=fill)
    n, c, h, w = x.shape
    oh, ow = (h - kh) // sy + 1, (w - kw) // sx + 1
    s_n, s_c, s_h, s_w = x.strides
    return xp.lib.stride_tricks.as_strided(x, shape=(kh, kw, c, n, oh, ow),
                                           strides=(s_h, s_w, s_c, s_n, s_h * sy, s_w * sx))


def _col2im(gcol, x_shape, stride, pad):
    """Sum window gradients back onto the input: the adjoint of ``_windows`` (col2im).

    Args:
        gcol (ndarray): (KH, KW, C, N, OH, OW), the gradient of every window element.
        x_shape (tuple): (N, C, H, W) of the unpadded input.
        stride, pad (tuple): (height, width) pairs.
    Returns:
        ndarray: (N, C, H, W), a transposed view of a (C, N, H, W) array.
    """
    xp = get_array_module(gcol)
    kh, kw, c, n, oh, ow = gcol.shape
    (sy, sx), (py, px) = stride, pad
    h, w = x_shape[2] + 2 * py, x_shape[3] + 2 * px
    gx = xp.zeros((c, n, h, w), dtype=gcol.dtype)
    for i in range(kh):
        for j in range(kw):
            # windows overlap when the stride is below the kernel: accumulate, never assign
            gx[:, :, i:i + sy * (oh - 1) + 1:sy, j:j + sx * (ow - 1) + 1:sx] += gcol[i, j]
    return gx[:, :, py:h - py, px:w - px].transpose(1, 0, 2, 3)


class Conv2d(Function):
    """2-D cross-correlation as im2col + one matmul; backward is two matmuls + col2im."""

    twice_differentiable = False  # backward uses the saved im2col matrix and plain array math

    def __init__(self, stride, pad):
        self.stride = stride
        self.pad = pad

    def forward(self, x, W, b=None):
        oc, c, kh, kw = W.shape
        windows = _windows(x, (kh, kw), self.stride, self.pad, 0)
        n, oh, ow = windows.shape[3:]
        self.col = windows.reshape(kh * kw * c, n * oh * ow)  # the one gather
        y = W.transpose(0, 2, 3, 1).reshape(oc, -1) @ self.col  # (OC, N*OH*OW), rows ordered like col's
        if b is not None:
            y += b[:, None]
        return y.reshape(oc, n, oh, ow).transpose(1, 0, 2, 3)

    def backward(self, gy):
        x, W = self.arg(0), self.arg(1)
        oc, c, kh, kw = W.shape
        n, _, oh, ow = gy.shape
        xp = get_array_module(gy)
        # contiguous rows: NumPy's matmul falls back to a slow loop on operands that BLAS cannot stride
        gy2 = xp.ascontiguousarray(gy.transpose(1, 0, 2, 3)).reshape(oc, -1)
        gW = (gy2 @ self.col.T).reshape(oc, kh, kw, c).transpose(0, 3, 1, 2)
        gcol = (W.transpose(2, 3, 1, 0).reshape(-1, oc) @ gy2).reshape(kh, kw, c, n, oh, ow)
        gx = _col2im(gcol, x.shape, self.stride, self.pad)
        if len(self.inputs) == 2:
            return gx, gW
        return gx, gW, gy2.sum(axis=1)


def conv2d(x, W, b=None, stride=1, pad=0):
    """2-D convolution (cross-correlation, as in every deep-learning library) with zero padding.

    ``y[n, o, i, j] = b[o] + sum_{c, p, q} W[o, c, p, q] * xpad[n, c, i*SY + p, j*SX + q]``,
    with ``OH = (H + 2*PY - KH) // SY + 1`` and ``OW = (W + 2*PX - KW) // SX + 1``.

    Args:
        x (Variable | ndarray): (N, C, H, W), float.
        W (Variable | ndarray): (OC, C, KH, KW) filters.
        b (Variable | ndarray, optional): (OC,) bias.
        stride (int | tuple): SY = SX, or (SY, SX); each >= 1.
        pad (int | tuple): PY = PX, or (PY, PX) zeros on each side; each >= 0.
    Returns:
        Variable: (N, OC, OH, OW), the dtype of ``x``.
    Raises:
        ValueError: ``x`` or ``W`` is not 4-D, their channel counts differ, ``b`` is not
            (OC,), the stride or padding is invalid, or the padded input is smaller than the
            kernel.
    """
    x, W = as_variable(x), as_variable(W)
    b = None if b is None else as_variable(b)
    stride, pad = _pair(stride, "stride", "conv2d", 1), _pair(pad, "pad", "conv2d", 0)
    if x.ndim != 4 or W.ndim != 4:
        raise ValueError(f"conv2d: need x (N, C, H, W) and W (OC, C, KH, KW), got shapes {x.shape} and {W.shape}")
    if x.shape[1] != W.shape[1]:
        raise ValueError(f"conv2d: x of shape {x.shape} has {x.shape[1]} channels, W of shape {W.shape} "
                         f"expects {W.shape[1]}")
    if b is not None and b.shape != (W.shape[0],):
        raise ValueError(f"conv2d: b of shape {b.shape} does not fit W of shape {W.shape} (need ({W.shape[0]},))")
    _check_fits("conv2d", x.shape, W.shape[2:], pad)
    return Conv2d(stride, pad)(x, W) if b is None else Conv2d(stride, pad)(x, W, b)


def _check_fits(op, x_shape, kernel, pad):
    padded = (x_shape[2] + 2 * pad[0], x_shape[3] + 2 * pad[1])
    if padded[0] < kernel[0] or padded[1] < kernel[1]:
        raise ValueError(f"{op}: input of shape {x_shape} padded by {pad} is {padded}, smaller than the "
                         f"kernel {tuple(kernel)}")


class MaxPool2d(Function):
    """Max over each window; backward routes every gradient to its window's (first) maximum."""

    twice_differentiable = False  # backward uses the saved argmax and plain array math

    def __init__(self, kernel, stride, pad):
        self.kernel = kernel
        self.stride = stride
        self.pad = pad

    def forward(self, x):
        xp = get_array_module(x)
        windows = _windows(x, self.kernel, self.stride, self.pad, -xp.inf)
        kh, kw = self.kernel
        # A running max over the kernel offsets: NumPy's argmax over a leading axis copies the
        # whole window array first, which is several times slower than these elementwise passes.
        y = windows[0, 0]
        self.argmax = xp.zeros(y.shape, dtype=xp.int32)  # (C, N, OH, OW); strict > keeps the first maximum
        for k in range(1, kh * kw):
            v = windows[k // kw, k % kw]
            better = v > y
            y = xp.where(better, v, y)
            # where, not argmax[better] = k: CuPy reads a boolean mask's count back to the host
            self.argmax = xp.where(better, xp.int32(k), self.argmax)
        self.x_shape = x.shape
        return y.transpose(1, 0, 2, 3)

    def backward(self, gy):
        xp = get_array_module(gy)
        kh, kw = self.kernel
        offsets = xp.arange(kh * kw).reshape(-1, 1, 1, 1, 1)
        gcol = (offsets == self.argmax) * gy.transpose(1, 0, 2, 3)  # (KH*KW, C, N, OH, OW)
        return _col2im(gcol.reshape((kh, kw) + gcol.shape[1:]), self.x_shape, self.stride, self.pad)


def max_pool2d(x, kernel, stride=None, pad=0):
    """2-D max pooling; padding never wins (it is -inf).

    Args:
        x (Variable | ndarray): (N, C, H, W), float.
        kernel (int | tuple): KH = KW, or (KH, KW); each >= 1.
        stride (int | tuple, optional): as ``kernel``; None means the kernel (windows tile
            the input without overlap).
        pad (int | tuple): PY = PX, or (PY, PX); each at most half the kernel, so that every
            window holds at least one input element.
    Returns:
        Variable: (N, C, OH, OW) with ``OH = (H + 2*PY - KH) // SY + 1`` (OW alike).
    Raises:
        ValueError: ``x`` is not 4-D, the kernel, stride or padding is invalid, or the padded
            input is smaller than the kernel.
    """
    x = as_variable(x)
    kernel = _pair(kernel, "kernel", "max_pool2d", 1)
    stride = kernel if stride is None else _pair(stride, "stride", "max_pool2d", 1)
    pad = _pair(pad, "pad", "max_pool2d", 0)
    if x.ndim != 4:
        raise ValueError(f"max_pool2d: x must be (N, C, H, W), got shape {x.shape}")
    if pad[0] > kernel[0] // 2 or pad[1] > kernel[1] // 2:
        raise ValueError(f"max_pool2d: pad {pad} must be at most half the kernel {kernel}")
    _check_fits("max_pool2d", x.shape, kernel, pad)
    return MaxPool2d(kernel, stride, pad)(x)


def flatten(x):
    """Keep the first axis and flatten the rest (the bridge from a CNN to a Linear layer).

    Args:
        x (Variable | ndarray): (N, ...), at least 1-D.
    Returns:
        Variable: (N, product of the other sides).
    Raises:
        ValueError: ``x`` is 0-D.
    """
    x = as_variable(x)
    if x.ndim < 1:
        raise ValueError("flatten: x must have a batch axis, got a 0-d array")
    return Reshape((x.shape[0], -1))(x)

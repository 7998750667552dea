"""Image layers on (N, C, H, W) inputs: Conv2d, MaxPool2d, Flatten."""
import numbers

import numpy as np

from tinygrad_rnn import functions as F
from tinygrad_rnn import initializers
from tinygrad_rnn.core import Parameter
from tinygrad_rnn.layers.base import Layer
from tinygrad_rnn.layers.basic import _float_dtype


class Conv2d(Layer):
    """2-D convolution ``F.conv2d``.

    Args:
        in_channels (int): C.
        out_channels (int): OC.
        kernel_size (int | tuple): KH = KW, or (KH, KW).
        stride (int | tuple): SY = SX, or (SY, SX).
        pad (int | tuple): zeros added on each side, PY = PX, or (PY, PX).
        nobias (bool): no bias ``b``.
        seed (int | numpy.random.Generator | None): randomness of the initializers.
        dtype (numpy.dtype): float dtype of the parameters.
        init (str): preset: "classic" (W ~ N(0, 2 / (C*KH*KW)), the He initialization that keeps
            the activation scale through ReLU layers, and b = 0) or "pytorch" (W and b
            ~ U(-1/sqrt(C*KH*KW), 1/sqrt(C*KH*KW)), as ``torch.nn.Conv2d``).
        W_init (callable, optional): an initializer that replaces the preset's for ``W``; it gets
            fan_in C*KH*KW and fan_out OC*KH*KW.
        b_init (callable, optional): the same for ``b``, with the same fans.
    Attributes:
        W (Parameter): (OC, C, KH, KW), PyTorch's layout.
        b (Parameter | None): (OC,).
    Raises:
        ValueError: a channel count or kernel side is not a positive int, or an unknown preset.
        TypeError: a dtype that is not a float dtype, or an initializer that is not callable.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, pad=0, nobias=False, seed=None,
                 dtype=np.float32, *, init="classic", W_init=None, b_init=None):
        super().__init__()
        kernel = tuple(kernel_size) if isinstance(kernel_size, (tuple, list)) else (kernel_size, kernel_size)
        sizes = (in_channels, out_channels, *kernel)
        if len(kernel) != 2 or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1
                                       for v in sizes):
            raise ValueError(f"Conv2d: channels and kernel sides must be positive ints, got "
                             f"in_channels={in_channels!r}, out_channels={out_channels!r}, kernel_size={kernel_size!r}")
        dtype = _float_dtype("Conv2d", dtype)
        inits = initializers.preset("Conv2d", init, "conv", W=W_init, b=b_init)
        self.stride = stride
        self.pad = pad
        kh, kw = kernel
        fans = {"fan_in": in_channels * kh * kw, "fan_out": out_channels * kh * kw, "rng": np.random.default_rng(seed),
                "dtype": dtype}
        self.W = Parameter(inits["W"]((out_channels, in_channels, kh, kw), **fans))
        self.b = None if nobias else Parameter(inits["b"]((out_channels,), **fans))

    def forward(self, x):
        """Convolve.

        Args:
            x (Variable | ndarray): (N, C, H, W).
        Returns:
            Variable: (N, OC, OH, OW), see ``F.conv2d``.
        """
        return F.conv2d(x, self.W, self.b, stride=self.stride, pad=self.pad)


class MaxPool2d(Layer):
    """2-D max pooling ``F.max_pool2d`` (no parameters).

    Args:
        kernel_size (int | tuple): KH = KW, or (KH, KW).
        stride (int | tuple, optional): None means ``kernel_size`` (no overlap).
        pad (int | tuple): -inf padding on each side, at most half the kernel.
    """

    def __init__(self, kernel_size, stride=None, pad=0):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride
        self.pad = pad

    def forward(self, x):
        """Pool.

        Args:
            x (Variable | ndarray): (N, C, H, W).
        Returns:
            Variable: (N, C, OH, OW), see ``F.max_pool2d``.
        """
        return F.max_pool2d(x, self.kernel_size, self.stride, self.pad)


class Flatten(Layer):
    """Flatten every axis but the first: (N, C, H, W) -> (N, C*H*W), before a Linear layer."""

    def forward(self, x):
        """Flatten.

        Args:
            x (Variable | ndarray): (N, ...).
        Returns:
            Variable: (N, product of the other sides).
        """
        return F.flatten(x)

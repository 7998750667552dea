"""Image layers on (N, C, H, W) inputs: Conv2d, MaxPool2d, Flatten."""
import numpy as np

from tinygrad_rnn import functions as F
from tinygrad_rnn import initializers
from tinygrad_rnn.core import Parameter
from tinygrad_rnn.layers.base import Layer


class Conv2d(Layer):
    """2-D convolution ``F.conv2d`` with He-initialized filters.

    Args:
        in_channels (int): C.
        out_channels (int): OC.
        kernel_size (int | tuple): KH = KW, or (KH, KW).
        stride (int | tuple): SY = SX, or (SY, SX).
        pad (int | tuple): zeros added on each side, PY = PX, or (PY, PX).
        nobias (bool): no bias ``b``.
        seed (int | numpy.random.Generator | None): randomness of ``W`` ~ N(0, 2 / (C*KH*KW)),
            the He initialization that keeps the activation scale through ReLU layers.
        dtype: float dtype of the parameters.
    Attributes:
        W (Parameter): (OC, C, KH, KW).
        b (Parameter | None): (OC,), zeros.
    Raises:
        ValueError: a size is not a positive int.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, pad=0, nobias=False, seed=None,
                 dtype=np.float32):
        super().__init__()
        kh, kw = kernel_size if isinstance(kernel_size, (tuple, list)) else (kernel_size, kernel_size)
        if min(in_channels, out_channels, kh, kw) < 1:
            raise ValueError(f"Conv2d: channels and kernel sides must be positive, got in_channels={in_channels}, "
                             f"out_channels={out_channels}, kernel_size={kernel_size}")
        self.stride = stride
        self.pad = pad
        fan_in = in_channels * kh * kw
        self.W = Parameter(initializers.normal((out_channels, in_channels, kh, kw), np.sqrt(2.0 / fan_in),
                                               np.random.default_rng(seed), dtype))
        self.b = None if nobias else Parameter(initializers.zeros((out_channels,), dtype))

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

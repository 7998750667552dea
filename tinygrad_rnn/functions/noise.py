"""Dropout (inverted: the kept units are scaled by 1 / (1 - p), so test time needs no rescaling)."""
import numpy as np

from tinygrad_rnn.backend import get_array_module, uniform
from tinygrad_rnn.core import Config, Function, Variable, as_variable


class Dropout(Function):
    def __init__(self, scale):
        self.scale = scale

    def forward(self, x):
        return x * self.scale

    def backward(self, gy):
        return gy * self.scale


def dropout_mask(shape, p, rng, like):
    """A keep-mask for dropout: 1 with probability 1 - p, else 0.

    Args:
        shape (tuple): mask shape, e.g. (N, H) for one mask shared by all time steps.
        p (float): drop probability in [0, 1).
        rng (numpy.random.Generator): the randomness (also seeds the GPU stream).
        like (ndarray | Variable): array whose device and dtype the mask takes.
    Returns:
        ndarray: ``shape``, dtype of ``like``.
    """
    like = like.data if isinstance(like, Variable) else like
    xp = get_array_module(like)
    return (uniform(shape, rng, xp, like.dtype) >= p).astype(like.dtype)


def dropout(x, p=0.5, mask=None, rng=None):
    """Inverted dropout; the identity under ``test_mode()`` or when ``p == 0``.

    Args:
        x (Variable | ndarray): any shape, float.
        p (float): drop probability in [0, 1).
        mask (ndarray, optional): a given 0/1 keep-mask of ``x``'s shape (e.g. reused across
            time steps for variational dropout); drawn from ``rng`` when None.
        rng (numpy.random.Generator, optional): source of the mask; a fresh generator when None.
    Returns:
        Variable: same shape; kept units scaled by 1 / (1 - p).
    Raises:
        ValueError: ``p`` outside [0, 1) or a mask of another shape.
    """
    x = as_variable(x)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout: p must lie in [0, 1), got {p}")
    if not Config.train or p == 0.0:
        return x
    if mask is None:
        mask = dropout_mask(x.shape, p, rng if rng is not None else np.random.default_rng(), x)
    elif mask.shape != x.shape:
        raise ValueError(f"dropout: mask of shape {mask.shape} does not match input of shape {x.shape}")
    return Dropout(mask * x.dtype.type(1.0 / (1.0 - p)))(x)

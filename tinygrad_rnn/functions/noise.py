"""Dropout (inverted: the kept units are scaled by 1 / (1 - p), so test time needs no rescaling).

Masks come from a counter-based ``tinygrad_rnn.random.Generator``: the same bits on NumPy and
CuPy for the same generator state, one kernel per mask on the GPU, and any rows of a mask can be
drawn alone (a data-parallel rank draws its rows of the full-batch mask: ``Generator.set_part``).
"""
from tinygrad_rnn import random
from tinygrad_rnn.backend import get_array_module
from tinygrad_rnn.core import Config, Function, Variable, as_variable

class Dropout(Function):
    def __init__(self, scale):
        self.scale = scale

    def forward(self, x):
        return x * self.scale

    def backward(self, gy):
        return gy * self.scale


def dropout_mask(shape, p, generator, like, rows=None):
    """A keep-mask for dropout: 1 with probability 1 - p, else 0.

    Args:
        shape (tuple): the full mask's shape, e.g. (N, 1, H) for one mask shared by all time steps.
        p (float): drop probability in [0, 1).
        generator (tinygrad_rnn.random.Generator): the randomness; its counter advances by the
            whole mask's draw.
        like (ndarray | Variable): array whose device and dtype the mask takes.
        rows (tuple, optional): ``(start, stop)``: only these rows of the first axis, the same
            values as in the full mask. Without it, a generator that holds a part of a combined
            batch (``Generator.set_part``) draws ``shape``, its rows, as that part of the
            combined batch's mask.
    Returns:
        ndarray: ``shape`` (or its rows), dtype of ``like``.
    """
    like = like.data if isinstance(like, Variable) else like
    return generator.keep_mask(shape, p, like.dtype, get_array_module(like), rows)


def dropout(x, p=0.5, mask=None, generator=None):
    """Inverted dropout; the identity under ``test_mode()`` or when ``p == 0``.

    Args:
        x (Variable | ndarray): any shape, float.
        p (float): drop probability in [0, 1).
        mask (ndarray, optional): a given 0/1 keep-mask of ``x``'s shape (e.g. reused across
            time steps for variational dropout); drawn from ``generator`` when None.
        generator (tinygrad_rnn.random.Generator, optional): source of the mask; a freshly
            seeded one when None (not reproducible).
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
        mask = dropout_mask(x.shape, p, generator if generator is not None else random.Generator(), x)
    elif mask.shape != x.shape:
        raise ValueError(f"dropout: mask of shape {mask.shape} does not match input of shape {x.shape}")
    return Dropout(mask * x.dtype.type(1.0 / (1.0 - p)))(x)

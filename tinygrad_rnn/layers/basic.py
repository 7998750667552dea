"""Feed-forward layers: Linear, TiedLinear, Embedding, Dropout."""
import numpy as np

from tinygrad_rnn import functions as F
from tinygrad_rnn import initializers
from tinygrad_rnn.backend import get_array_module
from tinygrad_rnn.core import Parameter, as_variable
from tinygrad_rnn.layers.base import Layer


def _affine(x, W, b):
    """``x @ W + b`` over the last axis of an input of any rank.

    Inputs of more than 2 dimensions are flattened to one 2-D product: NumPy multiplies a
    3-D gradient by ``W.T`` batch item by batch item, about 3x slower than one 2-D product
    at language-model sizes (N=20, T=35, V=10000).
    """
    x = as_variable(x)
    if x.ndim <= 2:
        return F.linear(x, W, b)
    y = F.linear(F.reshape(x, (-1, x.shape[-1])), W, b)
    return F.reshape(y, x.shape[:-1] + (y.shape[-1],))


class Linear(Layer):
    """Affine map ``y = x @ W + b`` over the last axis.

    Args:
        in_size (int | None): D; None infers it from the first input (``W`` is created then).
        out_size (int): H.
        nobias (bool): no bias ``b``.
        seed (int | numpy.random.Generator | None): randomness of ``W`` ~ N(0, 1 / D).
        dtype: float dtype of the parameters.
    Attributes:
        W (Parameter): (D, H).
        b (Parameter | None): (H,), zeros.
    """

    def __init__(self, in_size, out_size, nobias=False, seed=None, dtype=np.float32):
        super().__init__()
        self.out_size = out_size
        self.dtype = np.dtype(dtype)
        self.rng = np.random.default_rng(seed)
        self.W = None
        if in_size is not None:
            self._init_W(in_size)
        self.b = None if nobias else Parameter(initializers.zeros((out_size,), self.dtype))

    def _init_W(self, in_size):
        self.W = Parameter(initializers.fan_in_normal((in_size, self.out_size), self.rng, self.dtype))

    def forward(self, x):
        """Apply the map.

        Args:
            x (Variable | ndarray): (..., D).
        Returns:
            Variable: (..., H).
        """
        if self.W is None:
            self._init_W(x.shape[-1])
            if get_array_module(x) is not np:
                self.W.to_gpu()
        return _affine(x, self.W, self.b)


class Embedding(Layer):
    """Lookup table of word vectors.

    Args:
        vocab_size (int): V.
        dim (int): D.
        seed (int | numpy.random.Generator | None): randomness of ``W`` ~ N(0, 0.01^2).
        dtype: float dtype of ``W``.
    Attributes:
        W (Parameter): (V, D).
    """

    def __init__(self, vocab_size, dim, seed=None, dtype=np.float32):
        super().__init__()
        self.W = Parameter(initializers.embedding_normal((vocab_size, dim), np.random.default_rng(seed), dtype))

    def forward(self, ids):
        """Look up rows.

        Args:
            ids (ndarray | Variable): integer ids of any shape S, each in [0, V).
        Returns:
            Variable: S + (D,).
        """
        return F.embed_id(ids, self.W)


class TiedLinear(Layer):
    """Output projection that reuses an Embedding's matrix: ``y = x @ E.W.T + b``.

    The weight is the Embedding's own Parameter (weight tying), so a model that holds both
    layers lists it once in ``params()`` and keeps the Embedding's name for it; attach the
    Embedding to the model before this layer.

    Args:
        embedding (Embedding): the layer whose ``W`` (V, D) is shared.
        nobias (bool): no bias ``b``.
    Attributes:
        W (Parameter): (V, D), the Embedding's ``W``.
        b (Parameter | None): (V,), zeros, of ``W``'s dtype.
    """

    def __init__(self, embedding, nobias=False):
        super().__init__()
        self.W = embedding.W
        self.b = None if nobias else Parameter(initializers.zeros((self.W.shape[0],), self.W.dtype))

    def forward(self, x):
        """Apply the projection.

        Args:
            x (Variable | ndarray): (..., D).
        Returns:
            Variable: (..., V).
        """
        return _affine(x, F.transpose(self.W), self.b)


class Dropout(Layer):
    """Inverted dropout, active only while ``training`` and outside ``test_mode()``.

    Args:
        p (float): drop probability in [0, 1).
        seed (int | numpy.random.Generator | None): the layer's source of masks.
    Raises:
        ValueError: ``p`` outside [0, 1).
    """

    def __init__(self, p=0.5, seed=None):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: p must lie in [0, 1), got {p}")
        self.p = p
        self.rng = np.random.default_rng(seed)

    def forward(self, x):
        """Drop units with probability ``p`` and scale the rest by 1 / (1 - p).

        Args:
            x (Variable | ndarray): any shape, float.
        Returns:
            Variable: same shape (``x`` itself when inactive).
        """
        if not self.training:
            return as_variable(x)
        return F.dropout(x, self.p, rng=self.rng)

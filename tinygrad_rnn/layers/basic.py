"""Feed-forward layers: Linear, TiedLinear, Embedding, Dropout."""
import numbers

import numpy as np

from tinygrad_rnn import functions as F
from tinygrad_rnn import initializers, random
from tinygrad_rnn.backend import get_array_module
from tinygrad_rnn.core import Parameter
from tinygrad_rnn.checks import integer
from tinygrad_rnn.layers.base import Layer, _float_dtype


class Linear(Layer):
    """Affine map ``y = x @ W + b`` over the last axis.

    Args:
        in_size (int | None): D; None infers it from the first input (``W`` and ``b`` are
            created then, so they are not in ``params()`` before the first call).
        out_size (int): H.
        nobias (bool): no bias ``b``.
        seed (int | numpy.random.Generator | None): randomness of the initializers.
        dtype (numpy.dtype): float dtype of the parameters.
        init (str): preset: "classic" (W ~ N(0, 1/D), b = 0) or "pytorch" (W and b
            ~ U(-1/sqrt(D), 1/sqrt(D)), as ``torch.nn.Linear``); see ``initializers.preset``.
        W_init (callable, optional): an initializer (``tinygrad_rnn.initializers``) that replaces
            the preset's for ``W``; it gets fan_in D and fan_out H.
        b_init (callable, optional): the same for ``b``, with the same fans.
    Attributes:
        W (Parameter | None): (D, H).
        b (Parameter | None): (H,).
    Raises:
        TypeError, ValueError: a size that is not a positive int, a dtype that is not a float
            dtype, an unknown preset or an initializer that is not callable.
    """

    def __init__(self, in_size, out_size, nobias=False, seed=None, dtype=np.float32, *, init="classic", W_init=None,
                 b_init=None):
        super().__init__()
        self.out_size = integer("Linear", "out_size", out_size)
        self.dtype = _float_dtype("Linear", dtype)
        self.nobias = nobias
        self.rng = np.random.default_rng(seed)
        self._inits = initializers.preset("Linear", init, "linear", W=W_init, b=b_init)
        self.W = None
        self.b = None
        if in_size is not None:
            self._create(integer("Linear", "in_size", in_size))

    def _create(self, in_size):
        fans = {"fan_in": in_size, "fan_out": self.out_size, "rng": self.rng, "dtype": self.dtype}
        self.W = Parameter(self._inits["W"]((in_size, self.out_size), **fans))
        if not self.nobias:
            self.b = Parameter(self._inits["b"]((self.out_size,), **fans))

    def forward(self, x):
        """Apply the map.

        Args:
            x (Variable | ndarray): (..., D).
        Returns:
            Variable: (..., H).
        """
        self._created_for(x)
        return F.linear(x, self.W, self.b)

    def softmax_cross_entropy(self, x, t, ignore_label=None):
        """``F.softmax_cross_entropy(self(x), t, ignore_label)`` as one op (``F.linear_softmax_cross_entropy``).

        The loss of an output layer: the same value and gradients, but the (..., H) scores are
        never kept (see the op).

        Args:
            x (Variable | ndarray): (..., D).
            t (ndarray): (...) integer labels in [0, H), or ``ignore_label``.
            ignore_label (int, optional): targets left out of the mean.
        Returns:
            Variable: () the mean cross-entropy.
        """
        self._created_for(x)
        return F.linear_softmax_cross_entropy(x, self.W, self.b, t, ignore_label)

    def _created_for(self, x):
        if self.W is None:
            self._create(x.shape[-1])
            if get_array_module(x) is not np:
                for p in self.params():
                    p.to_gpu()


class Embedding(Layer):
    """Lookup table of word vectors.

    Args:
        vocab_size (int): V.
        dim (int): D.
        seed (int | numpy.random.Generator | None): randomness of the initializer.
        dtype (numpy.dtype): float dtype of ``W``.
        init (str): preset: "classic" (W ~ N(0, 0.01^2)) or "pytorch" (W ~ N(0, 1), as
            ``torch.nn.Embedding``).
        W_init (callable, optional): an initializer that replaces the preset's; it gets fan_in D
            and fan_out V, PyTorch's fans of its (V, D) weight.
    Attributes:
        W (Parameter): (V, D).
    Raises:
        TypeError, ValueError: as ``Linear``.
    """

    def __init__(self, vocab_size, dim, seed=None, dtype=np.float32, *, init="classic", W_init=None):
        super().__init__()
        vocab_size, dim = integer("Embedding", "vocab_size", vocab_size), integer("Embedding", "dim", dim)
        dtype = _float_dtype("Embedding", dtype)
        W_init = initializers.preset("Embedding", init, "embedding", W=W_init)["W"]
        self.W = Parameter(W_init((vocab_size, dim), fan_in=dim, fan_out=vocab_size, rng=np.random.default_rng(seed),
                                  dtype=dtype))

    def forward(self, ids):
        """Look up rows.

        Args:
            ids (ndarray | Variable | list): integer ids of any shape S, each in [0, V); a
                (nested) list must be rectangular.
        Returns:
            Variable: S + (D,).
        Raises:
            ValueError: a ragged list of ids.
            TypeError, IndexError: as ``F.embed_id``.
        """
        if isinstance(ids, (list, tuple)):
            try:
                ids = np.asarray(ids)
            except ValueError:  # NumPy refuses ragged nesting
                raise ValueError(f"Embedding: ids must be a rectangular array, "
                                 f"got a ragged {type(ids).__name__}") from None
        return F.embed_id(ids, self.W)


class TiedLinear(Layer):
    """Output projection that reuses an Embedding's matrix: ``y = x @ E.W.T + b``.

    The weight is the Embedding's own Parameter (weight tying), so a model that holds both
    layers lists it once in ``params()`` and keeps the Embedding's name for it; attach the
    Embedding to the model before this layer.

    Args:
        embedding (Embedding): the layer whose ``W`` (V, D) is shared.
        nobias (bool): no bias ``b``.
        seed (int | numpy.random.Generator | None): randomness of ``b``'s initializer.
        init (str): preset of ``b``: "classic" (zeros) or "pytorch" (U(-1/sqrt(D), 1/sqrt(D)),
            the bias of a ``torch.nn.Linear(D, V)``).
        b_init (callable, optional): an initializer that replaces the preset's (fan_in D, fan_out V).
    Attributes:
        W (Parameter): (V, D), the Embedding's ``W``.
        b (Parameter | None): (V,), of ``W``'s dtype.
    Raises:
        TypeError: ``embedding`` is not an Embedding; as ``Linear``.
        ValueError: as ``Linear``.
    """

    def __init__(self, embedding, nobias=False, seed=None, *, init="classic", b_init=None):
        super().__init__()
        if not isinstance(embedding, Embedding):
            raise TypeError(f"TiedLinear: embedding must be an Embedding, got {type(embedding).__name__}")
        b_init = initializers.preset("TiedLinear", init, "linear", b=b_init)["b"]
        self.W = embedding.W
        vocab_size, dim = self.W.shape
        self.b = None if nobias else Parameter(b_init((vocab_size,), fan_in=dim, fan_out=vocab_size,
                                                      rng=np.random.default_rng(seed), dtype=self.W.dtype))

    def forward(self, x):
        """Apply the projection.

        Args:
            x (Variable | ndarray): (..., D).
        Returns:
            Variable: (..., V).
        """
        return F.linear(x, F.transpose(self.W), self.b)

    def softmax_cross_entropy(self, x, t, ignore_label=None):
        """``F.softmax_cross_entropy(self(x), t, ignore_label)`` as one op, as ``Linear.softmax_cross_entropy``.

        Args:
            x (Variable | ndarray): (..., D).
            t (ndarray): (...) integer labels in [0, V), or ``ignore_label``.
            ignore_label (int, optional): targets left out of the mean.
        Returns:
            Variable: () the mean cross-entropy.
        """
        return F.linear_softmax_cross_entropy(x, F.transpose(self.W), self.b, t, ignore_label)


class Dropout(Layer):
    """Inverted dropout, the identity under ``test_mode()``.

    Args:
        p (float): drop probability in [0, 1).
        seed (int | numpy.random.Generator | None): the key of the layer's counter-based
            generator of masks (``tinygrad_rnn.random``: the same masks on NumPy and CuPy).
    Attributes:
        generator (tinygrad_rnn.random.Generator): its state goes into checkpoints.
    Raises:
        ValueError: ``p`` outside [0, 1).
    """

    def __init__(self, p=0.5, seed=None):
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: p must lie in [0, 1), got {p!r}")
        self.p = float(p)
        self.generator = random.Generator(seed)

    def forward(self, x):
        """Drop units with probability ``p`` and scale the rest by 1 / (1 - p).

        Args:
            x (Variable | ndarray): any shape, float.
        Returns:
            Variable: same shape (``x`` itself when inactive).
        """
        return F.dropout(x, self.p, generator=self.generator)

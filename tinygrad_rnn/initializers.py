"""Initial values of parameters, drawn from an explicit NumPy Generator.

The classic recipe of the textbook language models: embeddings N(0, 0.01^2), input and
recurrent weights N(0, 1 / fan_in), zero biases. Samples are drawn in float64 and then cast,
so a float64 model and a float32 model built from the same seed hold the same values up to
rounding.
"""
import numpy as np


def normal(shape, std, rng=None, dtype=np.float32):
    """Samples of N(0, std^2).

    Args:
        shape (tuple): output shape.
        std (float): standard deviation.
        rng (numpy.random.Generator | int | None): the randomness (an int seeds a new Generator).
        dtype: float dtype of the result.
    Returns:
        ndarray: ``shape``, ``dtype``.
    """
    rng = np.random.default_rng(rng)
    return (rng.standard_normal(shape) * std).astype(dtype)


def fan_in_normal(shape, rng=None, dtype=np.float32):
    """Samples of N(0, 1 / fan_in) for a weight that maps ``shape[0]`` inputs to ``shape[1:]``.

    Args:
        shape (tuple): (fan_in, ...).
        rng (numpy.random.Generator | int | None): the randomness.
        dtype: float dtype of the result.
    Returns:
        ndarray: ``shape``, ``dtype``.
    """
    return normal(shape, 1.0 / np.sqrt(shape[0]), rng, dtype)


def embedding_normal(shape, rng=None, dtype=np.float32):
    """Samples of N(0, 0.01^2), the classic initialization of embedding matrices.

    Args:
        shape (tuple): (V, D).
        rng (numpy.random.Generator | int | None): the randomness.
        dtype: float dtype of the result.
    Returns:
        ndarray: ``shape``, ``dtype``.
    """
    return normal(shape, 0.01, rng, dtype)


def zeros(shape, dtype=np.float32):
    """Zeros (biases).

    Args:
        shape (tuple): output shape.
        dtype: float dtype of the result.
    Returns:
        ndarray: ``shape``, ``dtype``.
    """
    return np.zeros(shape, dtype=dtype)

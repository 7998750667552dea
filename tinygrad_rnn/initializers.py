"""Initial values of parameters: small initializer objects and the presets of the layers.

An initializer is called as ``init(shape, *, fan_in, fan_out, rng, dtype)`` and returns a NumPy
array; any callable with that signature will do. Samples are drawn in float64 from the given
``numpy.random.Generator`` and then cast, so a float64 model and a float32 model built from the
same seed hold the same values up to rounding. The formulas and the gain table are PyTorch's
(``torch.nn.init``). Layers pass ``fan_in`` and ``fan_out`` with PyTorch's meaning, whatever the
layout of our arrays: a Linear weight (D, H) has fan_in D and fan_out H, a bias its weight's fan_in.

Presets (the ``init`` argument of every layer) name one initializer per parameter:
``"classic"`` is the textbook scheme (embeddings N(0, 0.01^2), weights N(0, 1 / fan_in), zero
biases, He-initialized convolutions); ``"pytorch"`` is PyTorch's default for each layer kind.
"""
import math
import numbers

import numpy as np

from tinygrad_rnn.checks import integer, number

PRESETS = ("classic", "pytorch")

_GAINS = {"linear": 1.0, "sigmoid": 1.0, "tanh": 5.0 / 3.0, "relu": math.sqrt(2.0)}


class Initializer:
    """Base class: ``init(shape, *, fan_in, fan_out, rng, dtype)`` -> ndarray of ``shape``.

    Subclasses implement ``_sample(shape, fan_in, fan_out, rng)``, which returns float64 samples.
    """

    def __call__(self, shape, *, fan_in, fan_out, rng, dtype=np.float32):
        """Draw initial values.

        Args:
            shape (tuple of int): the parameter's shape.
            fan_in (int): inputs per output unit, PyTorch's meaning (a bias: its weight's fan_in).
            fan_out (int): outputs per input unit.
            rng (numpy.random.Generator): the randomness (initializers that draw nothing ignore it).
            dtype: float dtype of the result.
        Returns:
            ndarray: ``shape``, ``dtype``, on the CPU.
        Raises:
            ValueError: a fan this initializer needs is not a positive int.
        """
        return self._sample(tuple(shape), fan_in, fan_out, rng).astype(dtype)

    def _sample(self, shape, fan_in, fan_out, rng):
        raise NotImplementedError

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class Zeros(Initializer):
    """All zeros (draws nothing)."""

    def _sample(self, shape, fan_in, fan_out, rng):
        return np.zeros(shape)


class Constant(Initializer):
    """Every element ``value`` (draws nothing).

    Args:
        value (float): finite.
    Raises:
        ValueError: ``value`` is not a finite number.
    """

    def __init__(self, value):
        if not (isinstance(value, numbers.Real) and math.isfinite(value)):
            raise ValueError(f"Constant: value must be a finite number, got {value!r}")
        self.value = float(value)

    def _sample(self, shape, fan_in, fan_out, rng):
        return np.full(shape, self.value)


class Uniform(Initializer):
    """U(-scale, scale).

    Args:
        scale (float): finite, >= 0.
    Raises:
        ValueError: ``scale`` is negative or not finite.
    """

    def __init__(self, scale):
        self.scale = number("Uniform", "scale", scale, 0.0)

    def _sample(self, shape, fan_in, fan_out, rng):
        return rng.uniform(-self.scale, self.scale, shape)


class Normal(Initializer):
    """N(mean, std^2).

    Args:
        std (float): finite, >= 0.
        mean (float): finite.
    Raises:
        ValueError: ``std`` is negative or not finite, or ``mean`` is not finite.
    """

    def __init__(self, std=1.0, mean=0.0):
        self.std = number("Normal", "std", std, 0.0)
        if not (isinstance(mean, numbers.Real) and math.isfinite(mean)):
            raise ValueError(f"Normal: mean must be a finite number, got {mean!r}")
        self.mean = float(mean)

    def _sample(self, shape, fan_in, fan_out, rng):
        return rng.standard_normal(shape) * self.std + self.mean


def _xavier_std(where, gain, fan_in, fan_out):
    """Glorot's ``gain * sqrt(2 / (fan_in + fan_out))``."""
    return gain * math.sqrt(2.0 / (integer(where, "fan_in", fan_in) + integer(where, "fan_out", fan_out)))


class XavierUniform(Initializer):
    """Glorot: U(-a, a) with ``a = gain * sqrt(6 / (fan_in + fan_out))``.

    Args:
        gain (float): finite, >= 0.
    Raises:
        ValueError: ``gain`` is negative or not finite.
    """

    def __init__(self, gain=1.0):
        self.gain = number("XavierUniform", "gain", gain, 0.0)

    def _sample(self, shape, fan_in, fan_out, rng):
        bound = math.sqrt(3.0) * _xavier_std("XavierUniform", self.gain, fan_in, fan_out)  # as PyTorch rounds it
        return rng.uniform(-bound, bound, shape)


class XavierNormal(Initializer):
    """Glorot: N(0, std^2) with ``std = gain * sqrt(2 / (fan_in + fan_out))``.

    Args:
        gain (float): finite, >= 0.
    Raises:
        ValueError: ``gain`` is negative or not finite.
    """

    def __init__(self, gain=1.0):
        self.gain = number("XavierNormal", "gain", gain, 0.0)

    def _sample(self, shape, fan_in, fan_out, rng):
        return rng.standard_normal(shape) * _xavier_std("XavierNormal", self.gain, fan_in, fan_out)


class _Kaiming(Initializer):
    """He: ``std = gain / sqrt(fan)``, the fan chosen by ``mode``, the gain by ``nonlinearity``."""

    def __init__(self, a=0.0, mode="fan_in", nonlinearity="leaky_relu"):
        name = type(self).__name__
        if not (isinstance(a, numbers.Real) and math.isfinite(a)):
            raise ValueError(f"{name}: a (the negative slope) must be a finite number, got {a!r}")
        if mode not in ("fan_in", "fan_out"):
            raise ValueError(f"{name}: mode must be 'fan_in' or 'fan_out', got {mode!r}")
        if nonlinearity not in _GAINS and nonlinearity != "leaky_relu":
            valid = ", ".join(repr(k) for k in [*_GAINS, "leaky_relu"])
            raise ValueError(f"{name}: unknown nonlinearity {nonlinearity!r}; valid: {valid}")
        self.a = float(a)
        self.mode = mode
        self.nonlinearity = nonlinearity

    def _std(self, fan_in, fan_out):
        fan = integer(type(self).__name__, self.mode, fan_in if self.mode == "fan_in" else fan_out)
        if self.nonlinearity == "leaky_relu":
            gain = math.sqrt(2.0 / (1 + self.a ** 2))
        else:
            gain = _GAINS[self.nonlinearity]
        return gain / math.sqrt(fan)


class KaimingUniform(_Kaiming):
    """He: U(-bound, bound) with ``bound = sqrt(3) * gain / sqrt(fan)`` (``torch.nn.init.kaiming_uniform_``).

    Args:
        a (float): the negative slope of leaky_relu (used only for ``nonlinearity="leaky_relu"``).
        mode (str): "fan_in" (keeps the forward scale) or "fan_out" (the backward scale).
        nonlinearity (str): "relu" (gain sqrt(2)), "leaky_relu" (sqrt(2 / (1 + a^2))), "tanh" (5/3),
            "sigmoid" or "linear" (1).
    Raises:
        ValueError: ``a`` is not finite, or an unknown ``mode`` or ``nonlinearity``.
    """

    def _sample(self, shape, fan_in, fan_out, rng):
        bound = math.sqrt(3.0) * self._std(fan_in, fan_out)
        return rng.uniform(-bound, bound, shape)


class KaimingNormal(_Kaiming):
    """He: N(0, std^2) with ``std = gain / sqrt(fan)`` (``torch.nn.init.kaiming_normal_``).

    Args:
        a (float): as in ``KaimingUniform``.
        mode (str): as in ``KaimingUniform``.
        nonlinearity (str): as in ``KaimingUniform``.
    Raises:
        ValueError: as in ``KaimingUniform``.
    """

    def _sample(self, shape, fan_in, fan_out, rng):
        return rng.standard_normal(shape) * self._std(fan_in, fan_out)


class Orthogonal(Initializer):
    """A (semi-)orthogonal matrix times ``gain``, as ``torch.nn.init.orthogonal_``.

    The array is viewed as (shape[0], rest); of its rows and columns, whichever are fewer come
    out orthonormal. Drawn as the Q of a QR decomposition of a Gaussian matrix, with the signs of
    R's diagonal moved into Q so that Q is uniformly (Haar) distributed.

    Args:
        gain (float): finite, >= 0.
    Raises:
        ValueError: ``gain`` is negative or not finite; at call time, a shape of fewer than 2 dimensions.
    """

    def __init__(self, gain=1.0):
        self.gain = number("Orthogonal", "gain", gain, 0.0)

    def _sample(self, shape, fan_in, fan_out, rng):
        if len(shape) < 2:
            raise ValueError(f"Orthogonal: needs a shape of at least 2 dimensions, got {shape}")
        rows, cols = shape[0], math.prod(shape[1:])
        flat = rng.standard_normal((rows, cols))
        if rows < cols:
            flat = flat.T  # QR of the tall side: then Q's columns are the short side
        q, r = np.linalg.qr(flat)
        q *= np.where(np.diag(r) < 0, -1.0, 1.0)  # never 0, unlike sign(): no column is lost
        if rows < cols:
            q = q.T
        return (q * self.gain).reshape(shape)


class FanInNormal(Initializer):
    """N(0, 1 / fan_in), the classic initialization of weights (keeps the activation scale)."""

    def _sample(self, shape, fan_in, fan_out, rng):
        return rng.standard_normal(shape) * (1.0 / np.sqrt(integer("FanInNormal", "fan_in", fan_in)))


class FanInUniform(Initializer):
    """U(-1 / sqrt(fan_in), 1 / sqrt(fan_in)), PyTorch's default for Linear and Conv2d weights and biases."""

    def _sample(self, shape, fan_in, fan_out, rng):
        bound = 1.0 / math.sqrt(integer("FanInUniform", "fan_in", fan_in))
        return rng.uniform(-bound, bound, shape)


class _ClassicHe(Initializer):
    """N(0, 2 / fan_in) with the std computed as ``sqrt(2 / fan_in)``, as the classic Conv2d always
    did: ``KaimingNormal(nonlinearity="relu")`` draws the same law, but its std
    ``sqrt(2) / sqrt(fan_in)`` rounds differently, and "classic" must keep every bit."""

    def _sample(self, shape, fan_in, fan_out, rng):
        return rng.standard_normal(shape) * np.sqrt(2.0 / integer("Conv2d", "fan_in", fan_in))


def preset(owner, init, kind, hidden_size=None, **overrides):
    """The initializer of each parameter of a layer: the preset's, unless overridden.

    ========== ============================ =========================================
    kind       "classic"                    "pytorch"
    ========== ============================ =========================================
    linear     W FanInNormal, b Zeros       W, b FanInUniform
    embedding  W Normal(0.01)               W Normal(1.0)
    conv       W N(0, 2 / fan_in), b Zeros  W, b FanInUniform
    recurrent  Wx, Wh FanInNormal, b Zeros  Wx, Wh, b Uniform(1 / sqrt(hidden_size))
    ========== ============================ =========================================

    Args:
        owner (str): the layer's name, for the messages.
        init (str): "classic" or "pytorch".
        kind (str): "linear", "embedding", "conv" or "recurrent".
        hidden_size (int, optional): H, needed by the "pytorch" preset of "recurrent".
        **overrides (callable | None): parameter role ("W", "b"; "Wx", "Wh", "b" for "recurrent") -> an
            initializer, or None for the preset's.
    Returns:
        dict: role -> initializer, every role of ``kind``.
    Raises:
        ValueError: an unknown preset, or an override for a role that ``kind`` lacks.
        TypeError: an override that is not callable.
    """
    if init not in PRESETS:
        raise ValueError(f"{owner}: unknown init preset {init!r}; valid: {', '.join(map(repr, PRESETS))}")
    classic = init == "classic"
    if kind == "linear":
        chosen = {"W": FanInNormal(), "b": Zeros()} if classic else {"W": FanInUniform(), "b": FanInUniform()}
    elif kind == "embedding":
        chosen = {"W": Normal(0.01 if classic else 1.0)}
    elif kind == "conv":
        chosen = {"W": _ClassicHe(), "b": Zeros()} if classic else {"W": FanInUniform(), "b": FanInUniform()}
    elif classic:
        chosen = {"Wx": FanInNormal(), "Wh": FanInNormal(), "b": Zeros()}
    else:
        chosen = dict.fromkeys(("Wx", "Wh", "b"), Uniform(1.0 / math.sqrt(hidden_size)))
    for role, value in overrides.items():
        if role not in chosen:
            raise ValueError(f"{owner}: no parameter {role!r} to initialize (has {', '.join(chosen)})")
        if value is None:
            continue
        if not callable(value):
            raise TypeError(f"{owner}: {role}_init must be an initializer (a callable), got {value!r}")
        chosen[role] = value
    return chosen

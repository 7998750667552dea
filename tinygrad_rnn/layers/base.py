"""Layer: the base class of layers and models."""
import numpy as np

from tinygrad_rnn import backend, serialization
from tinygrad_rnn.core import Parameter, name_scope
from tinygrad_rnn.random import Generator


def _float_dtype(owner, dtype):
    """``dtype`` as a numpy.dtype; a TypeError naming the layer unless it is a float dtype."""
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{owner}: dtype must be a float dtype, got {dtype!r}") from None
    if dtype.kind != "f":
        raise TypeError(f"{owner}: dtype must be a float dtype, got {dtype}")
    return dtype


def state_problems(expected, state, prefix=""):
    """How ``state`` differs from the arrays a layer expects, as phrases (empty when it fits).

    Args:
        expected (dict): name -> shape (tuple).
        state (dict): name -> array.
        prefix (str): put before every name in the phrases.
    Returns:
        list[str]: ``missing ...``, ``unexpected ...``, ``shape mismatch ...`` (each listing
        every name concerned).
    """
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    mismatched = [f"{prefix}{k} (expected {expected[k]}, got {tuple(state[k].shape)})"
                  for k in sorted(expected.keys() & state.keys()) if tuple(expected[k]) != tuple(state[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing {', '.join(prefix + k for k in missing)}")
    if unexpected:
        problems.append(f"unexpected {', '.join(prefix + k for k in unexpected)}")
    if mismatched:
        problems.append(f"shape mismatch {', '.join(mismatched)}")
    return problems


def _join(prefix, name):
    return f"{prefix}/{name}" if prefix else name


class Layer:
    """Base class of layers and models: holds Parameters and sub-layers as attributes.

    Assigning a ``Parameter`` or a ``Layer`` to an attribute registers it; ``params()`` walks
    the registered attributes in assignment order, recursively, and yields each Parameter once
    (by identity), so a weight shared by two layers (weight tying) is listed and updated once.

    Names: the first layer that receives an unnamed Parameter (or a Layer not yet attached
    elsewhere) owns it and names it by its path, e.g. ``decoder/lstm/cell0/Wx``; paths follow
    when the owner is attached to a parent later. A Parameter that already has a name (a tied
    weight owned by another layer) keeps it.

    Calling a layer runs ``forward`` inside ``name_scope(<attribute name>)``, so the graph of a
    model is clustered by layer. Subclasses call ``super().__init__()`` first and implement
    ``forward``.

    A layer that carries state from one call into the next (the sequence layers) exposes it
    as ``state``, a tuple of (N, H) arrays or None; ``carried_state``, ``load_carried_state``
    and ``reset_state`` reach it in every sub-layer. Dropout is active outside ``test_mode()``.
    """

    # Scope of a layer that is called on its own (not as an attribute of a parent); sequence
    # layers set it so that their time steps are still clustered under one layer.
    root_scope = None

    def __init__(self):
        object.__setattr__(self, "_name", None)
        object.__setattr__(self, "_path", "")
        object.__setattr__(self, "_owned", set())

    def __setattr__(self, name, value):
        owned = self.__dict__.get("_owned")
        if owned is None:
            raise RuntimeError(f"{type(self).__name__}: call Layer.__init__() before assigning attributes")
        if name in self.__dict__ and self.__dict__[name] is value:  # re-assigning keeps the ownership
            return
        owned.discard(name)
        if isinstance(value, Parameter) and value.name is None:
            owned.add(name)
            value.name = _join(self._path, name)
        elif isinstance(value, Layer) and value._name is None and value is not self:
            owned.add(name)
            object.__setattr__(value, "_name", name)
            value._set_path(_join(self._path, name))
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        self._owned.discard(name)
        object.__delattr__(self, name)

    def _set_path(self, path):
        object.__setattr__(self, "_path", path)
        for name in self._owned:
            value = self.__dict__[name]
            if isinstance(value, Parameter):
                value.name = _join(path, name)
            else:
                value._set_path(_join(path, name))

    def __call__(self, *args, **kwargs):
        scope = self._name or self.root_scope
        if scope is None:
            return self.forward(*args, **kwargs)
        with name_scope(scope):
            return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):
        raise NotImplementedError

    def _walk(self, prefix, seen):
        """The one walker: ``(path, value)`` for every Parameter, Layer and Generator reachable
        through attributes, each once (by identity), depth first in assignment order."""
        for name, value in list(self.__dict__.items()):
            if id(value) in seen or not isinstance(value, (Parameter, Layer, Generator)):
                continue
            seen.add(id(value))
            path = _join(prefix, name)
            yield path, value
            if isinstance(value, Layer):
                yield from value._walk(path, seen)

    def namedparams(self):
        """Yield ``(path, Parameter)`` for every Parameter, each once, in assignment order.

        Returns:
            iterator of (str, Parameter): paths relative to this layer, e.g. ``lstm/cell0/Wx``.
        """
        for path, value in self._walk("", {id(self)}):
            if isinstance(value, Parameter):
                yield path, value

    def params(self):
        """Yield every Parameter of this layer and its sub-layers once (by identity).

        Returns:
            iterator of Parameter: in assignment order.
        """
        for _, p in self.namedparams():
            yield p

    def generators(self):
        """Every random generator of this layer and its sub-layers (dropout masks), each once.

        Returns:
            dict[str, tinygrad_rnn.random.Generator]: by attribute path, e.g. ``drop0/generator``.
        """
        return {path: g for path, g in self._walk("", {id(self)}) if isinstance(g, Generator)}

    def layers(self):
        """Yield this layer and every sub-layer, each once.

        Returns:
            iterator of Layer: this layer first.
        """
        yield self
        for _, value in self._walk("", {id(self)}):
            if isinstance(value, Layer):
                yield value

    def cleargrads(self):
        """Forget the gradients of all parameters."""
        for p in self.params():
            p.cleargrad()

    @property
    def state(self):
        """tuple | None: the state this layer carries into its next call; None here (sequence
        layers override it). Assigning None is allowed and does nothing."""
        return None

    @state.setter
    def state(self, state):
        if state is not None:
            raise TypeError(f"{type(self).__name__} carries no state")

    def _named_layers(self):
        yield ".", self
        for path, value in self._walk("", {id(self)}):
            if isinstance(value, Layer):
                yield path, value

    def carried_state(self):
        """The state that stateful sub-layers carry into their next call, as arrays.

        With ``load_carried_state`` this saves a truncated-BPTT run mid-stream (checkpoints)
        or sets it aside while the model evaluates other text.

        Returns:
            dict: ``"<layer path>/<k>"`` -> the k-th array of that layer's ``state`` (on the
            model's device, the batch on axis 0), e.g. ``lstm/0`` (h) and ``lstm/1`` (c);
            empty when no state is carried.
        """
        return {f"{path}/{k}": v.data for path, layer in self._named_layers()
                for k, v in enumerate(layer.state or ())}

    def load_carried_state(self, arrays):
        """Carry the arrays of ``carried_state`` into the next call (after a reset otherwise).

        Args:
            arrays (dict): as returned by ``carried_state``; arrays move to the parameters' device.
        Raises:
            ValueError: an array does not fit its layer's state.
            TypeError: arrays for a layer that carries no state.
        """
        self.reset_state()
        for path, layer in self._named_layers():
            parts = [arrays[f"{path}/{k}"] for k in range(len(arrays)) if f"{path}/{k}" in arrays]
            if parts:
                param = next(layer.params(), None)
                move = backend.as_cupy if param is not None and backend.is_cupy_array(param.data) else backend.as_numpy
                layer.state = tuple(move(a) for a in parts)

    def reset_state(self):
        """Forget the state carried between calls by this layer and its sub-layers."""
        for layer in self.layers():
            layer.state = None

    def to_gpu(self):
        """Move parameters, their gradients and carried state to the GPU, in place.

        Returns:
            Layer: self.
        Raises:
            RuntimeError: no GPU available.
        """
        for p in self.params():
            p.to_gpu()
        for layer in self.layers():
            for v in layer.state or ():
                v.to_gpu()
        return self

    def to_cpu(self):
        """Move parameters, their gradients and carried state to the CPU, in place.

        Returns:
            Layer: self.
        """
        for p in self.params():
            p.to_cpu()
        for layer in self.layers():
            for v in layer.state or ():
                v.to_cpu()
        return self

    def state_dict(self):
        """The parameter arrays by path.

        Returns:
            dict: path (str) -> the parameter's array (not a copy; on the parameter's device).
        """
        return {path: p.data for path, p in self.namedparams()}

    def check_state_dict(self, state):
        """Check that ``state`` names exactly this layer's parameters, with their shapes.

        Args:
            state (dict): path -> array, as returned by ``state_dict``.
        Raises:
            ValueError: names missing from ``state``, unexpected names, or mismatched shapes;
                the message lists all of them.
        """
        problems = state_problems({k: p.shape for k, p in self.namedparams()}, state)
        if problems:
            raise ValueError(f"load_state_dict: {'; '.join(problems)}")

    def load_state_dict(self, state):
        """Copy arrays into the parameters; names and shapes must match exactly.

        All or nothing: every array is checked and converted before any parameter changes.

        Args:
            state (dict): path -> array, as returned by ``state_dict``. Arrays are copied to
                each parameter's device and cast to its dtype.
        Raises:
            ValueError: names missing from ``state``, unexpected names, mismatched shapes (the
                message lists all of them), or arrays that are not numeric; no parameter is
                changed.
        """
        self.check_state_dict(state)
        own = dict(self.namedparams())
        converted = {}
        for k, p in own.items():
            xp = backend.get_array_module(p.data)
            value = backend.as_numpy(state[k]) if xp is np else state[k]
            if getattr(value, "dtype", np.dtype(float)).kind not in "biuf":
                raise ValueError(f"load_state_dict: {k} holds {value.dtype} data, not numbers")
            converted[k] = xp.array(value, dtype=p.dtype)
        for k, p in own.items():
            p.data = converted[k]

    def save(self, path):
        """Write the parameters to an ``.npz`` file (no pickle; temp file + ``os.replace``).

        Args:
            path (str | os.PathLike): the file, used as given.
        """
        serialization.save_npz(path, self.state_dict())

    def load(self, path):
        """Read parameters written by ``save``.

        Args:
            path (str | os.PathLike): the file.
        Raises:
            ValueError: the file is not a tinygrad_rnn ``.npz``, or its names or shapes do not
                match this layer's (nothing is changed then).
        """
        arrays, _ = serialization.load_npz(path)
        self.load_state_dict(arrays)

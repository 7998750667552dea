"""Weights to and from PyTorch's state-dict layouts, as plain NumPy arrays (PyTorch is never imported).

``to_torch(layer)`` gives the arrays that a PyTorch module's ``load_state_dict`` takes (through
``torch.from_numpy``), and ``load_torch(layer, state_dict)`` copies the arrays of a PyTorch state
dict (``{k: v.numpy() for k, v in module.state_dict().items()}``) into a layer. Keys:

- ``Linear`` (``nn.Linear(D, H)``): ``weight`` = W.T (H, D), ``bias`` = b.
- ``TiedLinear`` (an ``nn.Linear(D, V)`` tied to an ``nn.Embedding``): ``weight`` = the
  Embedding's W (V, D), ``bias`` = b.
- ``Embedding`` (``nn.Embedding(V, D)``): ``weight`` = W.
- ``Conv2d`` (``nn.Conv2d``): ``weight`` = W (the same (OC, C, KH, KW) layout), ``bias`` = b.
- ``RNN`` / ``LSTM`` / ``GRU`` (``nn.RNN`` with tanh / ``nn.LSTM`` / ``nn.GRU``, batch_first or
  not), for each layer k: ``weight_ih_l{k}`` = Wx.T, ``weight_hh_l{k}`` = Wh.T,
  ``bias_ih_l{k}`` and ``bias_hh_l{k}``; the cells (``nn.LSTMCell`` ...) the same without ``_l{k}``.

Gate blocks are in PyTorch's order on both sides: i, f, g, o (LSTM) and r, z, n (GRU), so a
transpose is the whole conversion of a weight. Biases: a layer with ``two_biases=True`` holds
PyTorch's pair, and both directions copy it exactly. A layer with one bias computes the same
function as PyTorch's pair summed: ``to_torch`` writes ``b`` as ``bias_ih`` and zeros as
``bias_hh`` (for a GRU, zeros in the r and z blocks and ``bh`` in the n block), ``load_torch``
sums what is redundant (``b = bias_ih + bias_hh``; for a GRU the r and z blocks, while the n
block of ``bias_hh`` becomes ``bh``). PyTorch's state dict of a tied model lists the shared matrix
under both modules' names; ``TiedLinear`` reads and writes it as ``weight`` too, and loading it
writes the Embedding's W (they are one Parameter).
"""
import numpy as np

from tinygrad_rnn import backend
from tinygrad_rnn import layers as L
from tinygrad_rnn.layers.base import state_problems

# torch key -> (our parameter, whether PyTorch stores its transpose), for layers without cells
_SIMPLE = {
    L.Linear: {"weight": ("W", True), "bias": ("b", False)},
    L.TiedLinear: {"weight": ("W", False), "bias": ("b", False)},
    L.Embedding: {"weight": ("W", False)},
    L.Conv2d: {"weight": ("W", False), "bias": ("b", False)},
}
_SEQUENCES = (L.RNN, L.LSTM, L.GRU)
_CELLS = (L.RNNCell, L.LSTMCell, L.GRUCell)


def _cells(layer):
    """(our path prefix, PyTorch's key suffix, cell) for each cell of a recurrent layer."""
    if isinstance(layer, _SEQUENCES):
        return [(f"cell{k}/", f"_l{k}", cell) for k, cell in enumerate(layer.cells)]
    return [("", "", layer)]


def _host(param):
    return backend.as_numpy(param.data)


def _torch_layout(layer):
    """The layer's parameters in PyTorch's layout (host arrays, possibly views of the parameters)."""
    if type(layer) in _SIMPLE:
        if isinstance(layer, L.Linear) and layer.W is None:
            raise ValueError("torch_weights: this Linear has no weight yet (in_size=None creates it at the first call)")
        return {key: _host(p).T if transposed else _host(p) for key, (name, transposed) in _SIMPLE[type(layer)].items()
                if (p := getattr(layer, name)) is not None}
    if not isinstance(layer, _SEQUENCES + _CELLS):
        supported = ", ".join(cls.__name__ for cls in [*_SIMPLE, *_SEQUENCES, *_CELLS])
        raise TypeError(f"torch_weights: no PyTorch layout for {type(layer).__name__}; supported: {supported}")
    arrays = {}
    for _, suffix, cell in _cells(layer):
        b = _host(cell.b)
        if cell.two_biases:
            bias_hh = _host(cell.bh)
        elif isinstance(cell, L.GRUCell):  # the r and z blocks are in b already; n's recurrent bias is bh
            bias_hh = np.concatenate([np.zeros(2 * cell.hidden_size, b.dtype), _host(cell.bh)])
        else:
            bias_hh = np.zeros_like(b)
        arrays.update({f"weight_ih{suffix}": _host(cell.Wx).T, f"weight_hh{suffix}": _host(cell.Wh).T,
                       f"bias_ih{suffix}": b, f"bias_hh{suffix}": bias_hh})
    return arrays


def _our_layout(layer, arrays):
    """PyTorch-layout ``arrays`` (checked keys and shapes) as the layer's ``load_state_dict`` takes them."""
    if type(layer) in _SIMPLE:
        return {name: arrays[key].T if transposed else arrays[key]
                for key, (name, transposed) in _SIMPLE[type(layer)].items() if key in arrays}
    state = {}
    for path, suffix, cell in _cells(layer):
        bias_ih, bias_hh = arrays[f"bias_ih{suffix}"], arrays[f"bias_hh{suffix}"]
        state.update({f"{path}Wx": arrays[f"weight_ih{suffix}"].T, f"{path}Wh": arrays[f"weight_hh{suffix}"].T})
        if cell.two_biases:
            state.update({f"{path}b": bias_ih, f"{path}bh": bias_hh})
        elif isinstance(cell, L.GRUCell):
            cut = 2 * cell.hidden_size
            state.update({f"{path}b": np.concatenate([bias_ih[:cut] + bias_hh[:cut], bias_ih[cut:]]),
                          f"{path}bh": bias_hh[cut:]})
        else:
            state[f"{path}b"] = bias_ih + bias_hh
    return state


def to_torch(layer, prefix=""):
    """The layer's parameters as a PyTorch module's state dict holds them (see the module's table).

    Args:
        layer (Layer): a Linear, TiedLinear, Embedding, Conv2d, RNN, LSTM, GRU or one of the cells.
        prefix (str): put before every key, e.g. ``"rnn."`` for the ``rnn`` attribute of a module.
    Returns:
        dict: key -> a new C-contiguous NumPy array of the layer's dtype (copies, on the CPU),
        e.g. ``weight_ih_l0`` (4H, D) for an LSTM.
    Raises:
        TypeError: a layer of another kind.
        ValueError: a Linear whose weight is not created yet (``in_size=None``).
    """
    return {prefix + key: np.array(value, order="C") for key, value in _torch_layout(layer).items()}


def load_torch(layer, state_dict, prefix=""):
    """Copy the arrays of a PyTorch state dict into the layer (see the module's table).

    Only the keys that start with ``prefix`` are read, so one state dict of a whole PyTorch model
    loads into our layers one call each. Arrays are cast to the layer's dtype and copied to its
    device, as ``Layer.load_state_dict`` does.

    Args:
        layer (Layer): a Linear, TiedLinear, Embedding, Conv2d, RNN, LSTM, GRU or one of the cells.
        state_dict (dict): key -> array in PyTorch's layout (NumPy arrays, or anything that
            ``numpy.asarray`` takes, such as CPU tensors).
        prefix (str): the keys' common beginning, e.g. ``"rnn."``.
    Raises:
        TypeError: a layer of another kind.
        ValueError: missing keys, unexpected keys (under ``prefix``), mismatched shapes or arrays
            that are not numbers; the message names the layer and lists all of them, and the
            layer is left unchanged.
    """
    expected = {key: value.shape for key, value in _torch_layout(layer).items()}
    given = {key[len(prefix):]: value for key, value in state_dict.items() if key.startswith(prefix)}
    arrays = {key: backend.as_numpy(value) for key, value in given.items()}
    problems = state_problems(expected, arrays, prefix)
    not_numbers = [f"{prefix}{key} ({arrays[key].dtype})" for key in sorted(expected.keys() & arrays.keys())
                   if arrays[key].dtype.kind not in "biuf"]
    if not_numbers:
        problems.append(f"not numbers {', '.join(not_numbers)}")
    if problems:
        raise ValueError(f"load_torch: {type(layer).__name__} (prefix {prefix!r}): {'; '.join(problems)}")
    layer.load_state_dict(_our_layout(layer, arrays))

"""Recurrent layers: one-step cells (RNNCell, LSTMCell, GRUCell) and sequence layers (RNN, LSTM, GRU).

A sequence layer computes the input projection of all T steps with one ``F.linear``. LSTM and
GRU cells then run as the fused ops of ``functions/rnn.py`` (``lstm_sequence`` / ``gru_sequence``
for a whole layer, ``lstm`` / ``gru`` for one step). Under ``using_config("fused_cells", False)``,
and always for the RNN, cells are composed from primitive ops (MatMul, Split, Sigmoid, Tanh,
Mul, Add), so graphs show every gate: the projection is sliced with one ``F.split``, each step
adds ``h @ Wh``, and step t is recorded inside ``name_scope(f"t{t}")`` under the layer's scope.
"""
import contextlib

import numpy as np

from tinygrad_rnn import functions as F
from tinygrad_rnn import initializers
from tinygrad_rnn.backend import get_array_module
from tinygrad_rnn.core import Config, Parameter, Variable, as_variable, name_scope
from tinygrad_rnn.layers.base import Layer


class _Cell(Layer):
    """Shared parts of the cells: parameters Wx (D, G*H), Wh (H, G*H), b (G*H,) for G gate blocks."""

    blocks = 1

    def __init__(self, input_size, hidden_size, seed=None, dtype=np.float32):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.input_size = input_size
        self.hidden_size = hidden_size
        width = self.blocks * hidden_size
        self.Wx = Parameter(initializers.fan_in_normal((input_size, width), rng, dtype))
        self.Wh = Parameter(initializers.fan_in_normal((hidden_size, width), rng, dtype))
        self.b = Parameter(initializers.zeros((width,), dtype))

    def _zeros(self, n):
        xp = get_array_module(self.Wx.data)
        return Variable(xp.zeros((n, self.hidden_size), dtype=self.Wx.dtype))

    def zero_state(self, n):
        """The all-zero state of a batch.

        Args:
            n (int): N.
        Returns:
            tuple of Variable: one (N, H) array of zeros per part of the state (h, or h and c).
        """
        raise NotImplementedError

    def _step(self, xw, state):
        """One step from the input projection ``xw = x @ Wx + b`` (N, G*H) and the state tuple."""
        raise NotImplementedError

    def _as_state(self, s):
        """A Variable as it is (it may carry a graph); an array cast to the parameters' dtype."""
        if isinstance(s, Variable):
            return s
        return Variable(get_array_module(s).asarray(s, dtype=self.Wx.dtype))

    def _check_input(self, x, ndim):
        x = as_variable(x)
        if x.ndim != ndim or x.shape[-1] != self.input_size:
            want = "(N, D)" if ndim == 2 else "(N, T, D)"
            raise ValueError(f"{type(self).__name__}: input of shape {x.shape} does not fit "
                             f"{want} with D={self.input_size}")
        return x

    def _state(self, state, n):
        """Zeros for a missing ``state`` (None) or missing parts of it; check the shapes."""
        if state is None:
            return self.zero_state(n)
        state = tuple(z if s is None else self._as_state(s) for s, z in zip(state, self.zero_state(n)))
        for s in state:
            if s.shape != (n, self.hidden_size):
                raise ValueError(f"{type(self).__name__}: state of shape {s.shape} does not fit "
                                 f"(N, H) = ({n}, {self.hidden_size})")
        return state

    def _sequence(self, xs, state):
        """Run over a whole sequence.

        Args:
            xs (Variable): (N, T, D).
            state (tuple of Variable): the initial state, each (N, H).
        Returns:
            tuple: (hs, state): hs (N, T, H) and the final state.
        """
        n, steps = xs.shape[:2]
        xw = F.linear(xs, self.Wx, self.b)  # the input projection of all steps in one product
        # On (N, T*G*H), splitting along axis 1 yields (N, G*H) pieces directly (no reshape
        # per step), and Split's backward is one concatenate instead of T scatters.
        pieces = F.split(F.reshape(xw, (n, -1)), steps, axis=1)
        hs = []
        for t, xw_t in enumerate(pieces):
            with name_scope(f"t{t}"):
                state = self._step(xw_t, state)
            hs.append(state[0])
        return F.stack(hs, axis=1), state


class RNNCell(_Cell):
    """Elman step ``h' = tanh(x @ Wx + h @ Wh + b)``.

    Args:
        input_size (int): D.
        hidden_size (int): H.
        seed (int | numpy.random.Generator | None): randomness of Wx ~ N(0, 1/D), Wh ~ N(0, 1/H).
        dtype: float dtype of the parameters.
    Attributes:
        Wx (Parameter): (D, H).  Wh (Parameter): (H, H).  b (Parameter): (H,), zeros.
    """

    def zero_state(self, n):
        return (self._zeros(n),)

    def forward(self, x, h=None):
        """One step.

        Args:
            x (Variable | ndarray): (N, D).
            h (Variable | ndarray, optional): (N, H); zeros when None.
        Returns:
            Variable: h' (N, H).
        Raises:
            ValueError: shapes do not fit.
        """
        x = self._check_input(x, 2)
        state = self._state((h,), x.shape[0])
        return self._step(F.linear(x, self.Wx, self.b), state)[0]

    def _step(self, xw, state):
        (h,) = state
        return (F.tanh(xw + F.matmul(h, self.Wh)),)


class LSTMCell(_Cell):
    """LSTM step; the gate blocks of Wx, Wh and b are ordered i, f, g, o.

    ``[a_i, a_f, a_g, a_o] = x @ Wx + h @ Wh + b`` (one fused product per operand),
    ``i, f, o = sigmoid(a_i), sigmoid(a_f), sigmoid(a_o)``, ``g = tanh(a_g)``,
    ``c' = f * c + i * g``, ``h' = o * tanh(c')``.

    Args:
        input_size (int): D.
        hidden_size (int): H.
        forget_bias (float): initial value of the forget-gate block of ``b`` (the rest is 0).
        seed (int | numpy.random.Generator | None): randomness of Wx ~ N(0, 1/D), Wh ~ N(0, 1/H).
        dtype: float dtype of the parameters.
    Attributes:
        Wx (Parameter): (D, 4H).  Wh (Parameter): (H, 4H).  b (Parameter): (4H,).
    """

    blocks = 4

    def __init__(self, input_size, hidden_size, forget_bias=0.0, seed=None, dtype=np.float32):
        super().__init__(input_size, hidden_size, seed, dtype)
        self.b.data[hidden_size:2 * hidden_size] = forget_bias

    def zero_state(self, n):
        return self._zeros(n), self._zeros(n)

    def forward(self, x, h=None, c=None):
        """One step.

        Args:
            x (Variable | ndarray): (N, D).
            h, c (Variable | ndarray, optional): (N, H) each; zeros when None.
        Returns:
            tuple of Variable: (h', c'), each (N, H).
        Raises:
            ValueError: shapes do not fit.
        """
        x = self._check_input(x, 2)
        state = self._state((h, c), x.shape[0])
        return self._step(F.linear(x, self.Wx, self.b), state)

    def _sequence(self, xs, state):
        if not Config.fused_cells:
            return super()._sequence(xs, state)
        # time-major for the fused op: transposing the (N, T, D) input costs less than transposing xw
        xw = F.linear(F.transpose(xs, (1, 0, 2)), self.Wx, self.b)
        hs, h, c = F.lstm_sequence(xw, *state, self.Wh)
        return F.transpose(hs, (1, 0, 2)), (h, c)

    def _step(self, xw, state):
        h, c = state
        if Config.fused_cells:
            h, c = F.lstm(xw + F.matmul(h, self.Wh), c)
            return h, c
        a_i, a_f, a_g, a_o = F.split(xw + F.matmul(h, self.Wh), 4, axis=1)
        c = F.sigmoid(a_f) * c + F.sigmoid(a_i) * F.tanh(a_g)
        return F.sigmoid(a_o) * F.tanh(c), c


class GRUCell(_Cell):
    """GRU step in the PyTorch convention (reset gate applied after the recurrent product).

    Gate blocks are ordered r, z, n:
    ``r = sigmoid(x Wx_r + b_r + h Wh_r)``, ``z = sigmoid(x Wx_z + b_z + h Wh_z)``,
    ``n = tanh(x Wx_n + b_n + r * (h Wh_n + bh))``, ``h' = (1 - z) * n + z * h``.
    ``b`` is the input-side bias of all blocks; ``bh`` is the recurrent bias of n, the only
    recurrent bias that is not redundant with ``b``.

    Args:
        input_size (int): D.
        hidden_size (int): H.
        seed (int | numpy.random.Generator | None): randomness of Wx ~ N(0, 1/D), Wh ~ N(0, 1/H).
        dtype: float dtype of the parameters.
    Attributes:
        Wx (Parameter): (D, 3H).  Wh (Parameter): (H, 3H).  b (Parameter): (3H,).
        bh (Parameter): (H,).
    """

    blocks = 3

    def __init__(self, input_size, hidden_size, seed=None, dtype=np.float32):
        super().__init__(input_size, hidden_size, seed, dtype)
        self.bh = Parameter(initializers.zeros((hidden_size,), dtype))

    def zero_state(self, n):
        return (self._zeros(n),)

    def forward(self, x, h=None):
        """One step.

        Args:
            x (Variable | ndarray): (N, D).
            h (Variable | ndarray, optional): (N, H); zeros when None.
        Returns:
            Variable: h' (N, H).
        Raises:
            ValueError: shapes do not fit.
        """
        x = self._check_input(x, 2)
        state = self._state((h,), x.shape[0])
        return self._step(F.linear(x, self.Wx, self.b), state)[0]

    def _sequence(self, xs, state):
        if not Config.fused_cells:
            return super()._sequence(xs, state)
        xw = F.linear(F.transpose(xs, (1, 0, 2)), self.Wx, self.b)  # time-major, as for the LSTM
        hs, h = F.gru_sequence(xw, *state, self.Wh, self.bh)
        return F.transpose(hs, (1, 0, 2)), (h,)

    def _step(self, xw, state):
        (h,) = state
        if Config.fused_cells:
            return (F.gru(xw, F.matmul(h, self.Wh), h, self.bh),)
        cut = [2 * self.hidden_size]
        x_rz, x_n = F.split(xw, cut, axis=1)
        h_rz, h_n = F.split(F.matmul(h, self.Wh), cut, axis=1)
        r, z = F.split(F.sigmoid(x_rz + h_rz), 2, axis=1)
        n = F.tanh(x_n + r * (h_n + self.bh))
        return (n + z * (h - n),)  # (1 - z) * n + z * h with one op fewer


class _Recurrent(Layer):
    """Shared parts of the sequence layers; see ``LSTM`` for the arguments."""

    cell_class = None

    def __init__(self, input_size, hidden_size, num_layers=1, dropout=0.0, variational=False, stateful=False,
                 seed=None, dtype=np.float32, **cell_kwargs):
        super().__init__()
        name = type(self).__name__
        if num_layers < 1:
            raise ValueError(f"{name}: num_layers must be at least 1, got {num_layers}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"{name}: dropout must lie in [0, 1), got {dropout}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.dropout = dropout
        self.variational = variational
        self.stateful = stateful
        self.rng = np.random.default_rng(seed)
        for k in range(num_layers):
            cell = self.cell_class(input_size if k == 0 else hidden_size, hidden_size, seed=self.rng, dtype=dtype,
                                   **cell_kwargs)
            setattr(self, f"cell{k}", cell)
        self._states = None  # per layer, the state tuple after the last call (or given by set_state)
        self._carry = False  # whether the next call starts from _states

    @property
    def cells(self):
        """list of the per-layer cells, bottom first."""
        return [getattr(self, f"cell{k}") for k in range(self.num_layers)]

    def forward(self, xs):
        """Run the sequence through all layers.

        Args:
            xs (Variable | ndarray): (N, T, D), float.
        Returns:
            Variable: (N, T, H), the top layer's hidden states.
        Raises:
            ValueError: ``xs`` is not (N, T, D), or a carried state has another batch size.
        """
        xs = self.cells[0]._check_input(xs, 3)
        n = xs.shape[0]
        starts = self._states if self._carry else [None] * self.num_layers
        finals = []
        for k, (cell, state) in enumerate(zip(self.cells, starts)):
            if k:
                xs = self._drop(xs)
            state = cell._state(state, n)
            scope = name_scope(f"cell{k}") if self.num_layers > 1 else contextlib.nullcontext()
            with scope:
                xs, state = cell._sequence(xs, state)
            finals.append(state)
        self._states = finals
        self._carry = self.stateful
        return xs

    def _drop(self, xs):
        if not (self.training and Config.train and self.dropout):
            return xs
        if not self.variational:
            return F.dropout(xs, self.dropout, rng=self.rng)
        n, _, h = xs.shape
        mask = F.dropout_mask((n, 1, h), self.dropout, self.rng, xs)
        xp = get_array_module(mask)
        return F.dropout(xs, self.dropout, mask=xp.broadcast_to(mask, xs.shape))  # one mask for all steps

    def _per_layer(self, value, what):
        """Split a state given as (num_layers, N, H), or (N, H) for one layer, into (N, H) Variables."""
        shape = value.shape
        if not (len(shape) == 2 and self.num_layers == 1 or len(shape) == 3 and shape[0] == self.num_layers):
            raise ValueError(f"{type(self).__name__}.set_state: {what} of shape {shape} does not fit "
                             f"(num_layers, N, H) with num_layers={self.num_layers}")
        if not isinstance(value, Variable):
            value = self.cells[0]._as_state(value)
            return [Variable(v) for v in value.data.reshape((self.num_layers,) + shape[-2:])]
        if len(shape) == 2:
            return [value]
        if self.num_layers == 1:
            return [F.reshape(value, shape[1:])]
        return [F.reshape(v, shape[1:]) for v in F.split(value, self.num_layers, axis=0)]

    def set_state(self, h):
        """Start the next call from ``h`` (for a non-stateful layer only the next call).

        Args:
            h (Variable | ndarray): (num_layers, N, H), or (N, H) when num_layers is 1; a
                Variable keeps its graph, so gradients flow into whatever produced it (a
                seq2seq decoder starts from the encoder's state).
        Raises:
            ValueError: the shape does not fit.
        """
        self._set([self._per_layer(h, "h")])

    def _set(self, parts):
        self._states = [tuple(layer_parts) for layer_parts in zip(*parts)]
        self._carry = True

    def _final(self, i):
        if self._states is None:
            return None
        parts = [s[i] for s in self._states]
        return parts[0] if self.num_layers == 1 else F.stack(parts, axis=0)

    @property
    def h(self):
        """Variable | None: hidden state after the last call (or as set): (N, H) for one
        layer, (num_layers, N, H) stacked otherwise; None after ``reset_state()``."""
        return self._final(0)

    def _state_variables(self):
        return [v for s in self._states for v in s] if self._carry and self._states is not None else []

    def _load_state(self, arrays):
        W = self.cells[0].Wx.data
        xp = get_array_module(W)
        variables = [Variable(xp.asarray(a, dtype=W.dtype)) for a in arrays]
        per_layer = len(variables) // self.num_layers  # (h,) or (h, c) for each layer, bottom first
        self._set([variables[i::per_layer] for i in range(per_layer)])

    def _clear_state(self):
        self._states = None
        self._carry = False


class RNN(_Recurrent):
    """Elman RNN over whole sequences (the textbook's TimeRNN), stacked ``num_layers`` deep.

    Takes the arguments of ``LSTM`` except ``forget_bias``.
    """

    cell_class = RNNCell
    root_scope = "rnn"


class GRU(_Recurrent):
    """GRU over whole sequences (see ``GRUCell`` for the equations).

    Takes the arguments of ``LSTM`` except ``forget_bias``.
    """

    cell_class = GRUCell
    root_scope = "gru"


class LSTM(_Recurrent):
    """LSTM over whole sequences (the textbook's TimeLSTM), stacked ``num_layers`` deep.

    Args:
        input_size (int): D.
        hidden_size (int): H.
        num_layers (int): stacked layers; layer k > 0 reads layer k-1's outputs.
        dropout (float): inverted dropout on the outputs of every layer but the top one.
        variational (bool): one dropout mask per sequence, shared by all time steps.
        stateful (bool): carry the final state into the next call (truncated BPTT) until
            ``reset_state()``; after each backward, ``loss.unchain_backward()`` (or
            ``unchain()``) cuts the carried state from the old graph.
        seed (int | numpy.random.Generator | None): randomness of the weights and dropout.
        dtype: float dtype of the parameters.
        forget_bias (float): see ``LSTMCell``.
    Attributes:
        cells (list of LSTMCell): ``cell0``, ``cell1``, ... bottom first.
        h, c (Variable | None): the state after the last call (see ``h``).
    Raises:
        ValueError: ``num_layers < 1`` or ``dropout`` outside [0, 1).
    """

    cell_class = LSTMCell
    root_scope = "lstm"

    def __init__(self, input_size, hidden_size, num_layers=1, dropout=0.0, variational=False, stateful=False,
                 seed=None, dtype=np.float32, forget_bias=0.0):
        super().__init__(input_size, hidden_size, num_layers, dropout, variational, stateful, seed, dtype,
                         forget_bias=forget_bias)

    @property
    def c(self):
        """Variable | None: the cell state, shaped like ``h``."""
        return self._final(1)

    def set_state(self, h, c=None):
        """Start the next call from (h, c) (for a non-stateful layer only the next call).

        Args:
            h (Variable | ndarray): as in ``RNN.set_state``.
            c (Variable | ndarray, optional): like ``h``; zeros when None.
        Raises:
            ValueError: a shape does not fit.
        """
        hs = self._per_layer(h, "h")
        if c is None:
            cs = [cell._zeros(hk.shape[0]) for cell, hk in zip(self.cells, hs)]
        else:
            cs = self._per_layer(c, "c")
        self._set([hs, cs])

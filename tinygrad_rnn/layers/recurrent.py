"""Recurrent layers: one-step cells (RNNCell, LSTMCell, GRUCell) and sequence layers (RNN, LSTM, GRU).

A sequence layer computes the input projection of all T steps with one ``F.linear``. LSTM and
GRU cells then run as the fused ops of ``functions/rnn.py`` (``lstm_sequence`` / ``gru_sequence``
for a whole layer, ``lstm`` / ``gru`` for one step). Under ``using_config("fused_cells", False)``,
and always for the RNN, cells are composed from primitive ops (MatMul, Split, Sigmoid, Tanh,
Mul, Add), so graphs show every gate: the projection is sliced with one ``F.split``, each step
adds ``h @ Wh``, and step t is recorded inside ``name_scope(f"t{t}")`` under the layer's scope.

Decoders and generation run a sequence layer one step at a time with ``initial_state`` and
``step``, which leave the state the layer carries between calls alone.
"""
import contextlib
import numbers

import numpy as np

from tinygrad_rnn import functions as F
from tinygrad_rnn import initializers, random
from tinygrad_rnn.backend import get_array_module
from tinygrad_rnn.core import Config, Parameter, Variable, as_variable, name_scope
from tinygrad_rnn.checks import integer
from tinygrad_rnn.layers.base import Layer, _float_dtype


class _Cell(Layer):
    """Shared parts of the cells: parameters Wx (D, G*H), Wh (H, G*H), b (G*H,) for G gate blocks,
    and a recurrent bias bh of ``bh_width`` elements where ``bh_width`` is not 0."""

    blocks = 1
    state_names = ("h",)  # the parts of the state, in the order of ``zero_state``
    two_biases = False  # PyTorch's pair b, bh (LSTM and GRU cells may hold it)

    def __init__(self, input_size, hidden_size, seed, dtype, init, Wx_init, Wh_init, b_init, bh_width=0):
        super().__init__()
        name = type(self).__name__
        self.input_size = integer(name, "input_size", input_size)
        self.hidden_size = integer(name, "hidden_size", hidden_size)
        dtype = _float_dtype(name, dtype)
        inits = initializers.preset(name, init, "recurrent", hidden_size, Wx=Wx_init, Wh=Wh_init, b=b_init)
        rng = np.random.default_rng(seed)
        width = self.blocks * hidden_size

        def draw(role, shape, fan_in):
            return Parameter(inits[role](shape, fan_in=fan_in, fan_out=width, rng=rng, dtype=dtype))

        # drawn in this order (Wx, Wh, b, bh): the "classic" scheme keeps the draws of earlier versions
        self.Wx = draw("Wx", (input_size, width), input_size)
        self.Wh = draw("Wh", (hidden_size, width), hidden_size)
        self.b = draw("b", (width,), input_size)
        if bh_width:
            self.bh = draw("b", (bh_width,), hidden_size)

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
        return tuple(self._zeros(n) for _ in self.state_names)

    def _biases(self):
        """The bias added to the input projection, and the recurrent bias of a GRU's n block (else None)."""
        return self.b, None

    def _step(self, xw, state, bn):
        """One step from the input projection ``xw = x @ Wx + b`` (N, G*H), the state tuple and
        the recurrent bias ``bn`` of ``_biases``."""
        raise NotImplementedError

    def _advance(self, x, state):
        """One step from the input ``x`` (N, D) and a checked state tuple to the next state tuple."""
        b, bn = self._biases()
        return self._step(F.linear(x, self.Wx, b), state, bn)

    def _as_state(self, s):
        """A Variable as it is (it may carry a graph); an array cast to the parameters' dtype."""
        if isinstance(s, Variable):
            return s
        return Variable(get_array_module(s).asarray(s, dtype=self.Wx.dtype))

    def _check_input(self, x, ndim, owner=None):
        x = as_variable(x)
        if x.ndim != ndim or x.shape[-1] != self.input_size:
            want = "(N, D)" if ndim == 2 else "(N, T, D)"
            raise ValueError(f"{owner or type(self).__name__}: input of shape {x.shape} does not fit "
                             f"{want} with D={self.input_size}")
        return x

    def _state(self, state, n, owner=None):
        """Zeros for a missing ``state`` (None) or missing parts of it; check the shapes."""
        owner = owner or type(self).__name__
        zeros = self.zero_state(n)
        if state is None:
            return zeros
        if len(state) != len(zeros):
            raise ValueError(f"{owner}: a state of {len(state)} parts does not fit ({', '.join(self.state_names)})")
        state = tuple(z if s is None else self._as_state(s) for s, z in zip(state, zeros))
        for s in state:
            if s.shape != (n, self.hidden_size):
                raise ValueError(f"{owner}: state of shape {s.shape} does not fit "
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
        b, bn = self._biases()
        xw = F.linear(xs, self.Wx, b)  # the input projection of all steps in one product
        # On (N, T*G*H), splitting along axis 1 yields (N, G*H) pieces directly (no reshape
        # per step), and Split's backward is one concatenate instead of T scatters.
        pieces = F.split(F.reshape(xw, (n, -1)), steps, axis=1)
        hs = []
        for t, xw_t in enumerate(pieces):
            with name_scope(f"t{t}"):
                state = self._step(xw_t, state, bn)
            hs.append(state[0])
        return F.stack(hs, axis=1), state


class RNNCell(_Cell):
    """Elman step ``h' = tanh(x @ Wx + h @ Wh + b)``.

    Args:
        input_size (int): D.
        hidden_size (int): H.
        seed (int | numpy.random.Generator | None): randomness of the initializers.
        dtype (numpy.dtype): float dtype of the parameters.
        init (str): preset: "classic" (Wx ~ N(0, 1/D), Wh ~ N(0, 1/H), b = 0) or "pytorch"
            (everything ~ U(-1/sqrt(H), 1/sqrt(H)), as ``torch.nn.RNNCell``).
        Wx_init (callable, optional): an initializer that replaces the preset's for ``Wx``
            (``tinygrad_rnn.initializers``). Fans as PyTorch counts them: Wx fan_in D, Wh fan_in
            H, both fan_out G*H (G gate blocks); a bias gets its weight's fan_in (b: D, bh: H).
        Wh_init (callable, optional): the same for ``Wh``.
        b_init (callable, optional): the same for the bias.
    Attributes:
        Wx (Parameter): (D, H).  Wh (Parameter): (H, H).  b (Parameter): (H,).
    Raises:
        TypeError, ValueError: a size that is not a positive int, a dtype that is not a float
            dtype, an unknown preset or an initializer that is not callable.
    """

    def __init__(self, input_size, hidden_size, seed=None, dtype=np.float32, *, init="classic", Wx_init=None,
                 Wh_init=None, b_init=None):
        super().__init__(input_size, hidden_size, seed, dtype, init, Wx_init, Wh_init, b_init)

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
        return self._advance(x, self._state((h,), x.shape[0]))[0]

    def _step(self, xw, state, bn):
        (h,) = state
        return (F.tanh(xw + F.matmul(h, self.Wh)),)


class LSTMCell(_Cell):
    """LSTM step; the gate blocks of Wx, Wh, b (and bh) are ordered i, f, g, o, as PyTorch's.

    ``[a_i, a_f, a_g, a_o] = x @ Wx + h @ Wh + b`` (one fused product per operand),
    ``i, f, o = sigmoid(a_i), sigmoid(a_f), sigmoid(a_o)``, ``g = tanh(a_g)``,
    ``c' = f * c + i * g``, ``h' = o * tanh(c')``.

    With ``two_biases`` the bias is ``b + bh`` (PyTorch's b_ih + b_hh), recorded as an op, so
    each of the two gets the full gradient of the sum, as in PyTorch. The default, one bias,
    computes the same functions, but SGD moves the effective bias half as far per step and a
    global-norm clip counts its gradient once instead of twice (see docs/pytorch.md).

    Args:
        input_size (int): D.
        hidden_size (int): H.
        forget_bias (float, optional): the effective forget-gate bias after initialization: the f
            block of ``b`` is set to it (and that of ``bh`` to 0); None keeps the initializer's values.
        seed (int | numpy.random.Generator | None): randomness of the initializers.
        dtype (numpy.dtype): float dtype of the parameters.
        init (str): preset: "classic" (Wx ~ N(0, 1/D), Wh ~ N(0, 1/H), biases 0) or "pytorch"
            (everything ~ U(-1/sqrt(H), 1/sqrt(H)), as ``torch.nn.LSTMCell``).
        Wx_init (callable, optional): as in ``RNNCell``.
        Wh_init (callable, optional): as in ``RNNCell``.
        b_init (callable, optional): as in ``RNNCell``; it draws ``bh`` too.
        two_biases (bool): hold PyTorch's pair of biases ``b`` and ``bh`` instead of one ``b``.
    Attributes:
        Wx (Parameter): (D, 4H).  Wh (Parameter): (H, 4H).  b (Parameter): (4H,).
        bh (Parameter): (4H,), only with ``two_biases``.
    Raises:
        TypeError, ValueError: as ``RNNCell``, or a ``forget_bias`` that is not a finite number.
    """

    blocks = 4
    state_names = ("h", "c")

    def __init__(self, input_size, hidden_size, forget_bias=None, seed=None, dtype=np.float32, *, init="classic",
                 Wx_init=None, Wh_init=None, b_init=None, two_biases=False):
        super().__init__(input_size, hidden_size, seed, dtype, init, Wx_init, Wh_init, b_init,
                         4 * hidden_size if two_biases else 0)
        self.two_biases = bool(two_biases)
        if forget_bias is not None:
            if not (isinstance(forget_bias, numbers.Real) and np.isfinite(forget_bias)):
                raise ValueError(f"LSTMCell: forget_bias must be a finite number, got {forget_bias!r}")
            f_block = slice(hidden_size, 2 * hidden_size)
            self.b.data[f_block] = forget_bias
            if self.two_biases:
                self.bh.data[f_block] = 0

    def forward(self, x, h=None, c=None):
        """One step.

        Args:
            x (Variable | ndarray): (N, D).
            h (Variable | ndarray, optional): (N, H); zeros when None.
            c (Variable | ndarray, optional): (N, H); zeros when None.
        Returns:
            tuple of Variable: (h', c'), each (N, H).
        Raises:
            ValueError: shapes do not fit.
        """
        x = self._check_input(x, 2)
        return self._advance(x, self._state((h, c), x.shape[0]))

    def _biases(self):
        return (self.b + self.bh if self.two_biases else self.b), None

    def _sequence(self, xs, state):
        if not Config.fused_cells:
            return super()._sequence(xs, state)
        # time-major for the fused op: transposing the (N, T, D) input costs less than transposing xw
        xw = F.linear(F.transpose(xs, (1, 0, 2)), self.Wx, self._biases()[0])
        hs, h, c = F.lstm_sequence(xw, *state, self.Wh)
        return F.transpose(hs, (1, 0, 2)), (h, c)

    def _step(self, xw, state, bn):
        h, c = state
        if Config.fused_cells:
            h, c = F.lstm(xw + F.matmul(h, self.Wh), c)
            return h, c
        a_i, a_f, a_g, a_o = F.split(xw + F.matmul(h, self.Wh), 4, axis=1)
        c = F.sigmoid(a_f) * c + F.sigmoid(a_i) * F.tanh(a_g)
        return F.sigmoid(a_o) * F.tanh(c), c


class GRUCell(_Cell):
    """GRU step in the PyTorch convention (reset gate applied after the recurrent product).

    Gate blocks are ordered r, z, n, as PyTorch's:
    ``r = sigmoid(x Wx_r + b_r + h Wh_r)``, ``z = sigmoid(x Wx_z + b_z + h Wh_z)``,
    ``n = tanh(x Wx_n + b_n + r * (h Wh_n + bh_n))``, ``h' = (1 - z) * n + z * h``.
    By default ``b`` is the input-side bias of all blocks and ``bh`` (H,) the recurrent bias of n,
    the only recurrent bias that is not redundant with ``b``. With ``two_biases``, ``b`` and ``bh``
    (3H,) are PyTorch's b_ih and b_hh: the r and z blocks of ``bh`` add to those of ``b`` (as an
    op, so each gets the full gradient), its n block is ``bh_n``. Same functions either way; the
    trajectories of SGD and of gradient clipping differ, as for ``LSTMCell``.

    Args:
        input_size (int): D.
        hidden_size (int): H.
        seed (int | numpy.random.Generator | None): randomness of the initializers.
        dtype (numpy.dtype): float dtype of the parameters.
        init (str): preset: "classic" (Wx ~ N(0, 1/D), Wh ~ N(0, 1/H), biases 0) or "pytorch"
            (everything ~ U(-1/sqrt(H), 1/sqrt(H)), as ``torch.nn.GRUCell``).
        Wx_init (callable, optional): as in ``RNNCell``.
        Wh_init (callable, optional): as in ``RNNCell``.
        b_init (callable, optional): as in ``RNNCell``; it draws ``bh`` too.
        two_biases (bool): hold PyTorch's pair of biases.
    Attributes:
        Wx (Parameter): (D, 3H).  Wh (Parameter): (H, 3H).  b (Parameter): (3H,).
        bh (Parameter): (H,), or (3H,) with ``two_biases``.
    Raises:
        TypeError, ValueError: as ``RNNCell``.
    """

    blocks = 3

    def __init__(self, input_size, hidden_size, seed=None, dtype=np.float32, *, init="classic", Wx_init=None,
                 Wh_init=None, b_init=None, two_biases=False):
        super().__init__(input_size, hidden_size, seed, dtype, init, Wx_init, Wh_init, b_init,
                         (3 if two_biases else 1) * hidden_size)
        self.two_biases = bool(two_biases)

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
        return self._advance(x, self._state((h,), x.shape[0]))[0]

    def _biases(self):
        if not self.two_biases:
            return self.b, self.bh
        cut = [2 * self.hidden_size]
        b_rz, b_n = F.split(self.b, cut)
        bh_rz, bh_n = F.split(self.bh, cut)
        return F.concat([b_rz + bh_rz, b_n]), bh_n

    def _sequence(self, xs, state):
        if not Config.fused_cells:
            return super()._sequence(xs, state)
        b, bn = self._biases()
        xw = F.linear(F.transpose(xs, (1, 0, 2)), self.Wx, b)  # time-major, as for the LSTM
        hs, h = F.gru_sequence(xw, *state, self.Wh, bn)
        return F.transpose(hs, (1, 0, 2)), (h,)

    def _step(self, xw, state, bn):
        (h,) = state
        if Config.fused_cells:
            return (F.gru(xw, F.matmul(h, self.Wh), h, bn),)
        cut = [2 * self.hidden_size]
        x_rz, x_n = F.split(xw, cut, axis=1)
        h_rz, h_n = F.split(F.matmul(h, self.Wh), cut, axis=1)
        r, z = F.split(F.sigmoid(x_rz + h_rz), 2, axis=1)
        n = F.tanh(x_n + r * (h_n + bn))
        return (n + z * (h - n),)  # (1 - z) * n + z * h with one op fewer


class _Recurrent(Layer):
    """Shared parts of the sequence layers; see ``LSTM`` for the arguments."""

    cell_class = None

    def __init__(self, input_size, hidden_size, num_layers=1, dropout=0.0, variational=False, stateful=False,
                 seed=None, dtype=np.float32, *, init="classic", Wx_init=None, Wh_init=None, b_init=None,
                 **cell_kwargs):
        super().__init__()
        name = type(self).__name__
        self.input_size = integer(name, "input_size", input_size)
        self.hidden_size = integer(name, "hidden_size", hidden_size)
        self.num_layers = integer(name, "num_layers", num_layers)
        if not (isinstance(dropout, numbers.Real) and 0.0 <= dropout < 1.0):
            raise ValueError(f"{name}: dropout must lie in [0, 1), got {dropout!r}")
        dtype = _float_dtype(name, dtype)
        # resolved once here, so that an error names this layer; every cell gets the same ones
        inits = initializers.preset(name, init, "recurrent", hidden_size, Wx=Wx_init, Wh=Wh_init, b=b_init)
        self.dropout = dropout
        self.variational = variational
        self.stateful = stateful
        rng = np.random.default_rng(seed)
        for k in range(num_layers):
            cell = self.cell_class(input_size if k == 0 else hidden_size, hidden_size, seed=rng, dtype=dtype,
                                   init=init, Wx_init=inits["Wx"], Wh_init=inits["Wh"], b_init=inits["b"],
                                   **cell_kwargs)
            setattr(self, f"cell{k}", cell)
        self.generator = random.Generator(rng)  # the dropout masks between layers
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
            with self._cell_scope(k):
                xs, state = cell._sequence(xs, state)
            finals.append(state)
        self._states = finals
        self._carry = self.stateful
        return xs

    def _cell_scope(self, k):
        return name_scope(f"cell{k}") if self.num_layers > 1 else contextlib.nullcontext()

    def initial_state(self, n=None, h=None):
        """A state for ``step``: zeros, or ``h`` given as ``set_state`` takes it.

        Args:
            n (int, optional): N; needed when ``h`` is None.
            h (Variable | ndarray, optional): (num_layers, N, H), or (N, H) when num_layers is 1;
                a Variable keeps its graph (gradients flow into an encoder that produced it).
        Returns:
            tuple: one tuple ``(h,)`` of an (N, H) Variable per layer, bottom first (``(h, c)``
            for an LSTM); the batch is on axis 0 of every array (beam search reorders rows).
        Raises:
            ValueError: neither ``n`` nor ``h``, or a shape that does not fit.
        """
        return self._initial_state(n, h)

    def _initial_state(self, n, *parts):
        owner = f"{type(self).__name__}.initial_state"
        per_layer = [[None] * self.num_layers if p is None else self._per_layer(p, what, owner)
                     for p, what in zip(parts, ("h", "c"))]
        if n is None:
            given = [layers[0] for layers in per_layer if layers[0] is not None]
            if not given:
                raise ValueError(f"{owner}: needs the batch size n when no state is given")
            n = given[0].shape[0]
        n = integer(owner, "n", n)
        return tuple(cell._state(layer_parts, n, owner) for cell, layer_parts in zip(self.cells, zip(*per_layer)))

    def step(self, x, state=None):
        """One time step through all layers, without reading or changing the carried state.

        Dropout between layers applies as in ``forward``; with ``variational=True`` each call
        draws its own mask (a step does not know where its sequence began). Cells run as the
        fused one-step ops unless ``fused_cells`` is off.

        Args:
            x (Variable | ndarray): (N, D), float.
            state (tuple, optional): as ``initial_state`` returns it (arrays are cast to the
                parameters' dtype); None starts from zeros.
        Returns:
            tuple: ``(h, state)``: the top layer's output h (N, H) and the next state, in the
            format of ``initial_state``.
        Raises:
            ValueError: ``x`` is not (N, D), or the state does not fit (num_layers tuples of
                (N, H) arrays).
        """
        owner = f"{type(self).__name__}.step"
        x = self.cells[0]._check_input(x, 2, owner)
        n = x.shape[0]
        if state is None:
            state = [None] * self.num_layers
        elif len(state) != self.num_layers:
            raise ValueError(f"{owner}: a state of {len(state)} layers does not fit num_layers={self.num_layers}")
        finals = []
        with name_scope(self._name or self.root_scope):
            for k, (cell, layer_state) in enumerate(zip(self.cells, state)):
                if k:
                    x = F.reshape(self._drop(F.reshape(x, (n, 1, -1))), (n, -1))  # _drop takes (N, T, H)
                layer_state = cell._state(layer_state, n, owner)
                with self._cell_scope(k):
                    layer_state = cell._advance(x, layer_state)
                finals.append(layer_state)
                x = layer_state[0]
        return x, tuple(finals)

    def _drop(self, xs):
        if not (self.training and Config.train and self.dropout):
            return xs
        if not self.variational:
            return F.dropout(xs, self.dropout, generator=self.generator)
        n, _, h = xs.shape
        mask = F.dropout_mask((n, 1, h), self.dropout, self.generator, xs)
        xp = get_array_module(mask)
        return F.dropout(xs, self.dropout, mask=xp.broadcast_to(mask, xs.shape))  # one mask for all steps

    def _per_layer(self, value, what, owner=None):
        """Split a state given as (num_layers, N, H), or (N, H) for one layer, into (N, H) Variables."""
        shape = value.shape
        if not (len(shape) == 2 and self.num_layers == 1 or len(shape) == 3 and shape[0] == self.num_layers):
            raise ValueError(f"{owner or type(self).__name__ + '.set_state'}: {what} of shape {shape} does not fit "
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

    Takes the arguments of ``LSTM`` except ``forget_bias`` and ``two_biases`` (one bias ``b``
    per layer; PyTorch's pair ``bias_ih + bias_hh`` converts to it, ``torch_weights``).
    """

    cell_class = RNNCell
    root_scope = "rnn"


class GRU(_Recurrent):
    """GRU over whole sequences (see ``GRUCell`` for the equations and ``two_biases``).

    Takes the arguments of ``LSTM`` except ``forget_bias``.
    """

    cell_class = GRUCell
    root_scope = "gru"

    def __init__(self, input_size, hidden_size, num_layers=1, dropout=0.0, variational=False, stateful=False,
                 seed=None, dtype=np.float32, *, init="classic", Wx_init=None, Wh_init=None, b_init=None,
                 two_biases=False):
        super().__init__(input_size, hidden_size, num_layers, dropout, variational, stateful, seed, dtype, init=init,
                         Wx_init=Wx_init, Wh_init=Wh_init, b_init=b_init, two_biases=two_biases)


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
        dtype (numpy.dtype): float dtype of the parameters.
        forget_bias (float, optional): see ``LSTMCell``.
        init (str): preset of every layer's parameters: "classic" (Wx ~ N(0, 1/fan_in),
            Wh ~ N(0, 1/H), biases 0) or "pytorch" (everything ~ U(-1/sqrt(H), 1/sqrt(H)), as
            ``torch.nn.LSTM``). It does not choose ``two_biases``.
        Wx_init (callable, optional): replaces the preset's initializer of ``Wx`` (see
            ``RNNCell`` for the fans).
        Wh_init (callable, optional): the same for ``Wh``.
        b_init (callable, optional): the same for the biases.
        two_biases (bool): default False, one bias ``b`` per layer; True holds PyTorch's pair
            ``b`` (b_ih) and ``bh`` (b_hh), so that a ported recipe (SGD steps, gradient
            clipping) follows PyTorch's trajectory (see ``LSTMCell`` and docs/pytorch.md).
    Attributes:
        cells (list of LSTMCell): ``cell0``, ``cell1``, ... bottom first.
        h, c (Variable | None): the state after the last call (see ``h``).
    Raises:
        ValueError: a size that is not a positive int, ``dropout`` outside [0, 1), or an
            unknown preset.
        TypeError: a size that is not an int, a dtype that is not a float dtype, or an
            initializer that is not callable.
    """

    cell_class = LSTMCell
    root_scope = "lstm"

    def __init__(self, input_size, hidden_size, num_layers=1, dropout=0.0, variational=False, stateful=False,
                 seed=None, dtype=np.float32, forget_bias=None, *, init="classic", Wx_init=None, Wh_init=None,
                 b_init=None, two_biases=False):
        super().__init__(input_size, hidden_size, num_layers, dropout, variational, stateful, seed, dtype, init=init,
                         Wx_init=Wx_init, Wh_init=Wh_init, b_init=b_init, forget_bias=forget_bias,
                         two_biases=two_biases)

    @property
    def c(self):
        """Variable | None: the cell state, shaped like ``h``."""
        return self._final(1)

    def initial_state(self, n=None, h=None, c=None):
        """A state for ``step``: zeros, or ``h`` and ``c`` given as ``set_state`` takes them.

        Args:
            n (int, optional): N; needed when neither ``h`` nor ``c`` is given.
            h (Variable | ndarray, optional): (num_layers, N, H), or (N, H) when num_layers
                is 1; a Variable keeps its graph; zeros when missing.
            c (Variable | ndarray, optional): as ``h``.
        Returns:
            tuple: one ``(h, c)`` tuple of (N, H) Variables per layer, bottom first.
        Raises:
            ValueError: no ``n`` and no state, or a shape that does not fit.
        """
        return self._initial_state(n, h, c)

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

"""Recurrent layers: one-step cells (RNNCell, LSTMCell, GRUCell) and sequence layers (RNN, LSTM, GRU).

One protocol for all of them. A state is a tuple of (N, H) arrays: ``(h,)``, or ``(h, c)`` for
an LSTM; the batch is on axis 0 of every array (beam search reorders rows). A cell is pure:
``cell.step(x, state) -> state`` runs one step and ``cell.sequence(xs, state) -> (hs, state)``
a whole (N, T, D) sequence. A sequence layer stacks ``num_layers`` cells; its state holds one
cell state per layer, bottom first, and ``layer.step(x, state) -> (h, state)`` and
``layer.sequence(xs, state) -> (hs, state)`` are pure too. Calling a sequence layer runs
``sequence`` from the state it carries (``layer.state``: set by ``set_state``, kept between
calls when ``stateful``, forgotten by ``reset_state``).

Fused or composed is fixed when a layer is built (``fused=True`` by default). Fused LSTM and
GRU cells run the ops of ``functions/rnn.py`` (``lstm_sequence`` / ``gru_sequence`` for a whole
sequence, ``lstm`` / ``gru`` for one step). With ``fused=False``, and always for the RNN, cells
are composed from primitive ops (MatMul, Split, Sigmoid, Tanh, Mul, Add), so graphs show every
gate: the input projection of all T steps is one ``F.linear``, sliced with one ``F.split``, each
step adds ``h @ Wh``, and step t is recorded inside ``name_scope(f"t{t}")``.
"""
import contextlib
import numbers

import numpy as np

from tinygrad_rnn import functions as F
from tinygrad_rnn import initializers, random
from tinygrad_rnn.backend import get_array_module
from tinygrad_rnn.checks import integer
from tinygrad_rnn.core import Config, Parameter, Variable, as_variable, name_scope
from tinygrad_rnn.layers.base import Layer, _float_dtype


def _checked_input(owner, x, ndim, size):
    """``x`` as a Variable; a ValueError naming ``owner`` unless it is (N, D) (``ndim`` 2) or
    (N, T, D) with T >= 1 (``ndim`` 3)."""
    x = as_variable(x)
    if x.ndim != ndim or x.shape[-1] != size:
        want = "(N, D)" if ndim == 2 else "(N, T, D)"
        raise ValueError(f"{owner}: input of shape {x.shape} does not fit {want} with D={size}")
    if ndim == 3 and x.shape[1] == 0:
        raise ValueError(f"{owner}: input of shape {x.shape} has no time steps (T = 0)")
    return x


def _checked_sequence_input(owner, xs, static, size):
    """``(xs, static)`` as Variables, ``static`` None where not given; a ValueError naming ``owner``
    unless ``xs`` is (N, T, D - S) with T >= 1 and ``static`` (N, S), or ``xs`` (N, T, D) alone."""
    if static is None:
        return _checked_input(owner, xs, 3, size), None
    xs, static = as_variable(xs), as_variable(static)
    if (xs.ndim != 3 or static.ndim != 2 or static.shape[0] != xs.shape[0]
            or xs.shape[-1] + static.shape[-1] != size):
        raise ValueError(f"{owner}: input of shape {xs.shape} and static input of shape {static.shape} do not "
                         f"fit (N, T, D - S) and (N, S) with D={size}")
    return _checked_input(owner, xs, 3, xs.shape[-1]), static


def _state_variable(s, like):
    """A Variable as it is (it may carry a graph); an array cast to ``like``'s dtype."""
    if isinstance(s, Variable):
        return s
    return Variable(get_array_module(s).asarray(s, dtype=like.dtype))


def _checked_cell_state(owner, state, names, n, hidden_size, like):
    """A state as a tuple of (N, H) Variables, one per name in ``names``.

    None, or a None part, becomes zeros of ``like``'s dtype on its device; see ``_state_variable``
    for the rest. When ``n`` is None the first given part decides N.
    """
    if state is None:
        state = (None,) * len(names)
    elif not isinstance(state, (tuple, list)):
        raise TypeError(f"{owner}: a state must be a tuple of (N, H) arrays ({', '.join(names)}), "
                        f"got {type(state).__name__}")
    elif len(state) != len(names):
        raise ValueError(f"{owner}: a state of {len(state)} arrays does not fit ({', '.join(names)})")
    state = [None if s is None else _state_variable(s, like) for s in state]
    given = [s for s in state if s is not None]
    if n is None:
        if not given:
            raise ValueError(f"{owner}: needs the batch size n when no state is given")
        n = given[0].shape[0] if given[0].ndim else None  # a 0-d part fails the check below
    for s in given:
        if s.shape != (n, hidden_size):
            raise ValueError(f"{owner}: state of shape {s.shape} does not fit (N, H) = ({n}, {hidden_size})")
    xp = get_array_module(like.data)
    return tuple(Variable(xp.zeros((n, hidden_size), dtype=like.dtype)) if s is None else s for s in state)


def _flag(owner, name, value):
    if not isinstance(value, bool):
        raise TypeError(f"{owner}: {name} must be True or False, got {value!r}")
    return value


class _Cell(Layer):
    """Shared parts of the cells: parameters Wx (D, G*H), Wh (H, G*H), b (G*H,) for G gate blocks,
    and a recurrent bias bh of ``bh_width`` elements where ``bh_width`` is not 0."""

    blocks = 1
    state_names = ("h",)  # the parts of a state, in order
    two_biases = False  # PyTorch's pair b, bh (LSTM and GRU cells may hold it)
    fused = False  # the RNN has no fused op

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

    def step(self, x, state=None):
        """One step; pure (the cell carries no state).

        Args:
            x (Variable | ndarray): (N, D), float.
            state (tuple, optional): ``(h,)``, or ``(h, c)`` for an ``LSTMCell``, each (N, H);
                None, or a None part, is zeros. Arrays are cast to the parameters' dtype;
                Variables keep their graph.
        Returns:
            tuple of Variable: the next state, each (N, H), ``h`` first.
        Raises:
            ValueError: ``x`` or a part of the state does not fit.
            TypeError: ``state`` is not a tuple.
        """
        owner = f"{type(self).__name__}.step"
        x = _checked_input(owner, x, 2, self.input_size)
        state = _checked_cell_state(owner, state, self.state_names, x.shape[0], self.hidden_size, self.Wx)
        b, bn = self._biases()
        return self._gates(F.linear(x, self.Wx, b), state, bn)

    forward = step  # calling a cell runs its step in the cell's name scope

    def sequence(self, xs, state=None, static=None):
        """All T steps of a sequence; pure.

        Args:
            xs (Variable | ndarray): (N, T, D), float, T >= 1; (N, T, D - S) with ``static``.
            state (tuple, optional): the initial state, as ``step`` takes it.
            static (Variable | ndarray, optional): (N, S), an input the same at every step: each step
                reads ``[xs_t, static]`` (D wide), as if it were concatenated to every step's input (a
                peeky decoder's code), but its part of the input projection, ``static @ Wx[D - S:]``,
                is computed once for all steps.
        Returns:
            tuple: ``(hs, state)``: the hidden states (N, T, H) and the final state.
        Raises:
            ValueError: ``xs`` is not (N, T, D) with T >= 1 (with ``static``: (N, T, D - S) and (N, S)),
                or the state does not fit.
            TypeError: ``state`` is not a tuple.
        """
        owner = f"{type(self).__name__}.sequence"
        xs, static = _checked_sequence_input(owner, xs, static, self.input_size)
        n, steps = xs.shape[:2]
        state = _checked_cell_state(owner, state, self.state_names, n, self.hidden_size, self.Wx)
        b, bn = self._biases()
        Wx, Ws = (self.Wx, None) if static is None else F.split(self.Wx, [xs.shape[2]], axis=0)
        if self.fused:
            # time-major for the fused op: transposing the (N, T, D) input costs less than transposing xw
            xw = F.linear(F.transpose(xs, (1, 0, 2)), Wx, b)
            if static is not None:
                xw = xw + F.reshape(F.matmul(static, Ws), (1, n, -1))  # (T, N, G*H) + (1, N, G*H)
            hs, state = self._fused_sequence(xw, state, bn)
            return F.transpose(hs, (1, 0, 2)), state
        xw = F.linear(xs, Wx, b)  # the input projection of all steps in one product
        if static is not None:
            xw = xw + F.reshape(F.matmul(static, Ws), (n, 1, -1))  # (N, T, G*H) + (N, 1, G*H)
        # On (N, T*G*H), splitting along axis 1 yields (N, G*H) pieces directly (no reshape
        # per step), and Split's backward is one concatenate instead of T scatters.
        pieces = F.split(F.reshape(xw, (n, -1)), steps, axis=1)
        hs = []
        for t, xw_t in enumerate(pieces):
            with name_scope(f"t{t}"):
                state = self._gates(xw_t, state, bn)
            hs.append(state[0])
        return F.stack(hs, axis=1), state

    def _biases(self):
        """The bias added to the input projection, and the recurrent bias of a GRU's n block (else None)."""
        return self.b, None

    def _gates(self, xw, state, bn):
        """One step from the input projection ``xw = x @ Wx + b`` (N, G*H), the state tuple and
        the recurrent bias ``bn`` of ``_biases``."""
        raise NotImplementedError

    def _fused_sequence(self, xw, state, bn):
        """The fused op over a time-major projection ``xw`` (T, N, G*H): ``(hs (T, N, H), state)``."""
        raise NotImplementedError


class RNNCell(_Cell):
    """Elman step ``h' = tanh(x @ Wx + h @ Wh + b)``, always composed from primitive ops.

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

    def _gates(self, xw, state, bn):
        (h,) = state
        h = F.tanh(xw + F.matmul(h, self.Wh))
        h.name = "h"  # the book's name, drawn by tinygrad_rnn.graph
        return (h,)


class LSTMCell(_Cell):
    """LSTM step; the gate blocks of Wx, Wh, b (and bh) are ordered i, f, g, o, as PyTorch's.

    ``[a_i, a_f, a_g, a_o] = x @ Wx + h @ Wh + b`` (one fused product per operand),
    ``i, f, o = sigmoid(a_i), sigmoid(a_f), sigmoid(a_o)``, ``g = tanh(a_g)``,
    ``c' = f * c + i * g``, ``h' = o * tanh(c')``. The state is ``(h, c)``.

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
        fused (bool): True runs the fused ops ``F.lstm`` (a step) and ``F.lstm_sequence`` (a
            sequence); False records every gate of every step (same values and gradients within
            float64 rounding; needed for higher derivatives).
    Attributes:
        Wx (Parameter): (D, 4H).  Wh (Parameter): (H, 4H).  b (Parameter): (4H,).
        bh (Parameter): (4H,), only with ``two_biases``.
    Raises:
        TypeError, ValueError: as ``RNNCell``, a ``forget_bias`` that is not a finite number, or
            a ``fused`` that is not a bool.
    """

    blocks = 4
    state_names = ("h", "c")

    def __init__(self, input_size, hidden_size, forget_bias=None, seed=None, dtype=np.float32, *, init="classic",
                 Wx_init=None, Wh_init=None, b_init=None, two_biases=False, fused=True):
        super().__init__(input_size, hidden_size, seed, dtype, init, Wx_init, Wh_init, b_init,
                         4 * hidden_size if two_biases else 0)
        self.two_biases = bool(two_biases)
        self.fused = _flag("LSTMCell", "fused", fused)
        if forget_bias is not None:
            if not (isinstance(forget_bias, numbers.Real) and np.isfinite(forget_bias)):
                raise ValueError(f"LSTMCell: forget_bias must be a finite number, got {forget_bias!r}")
            f_block = slice(hidden_size, 2 * hidden_size)
            self.b.data[f_block] = forget_bias
            if self.two_biases:
                self.bh.data[f_block] = 0

    def _biases(self):
        return (self.b + self.bh if self.two_biases else self.b), None

    def _fused_sequence(self, xw, state, bn):
        hs, h, c = F.lstm_sequence(xw, *state, self.Wh)
        return hs, (h, c)

    def _gates(self, xw, state, bn):
        h, c = state
        if self.fused:
            h, c = F.lstm(xw + F.matmul(h, self.Wh), c)
            h.name, c.name = "h", "c"  # the op holds the gates; tinygrad_rnn.inspect finds the steps by these
            return h, c
        a_i, a_f, a_g, a_o = F.split(xw + F.matmul(h, self.Wh), 4, axis=1)
        i, f, g, o = F.sigmoid(a_i), F.sigmoid(a_f), F.tanh(a_g), F.sigmoid(a_o)
        c = f * c + i * g
        h = o * F.tanh(c)
        for v, name in ((i, "i"), (f, "f"), (g, "g"), (o, "o"), (c, "c"), (h, "h")):
            v.name = name  # the book's names, drawn by tinygrad_rnn.graph
        return h, c


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
        fused (bool): True runs the fused ops ``F.gru`` and ``F.gru_sequence``; False records
            every gate (see ``LSTMCell``).
    Attributes:
        Wx (Parameter): (D, 3H).  Wh (Parameter): (H, 3H).  b (Parameter): (3H,).
        bh (Parameter): (H,), or (3H,) with ``two_biases``.
    Raises:
        TypeError, ValueError: as ``RNNCell``, or a ``fused`` that is not a bool.
    """

    blocks = 3

    def __init__(self, input_size, hidden_size, seed=None, dtype=np.float32, *, init="classic", Wx_init=None,
                 Wh_init=None, b_init=None, two_biases=False, fused=True):
        super().__init__(input_size, hidden_size, seed, dtype, init, Wx_init, Wh_init, b_init,
                         (3 if two_biases else 1) * hidden_size)
        self.two_biases = bool(two_biases)
        self.fused = _flag("GRUCell", "fused", fused)

    def _biases(self):
        if not self.two_biases:
            return self.b, self.bh
        cut = [2 * self.hidden_size]
        b_rz, b_n = F.split(self.b, cut)
        bh_rz, bh_n = F.split(self.bh, cut)
        return F.concat([b_rz + bh_rz, b_n]), bh_n

    def _fused_sequence(self, xw, state, bn):
        hs, h = F.gru_sequence(xw, *state, self.Wh, bn)
        return hs, (h,)

    def _gates(self, xw, state, bn):
        (h,) = state
        if self.fused:
            h = F.gru(xw, F.matmul(h, self.Wh), h, bn)
            h.name = "h"  # the op holds the gates; tinygrad_rnn.inspect finds the steps by this
            return (h,)
        cut = [2 * self.hidden_size]
        x_rz, x_n = F.split(xw, cut, axis=1)
        h_rz, h_n = F.split(F.matmul(h, self.Wh), cut, axis=1)
        r, z = F.split(F.sigmoid(x_rz + h_rz), 2, axis=1)
        n = F.tanh(x_n + r * (h_n + bn))
        h = n + z * (h - n)  # (1 - z) * n + z * h with one op fewer
        for v, name in ((r, "r"), (z, "z"), (n, "n"), (h, "h")):
            v.name = name  # the book's names, drawn by tinygrad_rnn.graph
        return (h,)


class _Recurrent(Layer):
    """Shared parts of the sequence layers; see ``LSTM`` for the arguments and the protocol."""

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
        if "fused" in cell_kwargs:
            _flag(name, "fused", cell_kwargs["fused"])
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
        self._carried = None  # the state the next call starts from (see ``state``)

    @property
    def cells(self):
        """list of the per-layer cells, bottom first."""
        return [getattr(self, f"cell{k}") for k in range(self.num_layers)]

    @property
    def state(self):
        """tuple | None: the state the next call starts from, in ``step``'s format.

        ``set_state`` sets it (so does assigning a state in ``step``'s format: arrays are cast
        to the parameters' dtype); a ``stateful`` layer keeps the final state of each call here;
        a call of a layer that is not stateful, ``reset_state()`` or assigning None clears it
        (the next call starts from zeros).
        """
        return self._carried

    @state.setter
    def state(self, state):
        self._carried = None if state is None else self._checked_state(f"{type(self).__name__}.state", state, None)

    def _checked_state(self, owner, state, n):
        """A state in ``step``'s format as Variables (zeros for None parts); N from ``n`` or the first part."""
        names = self.cell_class.state_names
        per_cell = len(names)
        if state is None:
            state = (None,) * (per_cell * self.num_layers)
        elif not isinstance(state, (tuple, list)):
            raise TypeError(f"{owner}: a state must be a tuple of (N, H) arrays, got {type(state).__name__}")
        elif len(state) != per_cell * self.num_layers:
            raise ValueError(f"{owner}: a state of {len(state)} arrays does not fit num_layers={self.num_layers} "
                             f"times ({', '.join(names)})")
        checked = ()
        for k, cell in enumerate(self.cells):
            cell_state = state[k * per_cell:(k + 1) * per_cell]
            part = _checked_cell_state(owner, cell_state, names, n, self.hidden_size, cell.Wx)
            n = part[0].shape[0]
            checked += part
        return checked

    def forward(self, xs):
        """Run the sequence through all layers from the carried ``state`` (zeros when None).

        Args:
            xs (Variable | ndarray): (N, T, D), float, T >= 1.
        Returns:
            Variable: (N, T, H), the top layer's hidden states.
        Raises:
            ValueError: ``xs`` is not (N, T, D) with T >= 1, or the carried state has another
                batch size.
        """
        hs, final = self._run(type(self).__name__, xs, self._carried)
        self._carried = final if self.stateful else None
        return hs

    def sequence(self, xs, state=None, static=None):
        """Run a sequence through all layers; pure (the carried ``state`` is left alone).

        Args:
            xs (Variable | ndarray): (N, T, D), float, T >= 1; (N, T, D - S) with ``static``.
            state (tuple, optional): the initial state in ``step``'s format; None is zeros.
            static (Variable | ndarray, optional): (N, S), an input of the first layer the same at
                every step, as if concatenated to every step's input; its projection is computed once
                (see the cell's ``sequence``).
        Returns:
            tuple: ``(hs, state)``: the top layer's hidden states (N, T, H) and the final state.
        Raises:
            ValueError: ``xs`` is not (N, T, D) with T >= 1 (with ``static``: (N, T, D - S) and (N, S)),
                or the state does not fit.
            TypeError: ``state`` is not a tuple.
        """
        with name_scope(self._name or self.root_scope):
            return self._run(f"{type(self).__name__}.sequence", xs, state, static)

    def _run(self, owner, xs, state, static=None):
        xs, static = _checked_sequence_input(owner, xs, static, self.input_size)
        state = self._checked_state(owner, state, xs.shape[0])
        per_cell = len(self.cell_class.state_names)
        final = ()
        for k, cell in enumerate(self.cells):
            if k:
                xs = self._drop(xs)
            with self._cell_scope(k):
                xs, cell_state = cell.sequence(xs, state[k * per_cell:(k + 1) * per_cell], static if k == 0 else None)
            final += cell_state
        return xs, final

    def step(self, x, state=None):
        """One time step through all layers; pure (the carried ``state`` is left alone).

        Dropout between layers applies as in ``forward``; with ``variational=True`` each call
        draws its own mask (a step does not know where its sequence began).

        Args:
            x (Variable | ndarray): (N, D), float.
            state (tuple, optional): the cell states of all layers, bottom first, one after the
                other: ``(h_1, ..., h_L)``, or ``(h_1, c_1, ..., h_L, c_L)`` for an LSTM, each
                (N, H) (the batch on axis 0 of every array: beam search reorders rows). None, or
                a None part, is zeros; arrays are cast to the parameters' dtype; Variables keep
                their graph. ``initial_state`` builds one from stacked arrays.
        Returns:
            tuple: ``(h, state)``: the top layer's output h (N, H) and the next state.
        Raises:
            ValueError: ``x`` is not (N, D), or the state does not fit.
            TypeError: ``state`` is not a tuple.
        """
        owner = f"{type(self).__name__}.step"
        x = _checked_input(owner, x, 2, self.input_size)
        n = x.shape[0]
        state = self._checked_state(owner, state, n)
        per_cell = len(self.cell_class.state_names)
        final = ()
        with name_scope(self._name or self.root_scope):
            for k, cell in enumerate(self.cells):
                if k:
                    x = F.reshape(self._drop(F.reshape(x, (n, 1, -1))), (n, -1))  # _drop takes (N, T, H)
                with self._cell_scope(k):
                    cell_state = cell.step(x, state[k * per_cell:(k + 1) * per_cell])
                final += cell_state
                x = cell_state[0]
        return x, final

    def _cell_scope(self, k):
        return name_scope(f"cell{k}") if self.num_layers > 1 else contextlib.nullcontext()

    def _drop(self, xs):
        if not (Config.train and self.dropout):
            return xs
        if not self.variational:
            return F.dropout(xs, self.dropout, generator=self.generator)
        n, _, h = xs.shape
        mask = F.dropout_mask((n, 1, h), self.dropout, self.generator, xs)
        xp = get_array_module(mask)
        return F.dropout(xs, self.dropout, mask=xp.broadcast_to(mask, xs.shape))  # one mask for all steps

    def initial_state(self, n=None, h=None):
        """A state in ``step``'s format: zeros, or ``h`` given as ``set_state`` takes it.

        Args:
            n (int, optional): N; needed when ``h`` is None.
            h (Variable | ndarray, optional): (num_layers, N, H), or (N, H) when num_layers is 1;
                a Variable keeps its graph (gradients flow into an encoder that produced it).
        Returns:
            tuple of Variable: ``(h_1, ..., h_L)``, each (N, H).
        Raises:
            ValueError: neither ``n`` nor ``h``, or a shape that does not fit.
        """
        return self._from_stacked(f"{type(self).__name__}.initial_state", n, h)

    def set_state(self, h):
        """Start the next call from ``h`` (for a layer that is not stateful, only the next call).

        Args:
            h (Variable | ndarray): (num_layers, N, H), or (N, H) when num_layers is 1; a
                Variable keeps its graph, so gradients flow into whatever produced it (a
                seq2seq decoder starts from the encoder's state).
        Raises:
            ValueError: the shape does not fit.
        """
        self._carried = self._from_stacked(f"{type(self).__name__}.set_state", None, h)

    def _from_stacked(self, owner, n, *parts):
        """A state in ``step``'s format from parts given as (num_layers, N, H), or (N, H) for one layer."""
        if n is not None:
            n = integer(owner, "n", n)
        per_layer = [[None] * self.num_layers if p is None else self._per_layer(owner, p, what)
                     for p, what in zip(parts, self.cell_class.state_names)]
        return self._checked_state(owner, tuple(p for layer_parts in zip(*per_layer) for p in layer_parts), n)

    def _per_layer(self, owner, value, what):
        """Split a part given as (num_layers, N, H), or (N, H) for one layer, into (N, H) Variables."""
        shape = value.shape
        if not (len(shape) == 2 and self.num_layers == 1 or len(shape) == 3 and shape[0] == self.num_layers):
            raise ValueError(f"{owner}: {what} of shape {shape} does not fit (num_layers, N, H) "
                             f"with num_layers={self.num_layers}")
        if not isinstance(value, Variable):
            value = _state_variable(value, self.cells[0].Wx)
            return [Variable(v) for v in value.data.reshape((self.num_layers,) + shape[-2:])]
        if len(shape) == 2:
            return [value]
        if self.num_layers == 1:
            return [F.reshape(value, shape[1:])]
        return [F.reshape(v, shape[1:]) for v in F.split(value, self.num_layers, axis=0)]


class RNN(_Recurrent):
    """Elman RNN over whole sequences (the textbook's TimeRNN), stacked ``num_layers`` deep.

    Takes the arguments of ``LSTM`` except ``forget_bias``, ``two_biases`` (one bias ``b`` per
    layer; PyTorch's pair ``bias_ih + bias_hh`` converts to it, ``torch_weights``) and ``fused``
    (there is no fused RNN op). Its state is ``(h_1, ..., h_L)``.
    """

    cell_class = RNNCell
    root_scope = "rnn"


class GRU(_Recurrent):
    """GRU over whole sequences (see ``GRUCell`` for the equations and ``two_biases``).

    Takes the arguments of ``LSTM`` except ``forget_bias``. Its state is ``(h_1, ..., h_L)``.
    """

    cell_class = GRUCell
    root_scope = "gru"

    def __init__(self, input_size, hidden_size, num_layers=1, dropout=0.0, variational=False, stateful=False,
                 seed=None, dtype=np.float32, *, init="classic", Wx_init=None, Wh_init=None, b_init=None,
                 two_biases=False, fused=True):
        super().__init__(input_size, hidden_size, num_layers, dropout, variational, stateful, seed, dtype, init=init,
                         Wx_init=Wx_init, Wh_init=Wh_init, b_init=b_init, two_biases=two_biases, fused=fused)


class LSTM(_Recurrent):
    """LSTM over whole sequences (the textbook's TimeLSTM), stacked ``num_layers`` deep.

    The protocol of every sequence layer: ``step(x, state) -> (h, state)`` and
    ``sequence(xs, state) -> (hs, state)`` are pure; calling the layer runs ``sequence`` from
    the carried ``state`` (``set_state``, ``reset_state``). A state is a tuple of (N, H) arrays,
    the cell states of all layers bottom first: ``(h_1, c_1, ..., h_L, c_L)`` here.

    Args:
        input_size (int): D.
        hidden_size (int): H.
        num_layers (int): stacked layers; layer k > 0 reads layer k-1's outputs.
        dropout (float): inverted dropout on the outputs of every layer but the top one
            (the identity under ``test_mode()``).
        variational (bool): one dropout mask per sequence, shared by all time steps.
        stateful (bool): carry the final state into the next call (truncated BPTT) until
            ``reset_state()``; after each backward, ``loss.unchain_backward()`` cuts the
            carried state from the old graph.
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
        fused (bool): True (default) runs each layer as one ``F.lstm_sequence`` op and a step as
            ``F.lstm``; False records every gate of every step (see ``LSTMCell``).
    Attributes:
        cells (list of LSTMCell): ``cell0``, ``cell1``, ... bottom first.
        state (tuple | None): the state the next call starts from (see ``state``).
    Raises:
        ValueError: a size that is not a positive int, ``dropout`` outside [0, 1), or an
            unknown preset.
        TypeError: a size that is not an int, a dtype that is not a float dtype, an
            initializer that is not callable, or a ``fused`` that is not a bool.
    """

    cell_class = LSTMCell
    root_scope = "lstm"

    def __init__(self, input_size, hidden_size, num_layers=1, dropout=0.0, variational=False, stateful=False,
                 seed=None, dtype=np.float32, forget_bias=None, *, init="classic", Wx_init=None, Wh_init=None,
                 b_init=None, two_biases=False, fused=True):
        super().__init__(input_size, hidden_size, num_layers, dropout, variational, stateful, seed, dtype, init=init,
                         Wx_init=Wx_init, Wh_init=Wh_init, b_init=b_init, forget_bias=forget_bias,
                         two_biases=two_biases, fused=fused)

    def initial_state(self, n=None, h=None, c=None):
        """A state in ``step``'s format: zeros, or ``h`` and ``c`` given as ``set_state`` takes them.

        Args:
            n (int, optional): N; needed when neither ``h`` nor ``c`` is given.
            h (Variable | ndarray, optional): (num_layers, N, H), or (N, H) when num_layers
                is 1; a Variable keeps its graph; zeros when missing.
            c (Variable | ndarray, optional): as ``h``.
        Returns:
            tuple of Variable: ``(h_1, c_1, ..., h_L, c_L)``, each (N, H).
        Raises:
            ValueError: no ``n`` and no state, or a shape that does not fit.
        """
        return self._from_stacked(f"{type(self).__name__}.initial_state", n, h, c)

    def set_state(self, h, c=None):
        """Start the next call from (h, c) (for a layer that is not stateful, only the next call).

        Args:
            h (Variable | ndarray): as in ``RNN.set_state``.
            c (Variable | ndarray, optional): like ``h``; zeros when None.
        Raises:
            ValueError: a shape does not fit.
        """
        self._carried = self._from_stacked(f"{type(self).__name__}.set_state", None, h, c)

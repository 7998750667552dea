"""Fused LSTM: the element-wise part of one step (``lstm``), and whole sequences (``lstm_sequence``).

An LSTM step built from primitives records about a dozen ops (split, three sigmoids, two
tanh, products and sums) and as many backward calls; on the small batches of the classic
lessons their Python overhead costs more than the arithmetic. ``lstm`` computes the same
values and gradients in one forward and one backward; ``lstm_sequence`` runs all T steps of
a layer as one op (the textbook's TimeLSTM, PyTorch's ``nn.LSTM``; time-major), and takes the
gradient of ``Wh`` as one product over all steps. ``LSTMCell`` and ``LSTM`` use them unless the graph is
recorded under ``using_config("fused_cells", False)``, which shows every gate of every step.

Gate blocks are ordered i, f, g, o, as everywhere in tinygrad_rnn.
"""
from tinygrad_rnn.backend import get_array_module
from tinygrad_rnn.core import Function, as_variable


def _blocks(gates, h):
    return gates[:, :h], gates[:, h:2 * h], gates[:, 2 * h:3 * h], gates[:, 3 * h:]


def _cell_forward(a, c, gates, tanh_c, h_next, c_next):
    """One step from pre-activations ``a`` (N, 4H) and ``c`` (N, H), into the given arrays.

    ``gates`` (N, 4H) receives sigmoid(i), sigmoid(f), tanh(g), sigmoid(o); ``tanh_c``, ``h_next``
    and ``c_next`` (N, H) the rest. Each may be a strided view (one step of a sequence).
    """
    xp = get_array_module(a)
    h = c.shape[1]
    # All four blocks through the tanh form of the sigmoid (as F.sigmoid), then g's block
    # overwritten with tanh: one pass over (N, 4H) instead of four slices.
    xp.multiply(a, 0.5, out=gates)
    xp.tanh(gates, out=gates)
    gates *= 0.5
    gates += 0.5
    i, f, g, o = _blocks(gates, h)
    xp.tanh(a[:, 2 * h:3 * h], out=g)
    xp.multiply(f, c, out=c_next)
    c_next += i * g
    xp.tanh(c_next, out=tanh_c)
    xp.multiply(o, tanh_c, out=h_next)


def _cell_backward(gates, tanh_c, c, gh, gc, da):
    """Gradients of one step: fill ``da`` (N, 4H) for the pre-activations; return that of ``c``.

    ``gh`` and ``gc`` (N, H) are the gradients of the step's outputs h' and c'.
    """
    xp = get_array_module(gates)
    h = c.shape[1]
    i, f, g, o = _blocks(gates, h)
    gc = gc + gh * o * (1 - tanh_c * tanh_c)  # c' reaches the loss through h' = o * tanh(c') too
    # da = (gradient with respect to each gate) * (that gate's derivative), block by block
    xp.multiply(gc, g, out=da[:, :h])
    xp.multiply(gc, c, out=da[:, h:2 * h])
    xp.multiply(gc, i, out=da[:, 2 * h:3 * h])
    xp.multiply(gh, tanh_c, out=da[:, 3 * h:])
    slope = gates * (1 - gates)  # the sigmoid's derivative, right for i, f and o
    slope[:, 2 * h:3 * h] = 1 - g * g  # tanh's for g
    da *= slope
    return gc * f


class LSTM(Function):
    twice_differentiable = False  # backward uses the gates saved by forward and plain array math

    def forward(self, a, c):
        xp = get_array_module(a)
        self.gates, self.tanh_c = xp.empty_like(a), xp.empty_like(c)
        h_next, c_next = xp.empty_like(c), xp.empty_like(c)
        _cell_forward(a, c, self.gates, self.tanh_c, h_next, c_next)
        return h_next, c_next

    def backward(self, gh, gc):
        da = get_array_module(gh).empty_like(self.gates)
        gc_prev = _cell_backward(self.gates, self.tanh_c, self.arg(1), gh, gc, da)
        return da, gc_prev


def _check(op, a, c, h=None, Wh=None):
    """Shapes and dtypes of the fused ops' inputs; ``a`` is (N, 4H) for lstm, (T, N, 4H) for lstm_sequence."""
    n, width = a.shape[-2], a.shape[-1]
    states = [s for s in (h, c) if s is not None]
    fits = (a.ndim == (2 if h is None else 3) and all(s.shape == (n, width // 4) for s in states)
            and width == 4 * c.shape[-1] and (Wh is None or Wh.shape == (c.shape[-1], width)))
    if not fits:
        named = (("a" if h is None else "xw", a), ("h", h), ("c", c), ("Wh", Wh))
        got = ", ".join(f"{name} {x.shape}" for name, x in named if x is not None)
        want = "a (N, 4H), c (N, H)" if h is None else "xw (T, N, 4H), h (N, H), c (N, H), Wh (H, 4H)"
        raise ValueError(f"{op}: shapes {got} do not fit {want}")
    if h is not None and a.shape[0] == 0:
        raise ValueError(f"{op}: needs at least one time step, got xw of shape {a.shape}")
    dtypes = {x.dtype for x in (a, c, h, Wh) if x is not None}
    if len(dtypes) > 1:
        raise TypeError(f"{op}: inputs of different dtypes ({', '.join(sorted(map(str, dtypes)))})")


def lstm(a, c):
    """The element-wise part of an LSTM step, fused: gate pre-activations -> (h', c').

    With ``[a_i, a_f, a_g, a_o]`` the four (N, H) blocks of ``a`` (order i, f, g, o):
    ``c' = sigmoid(a_f) * c + sigmoid(a_i) * tanh(a_g)`` and ``h' = sigmoid(a_o) * tanh(c')``,
    the same values and gradients as the graph composed from split, sigmoid, tanh, mul and add.
    Not twice differentiable: build the cell from primitives for higher derivatives.

    Args:
        a (Variable | ndarray): (N, 4H) pre-activations ``x @ Wx + h @ Wh + b``.
        c (Variable | ndarray): (N, H) the previous cell state.
    Returns:
        tuple of Variable: (h', c'), each (N, H).
    Raises:
        ValueError: the shapes are not (N, 4H) and (N, H).
        TypeError: the dtypes differ.
    """
    a, c = as_variable(a), as_variable(c)
    _check("lstm", a, c)
    return LSTM()(a, c)


class LSTMSequence(Function):
    twice_differentiable = False  # backward uses the gates saved by forward and plain array math

    def forward(self, xw, h, c, Wh):
        xp = get_array_module(xw)
        steps, n, width = xw.shape
        self.gates = xp.empty_like(xw)
        self.tanh_c = xp.empty((steps, n, width // 4), dtype=xw.dtype)
        hs, self.cs = xp.empty_like(self.tanh_c), xp.empty_like(self.tanh_c)
        for t in range(steps):
            a = h @ Wh
            a += xw[t]
            _cell_forward(a, c, self.gates[t], self.tanh_c[t], hs[t], self.cs[t])
            h, c = hs[t], self.cs[t]
        self.hs = hs  # also for backward: the caller may drop this output
        # copies: the final state may be carried to the next call and must not keep hs and cs alive
        return hs, h.copy(), c.copy()

    def backward(self, ghs, gh, gc):
        xp = get_array_module(ghs)
        h0, c0, Wh = self.arg(1), self.arg(2), self.arg(3)
        da = xp.empty_like(self.gates)
        for t in reversed(range(len(da))):
            gh = gh + ghs[t]
            gc = _cell_backward(self.gates[t], self.tanh_c[t], self.cs[t - 1] if t else c0, gh, gc, da[t])
            gh = da[t] @ Wh.T
        # Wh's gradient over all steps at once: sum_t h_{t-1}^T @ da_t as one product
        h_prev = xp.concatenate([h0[None], self.hs[:-1]])
        dWh = h_prev.reshape(-1, h_prev.shape[2]).T @ da.reshape(-1, da.shape[2])
        return da, gh, gc, dWh


def lstm_sequence(xw, h, c, Wh):
    """A whole LSTM layer over T steps as one op: the T steps of ``lstm`` with ``a_t = xw_t + h_{t-1} @ Wh``.

    Values and gradients equal T composed steps; the input projection ``xw = x @ Wx + b`` of
    all steps is computed before (one product), ``h @ Wh`` inside. Time-major, as cuDNN and
    PyTorch's default ``nn.LSTM``: each step's arrays are then contiguous, which makes the
    element-wise work of a step about twice as fast as on (N, T, ...) slices. Not twice
    differentiable.

    Args:
        xw (Variable | ndarray): (T, N, 4H) input projections, T >= 1, gate blocks i, f, g, o.
        h (Variable | ndarray): (N, H) the initial hidden state.
        c (Variable | ndarray): (N, H) the initial cell state.
        Wh (Variable | ndarray): (H, 4H) the recurrent weights.
    Returns:
        tuple of Variable: (hs, h, c): all hidden states (T, N, H), and the final h and c (N, H).
    Raises:
        ValueError: the shapes do not fit, or T is 0.
        TypeError: the dtypes differ.
    """
    xw, h, c, Wh = (as_variable(x) for x in (xw, h, c, Wh))
    _check("lstm_sequence", xw, c, h, Wh)
    return LSTMSequence()(xw, h, c, Wh)

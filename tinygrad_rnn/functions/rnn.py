"""Fused LSTM and GRU: the element-wise part of one step, and whole sequences, each as one op.

An LSTM step built from primitives records about a dozen ops (split, three sigmoids, two
tanh, products and sums) and as many backward calls; on the small batches of the classic
lessons their Python overhead costs more than the arithmetic. ``lstm`` and ``gru`` compute the
same values and gradients in one forward and one backward; ``lstm_sequence`` and
``gru_sequence`` run all T steps of a layer as one op (the textbook's TimeLSTM, PyTorch's
``nn.LSTM``; time-major, as cuDNN), and take the gradient of ``Wh`` as one product over all
steps. LSTM and GRU cells and sequence layers use them unless they are built with
``fused=False``, which records every gate of every step. None of them is twice
differentiable: record the composed graph for higher derivatives. On the CPU, the ``cpu``
extra (Numba) compiles the element-wise work of each step of the sequence ops (``_cpu_kernels``),
with the same formulas in the same order; only float32's tanh differs (an approximation within a
few ulp).

Gate blocks are ordered i, f, g, o for the LSTM and r, z, n for the GRU, as everywhere in tinygrad_rnn.
"""
import contextlib

import numpy as np

from tinygrad_rnn import compiled
from tinygrad_rnn.backend import elementwise_kernel, get_array_module, kernel_source
from tinygrad_rnn.core import Function, as_variable
from tinygrad_rnn.functions import linalg

# Per-step products of at least this many multiply-adds (N x H x 4H) run on oneDNN's matmul where its
# extra is installed (_step_product): at N 20 it wins from H 128 up; below, its few microseconds a call
# (ctypes and the primitive's dispatch) lose to BLAS (tools/bench_gemm.py)
ONEDNN_MIN_MULTIPLY_ADDS = 2**20

# On the GPU each step's element-wise math is one kernel, where NumPy's version below launches
# about ten (their launch overhead dominates a step at these sizes). Same formulas, block by block;
# gate names end in g because CuPy reserves i and n.
_LSTM_FORWARD = kernel_source("tinygrad_rnn_lstm_forward", "T ai, T af, T ag, T ao, T c",
                              "T ig, T fg, T gg, T og, T tanh_c, T h_next, T c_next", """
    ig = tanh(ai * (T)0.5) * (T)0.5 + (T)0.5;
    fg = tanh(af * (T)0.5) * (T)0.5 + (T)0.5;
    gg = tanh(ag);
    og = tanh(ao * (T)0.5) * (T)0.5 + (T)0.5;
    c_next = fg * c + ig * gg;
    tanh_c = tanh(c_next);
    h_next = og * tanh_c;""")
_LSTM_BACKWARD = kernel_source("tinygrad_rnn_lstm_backward", "T ig, T fg, T gg, T og, T tanh_c, T c, T gh, T gc",
                               "T dai, T daf, T dag, T dao, T gc_prev", """
    T gc_all = gc + gh * og * (1 - tanh_c * tanh_c);
    dai = gc_all * gg * ig * (1 - ig);
    daf = gc_all * c * fg * (1 - fg);
    dag = gc_all * ig * (1 - gg * gg);
    dao = gh * tanh_c * og * (1 - og);
    gc_prev = gc_all * fg;""")
_GRU_FORWARD = kernel_source("tinygrad_rnn_gru_forward", "T xr, T xz, T xn, T hr, T hz, T hw_n, T h, T bh",
                             "T rg, T zg, T ng, T hn, T h_next", """
    rg = tanh((xr + hr) * (T)0.5) * (T)0.5 + (T)0.5;
    zg = tanh((xz + hz) * (T)0.5) * (T)0.5 + (T)0.5;
    hn = hw_n + bh;
    ng = tanh(xn + rg * hn);
    h_next = ng + zg * (h - ng);""")
_GRU_BACKWARD = kernel_source("tinygrad_rnn_gru_backward", "T rg, T zg, T ng, T hn, T h, T gh",
                              "T dxr, T dxz, T dxn, T dhr, T dhz, T dhn, T gh_direct", """
    T da_n = gh * (1 - zg) * (1 - ng * ng);
    dxn = da_n;
    dhn = da_n * rg;
    dxr = da_n * hn * rg * (1 - rg);
    dxz = gh * (h - ng) * zg * (1 - zg);
    dhr = dxr;
    dhz = dxz;
    gh_direct = gh * zg;""")


def _in_dtype(dtype, *gys):
    """The upstream gradients in the op's dtype.

    A CuPy kernel takes one dtype per ``T`` and raises on a float64 gradient of a float32 op,
    where NumPy's ``out=`` would cast it silently: cast before either path, so both agree.
    """
    return tuple(g.astype(dtype, copy=False) for g in gys)


def _blocks(gates, h):
    return gates[:, :h], gates[:, h:2 * h], gates[:, 2 * h:3 * h], gates[:, 3 * h:]


def _thirds(x, h):
    return x[:, :h], x[:, h:2 * h], x[:, 2 * h:]


def _cell_forward(a, c, gates, tanh_c, h_next, c_next):
    """One step from pre-activations ``a`` (N, 4H) and ``c`` (N, H), into the given arrays.

    ``gates`` (N, 4H) receives sigmoid(i), sigmoid(f), tanh(g), sigmoid(o); ``tanh_c``, ``h_next``
    and ``c_next`` (N, H) the rest. Each may be a view (one step of a time-major sequence).
    """
    xp = get_array_module(a)
    h = c.shape[1]
    if xp is not np:
        elementwise_kernel(_LSTM_FORWARD)(*_blocks(a, h), c, *_blocks(gates, h), tanh_c, h_next, c_next)
        return
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
    if xp is not np:
        gc_prev = xp.empty_like(c)
        elementwise_kernel(_LSTM_BACKWARD)(*_blocks(gates, h), tanh_c, c, gh, gc, *_blocks(da, h), gc_prev)
        return gc_prev
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
        self.c, self.h = c_next, h_next  # no copies: for activations(), the outputs themselves
        return h_next, c_next

    def backward(self, gh, gc):
        gh, gc = _in_dtype(self.gates.dtype, gh, gc)
        da = get_array_module(gh).empty_like(self.gates)
        gc_prev = _cell_backward(self.gates, self.tanh_c, self.arg(1), gh, gc, da)
        return da, gc_prev

    def activations(self):
        """What forward saved, by the book's names: ``i, f, g, o`` (after their sigmoid or tanh),
        ``c`` and ``h``, each (N, H) (views; used by ``tinygrad_rnn.inspect``).

        Raises:
            RuntimeError: a backward without ``retain_graph`` freed them.
        """
        return {**_gate_blocks(self, "ifgo"), "c": self.c, "h": self.h}


def _check(op, inputs, want, steps_first=False):
    """Check the shapes and dtypes of a fused op's inputs against ``want``.

    Args:
        op (str): the op's name, for the messages.
        inputs (dict): name -> Variable, in argument order.
        want (dict): name -> shape pattern, a tuple of letters ("N", "H", "T"); "G*H" reads as G
            times H. Each letter must take one value across all inputs.
        steps_first (bool): the first input is (T, ...) and T must be at least 1.
    Raises:
        ValueError: a shape does not fit the pattern (one value per letter) or T is 0.
        TypeError: the dtypes differ.
    """
    sizes, fits = {}, True
    for name, x in inputs.items():
        pattern = want[name]
        fits = fits and x.ndim == len(pattern)
        for size, symbol in zip(x.shape, pattern):
            blocks, letter = (int(symbol[0]), symbol[-1]) if "*" in symbol else (1, symbol)
            if size % blocks:
                fits = False
            elif sizes.setdefault(letter, size // blocks) != size // blocks:
                fits = False
    if not fits:
        got = ", ".join(f"{name} {x.shape}" for name, x in inputs.items())
        shapes = ", ".join(f"{name} ({', '.join(p.replace('*', '') for p in want[name])})" for name in inputs)
        raise ValueError(f"{op}: shapes {got} do not fit {shapes}")
    first = next(iter(inputs.values()))
    if steps_first and first.shape[0] == 0:
        raise ValueError(f"{op}: needs at least one time step, got {next(iter(inputs))} of shape {first.shape}")
    dtypes = {x.dtype for x in inputs.values()}
    if len(dtypes) > 1:
        raise TypeError(f"{op}: inputs of different dtypes ({', '.join(sorted(map(str, dtypes)))})")


def lstm(a, c):
    """The element-wise part of an LSTM step, fused: gate pre-activations -> (h', c').

    With ``[a_i, a_f, a_g, a_o]`` the four (N, H) blocks of ``a`` (order i, f, g, o):
    ``c' = sigmoid(a_f) * c + sigmoid(a_i) * tanh(a_g)`` and ``h' = sigmoid(a_o) * tanh(c')``,
    the same values and gradients as the graph composed from split, sigmoid, tanh, mul and add.

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
    _check("lstm", {"a": a, "c": c}, {"a": ("N", "4*H"), "c": ("N", "H")})
    return LSTM()(a, c)


def _states_after(h, steps):
    """Views ``(h_prev, hs)`` of one new (T + 1, N, H) array whose first row holds ``h`` (N, H): the
    states before each step and after it, each (T, N, H), so that ``Wh``'s gradient reads the states
    before each step without a copy of them."""
    states = get_array_module(h).empty((steps + 1,) + h.shape, dtype=h.dtype)
    states[0] = h
    return states[:-1], states[1:]


def _gate_blocks(op, names):
    """The (T, N, H) blocks of a sequence op's saved gates, or the (N, H) ones of a step op's, by
    name (views), while its graph is kept."""
    if op.freed:
        raise RuntimeError(f"{op.op}: activations asked after backward freed them; ask before, "
                           "or pass retain_graph=True to backward")
    size = op.gates.shape[-1] // len(names)
    return {name: op.gates[..., k * size:(k + 1) * size] for k, name in enumerate(names)}


class LSTMSequence(Function):
    op = "lstm_sequence"
    twice_differentiable = False  # backward uses the gates saved by forward and plain array math

    def forward(self, xw, h, c, Wh):
        xp = get_array_module(xw)
        steps, n, width = xw.shape
        self.gates = xp.empty(xw.shape, dtype=xw.dtype)  # C order whatever xw's strides: contiguous steps
        self.tanh_c = xp.empty((steps, n, width // 4), dtype=xw.dtype)
        self.cs = xp.empty_like(self.tanh_c)
        self.h_prev, self.hs = _states_after(h, steps)  # both for backward too
        _lstm_steps_forward(xw, h, c, Wh, self.gates, self.tanh_c, self.hs, self.cs)
        # copies: the final state may be carried to the next call and must not keep hs and cs alive
        return self.hs, self.hs[-1].copy(), self.cs[-1].copy()

    def backward(self, ghs, gh, gc):
        ghs, gh, gc = _in_dtype(self.gates.dtype, ghs, gh, gc)
        xp = get_array_module(ghs)
        c0, Wh = self.arg(2), self.arg(3)
        da = xp.empty_like(self.gates)
        gh, gc = _lstm_steps_backward(self.gates, self.tanh_c, self.cs, c0, Wh, ghs, gh, gc, da)
        # Wh's gradient over all steps at once: sum_t h_{t-1}^T @ da_t as one product
        dWh = linalg.product(self.h_prev.reshape(-1, self.h_prev.shape[2]).T, da.reshape(-1, da.shape[2]))
        return da, gh, gc, dWh

    def activations(self):
        """What forward saved, by the book's names: ``i, f, g, o`` (after their sigmoid or tanh),
        ``c`` and ``h``, each (T, N, H) (views; used by ``tinygrad_rnn.inspect``).

        Raises:
            RuntimeError: a backward without ``retain_graph`` freed them.
        """
        return {**_gate_blocks(self, "ifgo"), "c": self.cs, "h": self.hs}


def _lstm_steps_forward(xw, h, c, Wh, gates, tanh_c, hs, cs):
    """The T steps of an LSTM layer's forward, into the given (T, N, 4H) and (T, N, H) arrays."""
    xp = get_array_module(xw)
    a = xp.empty(xw.shape[1:], dtype=xw.dtype)  # one workspace for every step's pre-activations
    kernels = _compiled_kernels(xw)
    with _step_product(Wh, a) as product:
        for t in range(len(xw)):
            product(hs[t - 1] if t else h)
            if kernels is None:
                a += xw[t]
                _cell_forward(a, cs[t - 1] if t else c, gates[t], tanh_c[t], hs[t], cs[t])
            else:
                kernels.lstm_forward_step(t, a, xw, c, gates, tanh_c, hs, cs)


def _lstm_steps_backward(gates, tanh_c, cs, c0, Wh, ghs, gh, gc, da):
    """The T steps of an LSTM layer's backward: fill ``da`` (T, N, 4H); return the gradients of h0 and c0."""
    xp = get_array_module(gates)
    gh_prev = xp.empty(c0.shape, gates.dtype)
    kernels = _compiled_kernels(gates)
    if kernels is not None:
        gc = gc.copy()  # the kernel updates c's gradient in place
    with _step_product(Wh.T, gh_prev) as product:
        for t in reversed(range(len(da))):
            if kernels is None:
                gh = gh + ghs[t]
                gc = _cell_backward(gates[t], tanh_c[t], cs[t - 1] if t else c0, gh, gc, da[t])
            else:
                kernels.lstm_backward_step(t, gates, tanh_c, cs, c0, gh, ghs, gc, da)
            product(da[t])
            gh = gh_prev
    return gh, gc


@contextlib.contextmanager
def _step_product(w, out):
    """Context manager: ``product(x)``, writing ``x @ w`` into ``out`` at every step of a sequence op.

    oneDNN's matmul, with ``w`` packed once into its own layout, where ``compiled.onednn`` lets it run
    products of ``w`` (the extra installed, float32 NumPy arrays, BLAS on one thread, ...) and
    ``len(out) * w.size`` is at least ``ONEDNN_MIN_MULTIPLY_ADDS``: a ``MatMul`` from
    ``onednn.acquire``'s pool, so that a layer called again only repacks its weights; else ``matmul``,
    on a C-ordered copy of ``w`` (BLAS reads it faster than a transposed view, every step). oneDNN
    sums in another order than BLAS: the results differ in float32 rounding.

    Args:
        w (ndarray): (K, M) the recurrent weights or their transpose (a view).
        out (ndarray): (N, M) the workspace every step's product goes to.
    Yields:
        callable: ``product(x)`` for every step's ``x`` (N, K).
    """
    xp = get_array_module(w)
    onednn = compiled.onednn(w) if len(out) * w.size >= ONEDNN_MIN_MULTIPLY_ADDS else None
    if onednn is None:
        w = xp.ascontiguousarray(w)
        yield lambda x: xp.matmul(x, w, out=out)
        return
    with onednn.acquire(np.empty((len(out), w.shape[0]), np.float32), w, out) as matmul:
        yield lambda x: matmul(np.ascontiguousarray(x))  # the layout it was built for


def _compiled_kernels(x):
    """The compiled steps for arrays of ``x``'s kind, or None: the NumPy path runs instead (``compiled.kernels``)."""
    return compiled.kernels("tinygrad_rnn.functions._cpu_kernels", x)


def lstm_sequence(xw, h, c, Wh):
    """A whole LSTM layer over T steps as one op: the T steps of ``lstm`` with ``a_t = xw_t + h_{t-1} @ Wh``.

    Values and gradients equal T composed steps; the input projection ``xw = x @ Wx + b`` of
    all steps is computed before (one product), ``h @ Wh`` inside. Time-major, as cuDNN and
    PyTorch's default ``nn.LSTM``: each step's arrays are then contiguous, where (N, T, ...)
    slices would be strided.

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
    _check("lstm_sequence", {"xw": xw, "h": h, "c": c, "Wh": Wh},
           {"xw": ("T", "N", "4*H"), "h": ("N", "H"), "c": ("N", "H"), "Wh": ("H", "4*H")}, steps_first=True)
    return LSTMSequence()(xw, h, c, Wh)


def _gru_forward(xw, hw, h, bh, gates, hn, h_next):
    """One GRU step from ``xw = x @ Wx + b`` and ``hw = h @ Wh`` (N, 3H), into the given arrays.

    ``gates`` (N, 3H) receives r, z, n; ``hn`` (N, H) the recurrent part of n before the reset
    gate, ``h @ Wh_n + bh``; ``h_next`` (N, H) the new state.
    """
    xp = get_array_module(xw)
    size = h.shape[1]
    if xp is not np:
        elementwise_kernel(_GRU_FORWARD)(*_thirds(xw, size), *_thirds(hw, size), h, bh, *_thirds(gates, size), hn,
                                         h_next)
        return
    rz, n = gates[:, :2 * size], gates[:, 2 * size:]
    xp.add(xw[:, :2 * size], hw[:, :2 * size], out=rz)
    rz *= 0.5  # the tanh form of the sigmoid, as F.sigmoid
    xp.tanh(rz, out=rz)
    rz *= 0.5
    rz += 0.5
    r, z = rz[:, :size], rz[:, size:]
    xp.add(hw[:, 2 * size:], bh, out=hn)
    xp.multiply(r, hn, out=n)
    n += xw[:, 2 * size:]
    xp.tanh(n, out=n)
    xp.subtract(h, n, out=h_next)  # h' = (1 - z) * n + z * h = n + z * (h - n)
    h_next *= z
    h_next += n


def _gru_backward(gates, hn, h, gh, dxw, dhw):
    """Gradients of one step for the gradient ``gh`` of h': fill ``dxw`` and ``dhw`` (N, 3H)
    for ``xw`` and ``hw``; return the part of h's gradient that skips ``Wh`` (``gh * z``)."""
    xp = get_array_module(gates)
    size = h.shape[1]
    if xp is not np:
        gh_direct = xp.empty_like(h)
        elementwise_kernel(_GRU_BACKWARD)(*_thirds(gates, size), hn, h, gh, *_thirds(dxw, size), *_thirds(dhw, size),
                                          gh_direct)
        return gh_direct
    r, z, n = _thirds(gates, size)
    da_n = gh * (1 - z) * (1 - n * n)  # through n = tanh(a_n)
    dxw[:, 2 * size:] = da_n
    dhw[:, 2 * size:] = da_n * r
    dxw[:, :size] = da_n * hn * r * (1 - r)
    dxw[:, size:2 * size] = gh * (h - n) * z * (1 - z)
    dhw[:, :2 * size] = dxw[:, :2 * size]
    return gh * z


class GRU(Function):
    twice_differentiable = False  # backward uses the gates saved by forward and plain array math

    def forward(self, xw, hw, h, bh):
        xp = get_array_module(xw)
        self.gates, self.hn = xp.empty_like(xw), xp.empty_like(h)
        h_next = xp.empty_like(h)
        _gru_forward(xw, hw, h, bh, self.gates, self.hn, h_next)
        self.h = h_next  # not a copy: for activations(), the output itself
        return h_next

    def backward(self, gh):
        gh, = _in_dtype(self.gates.dtype, gh)
        xp = get_array_module(gh)
        dxw, dhw = xp.empty_like(self.gates), xp.empty_like(self.gates)
        gh_direct = _gru_backward(self.gates, self.hn, self.arg(2), gh, dxw, dhw)
        return dxw, dhw, gh_direct, dhw[:, 2 * gh.shape[1]:].sum(axis=0)

    def activations(self):
        """What forward saved, by the book's names: ``r, z, n`` and ``h``, each (N, H) (views; used
        by ``tinygrad_rnn.inspect``).

        Raises:
            RuntimeError: a backward without ``retain_graph`` freed them.
        """
        return {**_gate_blocks(self, "rzn"), "h": self.h}


def gru(xw, hw, h, bh):
    """The element-wise part of a GRU step (PyTorch's convention), fused: projections -> h'.

    With blocks r, z, n of ``xw`` and ``hw``: ``r = sigmoid(xw_r + hw_r)``,
    ``z = sigmoid(xw_z + hw_z)``, ``n = tanh(xw_n + r * (hw_n + bh))``, ``h' = (1 - z) * n + z * h``,
    the same values and gradients as the graph ``GRUCell`` composes from primitives.

    Args:
        xw (Variable | ndarray): (N, 3H) input projections ``x @ Wx + b``.
        hw (Variable | ndarray): (N, 3H) recurrent projections ``h @ Wh``.
        h (Variable | ndarray): (N, H) the previous state.
        bh (Variable | ndarray): (H,) the recurrent bias of n.
    Returns:
        Variable: h' (N, H).
    Raises:
        ValueError: the shapes do not fit.
        TypeError: the dtypes differ.
    """
    xw, hw, h, bh = (as_variable(x) for x in (xw, hw, h, bh))
    _check("gru", {"xw": xw, "hw": hw, "h": h, "bh": bh},
           {"xw": ("N", "3*H"), "hw": ("N", "3*H"), "h": ("N", "H"), "bh": ("H",)})
    return GRU()(xw, hw, h, bh)


class GRUSequence(Function):
    op = "gru_sequence"
    twice_differentiable = False  # backward uses the gates saved by forward and plain array math

    def forward(self, xw, h, Wh, bh):
        xp = get_array_module(xw)
        self.gates = xp.empty(xw.shape, dtype=xw.dtype)  # C order whatever xw's strides: contiguous steps
        self.hn = xp.empty(xw.shape[:2] + h.shape[1:], dtype=xw.dtype)
        self.h_prev, self.hs = _states_after(h, len(xw))  # both for backward too: the caller may drop hs
        _gru_steps_forward(xw, h, Wh, bh, self.gates, self.hn, self.hs)
        return self.hs, self.hs[-1].copy()  # a copy: the final state may be carried and must not keep hs alive

    def backward(self, ghs, gh):
        ghs, gh = _in_dtype(self.gates.dtype, ghs, gh)
        xp = get_array_module(ghs)
        h0, Wh = self.arg(1), self.arg(2)
        dxw, dhw = xp.empty_like(self.gates), xp.empty_like(self.gates)
        gh = _gru_steps_backward(self.gates, self.hn, self.hs, h0, Wh, ghs, gh, dxw, dhw)
        # Wh's gradient over all steps as one product
        dWh = linalg.product(self.h_prev.reshape(-1, self.h_prev.shape[2]).T, dhw.reshape(-1, dhw.shape[2]))
        return dxw, gh, dWh, dhw[:, :, 2 * gh.shape[1]:].sum(axis=(0, 1))

    def activations(self):
        """What forward saved, by the book's names: ``r, z, n`` and ``h``, each (T, N, H) (views;
        used by ``tinygrad_rnn.inspect``).

        Raises:
            RuntimeError: a backward without ``retain_graph`` freed them.
        """
        return {**_gate_blocks(self, "rzn"), "h": self.hs}


def _gru_steps_forward(xw, h, Wh, bh, gates, hn, hs):
    """The T steps of a GRU layer's forward, into the given (T, N, 3H) and (T, N, H) arrays."""
    xp = get_array_module(xw)
    hw = xp.empty(xw.shape[1:], dtype=xw.dtype)  # one workspace for every step's recurrent projection
    kernels = _compiled_kernels(xw)
    with _step_product(Wh, hw) as product:
        for t in range(len(xw)):
            h_prev = hs[t - 1] if t else h
            product(h_prev)
            if kernels is None:
                _gru_forward(xw[t], hw, h_prev, bh, gates[t], hn[t], hs[t])
            else:
                kernels.gru_forward_step(t, hw, xw, h, bh, gates, hn, hs)


def _gru_steps_backward(gates, hn, hs, h0, Wh, ghs, gh, dxw, dhw):
    """The T steps of a GRU layer's backward: fill ``dxw`` and ``dhw`` (T, N, 3H); return h0's gradient."""
    xp = get_array_module(gates)
    through_wh = xp.zeros(h0.shape, gates.dtype)  # zeros: what the kernels' first step adds (below)
    kernels = _compiled_kernels(gates)
    with _step_product(Wh.T, through_wh) as product:
        if kernels is None:
            for t in reversed(range(len(dxw))):
                gh = gh + ghs[t]
                direct = _gru_backward(gates[t], hn[t], hs[t - 1] if t else h0, gh, dxw[t], dhw[t])
                product(dhw[t])
                gh = direct + through_wh
            return gh
        # h's gradient stays in its two parts, gh * z and dhw @ Wh.T, which the next step adds (the last
        # step's comes whole, with zeros as its second part); the kernel updates the first in place
        direct = gh.copy()
        for t in reversed(range(len(dxw))):
            kernels.gru_backward_step(t, gates, hn, hs, h0, direct, through_wh, ghs, dxw, dhw)
            product(dhw[t])
    return direct + through_wh


def gru_sequence(xw, h, Wh, bh):
    """A whole GRU layer over T steps as one op: the T steps of ``gru`` with ``hw_t = h_{t-1} @ Wh``.

    Time-major like ``lstm_sequence``; values and gradients equal T composed steps.

    Args:
        xw (Variable | ndarray): (T, N, 3H) input projections ``x @ Wx + b``, T >= 1, blocks r, z, n.
        h (Variable | ndarray): (N, H) the initial state.
        Wh (Variable | ndarray): (H, 3H) the recurrent weights.
        bh (Variable | ndarray): (H,) the recurrent bias of n.
    Returns:
        tuple of Variable: (hs, h): all states (T, N, H) and the final one (N, H).
    Raises:
        ValueError: the shapes do not fit, or T is 0.
        TypeError: the dtypes differ.
    """
    xw, h, Wh, bh = (as_variable(x) for x in (xw, h, Wh, bh))
    _check("gru_sequence", {"xw": xw, "h": h, "Wh": Wh, "bh": bh},
           {"xw": ("T", "N", "3*H"), "h": ("N", "H"), "Wh": ("H", "3*H"), "bh": ("H",)}, steps_first=True)
    return GRUSequence()(xw, h, Wh, bh)

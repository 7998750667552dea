"""Compiled steps of the fused LSTM and GRU layers on the CPU: the optional ``cpu`` extra (Numba).

Each backward kernel does the element-wise work of one backward step in one pass over the arrays,
where NumPy's version in rnn.py makes about fifteen passes through temporaries. The forward keeps
NumPy's tanh, which is SIMD and far faster than the scalar libm tanh a compiled loop calls: its
kernels do the arithmetic between the tanh calls, a pass each. The formulas and the order of every
operation are those of rnn.py, so both paths give the same bits (tests/test_rnn_kernels.py).

rnn.py imports this module at the first call of a sequence op, never with the package; it needs
Numba, and the first call for each dtype and memory layout compiles (cached on disk afterwards).
"""
import numba


@numba.njit(cache=True)
def lstm_forward_scale(hw, xw, a):
    """``a`` (N, 4H) = ``hw + xw``, halved in the i, f and o blocks: tanh of that gives the sigmoid."""
    n, width = a.shape
    size = width // 4
    half = a.dtype.type(0.5)
    for row in range(n):  # block by block: loops without a branch, which the compiler vectorizes
        for j in range(2 * size):
            a[row, j] = (hw[row, j] + xw[row, j]) * half
        for j in range(2 * size, 3 * size):
            a[row, j] = hw[row, j] + xw[row, j]
        for j in range(3 * size, width):
            a[row, j] = (hw[row, j] + xw[row, j]) * half


@numba.njit(cache=True)
def lstm_forward_gates(gates, c, c_next):
    """Turn the i, f and o blocks of ``gates`` (N, 4H, their tanh) into sigmoids in place; fill ``c_next`` (N, H)."""
    n, size = c.shape
    half = gates.dtype.type(0.5)
    for row in range(n):
        for j in range(2 * size):
            gates[row, j] = gates[row, j] * half + half
        for j in range(3 * size, 4 * size):
            gates[row, j] = gates[row, j] * half + half
        for j in range(size):
            c_next[row, j] = gates[row, size + j] * c[row, j] + gates[row, j] * gates[row, 2 * size + j]


@numba.njit(cache=True)
def gru_forward_scale(xw, hw, bh, gates, hn):
    """``gates``' r and z blocks = ``(xw + hw) / 2`` (tanh of that gives the sigmoid); ``hn`` = ``hw_n + bh``."""
    n, size = hn.shape
    half = gates.dtype.type(0.5)
    for row in range(n):
        for j in range(2 * size):
            gates[row, j] = (xw[row, j] + hw[row, j]) * half
        for j in range(size):
            hn[row, j] = hw[row, 2 * size + j] + bh[j]


@numba.njit(cache=True)
def gru_forward_reset(xw, hn, gates):
    """Turn ``gates``' r and z blocks (their tanh) into sigmoids in place; its n block = ``r * hn + xw_n``."""
    n, size = hn.shape
    half = gates.dtype.type(0.5)
    for row in range(n):
        for j in range(2 * size):
            gates[row, j] = gates[row, j] * half + half
        for j in range(size):
            gates[row, 2 * size + j] = gates[row, j] * hn[row, j] + xw[row, 2 * size + j]


@numba.njit(cache=True)
def gru_forward_mix(gates, h, h_next):
    """``h_next`` (N, H) = ``(h - n) * z + n``, that is ``(1 - z) * n + z * h``, with ``n`` already its tanh."""
    n, size = h.shape
    for row in range(n):
        for j in range(size):
            nn = gates[row, 2 * size + j]
            h_next[row, j] = (h[row, j] - nn) * gates[row, size + j] + nn


@numba.njit(cache=True)
def lstm_backward_step(gates, tanh_c, c, gh, ghs, gc, da, gc_prev):
    """One LSTM step backward: ``da`` (N, 4H) and ``gc_prev`` (N, H) from the step's saved values.

    The gradient reaching h' is ``gh + ghs`` (the next step's, plus the loss's at this step);
    ``gc`` is c''s. ``gc_prev`` may be ``gc`` itself: each element is read before it is written.
    """
    n, size = c.shape
    one = gates.dtype.type(1)
    for row in range(n):
        for j in range(size):
            i, f = gates[row, j], gates[row, size + j]
            g, o = gates[row, 2 * size + j], gates[row, 3 * size + j]
            tc = tanh_c[row, j]
            h = gh[row, j] + ghs[row, j]
            c_all = gc[row, j] + h * o * (one - tc * tc)  # c' reaches the loss through h' = o * tanh(c') too
            da[row, j] = c_all * g * (i * (one - i))
            da[row, size + j] = c_all * c[row, j] * (f * (one - f))
            da[row, 2 * size + j] = c_all * i * (one - g * g)
            da[row, 3 * size + j] = h * tc * (o * (one - o))
            gc_prev[row, j] = c_all * f


@numba.njit(cache=True)
def gru_backward_step(gates, hn, h, direct, through_wh, ghs, dxw, dhw, direct_prev):
    """One GRU step backward: ``dxw``, ``dhw`` (N, 3H) and ``direct_prev`` = the gradient of h that skips Wh.

    The gradient reaching h' is ``direct + through_wh + ghs``: the next step's two parts (``gh * z``
    and ``dhw @ Wh.T``) and the loss's at this step, added in the NumPy path's order.
    ``direct_prev`` may be ``direct`` itself: each element is read before it is written.
    """
    n, size = h.shape
    one = gates.dtype.type(1)
    for row in range(n):
        for j in range(size):
            r, z, nn = gates[row, j], gates[row, size + j], gates[row, 2 * size + j]
            gh = direct[row, j] + through_wh[row, j] + ghs[row, j]
            da_n = gh * (one - z) * (one - nn * nn)  # through n = tanh(a_n)
            dxr = da_n * hn[row, j] * r * (one - r)
            dxz = gh * (h[row, j] - nn) * z * (one - z)
            dxw[row, j], dxw[row, size + j], dxw[row, 2 * size + j] = dxr, dxz, da_n
            dhw[row, j], dhw[row, size + j], dhw[row, 2 * size + j] = dxr, dxz, da_n * r
            direct_prev[row, j] = gh * z

"""Compiled backward steps of the fused LSTM and GRU on the CPU: the optional ``cpu`` extra (Numba).

Each kernel does the element-wise work of one backward step in one pass over the arrays, where
NumPy's version in rnn.py makes about fifteen passes through temporaries; the formulas and the
order of every operation are those of rnn.py, so both give the same bits (tests/test_rnn_kernels.py).
The forward stays NumPy's: it is mostly tanh, and NumPy's SIMD tanh is far faster than the scalar
libm tanh a compiled loop calls.

rnn.py imports this module at the first backward of a sequence op, never with the package; it
needs Numba, and the first call for each dtype compiles (cached on disk afterwards).
"""
import numba


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

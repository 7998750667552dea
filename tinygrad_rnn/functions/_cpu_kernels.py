"""Compiled kernels of the functions on the CPU: the optional ``cpu`` extra (Numba). The steps of
the fused LSTM and GRU layers, and the scatter-add of rows behind the gradients of embed_id and
getitem with an integer array (``scatter_add_rows``: NumPy's ``add.at`` in the same order, many
times faster).

Each recurrent kernel does the element-wise work of one step, forward or backward, in one pass over the
arrays, where NumPy's version in rnn.py makes about ten (forward) or fifteen (backward) passes
through temporaries; the recurrent product stays NumPy's (its BLAS), one call a step. The
formulas and the order of every operation are those of rnn.py. A kernel takes the layer's whole
(T, N, ...) arrays and the step: a call with the step's views costs twice as long, and a step
takes a few microseconds at small sizes.

The backward needs no transcendental function, so it gives the NumPy path's bits. The forward's
tanh cannot be NumPy's SIMD one: a compiled loop would call the scalar libm tanh, many times
slower. In float64 it does (exact math: equal to the NumPy path up to the last bit of each tanh).
In float32 it uses ``_rational_tanh``, which LLVM vectorizes, within a few ulp of the true tanh,
so close to the NumPy path but not equal.

``compiled.kernels`` imports this module at its first use (a sequence op, or such a gradient),
never with the package; the first call for each dtype and memory layout compiles (cached on disk
afterwards). ``error_model="numpy"`` lets a division by zero give inf instead of raising, which
keeps the loops free of branches LLVM cannot vectorize.
"""
import math

import numba
import numpy as np
from numba import types
from numba.extending import overload

# tanh(x) / x as P(x^2) / Q(x^2), P of degree 6 and Q of degree 4 with P(0) = Q(0) = 1 (so tiny x
# gives x exactly), fitted on [0, 10] to the relative error by weighted least squares (Loeb's
# iteration, weights 1 / (f Q)): at most 1.2e-9, and 0.41 float32 ulp with the coefficients
# rounded to float32. Beyond 10, tanh rounds to 1 in float32: clamping there gives inf its 1.
_P = tuple(np.float32(p) for p in (0.13829068577525705, 0.004059761962865767, 3.223707170732012e-05,
                                   4.3391332966429356e-08, -2.8687608308281932e-11, 2.1704841537855647e-14))
_Q = tuple(np.float32(q) for q in (0.471624017719478, 0.02793443754347181, 0.0004287653663211936,
                                   1.6110507889135203e-06))
_ONE, _CLAMP = np.float32(1), np.float32(10)


# contract: the polynomials as fused multiply-adds where the CPU has them (tests/test_rnn_kernels.py
# bounds the error either way)
@numba.njit(cache=True, error_model="numpy", fastmath={"contract"})
def _rational_tanh(x):
    """tanh of a float32 ``x`` in float32 arithmetic, within 7 ulp (the mean: 0.7 ulp).

    Clamping by comparisons rather than min/max keeps NaN a NaN.
    """
    y = _CLAMP if x > _CLAMP else x
    y = -_CLAMP if y < -_CLAMP else y
    u = y * y
    p = _ONE + u * (_P[0] + u * (_P[1] + u * (_P[2] + u * (_P[3] + u * (_P[4] + u * _P[5])))))
    q = _ONE + u * (_Q[0] + u * (_Q[1] + u * (_Q[2] + u * _Q[3])))
    return y * p / q


def _tanh(x):
    """tanh of a float32 or float64 scalar in compiled code: compiled per dtype by ``_tanh_of``."""
    raise NotImplementedError("_tanh runs compiled only")


@overload(_tanh, jit_options={"error_model": "numpy"})
def _tanh_of(x):
    if x == types.float32:
        return lambda x: _rational_tanh(x)
    return lambda x: math.tanh(x)


@numba.njit(cache=True, error_model="numpy")
def lstm_forward_step(t, a, xw, c0, gates, tanh_c, hs, cs):
    """Step ``t`` of an LSTM layer from ``a = h @ Wh`` (N, 4H): fill ``gates[t]`` (N, 4H) and the
    step's (N, H) ``tanh_c``, ``hs`` and ``cs`` from ``xw[t]`` and c (``cs[t - 1]``, or ``c0`` at t = 0)."""
    x, g, c = xw[t], gates[t], cs[t - 1] if t > 0 else c0
    tanh_c, h_next, c_next = tanh_c[t], hs[t], cs[t]
    n, size = c.shape
    half = a.dtype.type(0.5)
    for row in range(n):
        # each gate block of a row a 1-D view: loops without a branch over contiguous vectors, which
        # the compiler vectorizes (indexing the 2-D rows at offsets runs half as fast)
        for k in range(4):
            block = slice(k * size, (k + 1) * size)
            ak, xk, gk = a[row, block], x[row, block], g[row, block]
            if k == 2:
                for j in range(size):
                    gk[j] = _tanh(ak[j] + xk[j])
            else:  # i, f and o through the tanh form of the sigmoid, as F.sigmoid
                for j in range(size):
                    gk[j] = _tanh((ak[j] + xk[j]) * half) * half + half
        i, f, gg, o = g[row, :size], g[row, size:2 * size], g[row, 2 * size:3 * size], g[row, 3 * size:]
        cr, tr, hr, cn = c[row], tanh_c[row], h_next[row], c_next[row]
        for j in range(size):
            cn[j] = f[j] * cr[j] + i[j] * gg[j]
            tr[j] = _tanh(cn[j])
            hr[j] = o[j] * tr[j]


@numba.njit(cache=True, error_model="numpy")
def lstm_backward_step(t, gates, tanh_c, cs, c0, gh, ghs, gc, da):
    """Step ``t`` of an LSTM layer backward: ``da[t]`` (N, 4H) from the step's saved values; ``gc``
    (N, H) becomes c's gradient.

    The gradient reaching h' is ``gh + ghs[t]`` (the next step's, plus the loss's at this step);
    ``gc`` is c''s on entry.
    """
    g, tanh_c, c, ghs, da = gates[t], tanh_c[t], cs[t - 1] if t > 0 else c0, ghs[t], da[t]
    n, size = c.shape
    one = g.dtype.type(1)
    for row in range(n):
        i, f, gg, o = g[row, :size], g[row, size:2 * size], g[row, 2 * size:3 * size], g[row, 3 * size:]
        di, df, dg, do = da[row, :size], da[row, size:2 * size], da[row, 2 * size:3 * size], da[row, 3 * size:]
        tr, cr, ghr, gsr, gcr = tanh_c[row], c[row], gh[row], ghs[row], gc[row]
        for j in range(size):
            h = ghr[j] + gsr[j]
            c_all = gcr[j] + h * o[j] * (one - tr[j] * tr[j])  # c' reaches the loss through h' = o * tanh(c') too
            di[j] = c_all * gg[j] * (i[j] * (one - i[j]))
            df[j] = c_all * cr[j] * (f[j] * (one - f[j]))
            dg[j] = c_all * i[j] * (one - gg[j] * gg[j])
            do[j] = h * tr[j] * (o[j] * (one - o[j]))
            gcr[j] = c_all * f[j]


@numba.njit(cache=True, error_model="numpy")
def gru_forward_step(t, hw, xw, h0, bh, gates, hn, hs):
    """Step ``t`` of a GRU layer from ``hw = h @ Wh`` (N, 3H): fill ``gates[t]`` (N, 3H) and the
    step's (N, H) ``hn`` and ``hs`` from ``xw[t]`` and h (``hs[t - 1]``, or ``h0`` at t = 0)."""
    x, h, g, hn, h_next = xw[t], hs[t - 1] if t > 0 else h0, gates[t], hn[t], hs[t]
    n, size = h.shape
    half = x.dtype.type(0.5)
    for row in range(n):  # 1-D views of a row's blocks, as in lstm_forward_step
        xr, hwr, gr = x[row, :2 * size], hw[row, :2 * size], g[row, :2 * size]
        for j in range(2 * size):  # r and z through the tanh form of the sigmoid, as F.sigmoid
            gr[j] = _tanh((xr[j] + hwr[j]) * half) * half + half
        r, z, nn = g[row, :size], g[row, size:2 * size], g[row, 2 * size:]
        xn, hwn, hnr, hr, hx = x[row, 2 * size:], hw[row, 2 * size:], hn[row], h[row], h_next[row]
        for j in range(size):
            hnr[j] = hwn[j] + bh[j]
            nn[j] = _tanh(r[j] * hnr[j] + xn[j])
            hx[j] = (hr[j] - nn[j]) * z[j] + nn[j]  # (1 - z) * n + z * h


@numba.njit(cache=True, error_model="numpy")
def gru_backward_step(t, gates, hn, hs, h0, direct, through_wh, ghs, dxw, dhw):
    """Step ``t`` of a GRU layer backward: ``dxw[t]``, ``dhw[t]`` (N, 3H); ``direct`` (N, H) becomes
    the gradient of h that skips Wh.

    The gradient reaching h' is ``direct + through_wh + ghs[t]``: the next step's two parts
    (``gh * z`` and ``dhw @ Wh.T``) and the loss's at this step, added in the NumPy path's order.
    """
    g, hn, h, ghs = gates[t], hn[t], hs[t - 1] if t > 0 else h0, ghs[t]
    dxw, dhw = dxw[t], dhw[t]
    n, size = h.shape
    one = g.dtype.type(1)
    for row in range(n):  # 1-D views of a row's blocks, as in lstm_forward_step
        r, z, nn = g[row, :size], g[row, size:2 * size], g[row, 2 * size:]
        dxr, dxz, dxn = dxw[row, :size], dxw[row, size:2 * size], dxw[row, 2 * size:]
        dhr, dhz, dhn = dhw[row, :size], dhw[row, size:2 * size], dhw[row, 2 * size:]
        hnr, hr, dr, tr, gsr = hn[row], h[row], direct[row], through_wh[row], ghs[row]
        for j in range(size):
            gh = dr[j] + tr[j] + gsr[j]
            da_n = gh * (one - z[j]) * (one - nn[j] * nn[j])  # through n = tanh(a_n)
            dxr[j] = da_n * hnr[j] * r[j] * (one - r[j])
            dxz[j] = gh * (hr[j] - nn[j]) * z[j] * (one - z[j])
            dxn[j] = da_n
            dhr[j], dhz[j], dhn[j] = dxr[j], dxz[j], da_n * r[j]
            dr[j] = gh * z[j]


@numba.njit(cache=True, error_model="numpy")
def scatter_add_rows(gx, ids, gy):
    """Add row ``i`` of ``gy`` (n, D) into row ``ids[i]`` of ``gx`` (V, D) for i = 0, 1, ..., as
    ``np.add.at(gx, ids, gy)`` does, so each element's sum comes in the same order: the same bits.

    ``ids`` (n,) of any integer dtype is read as NumPy reads an index: cast to int64 (a uint64 id
    of 2**63 or more wraps, as there), a negative id counting from the end.

    Returns:
        int: -1, or the position of the first id outside [-V, V), where the loop stopped: the
        caller raises (Numba does not check bounds, so the loop must not write there).
    """
    v = gx.shape[0]
    for i in range(ids.shape[0]):
        k = np.int64(ids[i])
        if k < 0:
            k += v
        if k < 0 or k >= v:
            return i
        row, grad = gx[k], gy[i]
        for j in range(grad.shape[0]):
            row[j] += grad[j]
    return -1

"""The optimizers' steps on a flat CPU buffer in one compiled pass: the optional ``cpu`` extra (Numba).

NumPy's step makes a pass over the buffers for every operation of the formula (Adam's: a dozen,
through a scratch buffer); each kernel here reads every element of the parameters, the gradient
and the state once, and writes the parameters and the state once. It spells out the operations
of its optimizer's ``_update_one`` (optimizers.py), weight decay first, in their order and in the
buffers' dtype, every scalar cast to that dtype as NumPy casts a Python float it combines with an
array (NEP 50): with no contraction into fused multiply-adds (no fastmath), and sqrt and division
correctly rounded, each gives the NumPy path's bits (tests/test_cpu_updates.py checks it).

Every kernel takes the (L,) flat buffers of a group (``param``, updated in place; ``grad``, read;
the state, updated in place), then the weight decay and the optimizer's ``_coefficients()``, all
Python floats: arithmetic on the scalars alone (``1 - beta1 ** t``) is Python's, as on the NumPy
path, and a weight decay that rounds to 0 in float32 still decides, as there, whether
the penalty is added. optimizers.py imports this module through ``compiled.kernels`` at the first
update, never with the package; the first call for each dtype compiles (cached on disk).
``error_model="numpy"`` lets a division by zero give inf instead of raising.
"""
import numba
import numpy as np


@numba.njit(cache=True, error_model="numpy")
def _decayed(g, p, weight_decay, wd):
    """``g + wd * p`` where there is a weight decay (``weight_decay`` as given, ``wd`` cast), else ``g``."""
    return g + p * wd if weight_decay != 0 else g


@numba.njit(cache=True, error_model="numpy")
def _divided(g, h, lr, eps):
    """``lr * g / (sqrt(h) + eps)``, rounding as optimizers._divided_step."""
    return g * lr / (np.sqrt(h) + eps)


@numba.njit(cache=True, error_model="numpy")
def sgd(param, grad, weight_decay, lr):
    """``p -= g`` (the learning rate folded into the gradient's copy), or ``p -= lr * (g + wd * p)``."""
    cast = param.dtype.type
    wd, lr = cast(weight_decay), cast(lr)
    for i in range(param.size):
        g = grad[i]
        if weight_decay != 0:
            g = (g + param[i] * wd) * lr
        param[i] -= g


@numba.njit(cache=True, error_model="numpy")
def momentum_sgd(param, grad, v, weight_decay, momentum, lr):
    """``v = momentum * v - lr * g; p += v``."""
    cast = param.dtype.type
    wd, momentum, lr = cast(weight_decay), cast(momentum), cast(lr)
    for i in range(param.size):
        g = _decayed(grad[i], param[i], weight_decay, wd)
        vi = v[i] * momentum - g * lr
        v[i] = vi
        param[i] += vi


@numba.njit(cache=True, error_model="numpy")
def ada_grad(param, grad, h, weight_decay, lr, eps):
    """``h += g * g; p -= lr * g / (sqrt(h) + eps)``."""
    cast = param.dtype.type
    wd, lr, eps = cast(weight_decay), cast(lr), cast(eps)
    for i in range(param.size):
        g = _decayed(grad[i], param[i], weight_decay, wd)
        hi = h[i] + g * g
        h[i] = hi
        param[i] -= _divided(g, hi, lr, eps)


@numba.njit(cache=True, error_model="numpy")
def rms_prop(param, grad, h, weight_decay, decay, one_minus_decay, lr, eps):
    """``h = decay * h + (1 - decay) * g * g; p -= lr * g / (sqrt(h) + eps)``."""
    cast = param.dtype.type
    wd, decay, keep, lr, eps = cast(weight_decay), cast(decay), cast(one_minus_decay), cast(lr), cast(eps)
    for i in range(param.size):
        g = _decayed(grad[i], param[i], weight_decay, wd)
        hi = h[i] * decay + g * keep * g
        h[i] = hi
        param[i] -= _divided(g, hi, lr, eps)


@numba.njit(cache=True, error_model="numpy")
def adam(param, grad, m, v, weight_decay, beta1, one_minus_beta1, beta2, one_minus_beta2, correction1,
         correction2, lr, eps):
    """``m = b1 * m + (1 - b1) * g; v = b2 * v + (1 - b2) * g * g;
    p -= lr * (m / correction1) / (sqrt(v / correction2) + eps)``, the corrections ``1 - b**t``.

    A correction that rounds to 1 (b1 0.9 and b2 0.999: in float32 from step 165 and 17,321, in
    float64 from 356 and 37,412) divides nothing: ``x / 1`` is ``x``, so skipping the division
    keeps the bits and saves one of the loop's three slow operations (two divisions, a square root).
    """
    cast = param.dtype.type
    wd, b1, c1, b2, c2 = cast(weight_decay), cast(beta1), cast(one_minus_beta1), cast(beta2), cast(one_minus_beta2)
    k1, k2, lr, eps = cast(correction1), cast(correction2), cast(lr), cast(eps)
    for i in range(param.size):
        g = _decayed(grad[i], param[i], weight_decay, wd)
        mi = m[i] * b1 + g * c1
        vi = v[i] * b2 + g * c2 * g
        m[i], v[i] = mi, vi
        m_hat = mi / k1 if k1 != 1 else mi
        v_hat = vi / k2 if k2 != 1 else vi
        param[i] -= _divided(m_hat, v_hat, lr, eps)

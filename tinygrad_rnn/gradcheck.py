"""Numerical gradients by central differences, and the check of analytic gradients against them."""
import numpy as np

from tinygrad_rnn.backend import as_numpy, get_array_module
from tinygrad_rnn.core import Variable

# Above this many elements an input is checked along random directions instead of element by
# element: 2 * size forward passes would make large checks (whole models) too slow.
_ELEMENTWISE_LIMIT = 256


def _weighted_sum(f, xs, gy):
    # no no_grad() here: f may itself call backward (a check of second derivatives)
    y = f(*[Variable(x) for x in xs])
    return float((y.data * gy).sum())


def numerical_grad(f, x, gy=None, eps=1e-6):
    """Central-difference gradient of ``sum(gy * f(x))`` with respect to ``x``.

    Args:
        f (callable): maps a Variable to a Variable.
        x (ndarray | Variable): float64 input of any shape.
        gy (ndarray, optional): upstream gradient of f's output shape; ones when None.
        eps (float): step.
    Returns:
        ndarray: the shape of ``x``.
    """
    x = x.data if isinstance(x, Variable) else x
    x = get_array_module(x).array(x)  # a writable copy, also of 0-d inputs, perturbed in place below
    if gy is None:
        gy = get_array_module(x).ones_like(f(Variable(x)).data)
    grad = np.zeros(x.shape, dtype=np.float64)
    flat = x.reshape(-1)
    for i in range(flat.size):
        old = flat[i].item()
        flat[i] = old + eps
        plus = _weighted_sum(f, [x], gy)
        flat[i] = old - eps
        minus = _weighted_sum(f, [x], gy)
        flat[i] = old
        grad.reshape(-1)[i] = (plus - minus) / (2 * eps)
    return grad


def gradient_check(f, *inputs, eps=1e-6, atol=1e-6, rtol=1e-5, seed=0, directions=3):
    """Compare the analytic gradients of ``f`` with central differences, in float64.

    The output is weighted by a random upstream gradient ``gy`` (never all ones: the gradient
    of ``sum(softmax(x))`` is zero, so a plain sum cannot catch a wrong softmax backward).
    Inputs of up to 256 elements are perturbed element by element; larger ones along
    ``directions`` random unit directions (directional derivatives).

    Args:
        f (callable): maps Variables (one per input) to a Variable.
        *inputs (ndarray | Variable): float inputs are cast to float64 and checked; integer
            inputs (labels, ids) are passed through unchecked.
        eps (float): finite-difference step.
        atol (float): absolute tolerance of ``|analytic - numeric| <= atol + rtol * |numeric|``.
        rtol (float): relative tolerance of the same test.
        seed (int): seeds ``gy`` and the random directions.
        directions (int): random directions for large inputs.
    Raises:
        AssertionError: names the input and the worst element, with both values.
        ValueError: ``f`` does not return a float64 Variable.
    """
    xs = [x.data if isinstance(x, Variable) else x for x in inputs]
    xp = get_array_module(*xs)
    xs = [xp.asarray(x) for x in xs]
    xs = [x.astype(np.float64) if x.dtype.kind == "f" else x for x in xs]
    rng = np.random.default_rng(seed)
    variables = [Variable(x.copy()) for x in xs]
    y = f(*variables)
    if not isinstance(y, Variable) or y.dtype != np.float64:
        raise ValueError("gradient_check: f must return a float64 Variable "
                         f"(got {getattr(y, 'dtype', type(y).__name__)}); keep the whole computation in float64")
    gy = xp.asarray(rng.standard_normal(y.shape))
    y.backward(grad=gy)
    # read every analytic gradient before any numeric pass: f may touch .grad of the inputs
    analytics = [np.zeros(x.shape) if v.grad is None else as_numpy(v.grad.data) for x, v in zip(xs, variables)]
    for i, (x, analytic) in enumerate(zip(xs, analytics)):
        if x.dtype.kind != "f":
            continue
        label = f"input {i}" + (f" ({inputs[i].name})" if isinstance(inputs[i], Variable) and inputs[i].name else "")
        if x.size <= _ELEMENTWISE_LIMIT:
            numeric = numerical_grad(lambda z, i=i: f(*variables[:i], z, *variables[i + 1:]), x, gy, eps)
            _compare(label, analytic, numeric, atol, rtol)
            continue
        for k in range(directions):
            d = rng.standard_normal(x.shape)
            d /= np.linalg.norm(d)
            d_dev = xp.asarray(d)
            others = [vv.data for vv in variables]
            plus = _weighted_sum(f, others[:i] + [x + eps * d_dev] + others[i + 1:], gy)
            minus = _weighted_sum(f, others[:i] + [x - eps * d_dev] + others[i + 1:], gy)
            numeric = (plus - minus) / (2 * eps)
            _compare(f"{label} along random direction {k}", np.array([(analytic * d).sum()]),
                     np.array([numeric]), atol, rtol)


def _compare(label, analytic, numeric, atol, rtol):
    err = np.abs(analytic - numeric) - (atol + rtol * np.abs(numeric))
    if err.size and err.max() > 0:
        worst = np.unravel_index(int(err.argmax()), err.shape)
        raise AssertionError(f"gradient_check: {label}, element {tuple(int(j) for j in worst)}: "
                             f"analytic {analytic[worst]:.10g} vs numeric {numeric[worst]:.10g} "
                             f"(atol={atol}, rtol={rtol})")

"""Property-based gradient checks for your own Functions, exactly as the project tests its ops.

Needs hypothesis (``pip install tinygrad_rnn[dev]``). Example, a user-defined op::

    from tinygrad_rnn import Function, get_array_module
    from tinygrad_rnn.testing import check_function, float_arrays, shapes

    class Softplus(Function):
        twice_differentiable = False  # backward uses plain array math on the saved input

        def forward(self, x):
            self.x = x
            return get_array_module(x).logaddexp(0, x)

        def backward(self, gy):
            xp = get_array_module(gy)
            return gy * (xp.tanh(self.x * 0.5) * 0.5 + 0.5)  # sigmoid(x), overflow-free

    check_function(lambda x: Softplus()(x), float_arrays(shapes(), lo=-3, hi=3))

``check_function`` draws inputs from the strategies, runs ``gradient_check`` (float64,
random upstream gradient, central differences) and lets hypothesis shrink a failure to the
smallest input that breaks the backward.
"""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinygrad_rnn.gradcheck import gradient_check


def shapes(min_dims=0, max_dims=3, min_side=1, max_side=4):
    """Array shapes: up to ``max_dims`` axes with sides in [min_side, max_side] (size-1 axes included)."""
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)


def broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=4):
    """Tuples of ``num_shapes`` shapes that broadcast together under NumPy's rules."""
    return hnp.mutually_broadcastable_shapes(
        num_shapes=num_shapes, min_dims=min_dims, max_dims=max_dims, min_side=1, max_side=max_side
    ).map(lambda result: result.input_shapes)


def float_arrays(shape, lo=-3.0, hi=3.0, dtype=np.float64, unique=False, avoid=(), margin=0.05):
    """Float arrays with elements in [lo, hi].

    Args:
        shape (tuple | strategy): a shape or a strategy of shapes.
        lo (float): lowest element: keep [lo, hi] where the check is meaningful (``log`` on
            [0.1, 10], ``tanh`` on [-3, 3]: saturation makes gradients vacuous).
        hi (float): highest element.
        dtype (numpy.dtype): float dtype.
        unique (bool): distinct elements (ties make max/min gradients ambiguous).
        avoid (sequence of float): points (kinks such as 0 for relu) that elements keep at
            least ``margin`` away from.
        margin (float): distance kept from ``avoid`` points.
    Returns:
        strategy: draws ndarrays of ``shape`` and ``dtype``.
    """
    elements = st.floats(lo, hi, allow_nan=False, allow_infinity=False, width=64 if dtype == np.float64 else 32)
    if avoid:
        elements = elements.filter(lambda v: all(abs(v - a) >= margin for a in avoid))
    if unique:
        # tiny gaps would put a tie inside the finite-difference step: keep elements well apart
        elements = elements.map(lambda v: round(v, 2))
    return hnp.arrays(np.dtype(dtype), shape, elements=elements, unique=unique)


def labels(shape, n_classes, dtype=np.int32):
    """Integer class labels in [0, n_classes) of the given shape (or shape strategy)."""
    return hnp.arrays(np.dtype(dtype), shape, elements=st.integers(0, n_classes - 1))


def seeds():
    """Seeds for the upstream gradient and random directions of ``gradient_check``."""
    return st.integers(0, 2**32 - 1)


def check_function(f, *strategies, eps=1e-6, atol=1e-6, rtol=1e-5, max_examples=None):
    """Property-based gradient check of ``f`` over inputs drawn from ``strategies``.

    Args:
        f (callable): maps Variables (one per strategy) to a Variable.
        *strategies (strategy): one hypothesis strategy per input of ``f`` (float arrays are cast to
            float64; integer arrays are passed through unchecked).
        eps (float): as in ``gradient_check``.
        atol (float): as in ``gradient_check``.
        rtol (float): as in ``gradient_check``.
        max_examples (int, optional): override the active hypothesis profile.
    Raises:
        AssertionError: from the smallest failing example hypothesis finds.
    """
    @given(st.tuples(*strategies), seeds())
    def run(inputs, seed):
        gradient_check(f, *inputs, eps=eps, atol=atol, rtol=rtol, seed=seed)

    if max_examples is not None:
        run = settings(max_examples=max_examples)(run)
    run()

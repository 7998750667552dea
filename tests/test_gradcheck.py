"""gradient_check and numerical_grad catch wrong backwards and say where."""
import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import functions as F
from tinygrad_rnn.backend import get_array_module


class _SoftmaxWithWrongBackward(tg.Function):
    """Forward is right; backward forgets the Jacobian (returns gy), a bug a plain sum hides."""

    def forward(self, x):
        xp = get_array_module(x)
        y = xp.exp(x - x.max(axis=-1, keepdims=True))
        return y / y.sum(axis=-1, keepdims=True)

    def backward(self, gy):
        return gy * 0


class _Square(tg.Function):
    def __init__(self, factor):
        self.factor = factor

    def forward(self, x):
        return x * x

    def backward(self, gy):
        return gy * self.factor * self.arg(0)


def test_numerical_grad_matches_the_closed_form():
    x = np.array([0.3, -1.2, 2.0])
    np.testing.assert_allclose(tg.numerical_grad(lambda v: v ** 3, x), 3 * x ** 2, rtol=1e-7)


def test_a_correct_backward_passes():
    tg.gradient_check(lambda v: _Square(2.0)(v), np.array([[0.5, -1.0], [2.0, 0.1]]))


def test_a_wrong_backward_fails_naming_the_input_and_the_worst_element():
    x = np.array([[0.5, -1.0], [2.0, 0.1]])
    with pytest.raises(AssertionError, match=r"input 0, element \(1, 0\): analytic .* vs numeric"):
        tg.gradient_check(lambda v: _Square(2.5)(v), x)


def test_the_random_upstream_gradient_exposes_a_bug_that_a_plain_sum_hides():
    x = np.random.default_rng(0).standard_normal((3, 4))
    # with gy = 1 both gradients are zero, so a sum-based check would pass
    ones = tg.numerical_grad(lambda v: _SoftmaxWithWrongBackward()(v), x)
    np.testing.assert_allclose(ones, 0, atol=1e-8)
    with pytest.raises(AssertionError, match="input 0"):
        tg.gradient_check(lambda v: _SoftmaxWithWrongBackward()(v), x)


def test_large_inputs_are_checked_along_random_directions_and_still_fail_on_bugs():
    x = np.random.default_rng(1).standard_normal((30, 20))
    tg.gradient_check(lambda v: F.tanh(v) * v, x)
    with pytest.raises(AssertionError, match="along random direction"):
        tg.gradient_check(lambda v: _Square(2.5)(v), x)


def test_named_inputs_are_named_in_the_message():
    w = tg.Variable(np.array([1.0, 2.0]), name="W")
    with pytest.raises(AssertionError, match=r"input 0 \(W\)"):
        tg.gradient_check(lambda v: _Square(3.0)(v), w)


def test_integer_inputs_pass_through_unchecked():
    x = np.random.default_rng(2).standard_normal((3, 4))
    tg.gradient_check(lambda v, t: F.softmax_cross_entropy(v, t), x, np.array([0, 3, 1]))


def test_a_float32_computation_is_refused():
    with pytest.raises(ValueError, match="float64"):
        tg.gradient_check(lambda v: tg.Variable(np.float32(1.0)), np.ones(2))

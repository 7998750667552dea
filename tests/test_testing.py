"""tinygrad_rnn.testing: the documented user example runs, and check_function catches a bug."""
import numpy as np
import pytest
from hypothesis import given

import tinygrad_rnn as tg
import tinygrad_rnn.testing as testing
from tinygrad_rnn.testing import broadcastable_shapes, check_function, float_arrays, labels, shapes


def _docstring_example():
    doc = testing.__doc__
    block = doc.split("::", 1)[1].split("``check_function``", 1)[0]
    lines = [line[4:] for line in block.splitlines()]
    return "\n".join(lines)


def test_the_documented_user_op_example_runs():
    exec(compile(_docstring_example(), "testing-example", "exec"), {})


class _WrongTanh(tg.Function):
    def forward(self, x):
        self.y = np.tanh(x)
        return self.y

    def backward(self, gy):
        return gy * (1 - self.y)  # should be 1 - y**2


def test_check_function_finds_a_wrong_backward():
    with pytest.raises(AssertionError, match="gradient_check"):
        check_function(lambda x: _WrongTanh()(x), float_arrays(shapes(), lo=-3, hi=3), max_examples=20)


@given(pair=broadcastable_shapes(2))
def test_broadcastable_shapes_broadcast(pair):
    np.broadcast_shapes(*pair)


@given(x=float_arrays(shapes(), lo=-1, hi=1, avoid=(0.0,), margin=0.1))
def test_float_arrays_respect_range_and_avoided_points(x):
    assert x.dtype == np.float64
    assert np.all((np.abs(x) >= 0.1) & (np.abs(x) <= 1))


@given(t=labels((3, 2), 5))
def test_labels_lie_in_range(t):
    assert t.dtype == np.int32 and t.min() >= 0 and t.max() < 5

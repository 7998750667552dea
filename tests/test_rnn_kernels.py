"""The compiled steps of lstm_sequence and gru_sequence (the ``cpu`` extra) against the NumPy path."""
import importlib.util

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import in_ci
from tinygrad_rnn import functions as F
from tinygrad_rnn.core import Variable, using_config
from tinygrad_rnn.testing import float_arrays, seeds


@pytest.fixture(scope="module")
def kernels():
    """The compiled kernels' module; skips without Numba, except in CI, where the dev extra installs it."""
    if importlib.util.find_spec("numba") is None:
        if in_ci():
            pytest.fail("CI must test the compiled kernels, but Numba is missing (pip install -e '.[dev]')")
        pytest.skip("Numba is not installed (pip install 'tinygrad_rnn[cpu]')")
    from tinygrad_rnn.functions import _cpu_kernels

    return _cpu_kernels


@st.composite
def _lstm_arrays(draw, dtype=np.float64):
    n, t, h = draw(st.integers(1, 4)), draw(st.integers(1, 5)), draw(st.integers(1, 4))
    return (draw(float_arrays((t, n, 4 * h), -2.0, 2.0, dtype)), draw(float_arrays((n, h), -1.0, 1.0, dtype)),
            draw(float_arrays((n, h), -2.0, 2.0, dtype)), draw(float_arrays((h, 4 * h), -1.0, 1.0, dtype)))


@st.composite
def _gru_arrays(draw, dtype=np.float64):
    n, t, h = draw(st.integers(1, 4)), draw(st.integers(1, 5)), draw(st.integers(1, 4))
    return (draw(float_arrays((t, n, 3 * h), -2.0, 2.0, dtype)), draw(float_arrays((n, h), -1.0, 1.0, dtype)),
            draw(float_arrays((h, 3 * h), -1.0, 1.0, dtype)), draw(float_arrays((h,), -1.0, 1.0, dtype)))


def _values_and_gradients(op, arrays, seed, compiled):
    """The outputs of ``op`` and the gradients of all its inputs for a random upstream gradient."""
    rng = np.random.default_rng(seed)
    with using_config("compiled_kernels", compiled):
        inputs = [Variable(a) for a in arrays]
        outputs = op(*inputs)
        # hs reaches the loss batch-major, as in the layers: its gradient arrives as a strided view
        terms = [F.transpose(outputs[0], (1, 0, 2)), *outputs[1:]]
        loss = F.sum(terms[0] * rng.standard_normal(terms[0].shape).astype(arrays[0].dtype))
        for y in terms[1:]:
            loss = loss + F.sum(y * rng.standard_normal(y.shape).astype(arrays[0].dtype))
        loss.backward()
    return [y.data for y in outputs] + [x.grad.data for x in inputs]


def _assert_same_bits(compiled, numpy):
    for got, want in zip(compiled, numpy, strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)


@given(arrays=_lstm_arrays(), seed=seeds())
def test_compiled_lstm_sequence_equals_the_numpy_path_in_float64(kernels, arrays, seed):
    _assert_same_bits(_values_and_gradients(F.lstm_sequence, arrays, seed, True),
                      _values_and_gradients(F.lstm_sequence, arrays, seed, False))


@given(arrays=_gru_arrays(), seed=seeds())
def test_compiled_gru_sequence_equals_the_numpy_path_in_float64(kernels, arrays, seed):
    _assert_same_bits(_values_and_gradients(F.gru_sequence, arrays, seed, True),
                      _values_and_gradients(F.gru_sequence, arrays, seed, False))


@given(arrays=_lstm_arrays(np.float32), gru=_gru_arrays(np.float32), seed=seeds())
def test_compiled_path_equals_the_numpy_path_in_float32(kernels, arrays, gru, seed):
    _assert_same_bits(_values_and_gradients(F.lstm_sequence, arrays, seed, True),
                      _values_and_gradients(F.lstm_sequence, arrays, seed, False))
    _assert_same_bits(_values_and_gradients(F.gru_sequence, gru, seed, True),
                      _values_and_gradients(F.gru_sequence, gru, seed, False))


@pytest.mark.parametrize("op, step, width", [(F.lstm_sequence, "lstm_backward_step", 4),
                                             (F.gru_sequence, "gru_backward_step", 3)])
def test_compiled_steps_run_where_numba_is_installed_unless_switched_off(kernels, monkeypatch, op, step, width):
    calls = []
    real = getattr(kernels, step)
    monkeypatch.setattr(kernels, step, lambda *arrays: calls.append(1) or real(*arrays))
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((3, 2, width * 2)), rng.standard_normal((2, 2))]
    arrays += [rng.standard_normal((2, 2))] if op is F.lstm_sequence else []
    arrays += [rng.standard_normal((2, width * 2))] + ([rng.standard_normal(2)] if op is F.gru_sequence else [])
    _values_and_gradients(op, arrays, 0, True)
    assert len(calls) == 3  # one call a step
    _values_and_gradients(op, arrays, 0, False)
    assert len(calls) == 3


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_path_equals_the_numpy_path_at_a_real_layer_size(kernels, dtype):
    # wide rows, where NumPy's SIMD loops run whole vectors and the compiled loops vectorize
    rng = np.random.default_rng(3)
    steps, n, size = 3, 20, 100
    lstm = [rng.standard_normal(s).astype(dtype) for s in ((steps, n, 4 * size), (n, size), (n, size))]
    lstm.append((rng.standard_normal((size, 4 * size)) / 10).astype(dtype))
    gru = [rng.standard_normal(s).astype(dtype) for s in ((steps, n, 3 * size), (n, size))]
    gru += [(rng.standard_normal((size, 3 * size)) / 10).astype(dtype), rng.standard_normal(size).astype(dtype)]
    for op, arrays in [(F.lstm_sequence, lstm), (F.gru_sequence, gru)]:
        _assert_same_bits(_values_and_gradients(op, arrays, 0, True), _values_and_gradients(op, arrays, 0, False))

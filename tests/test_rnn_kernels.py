"""The compiled steps of lstm_sequence and gru_sequence (the ``cpu`` extra) against the NumPy path."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinygrad_rnn import functions as F
from tinygrad_rnn.core import Variable, using_config
from tinygrad_rnn.testing import float_arrays, seeds


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


def _values_and_gradients(op, arrays, seed, compiled, compiled_backward=None):
    """The outputs of ``op`` and the gradients of all its inputs for a random upstream gradient
    (``compiled_backward``: the backward's path, if not the forward's)."""
    rng = np.random.default_rng(seed)
    with using_config("compiled_kernels", compiled):
        inputs = [Variable(a) for a in arrays]
        outputs = op(*inputs)
        # hs reaches the loss batch-major, as in the layers: its gradient arrives as a strided view
        terms = [F.transpose(outputs[0], (1, 0, 2)), *outputs[1:]]
        loss = F.sum(terms[0] * rng.standard_normal(terms[0].shape).astype(arrays[0].dtype))
        for y in terms[1:]:
            loss = loss + F.sum(y * rng.standard_normal(y.shape).astype(arrays[0].dtype))
    with using_config("compiled_kernels", compiled if compiled_backward is None else compiled_backward):
        loss.backward()
    return [y.data for y in outputs] + [x.grad.data for x in inputs]


def _assert_close(compiled, numpy, tolerance):
    """Equal to ``tolerance`` relative to each array's largest magnitude (a gradient near 0 has no relative error)."""
    for got, want in zip(compiled, numpy, strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=tolerance, atol=tolerance * np.abs(want).max())


# float64 runs the same arithmetic as the NumPy path but libm's tanh, not NumPy's (they may differ
# in the last bit); measured worst 1e-13 over 3000 random examples
FLOAT64 = 1e-12
# float32's tanh differs from NumPy's by up to 9 ulp (ours within 7 ulp of the truth, NumPy's
# 1.4): 5e-7 of a gate. A gate's derivative, 1 - g * g or s * (1 - s), turns that into a larger
# relative error where the gate saturates (pre-activations here reach 6, where the derivative is
# 400 times smaller): up to 2e-4 of the array's largest gradient, measured 2.6e-4 at worst over
# 3000 random examples. 2e-3 leaves room and still catches a wrong operation or step, which errs
# by far more; the tanh test bounds the tanh itself
FLOAT32 = 2e-3


@given(arrays=_lstm_arrays(), seed=seeds())
def test_compiled_lstm_sequence_equals_the_numpy_path_in_float64(kernels, arrays, seed):
    _assert_close(_values_and_gradients(F.lstm_sequence, arrays, seed, True),
                  _values_and_gradients(F.lstm_sequence, arrays, seed, False), FLOAT64)


@given(arrays=_gru_arrays(), seed=seeds())
def test_compiled_gru_sequence_equals_the_numpy_path_in_float64(kernels, arrays, seed):
    _assert_close(_values_and_gradients(F.gru_sequence, arrays, seed, True),
                  _values_and_gradients(F.gru_sequence, arrays, seed, False), FLOAT64)


@given(arrays=_lstm_arrays(np.float32), gru=_gru_arrays(np.float32), seed=seeds())
def test_compiled_path_is_close_to_the_numpy_path_in_float32(kernels, arrays, gru, seed):
    _assert_close(_values_and_gradients(F.lstm_sequence, arrays, seed, True),
                  _values_and_gradients(F.lstm_sequence, arrays, seed, False), FLOAT32)
    _assert_close(_values_and_gradients(F.gru_sequence, gru, seed, True),
                  _values_and_gradients(F.gru_sequence, gru, seed, False), FLOAT32)


@given(dtype=st.sampled_from([np.float32, np.float64]), data=st.data(), seed=seeds())
def test_compiled_backward_gives_the_numpy_paths_bits_after_the_same_forward(kernels, dtype, data, seed):
    # no tanh in the backward: the same arithmetic, so the same bits
    for op, arrays in [(F.lstm_sequence, data.draw(_lstm_arrays(dtype))),
                       (F.gru_sequence, data.draw(_gru_arrays(dtype)))]:
        got = _values_and_gradients(op, arrays, seed, False, compiled_backward=True)
        want = _values_and_gradients(op, arrays, seed, False)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, w)


def test_float32_tanh_is_within_a_few_ulp(kernels):
    import numba

    rational_tanh = kernels._rational_tanh

    @numba.njit
    def tanh(xs, out):
        for k in range(len(xs)):
            out[k] = rational_tanh(xs[k])

    # every 61st float32 from 2**-30 to 12 (above 10 the clamp), and their negatives
    lo, hi = np.array([2.0**-30, 12.0], np.float32).view(np.int32)
    xs = np.arange(lo, hi, 61, dtype=np.int32).view(np.float32)
    xs = np.concatenate([xs, -xs])
    got = np.empty_like(xs)
    tanh(xs, got)
    exact = np.tanh(xs.astype(np.float64))
    ulp = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    ulp = np.where(np.abs(exact) > 1 - 2.0**-25, 2.0**-24, ulp)  # the spacing below 1 for what rounds to 1
    error = np.abs(got - exact) / ulp
    # 5.5 ulp measured with fused multiply-adds, 6.7 without (NumPy's float32 tanh: 1.4)
    assert error.max() < 8 and error.mean() < 1
    special = np.array([0.0, -0.0, np.nan, 1e-30, np.inf, -np.inf], np.float32)
    tanh(special, got[:6])
    np.testing.assert_array_equal(got[:4], special[:4])  # tiny values exactly, NaN stays NaN
    assert np.signbit(got[1])
    np.testing.assert_allclose(got[4:6], [1, -1], rtol=8 * 2.0**-24)


@pytest.mark.parametrize("op, cell, width", [(F.lstm_sequence, "lstm", 4), (F.gru_sequence, "gru", 3)])
def test_compiled_steps_run_where_numba_is_installed_unless_switched_off(kernels, monkeypatch, op, cell, width):
    calls = []
    for way in ("forward", "backward"):
        real = getattr(kernels, f"{cell}_{way}_step")
        monkeypatch.setattr(kernels, f"{cell}_{way}_step",
                            lambda *arrays, way=way, real=real: calls.append(way) or real(*arrays))
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((3, 2, width * 2)), rng.standard_normal((2, 2))]
    arrays += [rng.standard_normal((2, 2))] if op is F.lstm_sequence else []
    arrays += [rng.standard_normal((2, width * 2))] + ([rng.standard_normal(2)] if op is F.gru_sequence else [])
    _values_and_gradients(op, arrays, 0, True)
    assert calls == ["forward"] * 3 + ["backward"] * 3  # one call a step
    _values_and_gradients(op, arrays, 0, False)
    assert len(calls) == 6


@pytest.mark.parametrize("dtype, tolerance", [(np.float32, FLOAT32), (np.float64, FLOAT64)])
def test_compiled_path_equals_the_numpy_path_at_a_real_layer_size(kernels, dtype, tolerance):
    # wide rows, where the compiled loops run whole vectors; strided initial states and weights
    rng = np.random.default_rng(3)
    steps, n, size = 3, 20, 100
    lstm = [rng.standard_normal(s).astype(dtype) for s in ((steps, n, 4 * size), (size, n), (size, n))]
    lstm[1], lstm[2] = lstm[1].T, lstm[2].T
    lstm.append((rng.standard_normal((4 * size, size)) / 10).astype(dtype).T)
    gru = [rng.standard_normal(s).astype(dtype) for s in ((steps, n, 3 * size), (size, n))]
    gru[1] = gru[1].T
    gru += [(rng.standard_normal((size, 3 * size)) / 10).astype(dtype), rng.standard_normal(size).astype(dtype)]
    for op, arrays in [(F.lstm_sequence, lstm), (F.gru_sequence, gru)]:
        _assert_close(_values_and_gradients(op, arrays, 0, True), _values_and_gradients(op, arrays, 0, False),
                      tolerance)

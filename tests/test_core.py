"""The engine: Variable, Function, the backward walk, configuration contexts and error messages."""
import ctypes
import gc
import subprocess
import sys
import weakref

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import functions as F


def test_variable_exposes_array_attributes_and_a_readable_repr():
    v = tg.Variable(np.zeros((2, 3), dtype=np.float32), name="h")
    assert (v.shape, v.ndim, v.size, v.dtype, len(v)) == ((2, 3), 2, 6, np.float32, 2)
    text = repr(v)
    assert "name='h'" in text and "shape=(2, 3)" in text and "float32" in text and "cpu" in text


def test_python_numbers_and_lists_default_to_float32_and_arrays_keep_their_dtype():
    assert tg.Variable(3).dtype == np.float32
    assert tg.Variable([[1, 2], [3, 4]]).dtype == np.float32
    assert tg.Variable(np.ones(2)).dtype == np.float64
    assert tg.Variable(np.arange(3)).dtype.kind == "i"


def test_scalars_do_not_promote_float32():
    x = tg.Variable(np.ones(3, dtype=np.float32))
    for y in (x * 2.0, 2.0 * x, x + np.float64(1.5), x / 3, 1 - x, x ** 2):
        assert y.dtype == np.float32
    assert (tg.Variable(np.ones(3)) * 2.0).dtype == np.float64


@pytest.mark.parametrize("bad", ["text", ["a", "b"], [[1, 2], [3]], object(), None, np.array([object()]),
                                 np.array(["x"])])
def test_non_numeric_data_raises_type_error(bad):
    with pytest.raises(TypeError, match="Variable"):
        tg.Variable(bad)


def test_float_ops_reject_integer_arrays_naming_the_op():
    with pytest.raises(TypeError, match=r"tanh: input 0 has dtype int"):
        F.tanh(np.array([1, 2]))


def test_operators_accept_arrays_and_scalars_on_either_side():
    x = tg.Variable(np.array([1.0, 2.0]))
    a = np.array([3.0, 4.0])
    cases = {
        "add": (x + a, a + x, a + x.data), "sub": (x - a, a - x, x.data - a),
        "mul": (x * a, a * x, x.data * a), "div": (x / a, a / x, x.data / a),
    }
    for name, (left, right, expected) in cases.items():
        assert isinstance(left, tg.Variable) and isinstance(right, tg.Variable), name
        np.testing.assert_allclose(left.data, expected)
    np.testing.assert_allclose((a - x).data, a - x.data)
    np.testing.assert_allclose((a / x).data, a / x.data)
    np.testing.assert_allclose((-x).data, -x.data)
    np.testing.assert_allclose((x ** 3).data, x.data ** 3)
    W = np.arange(6.0).reshape(2, 3)
    m = tg.Variable(np.ones((1, 2)))
    np.testing.assert_allclose((m @ W).data, m.data @ W)
    np.testing.assert_allclose((np.ones((3, 1)) @ m).data, np.ones((3, 2)))


def test_shape_methods_match_numpy():
    a = np.arange(24.0).reshape(2, 3, 4)
    x = tg.Variable(a)
    np.testing.assert_array_equal(x.T.data, a.T)
    np.testing.assert_array_equal(x.reshape(4, 6).data, a.reshape(4, 6))
    np.testing.assert_array_equal(x.reshape((6, 4)).data, a.reshape(6, 4))
    np.testing.assert_array_equal(x.transpose(1, 0, 2).data, a.transpose(1, 0, 2))
    np.testing.assert_array_equal(x.sum(axis=1, keepdims=True).data, a.sum(axis=1, keepdims=True))
    np.testing.assert_array_equal(x[1, :, ::2].data, a[1, :, ::2])


def test_parameter_is_a_variable():
    p = tg.Parameter(np.ones(2))
    assert isinstance(p, tg.Variable)
    (p * p).sum().backward()
    np.testing.assert_array_equal(p.grad.data, [2, 2])


def test_backward_of_a_non_scalar_needs_a_gradient():
    y = F.tanh(tg.Variable(np.ones((2, 2))))
    with pytest.raises(ValueError, match=r"backward: output has shape \(2, 2\)"):
        y.backward()
    with pytest.raises(ValueError, match="grad has shape"):
        y.backward(grad=np.ones(3))
    y.backward(grad=np.ones((2, 2)))


def test_gradients_of_a_variable_used_twice_accumulate_and_persist_across_calls():
    x = tg.Variable(np.array(3.0))
    y = x * x + x
    y.backward()
    assert x.grad.data == 7.0
    y.backward()
    assert x.grad.data == 14.0
    x.cleargrad()
    assert x.grad is None


def test_diamond_graph_runs_each_function_once_in_generation_order():
    x = tg.Variable(np.array(2.0))
    a = x ** 2
    y = F.exp(a) + F.log(a) * a  # a feeds three consumers at different depths
    y.backward()
    expected = 2 * 2.0 * (np.exp(4.0) + np.log(4.0) + 1)
    np.testing.assert_allclose(x.grad.data, expected)


def test_backward_over_a_100000_node_chain_needs_no_recursion():
    x = tg.Variable(np.array([0.5]))
    y = x
    for _ in range(100_000):
        y = y * 1.0
    y.backward(grad=np.ones(1))
    assert x.grad.data[0] == 1.0


def test_intermediate_gradients_are_freed_unless_retained():
    x = tg.Variable(np.array(1.0))
    h = F.tanh(x)
    y = h * 2.0
    y.backward()
    assert h.grad is None and y.grad is None and x.grad is not None
    x.cleargrad()
    h = F.tanh(x)
    y = h * 2.0
    y.backward(retain_grad=True)
    assert h.grad.data == 2.0 and y.grad.data == 1.0


def test_a_function_with_several_outputs_gets_zero_gradients_for_unused_ones():
    x = tg.Variable(np.arange(6.0))
    a, b, c = F.split(x, 3)
    del a, c  # outputs are held weakly: the dead ones still need a zero gradient
    (b * 2.0).sum().backward()
    np.testing.assert_array_equal(x.grad.data, [0, 0, 2, 2, 0, 0])


def test_outputs_are_weak_and_inputs_are_dropped_without_grad():
    x = tg.Variable(np.ones(2))
    y = F.tanh(x)
    f = y.creator
    assert f.outputs[0]() is y
    del y
    gc.collect()
    assert f.outputs[0]() is None
    with tg.no_grad():
        z = F.tanh(x)
    assert z.creator is None


def test_unchain_backward_frees_the_graph_behind_a_variable():
    x = tg.Variable(np.ones(3))
    h = x
    for _ in range(5):
        h = F.tanh(h)
    first = weakref.ref(h.creator.inputs[0].creator)
    h.unchain_backward()
    gc.collect()
    assert h.creator is None
    assert first() is None


def test_unchain_makes_a_leaf():
    x = tg.Variable(np.ones(2))
    y = F.tanh(x)
    y.unchain()
    z = (y * 2.0).sum()
    z.backward()
    assert x.grad is None and y.grad is not None


def test_config_contexts_restore_their_values_even_after_an_error():
    with pytest.raises(RuntimeError):
        with tg.no_grad(), tg.test_mode():
            assert not tg.core.Config.enable_backprop and not tg.core.Config.train
            raise RuntimeError
    assert tg.core.Config.enable_backprop and tg.core.Config.train
    with tg.using_config("train", False):
        assert not tg.core.Config.train
    with pytest.raises(AttributeError):
        with tg.using_config("no_such_setting", 1):
            pass


def test_name_scopes_nest_and_tag_functions():
    x = tg.Variable(np.ones(2))
    with tg.name_scope("lstm1"):
        with tg.name_scope("t0"):
            y = F.tanh(x)
        z = F.exp(y)
    w = F.log(z)
    assert y.creator.scope == ("lstm1", "t0")
    assert z.creator.scope == ("lstm1",)
    assert w.creator.scope == ()


def test_detect_anomaly_names_the_function_whose_forward_made_nan():
    x = tg.Variable(np.array([-1.0, 1.0]))
    with np.errstate(invalid="ignore"):
        F.log(x)  # silently NaN outside the context
        with tg.detect_anomaly(), pytest.raises(FloatingPointError, match="log: forward produced NaN or Inf"):
            F.log(x)


def test_detect_anomaly_names_the_function_whose_backward_made_inf():
    x = tg.Variable(np.array([0.0, 1.0]))
    with np.errstate(divide="ignore"), tg.detect_anomaly():
        y = (x ** 0.5).sum()  # finite forward, infinite derivative at 0
        with pytest.raises(FloatingPointError, match="pow: backward produced NaN or Inf"):
            y.backward()


@pytest.mark.parametrize("call, pattern", [
    (lambda: F.matmul(np.ones((2, 3)), np.ones((4, 5))), r"matmul: shapes \(2, 3\) and \(4, 5\)"),
    (lambda: F.linear(np.ones((2, 3)), np.ones((4, 5))), r"linear: shapes x \(2, 3\), W \(4, 5\)"),
    (lambda: F.concat([np.ones((2, 3)), np.ones((4, 5))], axis=0), r"concat: shapes \(2, 3\), \(4, 5\)"),
    (lambda: F.add(np.ones((2, 3)), np.ones(4)), r"add: .*\(2, ?3\).*\(4,\)"),
    (lambda: F.broadcast_to(np.ones(3), (2, 4)), r"broadcast_to: .*\(3,\)"),
    (lambda: F.reshape(np.ones(6), (4,)), r"reshape: .*\(6,\)"),
])
def test_shape_mismatches_raise_value_errors_naming_the_op_and_shapes(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()


def test_label_errors_name_the_op():
    with pytest.raises(IndexError, match="softmax_cross_entropy: labels must lie in"):
        F.softmax_cross_entropy(np.ones((2, 3)), np.array([0, 3]))
    with pytest.raises(TypeError, match="softmax_cross_entropy: labels must be an integer array"):
        F.softmax_cross_entropy(np.ones((2, 3)), np.array([0.0, 1.0]))
    with pytest.raises(IndexError, match="embed_id: ids must lie in"):
        F.embed_id(np.array([5]), tg.Variable(np.ones((3, 2))))


def test_a_backward_returning_a_wrong_shape_is_reported():
    class Broken(tg.Function):
        def forward(self, x):
            return x * 2

        def backward(self, gy):
            return gy.sum()

    with pytest.raises(RuntimeError, match="broken: backward returned a gradient of shape"):
        Broken()(np.ones(3)).sum().backward()


def test_importing_does_not_import_cupy_and_cuda_available_is_a_bool():
    code = ("import sys, tinygrad_rnn; assert 'cupy' not in sys.modules; "
            "a = tinygrad_rnn.cuda.available; assert isinstance(a, bool); print(a)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() in ("True", "False")


@pytest.mark.skipif(not sys.platform.startswith("linux") or not hasattr(ctypes.CDLL(None), "mallopt"),
                    reason="needs glibc's mallopt")
def test_keep_freed_memory_tunes_glibc_unless_the_environment_chose(monkeypatch):
    from tinygrad_rnn.backend import keep_freed_memory
    assert keep_freed_memory() is True
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert keep_freed_memory() is False


def test_as_cupy_without_a_gpu_says_how_to_get_one():
    if tg.cuda.available:
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="no GPU available"):
        tg.as_cupy(np.ones(2))
    assert tg.get_array_module(tg.Variable(np.ones(2))) is np
    np.testing.assert_array_equal(tg.as_numpy(tg.Variable(np.ones(2))), np.ones(2))


@pytest.mark.gpu
def test_mixed_devices_raise_type_error_naming_op_and_devices(cupy):
    with pytest.raises(TypeError, match=r"add: inputs on different devices \(cpu, gpu:0\)"):
        F.add(np.ones(2), cupy.ones(2))


@pytest.mark.gpu
def test_to_gpu_and_back_keeps_values_and_gradients(cupy):
    x = tg.Variable(np.arange(3.0))
    x.to_gpu()
    assert tg.get_array_module(x) is cupy
    (F.tanh(x) * x).sum().backward()
    x.to_cpu()
    assert isinstance(x.data, np.ndarray) and isinstance(x.grad.data, np.ndarray)
    t = np.tanh(np.arange(3.0))
    np.testing.assert_allclose(x.grad.data, t + np.arange(3.0) * (1 - t * t))

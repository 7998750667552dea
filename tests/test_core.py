"""The engine: Variable, Function, the backward walk, configuration contexts and error messages."""
import contextlib
import ctypes
import gc
import subprocess
import sys
import threading
import types
import weakref

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import functions as F
from tinygrad_rnn import layers as L
from tinygrad_rnn.functions.loss import SigmoidCrossEntropy


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


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_matrix_and_masked_arrays_are_refused_naming_the_op():
    m = np.matrix([[1.0, 2.0], [3.0, 4.0]])
    with pytest.raises(TypeError, match=r"mul: np.matrix \(2, 2\) is not accepted \(its \* is a matrix product\)"):
        F.mul(m, m)
    with pytest.raises(TypeError, match=r"Variable: np.matrix \(2, 2\)"):
        tg.Variable(m)
    with pytest.raises(TypeError, match=r"backward: np.matrix \(1, 1\)"):
        tg.Variable(np.ones((1, 1))).backward(grad=np.matrix([[1.0]]))
    with pytest.raises(TypeError, match=r"add: a masked array \(2,\) is not accepted \(the mask would be dropped\)"):
        F.add(np.ma.array([1.0, 2.0], mask=[False, True]), np.ones(2))


def test_other_ndarray_subclasses_are_kept_and_compute_elementwise(tmp_path):
    # kept as they are: tests/test_host_reads.py follows its guarded arrays through every op
    mm = np.memmap(tmp_path / "x.bin", dtype=np.float32, mode="w+", shape=(2, 2))
    mm[:] = [[1.0, 2.0], [3.0, 4.0]]
    assert tg.Variable(mm).data is mm
    np.testing.assert_array_equal(F.mul(mm, mm).data, [[1.0, 4.0], [9.0, 16.0]])


def test_cupy_arrays_are_taken_as_they_are_without_importing_cupy(monkeypatch):
    class FakeCupyArray:
        dtype, shape, ndim = np.dtype(np.float32), (2,), 1

    fake = types.ModuleType("cupy")
    fake.ndarray = FakeCupyArray
    monkeypatch.setitem(sys.modules, "cupy", fake)
    data = FakeCupyArray()
    assert tg.Variable(data).data is data


def test_a_zero_d_variable_has_no_length_and_no_iteration_like_numpy():
    v = tg.Variable(np.float32(3.0))
    with pytest.raises(TypeError, match="iteration over a 0-d Variable"):
        list(v)
    with pytest.raises(TypeError, match=r"len\(\) of a 0-d Variable"):
        len(v)
    first, second = tg.Variable(np.array([1.0, 2.0]))
    assert (float(first.data), float(second.data)) == (1.0, 2.0)
    assert [r.shape for r in tg.Variable(np.zeros((3, 2)))] == [(2,)] * 3


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


def test_backward_casts_grad_to_the_outputs_dtype():
    x = tg.Variable(np.ones((2, 2), np.float32))
    (F.tanh(x) * 3).backward(grad=np.full((2, 2), 2.0))  # a float64 grad
    assert x.grad.dtype == np.float32
    np.testing.assert_allclose(x.grad.data, 6 * (1 - np.tanh(1.0) ** 2), rtol=1e-6)


def test_gradients_of_a_variable_used_twice_accumulate_and_persist_across_calls():
    x = tg.Variable(np.array(3.0))
    y = x * x + x
    y.backward(retain_graph=True)
    assert x.grad.data == 7.0
    y.backward()
    assert x.grad.data == 14.0
    x.cleargrad()
    assert x.grad is None


def _many_uses(a, W):
    """``a`` and ``h = tanh(a)`` used by ops whose gradients are their own (linear, matmul, getitem, embed_id's
    table), which the engine may sum into in place, and by ops that pass ``gy`` or a view of it on (add,
    transpose) or make a new one (mul): every way ``_add_grad`` sums, in a graph that also reaches ``W`` twice."""
    h = F.tanh(a)
    uses = [h + 0.0, F.linear(h, W), F.matmul(h, W), F.transpose(F.transpose(h)) * 2.0,
            F.getitem(h, np.array([0, 0, 2])), F.embed_id(np.array([1, 1]), h), F.linear(h, F.transpose(W)),
            F.matmul(h, F.transpose(W) * 1.0), a * 2.0, F.sum(a, axis=0, keepdims=True) * a, F.linear(a, W)]
    return F.concat([F.reshape(u, (-1,)) for u in uses], axis=0), h


def test_gradients_summed_in_place_match_central_differences():
    rng = np.random.default_rng(0)
    tg.gradient_check(lambda a, W: _many_uses(a, W)[0], rng.standard_normal((3, 4)), rng.standard_normal((4, 4)),
                      seed=0)


def test_sums_in_place_leave_the_upstream_retained_and_earlier_gradients_unchanged():
    rng = np.random.default_rng(0)
    a, W = tg.Variable(rng.standard_normal((3, 4))), tg.Variable(rng.standard_normal((4, 4)))
    y, h = _many_uses(a, W)
    gy = rng.standard_normal(y.shape)
    seen = [gy.copy()]
    y.backward(grad=gy, retain_grad=True, retain_graph=True)
    held = [gy, y.grad.data, h.grad.data, a.grad.data, W.grad.data]  # what a user may keep
    seen += [g.copy() for g in held[1:]]
    y.backward(grad=gy, retain_grad=True)
    for array, before in zip(held, seen):
        np.testing.assert_array_equal(array, before)
    np.testing.assert_array_equal(a.grad.data, 2 * seen[3])  # the second backward adds the same again
    np.testing.assert_array_equal(h.grad.data, 2 * seen[2])


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
    with pytest.raises(AttributeError, match="unknown setting 'no_such_setting'"):
        with tg.using_config("no_such_setting", 1):
            pass
    with pytest.raises(AttributeError, match="read-only"):
        tg.core.Config.train = False
    with pytest.raises(TypeError, match="using_config: train must be True or False, got 'yes'"):
        with tg.using_config("train", "yes"):
            pass
    with pytest.raises(TypeError, match="scope must be a tuple of names"):
        with tg.using_config("scope", "lstm"):
            pass


def test_a_thread_under_no_grad_leaves_a_training_thread_recording_its_graph():
    errors, recorded = [], []
    start = threading.Barrier(2)

    def evaluate():
        try:
            start.wait()
            for _ in range(300):
                with tg.no_grad(), tg.test_mode(), tg.name_scope("eval"):
                    F.tanh(tg.Variable(np.ones(4)))
        except BaseException as e:  # a failure must fail the test, not vanish with the thread
            errors.append(e)

    def train():
        try:
            start.wait()
            W = tg.Parameter(np.ones((4, 4)))
            for _ in range(300):
                y = F.tanh(tg.Variable(np.ones((2, 4))) @ W).sum()
                recorded.append(y.creator is not None and y.creator.scope == () and tg.core.Config.train)
                y.backward()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=evaluate), threading.Thread(target=train)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(recorded) == 300 and all(recorded)
    settings = tg.core.Config
    assert settings.enable_backprop and settings.train and settings.scope == () and not settings.debug


def test_settings_changed_in_a_thread_stay_in_that_thread():
    seen = {}
    with tg.no_grad():
        worker = threading.Thread(target=lambda: seen.update(grad=tg.core.Config.enable_backprop))
        worker.start()
        worker.join()
        assert not tg.core.Config.enable_backprop
    assert seen == {"grad": True}  # a new thread starts from the defaults


def test_backward_frees_the_graph_and_a_second_backward_says_what_to_do():
    x = tg.Parameter(np.ones(3))
    y = F.tanh(x * 2.0)
    saved = weakref.ref(y.creator.inputs[0])  # the input Tanh kept for its backward
    loss = y.sum()
    loss.backward()
    gc.collect()
    assert saved() is None and y.creator.freed  # the graph's arrays are gone right after backward
    with pytest.raises(RuntimeError, match=r"unchain_backward\(\).*retain_graph=True"):
        loss.backward()
    np.testing.assert_allclose(x.grad.data, 2 * (1 - np.tanh(2.0) ** 2))  # the refused call added nothing


def test_a_carried_state_whose_graph_was_freed_is_refused_until_unchained():
    lstm = L.LSTM(3, 4, stateful=True, seed=0)
    xs = np.ones((2, 3, 3), np.float32)
    F.sum(lstm(xs)).backward()  # the loop forgets loss.unchain_backward()
    with pytest.raises(RuntimeError, match="lstm_sequence: backward reached a graph that an earlier backward freed"):
        F.sum(lstm(xs)).backward()
    loss = F.sum(lstm(xs))
    loss.unchain_backward()  # works on a freed graph too, and cuts the carried state
    second = F.sum(lstm(xs))
    second.backward()
    assert lstm.cells[0].Wh.grad is not None


def test_retain_graph_allows_a_second_backward_and_defaults_to_create_graph():
    x = tg.Variable(np.array(0.5))
    y = F.tanh(x)
    y.backward(retain_graph=True)
    y.backward()
    assert x.grad.data == pytest.approx(2 * (1 - np.tanh(0.5) ** 2))
    x.cleargrad()
    y = F.tanh(x)
    y.backward(create_graph=True)  # keeps the graph: the gradient's own graph reads the first one
    gx = x.grad
    x.cleargrad()
    gx.backward()
    assert x.grad.data == pytest.approx(-2 * np.tanh(0.5) * (1 - np.tanh(0.5) ** 2))


def test_a_function_instance_called_twice_is_refused():
    tanh = tg.functions.activation.Tanh()
    tanh(np.ones(2))
    with pytest.raises(RuntimeError, match="tanh: this Tanh instance was already called"):
        tanh(np.ones(2))


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


@pytest.mark.parametrize("debug", [False, True], ids=["NumPy's bounds check", "debug_mode"])
def test_label_and_id_errors_name_the_op_and_the_range_also_for_negative_ids(debug):
    context = tg.debug_mode() if debug else contextlib.nullcontext()
    with context:
        for bad in ([0, 3], [-1, 0]):
            with pytest.raises(IndexError, match=r"softmax_cross_entropy: labels must lie in \[0, 3\), got range"):
                F.softmax_cross_entropy(np.ones((2, 3)), np.array(bad))
            with pytest.raises(IndexError, match=r"embed_id: ids must lie in \[0, 3\), got range"):
                F.embed_id(np.array(bad), tg.Variable(np.ones((3, 2))))
        with pytest.raises(IndexError, match=r"got range \[-2, 1\]"):  # ignored labels do not count
            F.softmax_cross_entropy(np.ones((3, 3)), np.array([-1, -2, 1]), ignore_label=-1)
    with pytest.raises(TypeError, match="softmax_cross_entropy: labels must be an integer array"):
        F.softmax_cross_entropy(np.ones((2, 3)), np.array([0.0, 1.0]))


def test_softmax_cross_entropy_over_no_rows_is_zero():
    for ignore in (None, -1):
        loss = F.softmax_cross_entropy(tg.Variable(np.ones((0, 4))), np.zeros(0, np.int32), ignore_label=ignore)
        assert float(loss.data) == 0.0
    all_ignored = F.softmax_cross_entropy(tg.Variable(np.ones((2, 4))), np.array([-1, -1]), ignore_label=-1)
    assert float(all_ignored.data) == 0.0


def test_sigmoid_cross_entropy_refuses_a_bad_label_and_the_op_without_a_read_makes_loss_and_gradient_nan():
    for debug in (False, True):  # NumPy labels cost no device read: checked with or without debug_mode
        with tg.using_config("debug", debug), pytest.raises(ValueError, match=r"labels must be 0, 1 or -1 .*\[2\]"):
            F.sigmoid_cross_entropy(np.zeros(3), np.array([0, 1, 2]))
    # what CuPy labels meet outside debug_mode: the op itself, which flags the label on the device
    x = tg.Variable(np.zeros(3))
    loss = SigmoidCrossEntropy(-1)(x, np.array([0, 1, 2]))
    loss.backward()
    assert np.isnan(float(loss.data)) and np.isnan(x.grad.data).all()  # no step toward the bad label


def test_scalar_operands_stay_scalars_of_the_array_dtype():
    x = tg.Variable(np.ones(3, np.float32))
    for y, op, kind in ((x * 2, "MulConstant", np.float32), (3 - x, "RSubConstant", np.float32),
                        (x / 4, "DivConstant", np.float32), (2.0 / x, "RDivConstant", np.float32),
                        (x + np.float64(1.5), "AddConstant", np.float32)):
        assert type(y.creator).__name__ == op and len(y.creator.inputs) == 1 and type(y.creator.c) is kind


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
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert keep_freed_memory() is False
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_")
    assert keep_freed_memory() is True


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
def test_backward_refuses_a_grad_on_another_device(cupy):
    y = F.tanh(tg.Variable(cupy.ones(2)))
    with pytest.raises(TypeError, match=r"backward: grad on cpu, output on gpu:0"):
        y.backward(grad=np.ones(2))


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

"""Image ops and layers: conv2d, max_pool2d, flatten (values and gradients are in the registry of
test_functions.py; here: known outputs, errors, layers and the GPU backend)."""
import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import functions as F
from tinygrad_rnn import layers as L


def test_conv2d_with_a_one_hot_kernel_shifts_the_image():
    x = np.arange(2 * 1 * 4 * 5, dtype=np.float64).reshape(2, 1, 4, 5)
    W = np.zeros((1, 1, 3, 3))
    W[0, 0, 0, 2] = 1.0  # reads the pixel one up and one right of the output position
    y = F.conv2d(x, W, pad=1).data
    expected = np.zeros_like(x)
    expected[:, :, 1:, :-1] = x[:, :, :-1, 1:]
    np.testing.assert_array_equal(y, expected)


def test_conv2d_output_size_follows_stride_and_padding():
    y = F.conv2d(np.zeros((3, 2, 9, 8)), np.zeros((5, 2, 3, 2)), stride=(2, 3), pad=(1, 0))
    assert y.shape == (3, 5, (9 + 2 - 3) // 2 + 1, (8 - 2) // 3 + 1)


def test_conv2d_sums_over_channels_and_adds_the_bias():
    x = np.ones((1, 3, 2, 2))
    W = np.ones((2, 3, 2, 2)) * np.array([1.0, 2.0])[:, None, None, None]
    y = F.conv2d(x, W, np.array([0.5, -1.0])).data
    np.testing.assert_array_equal(y.ravel(), [12.5, 23.0])


def test_max_pool2d_never_picks_the_padding():
    x = -np.arange(1, 10, dtype=np.float64).reshape(1, 1, 3, 3)  # all negative: a zero pad would win
    y = F.max_pool2d(x, 2, stride=1, pad=1).data
    assert y.max() == -1.0 and y.shape == (1, 1, 4, 4)


def test_max_pool2d_routes_the_gradient_to_the_first_maximum_of_a_tie():
    x = tg.Variable(np.ones((1, 1, 2, 2)))
    F.max_pool2d(x, 2).backward(grad=np.full((1, 1, 1, 1), 3.0))
    np.testing.assert_array_equal(x.grad.data[0, 0], [[3.0, 0.0], [0.0, 0.0]])


def test_overlapping_pool_windows_accumulate_gradients():
    x = tg.Variable(np.array([[[[0.0, 5.0, 1.0]]]]))  # the middle element is the max of both windows
    F.max_pool2d(x, (1, 2), stride=1).backward(grad=np.array([[[[1.0, 2.0]]]]))
    np.testing.assert_array_equal(x.grad.data.ravel(), [0.0, 3.0, 0.0])


@pytest.mark.parametrize("call, message", [
    (lambda: F.conv2d(np.zeros((1, 3, 5, 5)), np.zeros((2, 4, 3, 3))),
     r"conv2d: .*\(1, 3, 5, 5\) has 3 channels.*expects 4"),
    (lambda: F.conv2d(np.zeros((1, 1, 2, 5)), np.zeros((2, 1, 3, 3))),
     r"conv2d: .*\(1, 1, 2, 5\).*smaller than the kernel"),
    (lambda: F.conv2d(np.zeros((1, 5, 5)), np.zeros((2, 1, 3, 3))), r"conv2d: need x \(N, C, H, W\)"),
    (lambda: F.conv2d(np.zeros((1, 1, 5, 5)), np.zeros((2, 1, 3, 3)), np.zeros(3)), r"conv2d: b of shape \(3,\)"),
    (lambda: F.conv2d(np.zeros((1, 1, 5, 5)), np.zeros((2, 1, 3, 3)), stride=0), "conv2d: stride"),
    (lambda: F.conv2d(np.zeros((1, 1, 5, 5)), np.zeros((2, 1, 3, 3)), pad=-1), "conv2d: pad"),
    (lambda: F.max_pool2d(np.zeros((1, 1, 1, 5)), 2), r"max_pool2d: .*\(1, 1, 1, 5\).*smaller than the kernel"),
    (lambda: F.max_pool2d(np.zeros((1, 1, 4, 4)), 2, pad=2), "max_pool2d: pad .* at most half"),
    (lambda: F.max_pool2d(np.zeros((4, 4)), 2), r"max_pool2d: x must be \(N, C, H, W\)"),
])
def test_shape_errors_name_the_op_and_the_shapes(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_conv_layer_has_he_initialized_filters_and_zero_bias():
    layer = L.Conv2d(8, 64, 3, seed=0)
    assert layer.W.shape == (64, 8, 3, 3) and layer.W.dtype == np.float32
    np.testing.assert_allclose(layer.W.data.std(), np.sqrt(2.0 / (8 * 9)), rtol=0.05)
    np.testing.assert_array_equal(layer.b.data, np.zeros(64))
    assert [name for name, _ in layer.namedparams()] == ["W", "b"]
    assert L.Conv2d(1, 2, (3, 1), nobias=True).b is None


def test_conv_layer_is_reproducible_with_a_seed():
    np.testing.assert_array_equal(L.Conv2d(2, 3, 3, seed=5).W.data, L.Conv2d(2, 3, 3, seed=5).W.data)


def test_conv_pool_flatten_layers_give_the_expected_shapes():
    x = np.zeros((4, 1, 32, 96), dtype=np.float32)
    h = L.MaxPool2d(2)(L.Conv2d(1, 6, 3, pad=1)(x))
    assert h.shape == (4, 6, 16, 48) and h.dtype == np.float32
    h = L.MaxPool2d(3, stride=2, pad=1)(L.Conv2d(6, 5, (3, 5), stride=(1, 2))(h))
    assert h.shape == (4, 5, 7, 11)
    assert L.Flatten()(h).shape == (4, 5 * 7 * 11)


@pytest.mark.parametrize("args", [(0, 4, 3), (2, 4, 0), (2.0, 4, 3), (2, True, 3), (2, 4, (3,)), (2, 4, (3, 2.5)),
                                  (2, 4, (3, -1))])
def test_conv_layer_rejects_sizes_that_are_not_positive_ints(args):
    with pytest.raises(ValueError, match=r"Conv2d: channels and kernel sides must be positive.*in_channels="):
        L.Conv2d(*args)


def test_conv_layer_rejects_a_non_float_dtype_and_an_unknown_preset():
    with pytest.raises(TypeError, match="Conv2d: dtype must be a float dtype, got int32"):
        L.Conv2d(1, 2, 3, dtype=np.int32)
    with pytest.raises(ValueError, match="Conv2d: unknown init preset 'he'"):
        L.Conv2d(1, 2, 3, init="he")


def test_conv_layer_pytorch_preset_bounds_weight_and_bias_by_the_fan_in():
    layer = L.Conv2d(4, 8, (3, 2), init="pytorch", seed=0)
    bound = 1 / np.sqrt(4 * 3 * 2)
    assert np.abs(layer.W.data).max() <= bound and np.abs(layer.b.data).max() <= bound
    assert np.abs(layer.W.data).max() > 0.9 * bound and (layer.b.data != 0).all()


def test_a_small_cnn_backward_matches_numerical():
    rng = np.random.default_rng(0)
    conv = L.Conv2d(2, 3, 3, pad=1, seed=1, dtype=np.float64)

    def f(x, W, b):
        h = F.relu(F.conv2d(x, W, b, pad=1))
        return F.flatten(F.max_pool2d(h, 2, stride=1))

    tg.gradient_check(f, rng.standard_normal((2, 2, 5, 6)), conv.W, conv.b, seed=3)


@pytest.mark.gpu
def test_conv_and_pool_on_the_gpu_match_the_cpu(cupy):
    rng = np.random.default_rng(0)
    x, W, b = rng.standard_normal((2, 3, 7, 6)), rng.standard_normal((4, 3, 3, 2)), rng.standard_normal(4)
    gy = rng.standard_normal((2, 4, 4, 2))
    results = []
    for module in (np, cupy):
        xs = [tg.Variable(module.asarray(a)) for a in (x, W, b)]
        y = F.max_pool2d(F.conv2d(*xs, stride=(1, 2), pad=1), 3, stride=2, pad=1)
        y.backward(grad=module.asarray(gy))
        results.append([tg.as_numpy(v) for v in [y.data] + [a.grad.data for a in xs]])
    for cpu, gpu in zip(*results):
        np.testing.assert_allclose(gpu, cpu, rtol=1e-4, atol=1e-5)

"""Every primitive, registered once: values against NumPy, gradients against central differences.

Each registry entry names the wrapper, a NumPy reference and a strategy of cases (inputs and
keyword arguments, with inputs kept where the check is meaningful); the parametrized tests
below run every entry on every backend.
"""
import dataclasses
import re

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import tinygrad_rnn as tg
from tinygrad_rnn import functions as F
from tinygrad_rnn import layers as L
from tinygrad_rnn.testing import broadcastable_shapes, float_arrays, labels, seeds, shapes


@dataclasses.dataclass
class Op:
    name: str
    fn: object
    ref: object
    cases: object  # strategy of (inputs tuple, kwargs dict)
    differentiable: bool = True


def _unary(lo=-3.0, hi=3.0, **kw):
    return float_arrays(shapes(), lo, hi, **kw).map(lambda x: ((x,), {}))


@st.composite
def _binary(draw, lo=-3.0, hi=3.0, lo1=None, hi1=None):
    s0, s1 = draw(broadcastable_shapes(2))
    x0 = draw(float_arrays(s0, lo, hi))
    x1 = draw(float_arrays(s1, lo if lo1 is None else lo1, hi if hi1 is None else hi1))
    return (x0, x1), {}


@st.composite
def _divisor_pair(draw):
    (x0, x1), kw = draw(_binary(lo1=0.5, hi1=3.0))
    sign = draw(st.sampled_from([1.0, -1.0]))
    return (x0, np.asarray(x1 * sign)), kw


@st.composite
def _pow_case(draw):
    x = draw(float_arrays(shapes(), 0.5, 2.0))
    c = draw(st.sampled_from([2.0, 3.0, 0.5, -1.5]))
    return (x,), {"c": c}


@st.composite
def _axis_case(draw, lo=-3.0, hi=3.0, unique=False, allow_tuple=True, allow_none=True):
    shape = draw(shapes(min_dims=1))
    x = draw(float_arrays(shape, lo, hi, unique=unique))
    options = [st.integers(-x.ndim, x.ndim - 1)]
    if allow_none:
        options.append(st.none())
    if allow_tuple and x.ndim > 1:
        options.append(st.lists(st.integers(0, x.ndim - 1), min_size=1, max_size=x.ndim, unique=True).map(tuple))
    axis = draw(st.one_of(*options))
    return (x,), {"axis": axis, "keepdims": draw(st.booleans())}


@st.composite
def _softmax_case(draw):
    x = draw(float_arrays(shapes(min_dims=1), -3.0, 3.0))
    return (x,), {"axis": draw(st.integers(-x.ndim, x.ndim - 1))}


@st.composite
def _matmul_case(draw):
    m, k, n = (draw(st.integers(1, 4)) for _ in range(3))
    batch = draw(st.sampled_from([(), (2,), (3, 1)]))
    w_batch = draw(st.sampled_from([(), batch[-1:] if batch else ()]))
    return (draw(float_arrays(batch + (m, k))), draw(float_arrays(w_batch + (k, n)))), {}


@st.composite
def _linear_case(draw):
    lead = draw(shapes(min_dims=0, max_dims=2))
    d, h = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    x, W = draw(float_arrays(lead + (d,))), draw(float_arrays((d, h)))
    if draw(st.booleans()):
        return (x, W, draw(float_arrays((h,)))), {}
    return (x, W), {}


@st.composite
def _reshape_case(draw):
    x = draw(float_arrays(shapes()))
    shape = draw(st.sampled_from([(-1,), (1, x.size), tuple(reversed(x.shape)), x.shape + (1,)]))
    return (x,), {"shape": shape}


@st.composite
def _transpose_case(draw):
    x = draw(float_arrays(shapes(min_dims=1)))
    perm = draw(st.permutations(range(x.ndim)))
    perm = tuple(p - x.ndim if draw(st.booleans()) else p for p in perm)  # negative axes too
    return (x,), {"axes": draw(st.sampled_from([None, perm]))}


@st.composite
def _getitem_case(draw):
    x = draw(float_arrays(shapes(min_dims=1)))
    n = x.shape[0]
    index = draw(st.one_of(
        st.integers(-n, n - 1),
        st.builds(slice, st.integers(0, n - 1), st.integers(1, n), st.integers(1, 2)),
        labels(st.integers(1, 6).map(lambda k: (k,)), n).map(lambda a: a.astype(np.int64)),  # repeats accumulate
        st.just((Ellipsis, 0)),
    ))
    return (x,), {"index": index}


@st.composite
def _embed_case(draw):
    v, d = draw(st.integers(1, 5)), draw(st.integers(1, 4))
    ids = draw(labels(shapes(min_dims=1, max_dims=2), v))
    return (ids, draw(float_arrays((v, d)))), {}


@st.composite
def _concat_case(draw):
    base = draw(shapes(min_dims=1))
    axis = draw(st.integers(-len(base), len(base) - 1))
    xs = []
    for _ in range(draw(st.integers(1, 3))):
        s = list(base)
        s[axis] = draw(st.integers(1, 3))
        xs.append(draw(float_arrays(tuple(s))))
    return tuple(xs), {"axis": axis}


@st.composite
def _split_case(draw):
    x = draw(float_arrays(shapes(min_dims=1)))
    axis = draw(st.integers(-x.ndim, x.ndim - 1))
    n = x.shape[axis]
    cuts = draw(st.one_of(
        st.sampled_from([k for k in range(1, n + 1) if n % k == 0]),
        st.lists(st.integers(0, n), max_size=3).map(sorted),
    ))
    return (x,), {"indices_or_sections": cuts, "axis": axis}


@st.composite
def _stack_case(draw):
    shape = draw(shapes(max_dims=2))
    xs = tuple(draw(float_arrays(shape)) for _ in range(draw(st.integers(1, 3))))
    return xs, {"axis": draw(st.integers(-len(shape) - 1, len(shape)))}


@st.composite
def _broadcast_case(draw):
    small, big = draw(broadcastable_shapes(2))
    target = np.broadcast_shapes(small, big)
    return (draw(float_arrays(small)),), {"shape": target}


@st.composite
def _sum_to_case(draw):
    small, big = draw(broadcastable_shapes(2))
    target = np.broadcast_shapes(small, big)
    return (draw(float_arrays(target)),), {"shape": small}


@st.composite
def _clip_case(draw):
    x = draw(float_arrays(shapes(), -3.0, 3.0, avoid=(-1.0, 1.5), margin=0.01))
    return (x,), {"lo": -1.0, "hi": 1.5}


@st.composite
def _softmax_ce_case(draw):
    shape = draw(shapes(min_dims=1, max_dims=3))
    n_classes = shape[-1]
    x = draw(float_arrays(shape, -5.0, 5.0))
    t = draw(labels(shape[:-1], n_classes))
    kw = {}
    if draw(st.booleans()):
        kw["ignore_label"] = -1
        drop = draw(labels(shape[:-1], 2)).astype(bool)
        t = np.where(drop, -1, t).astype(np.int32)
    return (x, t), kw


@st.composite
def _sigmoid_ce_case(draw):
    shape = draw(shapes(min_dims=1))
    return (draw(float_arrays(shape, -5.0, 5.0)), draw(labels(shape, 2))), {}


@st.composite
def _mse_case(draw):
    shape = draw(shapes())
    return (draw(float_arrays(shape)), draw(float_arrays(shape))), {}


@st.composite
def _dropout_case(draw):
    x = draw(float_arrays(shapes()))
    mask = draw(labels(x.shape, 2)).astype(x.dtype)
    return (x,), {"p": draw(st.sampled_from([0.1, 0.5])), "mask": mask}


def _np_sum_to(x, shape):
    lead = x.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, s in enumerate(shape) if s == 1)
    return x.sum(axis=axes, keepdims=True).reshape(shape)


def _np_log_softmax(x, axis):
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


def _np_softmax_ce(x, t, ignore_label=None):
    logp = _np_log_softmax(x.reshape(-1, x.shape[-1]), 1)
    t = t.ravel()
    keep = np.ones_like(t, dtype=bool) if ignore_label is None else t != ignore_label
    picked = logp[np.arange(t.size), np.where(keep, t, 0)]
    return -(picked * keep).sum() / max(keep.sum(), 1)


def _np_sigmoid(x):
    return 1 / (1 + np.exp(-x))


@st.composite
def _linear_softmax_ce_case(draw):
    (x, t), kw = draw(_softmax_ce_case())
    W = draw(float_arrays((draw(st.integers(1, 4)), x.shape[-1])))
    x = draw(float_arrays(x.shape[:-1] + W.shape[:1]))
    b = draw(st.one_of(st.none(), float_arrays(W.shape[1:])))
    return ((x, W, t) if b is None else (x, W, b, t)), kw


def _linear_then_ce(fn):
    """Call ``fn(x, W, b, t, **kw)`` on a case's inputs (x, W, t) or (x, W, b, t)."""
    def call(x, W, *rest, **kw):
        b, t = rest if len(rest) == 2 else (None, rest[0])
        return fn(x, W, b, t, **kw)

    return call


def _np_sigmoid_ce(x, t):
    p = _np_sigmoid(x)
    return -(t * np.log(p) + (1 - t) * np.log(1 - p)).mean()


def _np_max(x, axis, keepdims):
    return x.max(axis=axis, keepdims=keepdims)


@st.composite
def _conv2d_case(draw):
    n, c, oc = draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = draw(st.sampled_from([1, 2, (2, 1)]))
    pad = draw(st.sampled_from([0, 1, (0, 2)]))
    py, px = pad if isinstance(pad, tuple) else (pad, pad)
    h, w = draw(st.integers(max(1, kh - 2 * py), 5)), draw(st.integers(max(1, kw - 2 * px), 5))
    inputs = (draw(float_arrays((n, c, h, w))), draw(float_arrays((oc, c, kh, kw))))
    if draw(st.booleans()):
        inputs += (draw(float_arrays((oc,))),)
    return inputs, {"stride": stride, "pad": pad}


@st.composite
def _max_pool2d_case(draw):
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = draw(st.sampled_from([None, 1, 2, (1, 2)]))  # 1 makes windows overlap
    pad = draw(st.sampled_from([0, (kh // 2, kw // 2)]))
    py, px = pad if isinstance(pad, tuple) else (pad, pad)
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 2)),
             draw(st.integers(max(1, kh - 2 * py), 5)), draw(st.integers(max(1, kw - 2 * px), 5)))
    x = draw(float_arrays(shape, unique=True))  # ties make the gradient ambiguous
    return (x,), {"kernel": (kh, kw), "stride": stride, "pad": pad}


def _np_conv2d(x, W, b=None, stride=1, pad=0):
    """Direct convolution, one output element at a time (slow, obviously right)."""
    (sy, sx), (py, px) = [v if isinstance(v, tuple) else (v, v) for v in (stride, pad)]
    x = np.pad(x, ((0, 0), (0, 0), (py, py), (px, px)))
    n, c, h, w = x.shape
    oc, _, kh, kw = W.shape
    y = np.zeros((n, oc, (h - kh) // sy + 1, (w - kw) // sx + 1))
    for i, o, r, q in np.ndindex(*y.shape):
        for ch, p, t in np.ndindex(c, kh, kw):
            y[i, o, r, q] += x[i, ch, r * sy + p, q * sx + t] * W[o, ch, p, t]
        y[i, o, r, q] += 0.0 if b is None else b[o]
    return y


def _np_max_pool2d(x, kernel, stride=None, pad=0):
    """Direct max pooling over each window, padding excluded."""
    (kh, kw), (py, px) = [v if isinstance(v, tuple) else (v, v) for v in (kernel, pad)]
    sy, sx = (kh, kw) if stride is None else stride if isinstance(stride, tuple) else (stride, stride)
    n, c, h, w = x.shape
    y = np.zeros((n, c, (h + 2 * py - kh) // sy + 1, (w + 2 * px - kw) // sx + 1))
    for i, ch, r, q in np.ndindex(*y.shape):
        top, left = r * sy - py, q * sx - px
        y[i, ch, r, q] = x[i, ch, max(top, 0):top + kh, max(left, 0):left + kw].max()
    return y


@st.composite
def _lstm_case(draw):
    n, h = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    return (draw(float_arrays((n, 4 * h), -2.0, 2.0)), draw(float_arrays((n, h), -2.0, 2.0))), {}


@st.composite
def _lstm_sequence_case(draw):
    n, t, h = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 3))
    return (draw(float_arrays((t, n, 4 * h), -2.0, 2.0)), draw(float_arrays((n, h), -1.0, 1.0)),
            draw(float_arrays((n, h), -2.0, 2.0)), draw(float_arrays((h, 4 * h), -1.0, 1.0))), {}


@st.composite
def _gru_case(draw):
    n, h = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    return (draw(float_arrays((n, 3 * h), -2.0, 2.0)), draw(float_arrays((n, 3 * h), -2.0, 2.0)),
            draw(float_arrays((n, h), -2.0, 2.0)), draw(float_arrays((h,), -1.0, 1.0))), {}


@st.composite
def _gru_sequence_case(draw):
    n, t, h = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 3))
    return (draw(float_arrays((t, n, 3 * h), -2.0, 2.0)), draw(float_arrays((n, h), -1.0, 1.0)),
            draw(float_arrays((h, 3 * h), -1.0, 1.0)), draw(float_arrays((h,), -1.0, 1.0))), {}


def _np_gru_step(xw, hw, h, bh):
    size = h.shape[1]
    r = _np_sigmoid(xw[:, :size] + hw[:, :size])
    z = _np_sigmoid(xw[:, size:2 * size] + hw[:, size:2 * size])
    n = np.tanh(xw[:, 2 * size:] + r * (hw[:, 2 * size:] + bh))
    return (1 - z) * n + z * h


def _np_gru_sequence(xw, h, Wh, bh):
    hs = []
    for xw_t in xw:
        h = _np_gru_step(xw_t, h @ Wh, h, bh)
        hs.append(h)
    return np.stack(hs), h


def _np_lstm_step(a, c):
    h = c.shape[1]
    i, f, g, o = (a[:, k * h:(k + 1) * h] for k in range(4))
    c = _np_sigmoid(f) * c + _np_sigmoid(i) * np.tanh(g)
    return _np_sigmoid(o) * np.tanh(c), c


def _np_lstm_sequence(xw, h, c, Wh):
    hs = []
    for xw_t in xw:
        h, c = _np_lstm_step(xw_t + h @ Wh, c)
        hs.append(h)
    return np.stack(hs), h, c


def _joined(*ys):
    """Several outputs as one flat array, so that one check covers all of them."""
    return np.concatenate([y.ravel() for y in ys])


def _fjoined(*ys):
    return F.concat([F.reshape(y, (-1,)) for y in ys], axis=0)


OPS = [
    Op("add", F.add, np.add, _binary()),
    Op("sub", F.sub, np.subtract, _binary()),
    Op("mul", F.mul, np.multiply, _binary()),
    Op("div", F.div, np.divide, _divisor_pair()),
    Op("neg", F.neg, np.negative, _unary()),
    Op("pow", F.pow, lambda x, c: x ** c, _pow_case()),
    Op("exp", F.exp, np.exp, _unary(-2.0, 2.0)),
    Op("log", F.log, np.log, _unary(0.1, 10.0)),
    Op("tanh", F.tanh, np.tanh, _unary()),
    Op("sigmoid", F.sigmoid, _np_sigmoid, _unary()),
    Op("relu", F.relu, lambda x: np.maximum(x, 0), _unary(avoid=(0.0,))),
    Op("matmul", F.matmul, np.matmul, _matmul_case()),
    Op("linear", F.linear, lambda x, W, b=0.0: x @ W + b, _linear_case()),
    Op("reshape", F.reshape, np.reshape, _reshape_case()),
    Op("transpose", F.transpose, np.transpose, _transpose_case()),
    Op("getitem", F.getitem, lambda x, index: x[index], _getitem_case()),
    Op("embed_id", F.embed_id, lambda ids, W: W[ids], _embed_case()),
    Op("concat", lambda *xs, axis: F.concat(xs, axis), lambda *xs, axis: np.concatenate(xs, axis), _concat_case()),
    Op("split", lambda x, **kw: F.concat(F.split(x, **kw)[::-1], kw["axis"]),
       lambda x, **kw: np.concatenate(np.split(x, **kw)[::-1], kw["axis"]), _split_case()),
    Op("stack", lambda *xs, axis: F.stack(xs, axis), lambda *xs, axis: np.stack(xs, axis), _stack_case()),
    Op("broadcast_to", F.broadcast_to, np.broadcast_to, _broadcast_case()),
    Op("sum_to", F.sum_to, _np_sum_to, _sum_to_case()),
    Op("sum", F.sum, np.sum, _axis_case()),
    Op("mean", F.mean, np.mean, _axis_case()),
    Op("max", F.max, _np_max, _axis_case(unique=True)),
    Op("min", F.min, lambda x, axis, keepdims: x.min(axis=axis, keepdims=keepdims), _axis_case(unique=True)),
    Op("clip", F.clip, lambda x, lo, hi: np.clip(x, lo, hi), _clip_case()),
    Op("softmax", F.softmax, lambda x, axis: np.exp(_np_log_softmax(x, axis)), _softmax_case()),
    Op("log_softmax", F.log_softmax, _np_log_softmax, _softmax_case()),
    Op("softmax_cross_entropy", F.softmax_cross_entropy, _np_softmax_ce, _softmax_ce_case()),
    Op("linear_softmax_cross_entropy", _linear_then_ce(F.linear_softmax_cross_entropy),
       _linear_then_ce(lambda x, W, b, t, **kw: _np_softmax_ce(x @ W + (0.0 if b is None else b), t, **kw)),
       _linear_softmax_ce_case()),
    Op("sigmoid_cross_entropy", F.sigmoid_cross_entropy, _np_sigmoid_ce, _sigmoid_ce_case()),
    Op("mean_squared_error", F.mean_squared_error, lambda a, b: ((a - b) ** 2).mean(), _mse_case()),
    Op("dropout", F.dropout, lambda x, p, mask: x * mask / (1 - p), _dropout_case()),
    Op("accuracy", F.accuracy, lambda y, t: np.float32((y.argmax(-1) == t).mean()),
       st.builds(lambda y, t: ((y, t), {}), float_arrays((5, 3), unique=True), labels((5,), 3)), differentiable=False),
    Op("conv2d", F.conv2d, _np_conv2d, _conv2d_case()),
    Op("max_pool2d", F.max_pool2d, _np_max_pool2d, _max_pool2d_case()),
    Op("lstm", lambda a, c: _fjoined(*F.lstm(a, c)), lambda a, c: _joined(*_np_lstm_step(a, c)), _lstm_case()),
    Op("lstm_sequence", lambda *xs: _fjoined(*F.lstm_sequence(*xs)), lambda *xs: _joined(*_np_lstm_sequence(*xs)),
       _lstm_sequence_case()),
    Op("gru", F.gru, _np_gru_step, _gru_case()),
    Op("gru_sequence", lambda *xs: _fjoined(*F.gru_sequence(*xs)), lambda *xs: _joined(*_np_gru_sequence(*xs)),
       _gru_sequence_case()),
    Op("flatten", F.flatten, lambda x: x.reshape(len(x), -1), _unary().filter(lambda case: case[0][0].ndim >= 1)),
]
OPS_BY_NAME = {op.name: op for op in OPS}


def _to(xp, inputs, kw):
    def move(a):
        return xp.asarray(a) if isinstance(a, np.ndarray) else a

    return tuple(move(a) for a in inputs), {k: move(v) for k, v in kw.items()}


@pytest.mark.parametrize("op", OPS, ids=lambda op: op.name)
@given(data=st.data())
def test_forward_matches_numpy(op, xp, data):
    inputs, kw = data.draw(op.cases)
    expected = op.ref(*inputs, **kw)
    y = op.fn(*_to(xp, inputs, kw)[0], **_to(xp, inputs, kw)[1])
    assert isinstance(y, tg.Variable)
    np.testing.assert_allclose(tg.as_numpy(y.data), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("op", OPS, ids=lambda op: op.name)
@given(data=st.data())
def test_float32_forward_keeps_dtype_and_matches_float64(op, xp, data):
    inputs, kw = data.draw(op.cases)
    expected = op.ref(*inputs, **kw)
    inputs32 = tuple(a.astype(np.float32) if a.dtype.kind == "f" else a for a in inputs)
    kw32 = {k: v.astype(np.float32) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v for k, v in kw.items()}
    y = op.fn(*_to(xp, inputs32, kw32)[0], **_to(xp, inputs32, kw32)[1])
    assert y.dtype == np.float32
    np.testing.assert_allclose(tg.as_numpy(y.data), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("op", [op for op in OPS if op.differentiable], ids=lambda op: op.name)
@given(data=st.data(), seed=seeds())
def test_backward_matches_numerical(op, xp, data, seed):
    inputs, kw = data.draw(op.cases)
    inputs, kw = _to(xp, inputs, kw)
    tg.gradient_check(lambda *xs: op.fn(*xs, **kw), *inputs, seed=seed)


SECOND_ORDER = ["tanh", "sigmoid", "exp", "log", "mul", "matmul", "div", "pow"]


@pytest.mark.parametrize("name", SECOND_ORDER)
@given(data=st.data(), seed=seeds())
def test_second_derivative_matches_numerical(name, data, seed):
    op = OPS_BY_NAME[name]
    inputs, kw = data.draw(op.cases)
    gy = np.random.default_rng(seed).standard_normal(op.ref(*inputs, **kw).shape)

    def first_grad(*xs):
        y = op.fn(*xs, **kw)
        y.backward(grad=gy, create_graph=True)
        g = xs[0].grad
        for x in xs:  # the outer backward accumulates into .grad: start it from zero
            x.cleargrad()
        return g

    tg.gradient_check(first_grad, *inputs, seed=seed)


def test_second_derivative_of_tanh_is_the_closed_form():
    x = tg.Variable(np.linspace(-2, 2, 5))
    y = F.tanh(x)
    y.backward(grad=np.ones(5), create_graph=True)
    gx = x.grad
    x.cleargrad()
    gx.backward(grad=np.ones(5))
    t = np.tanh(x.data)
    np.testing.assert_allclose(x.grad.data, -2 * t * (1 - t * t), rtol=1e-12)


def test_third_derivative_of_exp_through_repeated_create_graph():
    x = tg.Variable(np.array([0.3, -0.7]))
    y = F.exp(x)
    for _ in range(2):
        y.backward(grad=np.ones(2), create_graph=True)
        y, x.grad = x.grad, None
    y.backward(grad=np.ones(2))
    np.testing.assert_allclose(x.grad.data, np.exp(x.data), rtol=1e-12)


def test_create_graph_through_an_op_without_double_backward_raises():
    x = tg.Variable(np.ones((2, 3)))
    loss = F.softmax_cross_entropy(x, np.array([0, 1]))
    with pytest.raises(NotImplementedError, match="softmax_cross_entropy"):
        loss.backward(create_graph=True)


@given(x=float_arrays(shapes(min_dims=1), -5, 5), seed=seeds())
def test_softmax_backward_is_not_hidden_by_a_plain_sum(x, seed):
    # sum(softmax(x)) is constant: only a random upstream gradient exercises the backward
    v = tg.Variable(x)
    y = F.softmax(v, axis=-1)
    gy = np.random.default_rng(seed).standard_normal(x.shape)
    assume(np.abs(gy - gy.mean(axis=-1, keepdims=True)).max() > 1e-3 and x.shape[-1] > 1)
    y.backward(grad=gy)
    s = np.exp(_np_log_softmax(x, -1))
    np.testing.assert_allclose(v.grad.data, s * (gy - (gy * s).sum(-1, keepdims=True)), atol=1e-12)


def test_sigmoid_does_not_overflow_for_large_negative_inputs():
    x = np.array([-1e4, -800.0, 0.0, 800.0, 1e4], dtype=np.float32)
    with np.errstate(all="raise"):
        y = F.sigmoid(x)
    np.testing.assert_allclose(y.data, [0, 0, 0.5, 1, 1])


def test_fused_sequence_ops_take_strided_projections():
    # a (T, N, G*H) view of an (N, T, G*H) array, as a batch-major caller would pass it
    rng = np.random.default_rng(0)
    h, c = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    for op, blocks, extra in [(F.lstm_sequence, 4, (c,)), (F.gru_sequence, 3, ())]:
        xw = rng.standard_normal((2, 4, blocks * 3)).transpose(1, 0, 2)
        Wh = rng.standard_normal((3, blocks * 3))
        args = (h, *extra, Wh) if op is F.lstm_sequence else (h, Wh, rng.standard_normal(3))
        strided, contiguous = op(xw, *args), op(np.ascontiguousarray(xw), *args)
        for a, b in zip(strided, contiguous):
            np.testing.assert_array_equal(a.data, b.data)


def test_fused_lstm_ops_name_themselves_and_the_shapes_in_errors():
    with pytest.raises(ValueError, match=r"lstm: shapes a \(2, 8\), c \(2, 3\) do not fit a \(N, 4H\), c \(N, H\)"):
        F.lstm(np.ones((2, 8)), np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"lstm_sequence: shapes xw \(3, 2, 8\), h \(2, 2\), c \(2, 2\), "
                                         r"Wh \(2, 4\) do not fit xw \(T, N, 4H\)"):
        F.lstm_sequence(np.ones((3, 2, 8)), np.ones((2, 2)), np.ones((2, 2)), np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"lstm_sequence: needs at least one time step, got xw of shape \(0, 2, 8\)"):
        F.lstm_sequence(np.ones((0, 2, 8)), np.ones((2, 2)), np.ones((2, 2)), np.ones((2, 8)))
    with pytest.raises(TypeError, match=r"lstm: inputs of different dtypes \(float32, float64\)"):
        F.lstm(np.ones((2, 8), np.float32), np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"gru: shapes xw \(2, 6\), hw \(2, 6\), h \(2, 2\), bh \(3,\) do not fit "
                                         r"xw \(N, 3H\), hw \(N, 3H\), h \(N, H\), bh \(H\)"):
        F.gru(np.ones((2, 6)), np.ones((2, 6)), np.ones((2, 2)), np.ones(3))
    with pytest.raises(ValueError, match=r"gru_sequence: needs at least one time step"):
        F.gru_sequence(np.ones((0, 2, 6)), np.ones((2, 2)), np.ones((2, 6)), np.ones(2))
    h, c = F.lstm(np.ones((2, 8)), np.ones((2, 2)))
    with pytest.raises(NotImplementedError, match="lstm: backward with create_graph=True is not supported"):
        F.sum(h * c).backward(create_graph=True)


def test_softmax_cross_entropy_is_stable_for_large_logits():
    x = tg.Variable(np.array([[1e4, 0.0, -1e4], [5e3, 5e3, 0.0]], dtype=np.float32))
    with np.errstate(over="raise", invalid="raise"):
        loss = F.softmax_cross_entropy(x, np.array([0, 1]))
        loss.backward()
    np.testing.assert_allclose(loss.data, np.log(2) / 2, rtol=1e-5)
    assert np.isfinite(x.grad.data).all()


def test_softmax_cross_entropy_ignores_labels_in_sum_and_count():
    x = np.random.default_rng(0).standard_normal((4, 5))
    t = np.array([1, -1, 3, -1])
    full = F.softmax_cross_entropy(x[[0, 2]], t[[0, 2]]).data
    np.testing.assert_allclose(F.softmax_cross_entropy(x, t, ignore_label=-1).data, full, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@given(data=st.data(), block=st.integers(1, 12))
def test_softmax_cross_entropy_row_blocks_give_the_bits_of_one_block(dtype, data, block):
    from tinygrad_rnn.functions import loss as loss_module

    (x, t), kw = data.draw(_softmax_ce_case())
    gy = np.asarray(data.draw(st.floats(0.5, 2.0)), dtype=dtype)
    x = x.astype(dtype)
    results = []
    for elements in (block, 1 << 30):  # blocks of a few rows (CPU), then all rows as one (the GPU's path)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(loss_module, "_BLOCK", elements)
            v = tg.Variable(x)
            loss = F.softmax_cross_entropy(v, t, **kw)
            loss.backward(grad=gy)
        results.append((loss.data, v.grad.data))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@given(data=st.data(), tied=st.booleans(), seed=seeds())
def test_linear_softmax_cross_entropy_gives_the_bits_of_linear_then_softmax_cross_entropy(dtype, data, tied, seed):
    (x, W, *rest), kw = data.draw(_linear_softmax_ce_case())
    b, t = rest if len(rest) == 2 else (None, rest[0])
    if tied:  # W a transposed view, as TiedLinear passes it: its gradient comes in its layout
        W = np.ascontiguousarray(W.T).T
    gy = np.random.default_rng(seed).uniform(0.5, 2.0)
    results = []
    for fused in (True, False):
        xs = [tg.Variable(a.astype(dtype)) for a in (x, W, b) if a is not None]
        bv = xs[2] if b is not None else None
        if fused:
            loss = F.linear_softmax_cross_entropy(xs[0], xs[1], bv, t, **kw)
        else:
            loss = F.softmax_cross_entropy(F.linear(xs[0], xs[1], bv), t, **kw)
        loss.backward(grad=np.asarray(gy, dtype), retain_graph=True)  # the scores' gradient in a new array
        retained = [v.grad.data.copy() for v in xs]
        for v in xs:
            v.cleargrad()
        loss.backward(grad=np.asarray(gy, dtype))  # the last backward writes it over the exponentials
        results.append([loss.data] + retained + [v.grad.data for v in xs])
        assert not tied or xs[1].grad.data.flags.f_contiguous
    for fused, composed in zip(*results):
        np.testing.assert_array_equal(fused, composed)
        assert fused.dtype == composed.dtype == dtype


def test_a_loss_whose_backward_was_refused_after_it_ran_refuses_another():
    x = tg.Variable(np.ones((2, 3)))
    h = F.tanh(x)
    F.sum(h).backward()  # frees tanh
    loss = F.linear_softmax_cross_entropy(h, np.ones((3, 4)), None, np.array([0, 1]))
    with pytest.raises(RuntimeError, match="tanh: backward reached a graph that an earlier backward freed"):
        loss.backward()
    with pytest.raises(RuntimeError, match="linear_softmax_cross_entropy: a backward that was refused already"):
        loss.backward()


def test_embed_id_accumulates_duplicate_ids():
    W = tg.Variable(np.zeros((3, 2)))
    F.embed_id(np.array([[1, 1], [1, 2]]), W).backward(grad=np.ones((2, 2, 2)))
    np.testing.assert_array_equal(W.grad.data, [[0, 0], [3, 3], [1, 1]])


def test_dropout_is_inverted_and_identity_in_test_mode():
    x = np.ones((200, 50), dtype=np.float32)
    y = F.dropout(x, p=0.3, generator=tg.random.Generator(0))
    kept = y.data != 0
    np.testing.assert_allclose(y.data[kept], 1 / 0.7, rtol=1e-6)
    assert abs(kept.mean() - 0.7) < 0.02
    with tg.test_mode():
        assert F.dropout(x, p=0.3).data is x


def test_dropout_with_a_seeded_generator_is_reproducible():
    x = np.ones((4, 5))
    a = F.dropout(x, 0.5, generator=tg.random.Generator(7)).data
    b = F.dropout(x, 0.5, generator=tg.random.Generator(7)).data
    np.testing.assert_array_equal(a, b)


def test_accuracy_has_no_gradient_and_counts_ignored_labels_out():
    y = tg.Variable(np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]]))
    acc = F.accuracy(y, np.array([1, 1, -1]), ignore_label=-1)
    assert acc.creator is None
    assert float(acc.data) == 0.5


def test_numpy_errors_inside_an_op_come_with_the_op_name_and_the_shapes():
    x = tg.Variable(np.ones((3, 4)))
    with pytest.raises(IndexError, match=r"getitem: index 10 is out of bounds .*\(input shapes \(3, 4\)\)"):
        F.getitem(x, 10)
    with pytest.raises(ValueError, match=r"sum: axis 5 is out of bounds"):
        F.sum(x, axis=5)
    with pytest.raises(ValueError, match="stack: needs at least one input"):
        F.stack([])
    with pytest.raises(ValueError, match=r"div: operands could not be broadcast"):
        F.div(x, np.ones(5))


def _wide_loss_case(name, rng):
    """A float16 loss whose float16 sum overflows (or whose float16 count does), its inputs and labels."""
    if name == "softmax_cross_entropy":  # 20,000 rows of about log(100) each: a sum of about 92,000
        return F.softmax_cross_entropy, rng.standard_normal((20000, 100)), rng.integers(0, 100, 20000), {}
    if name == "softmax_cross_entropy_ignore":
        return (F.softmax_cross_entropy, rng.standard_normal((20000, 100)), rng.integers(-1, 100, 20000),
                {"ignore_label": -1})
    if name == "sigmoid_cross_entropy":  # 100,000 counted entries: more than float16 holds (65,504)
        return F.sigmoid_cross_entropy, rng.standard_normal(100000), rng.integers(0, 2, 100000), {}
    return F.mean_squared_error, rng.standard_normal(30000) * 50, np.zeros(30000), {}  # squares above 65,504


@pytest.mark.parametrize("name", ["softmax_cross_entropy", "softmax_cross_entropy_ignore", "sigmoid_cross_entropy",
                                  "mean_squared_error"])
def test_float16_losses_accumulate_in_float32_and_keep_float16_values_and_gradients(name, xp):
    loss_fn, x, t, kw = _wide_loss_case(name, np.random.default_rng(0))
    x16 = x.astype(np.float16)
    t = t.astype(np.float16) if t.dtype.kind == "f" else t
    v16, v64 = tg.Variable(xp.asarray(x16)), tg.Variable(xp.asarray(x16.astype(np.float64)))
    with np.errstate(over="raise"):
        loss16 = loss_fn(v16, xp.asarray(t), **kw)
    loss64 = loss_fn(v64, xp.asarray(t.astype(np.float64) if t.dtype.kind == "f" else t), **kw)
    loss16.backward()
    loss64.backward()
    assert loss16.dtype == np.float16 and v16.grad.dtype == np.float16
    np.testing.assert_allclose(float(loss16.data), float(loss64.data), rtol=2e-3)
    g16, g64 = tg.as_numpy(v16.grad.data).astype(np.float64), tg.as_numpy(v64.grad.data)
    # float16 holds gradients this small (1 / rows) as subnormals, spaced 2**-24 apart
    np.testing.assert_allclose(g16, g64, rtol=2e-2, atol=2e-3 * np.abs(g64).max() + 2.0 ** -24)


def test_float16_sums_and_means_accumulate_in_float32(xp):
    # summing 4,096 ones down axis 0 in float16 stalls at 2,048 (2,048 + 1 rounds back to 2,048)
    x = xp.ones((4096, 2), dtype=np.float16)
    for y, want in ((F.sum(x, axis=0), 4096.0), (F.mean(x, axis=0), 1.0), (F.sum_to(x, (1, 2)), 4096.0)):
        assert y.dtype == np.float16
        np.testing.assert_array_equal(tg.as_numpy(y.data), want)


def test_float64_losses_stay_exact_in_float64():
    rng = np.random.default_rng(1)
    x, t = rng.standard_normal((6, 5)), rng.integers(0, 5, 6)
    v = tg.Variable(x)
    loss = F.softmax_cross_entropy(v, t)
    loss.backward()
    logp = x - x.max(1, keepdims=True) - np.log(np.exp(x - x.max(1, keepdims=True)).sum(1, keepdims=True))
    assert loss.dtype == np.float64 and v.grad.dtype == np.float64
    np.testing.assert_allclose(loss.data, -logp[np.arange(6), t].mean(), rtol=1e-15)
    onehot = np.eye(5)[t]
    np.testing.assert_allclose(v.grad.data, (np.exp(logp) - onehot) / 6, rtol=1e-14, atol=1e-16)


@pytest.mark.parametrize("loss_fn", [F.softmax_cross_entropy, F.accuracy])
@pytest.mark.parametrize("shape", [(3, 0), (0, 0), ()])
def test_scores_without_classes_are_refused_naming_the_op_and_shape(loss_fn, shape):
    name = loss_fn.__name__
    with pytest.raises(ValueError, match=rf"{name}: scores of shape {re.escape(str(shape))} have no classes"):
        loss_fn(np.ones(shape), np.zeros(shape[:-1], dtype=np.int32))


def test_sigmoid_cross_entropy_names_the_bad_labels_with_any_ignore_label():
    with pytest.raises(ValueError, match=r"labels must be 0, 1 or 7 \(ignore_label\), got 2 other\(s\), "
                                         r"among them \[-1, 2\]"):
        F.sigmoid_cross_entropy(np.zeros(5), np.array([0, 2, 7, -1, 1]), ignore_label=7)
    loss = F.sigmoid_cross_entropy(np.zeros(3), np.array([0, 7, 1]), ignore_label=7)
    np.testing.assert_allclose(loss.data, np.log(2), rtol=1e-15)


def test_sum_to_names_itself_once_with_both_shapes():
    with pytest.raises(ValueError) as info:
        F.sum_to(np.ones((2, 3)), (4,))
    assert str(info.value) == "sum_to: shape (2, 3) cannot be summed to (4,) ((4,) does not broadcast to it)"
    with pytest.raises(ValueError, match=r"^sum_to: shape \(3,\) cannot be summed to \(2, 3\)"):
        F.sum_to(np.ones(3), (2, 3))
def _one_dtype_per_call(monkeypatch, seen):
    """Wrap the fused backward steps, whose arrays one GPU kernel takes with one dtype for all, to record the dtypes."""
    from tinygrad_rnn.functions import rnn

    def recording(step):
        def wrapper(*arrays):
            seen.append({a.dtype for a in arrays})
            return step(*arrays)
        return wrapper

    for name in ("_cell_backward", "_gru_backward"):
        monkeypatch.setattr(rnn, name, recording(getattr(rnn, name)))


FUSED_FLOAT32 = {
    "lstm": (F.lstm, [(2, 8), (2, 2)]),
    "lstm_sequence": (F.lstm_sequence, [(3, 2, 8), (2, 2), (2, 2), (2, 8)]),
    "gru": (F.gru, [(2, 6), (2, 6), (2, 2), (2,)]),
    "gru_sequence": (F.gru_sequence, [(3, 2, 6), (2, 2), (2, 6), (2,)]),
}


@pytest.mark.parametrize("name", FUSED_FLOAT32)
def test_fused_backward_casts_float64_upstream_gradients_to_the_ops_float32(monkeypatch, name):
    seen = []
    _one_dtype_per_call(monkeypatch, seen)
    op, input_shapes = FUSED_FLOAT32[name]
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal(s).astype(np.float32) for s in input_shapes]
    ys = op(*xs)
    ys = ys if isinstance(ys, (tuple, list)) else (ys,)
    # the NumPy path: its steps are the GPU kernels' (the compiled CPU steps bypass them)
    with tg.no_grad(), tg.using_config("compiled_kernels", False):  # as the engine calls backward: arrays in and out
        grads = ys[0].creator.backward(*(rng.standard_normal(y.shape) for y in ys))  # float64, as NumPy draws
    assert seen and all(dtypes == {np.dtype(np.float32)} for dtypes in seen)
    assert [g.dtype for g in grads] == [np.float32] * len(xs)


@pytest.mark.parametrize("layer", [L.LSTM, L.GRU])
def test_gradients_keep_float32_through_sigmoid_cross_entropy_and_fused_layers(monkeypatch, layer):
    seen = []
    _one_dtype_per_call(monkeypatch, seen)
    model = layer(3, 4, seed=0)
    rng = np.random.default_rng(0)
    x = tg.Variable(rng.standard_normal((2, 5, 3)).astype(np.float32))
    scores = model(x)
    loss = F.sigmoid_cross_entropy(scores, rng.integers(0, 2, scores.shape).astype(np.int32))
    with tg.using_config("compiled_kernels", False):  # the NumPy path, whose steps are the GPU kernels'
        loss.backward()
    assert seen and all(dtypes == {np.dtype(np.float32)} for dtypes in seen)
    assert {p.grad.dtype for p in model.params()} | {x.grad.dtype} == {np.dtype(np.float32)}


def test_sigmoid_cross_entropy_gradient_keeps_the_scores_dtype():
    for dtype in (np.float32, np.float64):
        x = tg.Variable(np.linspace(-2, 2, 6, dtype=dtype).reshape(2, 3))
        F.sigmoid_cross_entropy(x, np.array([[0, 1, -1], [1, 1, 0]], np.int32)).backward()
        assert x.grad.dtype == dtype


def _function_classes(cls=tg.Function):
    for sub in cls.__subclasses__():
        yield sub
        yield from _function_classes(sub)


def test_every_gradient_keeps_its_dtype_through_the_float32_models(monkeypatch):
    from tinygrad_rnn.models import LSTMLM, AttentionSeq2seq, BetterLSTMLM, CaptionModel, PeekySeq2seq

    mismatches = set()

    def checked(backward):
        def wrapper(self, *gys):
            gxs = backward(self, *gys)
            for kind, grads, arrays in [("upstream", gys, [ref() for ref in self.outputs]),
                                        ("input", gxs if isinstance(gxs, (tuple, list)) else (gxs,), self.inputs)]:
                for g, x in zip(grads, arrays):
                    if g is not None and x is not None and g.dtype != x.dtype:
                        mismatches.add(f"{self.op}: {kind} gradient {g.dtype} for {x.dtype}")
            return gxs
        return wrapper

    for cls in set(_function_classes()):
        if "backward" in vars(cls):
            monkeypatch.setattr(cls, "backward", checked(vars(cls)["backward"]))
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 13, (3, 6)).astype(np.int32)
    images = rng.random((2, 1, 8, 12)).astype(np.float32)
    for model, batch in [(LSTMLM(13, 4, 5, seed=0), (ids[:, :-1], ids[:, 1:])),
                         (BetterLSTMLM(13, 6, 6, dropout=0.5, seed=0), (ids[:, :-1], ids[:, 1:])),
                         (PeekySeq2seq(13, 4, 5, seed=0), (ids[:, :5], ids[:, 1:])),
                         (AttentionSeq2seq(13, 4, 5, bidirectional=True, seed=0), (ids[:, :5], ids[:, 1:])),
                         (CaptionModel(13, 4, 5, image_shape=(1, 8, 12), channels=(2, 3), seed=0), (images, ids[:2]))]:
        model.loss(*batch).backward()
        assert {p.grad.dtype for p in model.params()} == {np.dtype(np.float32)}
    assert mismatches == set()

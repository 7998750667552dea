"""Layers: registration and naming, arguments, gradients, cells against their equations (one bias or PyTorch's
two), sequence layers, carried state and the protocol (step, sequence, state, set_state, reset_state)."""
import contextlib
import gc
import weakref

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_rnn as tg
from tinygrad_rnn import functions as F
from tinygrad_rnn import layers as L

F64 = np.float64
sizes = st.integers(1, 3)
seeds = st.integers(0, 2**32 - 1)


@contextlib.contextmanager
def _params_replaced(layer, params, replacements):
    """Temporarily put ``replacements`` where ``params`` sit in every (sub-)layer (tied ones too)."""
    by_id = {id(p): r for p, r in zip(params, replacements)}
    swapped = []
    for sub in layer.layers():
        for name, value in list(vars(sub).items()):
            if id(value) in by_id:
                object.__setattr__(sub, name, by_id[id(value)])
                swapped.append((sub, name, value))
    assert {id(value) for _, _, value in swapped} == set(by_id), "a parameter was not found in any layer"
    try:
        yield
    finally:
        for sub, name, value in swapped:
            object.__setattr__(sub, name, value)


def check_layer_grads(layer, fn, *inputs, seed=0):
    """gradient_check of ``fn(*inputs)`` with respect to the inputs and every parameter of ``layer``."""
    params = list(layer.params())

    def f(*vs):
        with _params_replaced(layer, params, vs[len(inputs):]):
            return fn(*vs[:len(inputs)])

    tg.gradient_check(f, *inputs, *[p.data for p in params], seed=seed)


def _randn(rng, *shape, scale=1.0):
    return rng.standard_normal(shape) * scale


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _np_lstm(x, h, c, Wx, Wh, b):
    H = h.shape[1]
    a = x @ Wx + h @ Wh + b
    i, f, g, o = _sigmoid(a[:, :H]), _sigmoid(a[:, H:2 * H]), np.tanh(a[:, 2 * H:3 * H]), _sigmoid(a[:, 3 * H:])
    c = f * c + i * g
    return o * np.tanh(c), c


def _np_gru(x, h, Wx, Wh, b, bh):
    H = h.shape[1]
    ax, ah = x @ Wx + b, h @ Wh
    r = _sigmoid(ax[:, :H] + ah[:, :H])
    z = _sigmoid(ax[:, H:2 * H] + ah[:, H:2 * H])
    n = np.tanh(ax[:, 2 * H:] + r * (ah[:, 2 * H:] + bh))
    return (1 - z) * n + z * h


def _randomize(layer, rng, scale=0.5):
    """Non-zero biases and weights of moderate size, so that no gate term is vacuous."""
    for p in layer.params():
        p.data = _randn(rng, *p.shape, scale=scale).astype(p.dtype)


# --- Layer: registration, names, traversal -------------------------------------------------------


class _Pair(L.Layer):
    def __init__(self, shared):
        super().__init__()
        self.first = shared
        self.second = shared
        self.own = tg.Parameter(np.zeros(2))


def test_params_yields_each_parameter_once_in_assignment_order():
    shared = L.Linear(2, 3, seed=0)
    pair = _Pair(shared)
    names = [name for name, _ in pair.namedparams()]
    assert names == ["first/W", "first/b", "own"]
    assert len(list(pair.params())) == 3


def test_tied_weight_is_listed_once_and_keeps_the_embedding_name():
    model = L.Layer()
    model.embed = L.Embedding(5, 3, seed=0)
    model.out = L.TiedLinear(model.embed)
    params = list(model.params())
    assert [name for name, _ in model.namedparams()] == ["embed/W", "out/b"]
    assert sum(p is model.embed.W for p in params) == 1
    assert model.out.W is model.embed.W and model.out.W.name == "embed/W"


def test_parameter_names_follow_the_layer_path_when_attached_later():
    decoder = L.Layer()
    decoder.lstm = L.LSTM(3, 4, seed=0)
    assert decoder.lstm.cell0.Wx.name == "lstm/cell0/Wx"
    model = L.Layer()
    model.decoder = decoder
    assert decoder.lstm.cell0.Wx.name == "decoder/lstm/cell0/Wx"
    assert [name for name, _ in model.namedparams()][:3] == [
        "decoder/lstm/cell0/Wx", "decoder/lstm/cell0/Wh", "decoder/lstm/cell0/b"]


def test_assigning_before_init_raises():
    class Broken(L.Layer):
        def __init__(self):
            self.W = tg.Parameter(np.zeros(1))

    with pytest.raises(RuntimeError, match="Layer.__init__"):
        Broken()


def test_cleargrads_forgets_all_gradients():
    layer = L.Linear(2, 3, seed=0)
    layer(np.ones((1, 2), np.float32)).backward(grad=np.ones((1, 3), np.float32))
    assert all(p.grad is not None for p in layer.params())
    layer.cleargrads()
    assert all(p.grad is None for p in layer.params())


def test_test_mode_is_the_one_dropout_switch_of_layers_and_functions():
    model = L.Layer()
    model.drop = L.Dropout(0.5, seed=0)
    model.lstm = L.LSTM(2, 2, num_layers=2, dropout=0.5, seed=0)
    for layer in model.layers():  # no mode of their own
        assert not any(hasattr(layer, name) for name in ("training", "train", "eval", "unchain"))
    x = np.ones((3, 4, 2), np.float32)
    assert (model.drop(x).data == 0).any() and (F.dropout(x, 0.5).data == 0).any()
    reference = L.LSTM(2, 2, num_layers=2, seed=0)
    for switch in (tg.test_mode, lambda: tg.using_config("train", False)):
        with switch():
            np.testing.assert_array_equal(model.drop(x).data, x)
            np.testing.assert_array_equal(F.dropout(x, 0.5).data, x)
            np.testing.assert_array_equal(model.lstm(x).data, reference(x).data)


def test_calls_record_functions_in_the_layer_scope():
    model = L.Layer()
    model.fc = L.Linear(2, 3, seed=0)
    model.lstm = L.LSTM(3, 2, stateful=True, seed=0)
    model.slow = L.LSTM(3, 2, stateful=True, seed=0, fused=False)
    y = model.fc(np.ones((1, 2), np.float32))
    assert y.creator.scope == ("fc",)
    hs = model.lstm(np.ones((1, 2, 3), np.float32))
    assert hs.creator.scope == ("lstm",) and model.lstm.state[0].creator.scope == ("lstm",)  # one fused op
    model.slow(np.ones((1, 2, 3), np.float32))
    assert model.slow.state[0].creator.scope == ("slow", "t1")  # composed: ops of step 1 in their own scope
    _, state = model.slow.sequence(np.ones((1, 2, 3), np.float32))  # called directly: still in the layer's scope
    assert state[0].creator.scope == ("slow", "t1")
    for fused, scope in [(True, ("gru", "cell1")), (False, ("gru", "cell1", "t1"))]:
        alone = L.GRU(3, 2, num_layers=2, stateful=True, seed=0, fused=fused)
        alone(np.ones((1, 2, 3), np.float32))
        assert alone.state[1].creator.scope == scope


# --- Arguments -------------------------------------------------------------------------------------


def test_layers_default_to_float32_and_follow_dtype():
    assert all(p.dtype == np.float32 for p in L.LSTM(2, 3).params())
    assert all(p.dtype == F64 for p in L.GRU(2, 3, dtype=F64).params())
    assert L.Linear(2, 3, seed=1).W.data.tolist() == L.Linear(2, 3, seed=1).W.data.tolist()


@pytest.mark.parametrize("make, error, message", [
    (lambda: L.Linear(0, 3), ValueError, r"Linear: in_size must be a positive integer, got 0"),
    (lambda: L.Linear(2, 2.5), TypeError, r"Linear: out_size must be a positive integer, got 2.5"),
    (lambda: L.Linear(2, 3, dtype=np.int32), TypeError, r"Linear: dtype must be a float dtype, got int32"),
    (lambda: L.Linear(2, 3, dtype="nonsense"), TypeError, r"Linear: dtype must be a float dtype, got 'nonsense'"),
    (lambda: L.Embedding(0, 3), ValueError, r"Embedding: vocab_size must be a positive integer, got 0"),
    (lambda: L.Embedding(3, True), TypeError, r"Embedding: dim must be a positive integer, got True"),
    (lambda: L.Embedding(3, 2, dtype=bool), TypeError, r"Embedding: dtype must be a float dtype, got bool"),
    (lambda: L.TiedLinear(L.Linear(2, 3)), TypeError, r"TiedLinear: embedding must be an Embedding, got Linear"),
    (lambda: L.RNNCell(0, 2), ValueError, r"RNNCell: input_size must be a positive integer, got 0"),
    (lambda: L.GRUCell(2, -1), ValueError, r"GRUCell: hidden_size must be a positive integer, got -1"),
    (lambda: L.LSTMCell(2, 3, dtype=np.int64), TypeError, r"LSTMCell: dtype must be a float dtype, got int64"),
    (lambda: L.LSTMCell(2, 3, forget_bias=float("nan")), ValueError, r"LSTMCell: forget_bias must be a finite"),
    (lambda: L.LSTM(2.0, 3), TypeError, r"LSTM: input_size must be a positive integer, got 2.0"),
    (lambda: L.GRU(2, 0), ValueError, r"GRU: hidden_size must be a positive integer, got 0"),
    (lambda: L.RNN(2, 3, num_layers=0), ValueError, r"RNN: num_layers must be a positive integer, got 0"),
    (lambda: L.LSTM(2, 3, num_layers=1.5), TypeError, r"LSTM: num_layers must be a positive integer, got 1.5"),
    (lambda: L.LSTM(2, 3, dropout=-0.1), ValueError, r"LSTM: dropout must lie in \[0, 1\), got -0.1"),
    (lambda: L.GRU(2, 3, dropout=float("nan")), ValueError, r"GRU: dropout must lie in \[0, 1\), got nan"),
    (lambda: L.RNN(2, 3, dropout="0.5"), ValueError, r"RNN: dropout must lie in \[0, 1\), got '0.5'"),
    (lambda: L.GRU(2, 3, dtype="int16"), TypeError, r"GRU: dtype must be a float dtype, got int16"),
    (lambda: L.LSTM(2, 3, fused=1), TypeError, r"LSTM: fused must be True or False, got 1"),
    (lambda: L.GRUCell(2, 3, fused="no"), TypeError, r"GRUCell: fused must be True or False, got 'no'"),
])
def test_constructors_reject_nonsense_naming_the_layer_and_the_value(make, error, message):
    with pytest.raises(error, match=message):
        make()


# --- Linear, Embedding, TiedLinear, Dropout --------------------------------------------------------


@given(n=sizes, t=st.integers(0, 2), d=sizes, h=sizes, nobias=st.booleans(), seed=seeds)
def test_linear_backward_matches_numerical(n, t, d, h, nobias, seed):
    rng = np.random.default_rng(seed)
    layer = L.Linear(d, h, nobias=nobias, seed=rng, dtype=F64)
    _randomize(layer, rng)
    shape = (n, d) if t == 0 else (n, t, d)
    check_layer_grads(layer, layer, _randn(rng, *shape), seed=seed)


def test_linear_infers_in_size_at_first_call():
    layer = L.Linear(None, 4, seed=0)
    assert layer.W is None and layer.b is None and not list(layer.namedparams())  # both wait for D
    y = layer(np.ones((2, 5, 3), np.float32))
    assert y.shape == (2, 5, 4) and layer.W.shape == (3, 4) and layer.W.name == "W"
    assert [name for name, _ in layer.namedparams()] == ["W", "b"]
    lazy = L.Linear(None, 4, init="pytorch", seed=0)
    lazy(np.ones((2, 9), np.float32))
    assert 0 < np.abs(lazy.b.data).max() <= 1 / 3  # the bias waits for fan_in D = 9 too


@given(v=st.integers(1, 5), d=sizes, n=sizes, t=sizes, seed=seeds)
def test_embedding_and_tied_projection_backward_match_numerical(v, d, n, t, seed):
    rng = np.random.default_rng(seed)
    model = L.Layer()
    model.embed = L.Embedding(v, d, seed=rng, dtype=F64)
    model.out = L.TiedLinear(model.embed)
    _randomize(model, rng)
    ids = rng.integers(0, v, (n, t))  # repeated ids: their gradients must accumulate
    check_layer_grads(model, lambda x: model.out(F.tanh(model.embed(x))), ids, seed=seed)


def test_tied_gradient_is_row_major_and_the_sum_of_both_uses():
    rng = np.random.default_rng(0)
    model = L.Layer()
    model.embed = L.Embedding(7, 3, seed=rng, dtype=F64)
    model.out = L.TiedLinear(model.embed)
    W, ids, gy = model.embed.W, rng.integers(0, 7, (2, 5)), rng.standard_normal((2, 5, 7))
    model.out(F.tanh(model.embed(ids))).backward(grad=gy)
    tied = W.grad.data
    hs = tg.Variable(np.tanh(W.data[ids]))  # the two uses, each alone: the projection, then the lookup
    W.cleargrad()
    model.out(hs).backward(grad=gy)
    projection = W.grad.data
    W.cleargrad()
    model.embed(ids).backward(grad=(1 - hs.data ** 2) * hs.grad.data)
    np.testing.assert_allclose(tied, projection + W.grad.data, rtol=1e-12, atol=1e-15)
    assert tied.flags.c_contiguous  # in W's layout: the optimizer updates it row by row


def test_embedding_looks_up_rows():
    layer = L.Embedding(4, 2, seed=0)
    np.testing.assert_array_equal(layer(np.array([[3, 0]])).data, layer.W.data[[[3, 0]]])
    np.testing.assert_array_equal(layer([[3, 0], [1, 1]]).data, layer.W.data[[[3, 0], [1, 1]]])


def test_embedding_refuses_a_ragged_list_naming_itself():
    with pytest.raises(ValueError, match="Embedding: ids must be a rectangular array, got a ragged list"):
        L.Embedding(4, 2, seed=0)([[1, 2], [3]])


def test_dropout_is_inverted_reproducible_and_inactive_in_test_mode():
    x = np.ones((50, 40), np.float32)
    y = L.Dropout(0.25, seed=3)(x).data
    assert set(np.unique(y)) == {0.0, np.float32(1 / 0.75)}
    assert 0.15 < (y == 0).mean() < 0.35
    np.testing.assert_array_equal(y, L.Dropout(0.25, seed=3)(x).data)
    layer = L.Dropout(0.25, seed=3)
    with tg.test_mode():
        np.testing.assert_array_equal(layer(x).data, x)
    with pytest.raises(ValueError, match="Dropout"):
        L.Dropout(1.0)


# --- Cells ----------------------------------------------------------------------------------------


def _two_biases(cls, two_biases):
    """The ``two_biases`` argument where ``cls`` (a cell or sequence layer) takes it."""
    return {} if cls in (L.RNN, L.RNNCell) else {"two_biases": two_biases}


@settings(max_examples=10)
@given(n=sizes, d=sizes, h=sizes, cls=st.sampled_from([L.RNNCell, L.LSTMCell, L.GRUCell]), two_biases=st.booleans(),
       seed=seeds)
def test_cell_backward_matches_numerical(n, d, h, cls, two_biases, seed):
    rng = np.random.default_rng(seed)
    cell = cls(d, h, seed=rng, dtype=F64, **_two_biases(cls, two_biases))
    _randomize(cell, rng)
    x, h0, c0 = _randn(rng, n, d), _randn(rng, n, h), _randn(rng, n, h)
    if cls is L.LSTMCell:
        check_layer_grads(cell, lambda x, h, c: F.concat(cell.step(x, (h, c)), axis=1), x, h0, c0, seed=seed)
    else:
        check_layer_grads(cell, lambda x, h: cell.step(x, (h,))[0], x, h0, seed=seed)


@given(n=sizes, d=sizes, h=sizes, seed=seeds)
def test_lstm_cell_matches_the_equations_with_gates_i_f_g_o(n, d, h, seed):
    rng = np.random.default_rng(seed)
    cell = L.LSTMCell(d, h, seed=rng, dtype=F64)
    _randomize(cell, rng)
    x, h0, c0 = _randn(rng, n, d), _randn(rng, n, h), _randn(rng, n, h)
    h1, c1 = cell.step(x, (h0, c0))
    h_ref, c_ref = _np_lstm(x, h0, c0, cell.Wx.data, cell.Wh.data, cell.b.data)
    np.testing.assert_allclose(h1.data, h_ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(c1.data, c_ref, rtol=1e-9, atol=1e-12)


@given(n=sizes, d=sizes, h=sizes, seed=seeds)
def test_gru_cell_matches_the_pytorch_equations_with_gates_r_z_n(n, d, h, seed):
    rng = np.random.default_rng(seed)
    cell = L.GRUCell(d, h, seed=rng, dtype=F64)
    _randomize(cell, rng)
    x, h0 = _randn(rng, n, d), _randn(rng, n, h)
    h_ref = _np_gru(x, h0, cell.Wx.data, cell.Wh.data, cell.b.data, cell.bh.data)
    np.testing.assert_allclose(cell.step(x, (h0,))[0].data, h_ref, rtol=1e-9, atol=1e-12)


def _np_gru_two_biases(x, h, Wx, Wh, b_ih, b_hh):
    """PyTorch's GRU equations with its two biases, written out."""
    H = h.shape[1]
    gi, gh = x @ Wx + b_ih, h @ Wh + b_hh
    r = _sigmoid(gi[:, :H] + gh[:, :H])
    z = _sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
    n = np.tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])
    return (1 - z) * n + z * h


@given(n=sizes, d=sizes, h=sizes, fused=st.booleans(), seed=seeds)
def test_two_bias_cells_match_pytorchs_equations(n, d, h, fused, seed):
    rng = np.random.default_rng(seed)
    lstm = L.LSTMCell(d, h, two_biases=True, dtype=F64, fused=fused)
    gru = L.GRUCell(d, h, two_biases=True, dtype=F64, fused=fused)
    _randomize(lstm, rng)
    _randomize(gru, rng)
    assert lstm.bh.shape == (4 * h,) and gru.bh.shape == (3 * h,)
    x, h0, c0 = _randn(rng, n, d), _randn(rng, n, h), _randn(rng, n, h)
    h1, c1 = lstm.step(x, (h0, c0))
    (g1,) = gru.step(x, (h0,))
    h_ref, c_ref = _np_lstm(x, h0, c0, lstm.Wx.data, lstm.Wh.data, lstm.b.data + lstm.bh.data)
    np.testing.assert_allclose(h1.data, h_ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(c1.data, c_ref, rtol=1e-9, atol=1e-12)
    g_ref = _np_gru_two_biases(x, h0, gru.Wx.data, gru.Wh.data, gru.b.data, gru.bh.data)
    np.testing.assert_allclose(g1.data, g_ref, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("fused", [True, False])
def test_each_of_two_biases_gets_the_full_gradient_of_the_one_bias(fused):
    rng = np.random.default_rng(0)
    xs, gy = rng.standard_normal((2, 3, 3)), rng.standard_normal((2, 3, 4))
    for cls in (L.LSTM, L.GRU):
        one, two = cls(3, 4, seed=0, dtype=F64, fused=fused), cls(3, 4, seed=0, dtype=F64, two_biases=True, fused=fused)
        F.sum(one(xs) * gy).backward()
        F.sum(two(xs) * gy).backward()
        b, bh = two.cell0.b.grad.data, two.cell0.bh.grad.data
        np.testing.assert_allclose(b, one.cell0.b.grad.data, rtol=1e-12)
        if cls is L.LSTM:
            np.testing.assert_allclose(bh, b, rtol=1e-12)
        else:  # r and z blocks of b_hh act as those of b_ih; its n block is the one-bias layer's bh
            np.testing.assert_allclose(bh[:8], b[:8], rtol=1e-12)
            np.testing.assert_allclose(bh[8:], one.cell0.bh.grad.data, rtol=1e-12)


def test_rnn_cell_matches_the_equation_and_starts_from_zeros():
    rng = np.random.default_rng(0)
    cell = L.RNNCell(3, 2, seed=rng, dtype=F64)
    _randomize(cell, rng)
    x, h0 = _randn(rng, 4, 3), _randn(rng, 4, 2)
    (h1,) = cell.step(x, (h0,))
    np.testing.assert_allclose(h1.data, np.tanh(x @ cell.Wx.data + h0 @ cell.Wh.data + cell.b.data), rtol=1e-9)
    np.testing.assert_array_equal(cell(x, (h0,))[0].data, h1.data)  # calling a cell is its step
    np.testing.assert_allclose(cell.step(x)[0].data, cell.step(x, (np.zeros((4, 2)),))[0].data)


def test_lstm_forget_bias_sets_the_f_block_only():
    b = L.LSTMCell(2, 3, forget_bias=1.0).b.data
    np.testing.assert_array_equal(b, [0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0])


def test_cells_reject_inputs_and_states_of_the_wrong_shape():
    cell = L.LSTMCell(3, 2)
    with pytest.raises(ValueError, match=r"LSTMCell.step: input of shape \(4, 5\)"):
        cell.step(np.ones((4, 5), np.float32))
    with pytest.raises(ValueError, match=r"LSTMCell.step: state of shape \(4, 3\) does not fit \(N, H\) = \(4, 2\)"):
        cell.step(np.ones((4, 3), np.float32), (np.ones((4, 3), np.float32), None))
    with pytest.raises(ValueError, match=r"LSTMCell.step: a state of 1 arrays does not fit \(h, c\)"):
        cell.step(np.ones((4, 3), np.float32), (np.ones((4, 2), np.float32),))
    with pytest.raises(TypeError, match=r"LSTMCell.step: a state must be a tuple of \(N, H\) arrays \(h, c\), got nd"):
        cell.step(np.ones((4, 3), np.float32), np.ones((4, 2), np.float32))
    with pytest.raises(ValueError, match=r"LSTMCell.sequence: input of shape \(4, 3\) does not fit \(N, T, D\)"):
        cell.sequence(np.ones((4, 3), np.float32))


# --- Sequence layers ------------------------------------------------------------------------------

SEQUENCE_LAYERS = [L.RNN, L.LSTM, L.GRU]


def _names(layer):
    """The parts of one cell's state: ("h",) or ("h", "c")."""
    return layer.cells[0].state_names


@settings(max_examples=10)
@given(n=sizes, t=sizes, d=sizes, h=sizes, num_layers=st.integers(1, 2), cls=st.sampled_from(SEQUENCE_LAYERS),
       two_biases=st.booleans(), seed=seeds)
def test_sequence_layer_backward_matches_numerical(n, t, d, h, num_layers, cls, two_biases, seed):
    rng = np.random.default_rng(seed)
    layer = cls(d, h, num_layers=num_layers, seed=rng, dtype=F64, **_two_biases(cls, two_biases))
    _randomize(layer, rng)
    xs = _randn(rng, n, t, d)
    state = [_randn(rng, num_layers, n, h) for _ in _names(layer)]

    def run(xs, *state):  # the initial state is an input too: a seq2seq decoder backpropagates into it
        layer.set_state(*state)
        return layer(xs)

    check_layer_grads(layer, run, xs, *state, seed=seed)


def _fused(cls, fused):
    """The ``fused`` argument where ``cls`` (a sequence layer) takes it."""
    return {} if cls is L.RNN else {"fused": fused}


@settings(max_examples=10)
@given(n=sizes, t=sizes, d=sizes, s=sizes, h=sizes, num_layers=st.integers(1, 2),
       cls=st.sampled_from(SEQUENCE_LAYERS), fused=st.booleans(), seed=seeds)
def test_a_static_input_equals_concatenating_it_to_every_step(n, t, d, s, h, num_layers, cls, fused, seed):
    rng = np.random.default_rng(seed)
    layer = cls(d + s, h, num_layers=num_layers, seed=rng, dtype=F64, **_fused(cls, fused))
    _randomize(layer, rng)
    xs, static = _randn(rng, n, t, d), _randn(rng, n, s)
    state = layer.initial_state(h=_randn(rng, num_layers, n, h))
    gy = _randn(rng, n, t, h)
    results = []
    for run in (lambda xs, static: layer.sequence(xs, state, static=static),
                lambda xs, static: layer.sequence(F.concat([xs, F.broadcast_to(F.reshape(static, (n, 1, s)),
                                                                                 (n, t, s))], axis=2), state)):
        layer.cleargrads()
        inputs = tg.Variable(xs), tg.Variable(static)
        hs, final = run(*inputs)
        F.sum(hs * gy + sum(F.sum(part) for part in final)).backward()
        results.append([hs.data] + [part.data for part in final] + [v.grad.data for v in inputs]
                       + [p.grad.data for p in layer.params()])
    for got, want in zip(*results, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@settings(max_examples=10)
@given(n=sizes, t=sizes, d=sizes, s=sizes, h=sizes, cls=st.sampled_from(SEQUENCE_LAYERS), fused=st.booleans(),
       seed=seeds)
def test_sequence_with_a_static_input_backward_matches_numerical(n, t, d, s, h, cls, fused, seed):
    rng = np.random.default_rng(seed)
    layer = cls(d + s, h, seed=rng, dtype=F64, **_fused(cls, fused))
    _randomize(layer, rng)
    check_layer_grads(layer, lambda xs, static: layer.sequence(xs, static=static)[0], _randn(rng, n, t, d),
                      _randn(rng, n, s), seed=seed)


def test_a_static_input_that_does_not_fit_is_refused_naming_the_shapes():
    layer = L.LSTM(5, 2, seed=0)
    with pytest.raises(ValueError, match=r"LSTM.sequence: input of shape \(2, 3, 3\) and static input of shape "
                                         r"\(2, 3\) do not fit \(N, T, D - S\) and \(N, S\) with D=5"):
        layer.sequence(np.ones((2, 3, 3), np.float32), static=np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"static input of shape \(3, 2\)"):
        layer.sequence(np.ones((2, 3, 3), np.float32), static=np.ones((3, 2), np.float32))


@settings(max_examples=10)
@given(n=sizes, t=sizes, d=sizes, h=sizes, cls=st.sampled_from(SEQUENCE_LAYERS), seed=seeds)
def test_sequence_layer_equals_a_loop_of_its_cells(n, t, d, h, cls, seed):
    rng = np.random.default_rng(seed)
    layer = cls(d, h, num_layers=2, seed=rng, dtype=F64)
    _randomize(layer, rng)
    xs = _randn(rng, n, t, d)
    hs, final = layer.sequence(xs)
    np.testing.assert_array_equal(layer(xs).data, hs.data)  # calling the layer runs sequence from zeros
    inputs, finals = xs, []
    for cell in layer.cells:
        state, outputs = None, []
        for k in range(t):
            state = cell.step(inputs[:, k], state)
            outputs.append(state[0].data)
        inputs = np.stack(outputs, axis=1)
        finals += state
    np.testing.assert_allclose(hs.data, inputs, rtol=1e-9, atol=1e-12)
    assert len(final) == len(finals) == 2 * len(_names(layer))
    for a, b in zip(final, finals):
        np.testing.assert_allclose(a.data, b.data, rtol=1e-9, atol=1e-12)


@settings(max_examples=10)
@given(n=sizes, t=sizes, d=sizes, h=sizes, num_layers=st.integers(1, 2), two_biases=st.booleans(), seed=seeds)
def test_fused_lstm_equals_the_graph_composed_from_primitives(n, t, d, h, num_layers, two_biases, seed):
    # values and every gradient (inputs, initial state, weights) of lstm_sequence, of the
    # one-step lstm op in a cell and in the layer's step, against the per-gate graph, in float64
    rng = np.random.default_rng(seed)
    state = (num_layers, n, h) if num_layers > 1 else (n, h)
    xs, h0, c0 = rng.standard_normal((n, t, d)), rng.standard_normal(state), rng.standard_normal(state)
    gys = [rng.standard_normal(shape) for shape in [(n, t, h)] + [(n, h)] * (2 * num_layers + 4)]
    bhs = rng.standard_normal((num_layers, 4 * h))  # nonzero b_hh: the sum b + bh is checked too
    results = []
    for fused in (True, False):  # two layers of the same seed
        layer = L.LSTM(d, h, num_layers=num_layers, seed=seed, dtype=np.float64, forget_bias=1.0,
                       two_biases=two_biases, fused=fused)
        if two_biases:
            for cell, bh in zip(layer.cells, bhs):
                cell.bh.data[...] = bh
        inputs = [tg.Variable(a) for a in (xs, h0, c0)]
        layer.set_state(*inputs[1:])
        hs = layer(inputs[0])
        _, final = layer.sequence(inputs[0], layer.initial_state(h=inputs[1], c=inputs[2]))
        step = layer.cells[0].step(inputs[0][:, 0], (hs[:, -1], final[-1]))
        top, _ = layer.step(inputs[0][:, -1], layer.initial_state(h=inputs[1], c=inputs[2]))
        outputs = [hs, *final, *step, top]
        F.sum(F.stack([F.sum(y * gy) for y, gy in zip(outputs, gys)])).backward()
        grads = [v.grad.data for v in inputs] + [p.grad.data for p in layer.params()]
        results.append([y.data for y in outputs] + grads)
    for fused, composed in zip(*results):
        np.testing.assert_allclose(fused, composed, rtol=1e-9, atol=1e-12)


@settings(max_examples=10)
@given(n=sizes, t=sizes, d=sizes, h=sizes, num_layers=st.integers(1, 2), two_biases=st.booleans(), seed=seeds)
def test_fused_gru_equals_the_graph_composed_from_primitives(n, t, d, h, num_layers, two_biases, seed):
    rng = np.random.default_rng(seed)
    state = (num_layers, n, h) if num_layers > 1 else (n, h)
    xs, h0 = rng.standard_normal((n, t, d)), rng.standard_normal(state)
    gys = [rng.standard_normal(shape) for shape in [(n, t, h)] + [(n, h)] * (num_layers + 2)]
    # nonzero recurrent biases, so that their gradients are checked too
    bhs = rng.standard_normal((num_layers, 3 * h if two_biases else h))
    results = []
    for fused in (True, False):  # two layers of the same seed
        layer = L.GRU(d, h, num_layers=num_layers, seed=seed, dtype=np.float64, two_biases=two_biases, fused=fused)
        for cell, bh in zip(layer.cells, bhs):
            cell.bh.data[...] = bh
        inputs = [tg.Variable(a) for a in (xs, h0)]
        layer.set_state(inputs[1])
        hs = layer(inputs[0])
        _, final = layer.sequence(inputs[0], layer.initial_state(h=inputs[1]))
        step = layer.cells[0].step(inputs[0][:, 0], (hs[:, -1],))
        top, _ = layer.step(inputs[0][:, -1], layer.initial_state(h=inputs[1]))
        outputs = [hs, *final, *step, top]
        F.sum(F.stack([F.sum(y * gy) for y, gy in zip(outputs, gys)])).backward()
        grads = [v.grad.data for v in inputs] + [p.grad.data for p in layer.params()]
        results.append([y.data for y in outputs] + grads)
    for fused, composed in zip(*results):
        np.testing.assert_allclose(fused, composed, rtol=1e-9, atol=1e-12)


@given(cls=st.sampled_from(SEQUENCE_LAYERS), num_layers=st.integers(1, 2), seed=seeds)
def test_stateful_layer_carries_state_two_windows_equal_one(cls, num_layers, seed):
    rng = np.random.default_rng(seed)
    xs = _randn(rng, 2, 6, 3)
    whole = cls(3, 4, num_layers=num_layers, seed=seed, dtype=F64)
    split = cls(3, 4, num_layers=num_layers, stateful=True, seed=seed, dtype=F64)
    expected, final = whole.sequence(xs)
    expected = expected.data
    got = np.concatenate([split(xs[:, :3]).data, split(xs[:, 3:]).data], axis=1)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
    assert len(split.state) == len(final) == num_layers * len(_names(split))
    for a, b in zip(split.state, final):
        np.testing.assert_allclose(a.data, b.data, rtol=1e-9, atol=1e-12)
    split.reset_state()
    assert split.state is None
    np.testing.assert_allclose(split(xs).data, expected, rtol=1e-9, atol=1e-12)


def test_non_stateful_layer_starts_from_zeros_and_carries_nothing():
    layer = L.LSTM(3, 4, seed=0)
    xs = np.random.default_rng(0).standard_normal((2, 3, 3)).astype(np.float32)
    first = layer(xs).data
    assert layer.state is None and layer.carried_state() == {}
    np.testing.assert_array_equal(layer(xs).data, first)
    hs, (h, c) = layer.sequence(xs)  # the final state of a call, without carrying it
    np.testing.assert_array_equal(hs.data, first)
    assert h.shape == c.shape == (2, 4) and layer.state is None


def test_set_state_accepts_per_layer_stacks_and_two_d_for_one_layer():
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((2, 3, 3))
    h0, c0 = rng.standard_normal((2, 2, 4)), rng.standard_normal((2, 2, 4))
    two = L.LSTM(3, 4, num_layers=2, seed=0, dtype=F64)
    two.set_state(h0, c0)
    assert [v.shape for v in two.state] == [(2, 4)] * 4
    for v, expected in zip(two.state, [h0[0], c0[0], h0[1], c0[1]]):  # (h, c) of the bottom layer first
        np.testing.assert_array_equal(v.data, expected)
    out = two(xs).data
    assert two.state is None
    assert not np.allclose(out, two(xs).data)  # the given state applies to one call only
    one = L.GRU(3, 4, seed=0, dtype=F64)
    one.set_state(h0[0])
    np.testing.assert_allclose(one(xs).data, (one.set_state(h0[:1]), one(xs))[1].data)
    with pytest.raises(ValueError, match=r"LSTM.set_state: h of shape \(3, 2, 4\)"):
        two.set_state(rng.standard_normal((3, 2, 4)))
    two.set_state(h0)
    with pytest.raises(ValueError, match=r"LSTM: state of shape \(2, 4\) does not fit \(N, H\) = \(5, 4\)"):
        two(rng.standard_normal((5, 3, 3)))


def test_state_arrays_are_cast_to_the_parameter_dtype_and_variables_kept():
    layer = L.LSTM(3, 4, seed=0)
    assert layer.state is None
    layer.set_state(np.zeros((2, 4)), np.zeros((1, 2, 4)))
    assert layer(np.ones((2, 1, 3), np.float32)).dtype == np.float32
    h0 = tg.Variable(np.ones((2, 4), np.float32))
    layer.set_state(h0)
    F.sum(layer(np.ones((2, 1, 3), np.float32))).backward()
    assert h0.grad is not None and h0.grad.shape == (2, 4)  # a given Variable keeps its graph


def test_lstm_set_state_without_c_starts_the_cell_from_zeros():
    rng = np.random.default_rng(0)
    xs, h0 = rng.standard_normal((2, 3, 3)), rng.standard_normal((2, 4))
    a, b = L.LSTM(3, 4, seed=0, dtype=F64), L.LSTM(3, 4, seed=0, dtype=F64)
    a.set_state(h0)
    b.set_state(h0, np.zeros((2, 4)))
    np.testing.assert_array_equal(a(xs).data, b(xs).data)


def test_sequence_layer_rejects_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="num_layers"):
        L.LSTM(2, 2, num_layers=0)
    with pytest.raises(ValueError, match="dropout"):
        L.GRU(2, 2, dropout=1.0)
    with pytest.raises(ValueError, match=r"RNN: input of shape \(2, 3\) does not fit \(N, T, D\) with D=3"):
        L.RNN(3, 2)(np.ones((2, 3), np.float32))


@pytest.mark.parametrize("cls", SEQUENCE_LAYERS)
@pytest.mark.parametrize("fused", [True, False])
def test_sequences_without_time_steps_are_refused_naming_the_layer(cls, fused):
    layer = cls(3, 2, num_layers=2, seed=0, **({} if cls is L.RNN else {"fused": fused}))
    empty = np.ones((2, 0, 3), np.float32)
    name = cls.__name__
    with pytest.raises(ValueError, match=rf"{name}: input of shape \(2, 0, 3\) has no time steps \(T = 0\)"):
        layer(empty)
    with pytest.raises(ValueError, match=rf"{name}.sequence: input of shape \(2, 0, 3\) has no time steps"):
        layer.sequence(empty)
    with pytest.raises(ValueError, match=rf"{name}Cell.sequence: input of shape \(2, 0, 3\) has no time steps"):
        layer.cells[0].sequence(empty)


def test_state_can_be_assigned_in_the_format_of_step_and_is_checked():
    lstm = L.LSTM(3, 4, num_layers=2, seed=0, dtype=F64)
    xs = np.random.default_rng(0).standard_normal((2, 3, 3))
    state = lstm.initial_state(h=np.ones((2, 2, 4)))
    lstm.state = tuple(v.data for v in state)  # arrays: cast, as set_state casts them
    assert all(isinstance(v, tg.Variable) for v in lstm.state)
    np.testing.assert_array_equal(lstm(xs).data, lstm.sequence(xs, state)[0].data)
    with pytest.raises(ValueError, match=r"LSTM.state: a state of 2 arrays does not fit num_layers=2 times \(h, c\)"):
        lstm.state = state[:2]
    with pytest.raises(ValueError, match=r"LSTM.state: state of shape \(3, 4\) does not fit \(N, H\) = \(2, 4\)"):
        lstm.state = state[:3] + (np.zeros((3, 4)),)
    with pytest.raises(TypeError, match=r"LSTM.state: a state must be a tuple of \(N, H\) arrays, got ndarray"):
        lstm.state = np.zeros((4, 2, 4))
    lstm.state = None
    assert lstm.state is None
    plain = L.Linear(2, 3)
    plain.state = None  # what reset_state does to every sub-layer
    with pytest.raises(TypeError, match="Linear carries no state"):
        plain.state = state
    model = L.Layer()
    model.fc = plain
    with pytest.raises(TypeError, match="Linear carries no state"):
        model.load_carried_state({"fc/0": np.zeros((2, 3))})


# --- One step at a time: initial_state and step -----------------------------------------------------


def _initial(layer, parts):
    return layer.initial_state(**dict(zip(("h", "c"), parts)))


@settings(max_examples=15)
@given(n=sizes, t=sizes, d=sizes, h=sizes, num_layers=st.integers(1, 2), cls=st.sampled_from(SEQUENCE_LAYERS),
       two_biases=st.booleans(), fused=st.booleans(), seed=seeds)
def test_steps_from_initial_state_equal_forward_from_set_state(n, t, d, h, num_layers, cls, two_biases, fused, seed):
    rng = np.random.default_rng(seed)
    kwargs = _two_biases(cls, two_biases) if cls is L.RNN else {**_two_biases(cls, two_biases), "fused": fused}
    layer = cls(d, h, num_layers=num_layers, stateful=True, seed=rng, dtype=F64, **kwargs)
    _randomize(layer, rng)
    xs = _randn(rng, n, t, d)
    parts = [_randn(rng, *((num_layers, n, h) if num_layers > 1 else (n, h))) for _ in _names(layer)]
    layer.set_state(*parts)
    hs = layer(xs).data
    state, outputs = _initial(layer, parts), []
    for k in range(t):
        y, state = layer.step(xs[:, k], state)
        outputs.append(y.data)
    assert len(state) == len(layer.state) == num_layers * len(parts)
    assert all(v.shape == (n, h) for v in state)
    np.testing.assert_allclose(np.stack(outputs, axis=1), hs, rtol=1e-12, atol=1e-14)
    for stepped, carried in zip(state, layer.state):
        np.testing.assert_allclose(stepped.data, carried.data, rtol=1e-12, atol=1e-14)


@settings(max_examples=10)
@given(n=sizes, d=sizes, h=sizes, num_layers=st.integers(1, 2), cls=st.sampled_from(SEQUENCE_LAYERS),
       two_biases=st.booleans(), fused=st.booleans(), seed=seeds)
def test_step_backward_matches_numerical(n, d, h, num_layers, cls, two_biases, fused, seed):
    rng = np.random.default_rng(seed)
    kwargs = _two_biases(cls, two_biases) if cls is L.RNN else {**_two_biases(cls, two_biases), "fused": fused}
    layer = cls(d, h, num_layers=num_layers, seed=rng, dtype=F64, **kwargs)
    _randomize(layer, rng)
    xs = _randn(rng, n, 2, d)
    parts = [_randn(rng, num_layers, n, h) for _ in _names(layer)]

    def run(xs, *parts):  # two steps from a given state: gradients reach the state as they would an encoder
        state = _initial(layer, parts)
        outputs = []
        for k in range(2):
            y, state = layer.step(xs[:, k], state)
            outputs.append(y)
        return F.concat(outputs + list(state), axis=1)

    check_layer_grads(layer, run, xs, *parts, seed=seed)


def test_initial_state_fills_zeros_and_keeps_given_variables():
    lstm = L.LSTM(3, 4, num_layers=2, seed=0, dtype=F64)
    zeros = lstm.initial_state(5)
    assert len(zeros) == 4 and all(not v.data.any() and v.shape == (5, 4) for v in zeros)
    h0 = tg.Variable(np.ones((2, 5, 4)))
    state = lstm.initial_state(h=h0)
    assert not state[3].data.any()  # c missing: zeros
    y, _ = lstm.step(np.ones((5, 3)), state)
    F.sum(y).backward()
    assert h0.grad is not None and h0.grad.data[1].any()  # the top layer's start got a gradient through h0
    gru = L.GRU(3, 4, seed=0)
    (only,) = gru.initial_state(h=np.zeros((2, 4)))  # (N, H) for one layer; cast to the parameters' dtype
    assert only.shape == (2, 4) and only.dtype == np.float32
    y, state = gru.step(np.ones((2, 3), np.float32))  # no state: zeros
    assert y.shape == (2, 4) and state[0] is y


def test_step_leaves_the_carried_state_alone():
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((2, 3, 3))
    layer = L.LSTM(3, 4, num_layers=2, stateful=True, seed=0, dtype=F64)
    reference = L.LSTM(3, 4, num_layers=2, stateful=True, seed=0, dtype=F64)
    layer(xs)
    reference(xs)
    state, carried = layer.state, layer.carried_state()
    layer.step(xs[:, 0], layer.initial_state(h=np.ones((2, 2, 4))))
    layer.step(xs[:, 0])
    layer.sequence(xs)
    assert layer.carried_state().keys() == carried.keys()
    for key, value in layer.carried_state().items():
        np.testing.assert_array_equal(value, carried[key])
    assert all(a is b for a, b in zip(layer.state, state))
    np.testing.assert_array_equal(layer(xs).data, reference(xs).data)  # the next window still continues
    once = L.GRU(3, 4, seed=0, dtype=F64)  # not stateful: set_state applies to the next forward, steps or not
    once.set_state(np.ones((2, 4)))
    once.step(xs[:, 0])
    after_step = once(xs).data
    once.set_state(np.ones((2, 4)))
    np.testing.assert_array_equal(after_step, once(xs).data)


def test_step_records_its_ops_in_the_layer_and_cell_scopes():
    model = L.Layer()
    model.dec = L.LSTM(3, 2, num_layers=2, seed=0)
    h, state = model.dec.step(np.ones((1, 3), np.float32))
    assert h.creator.scope == ("dec", "cell1")
    assert L.GRU(3, 2, seed=0).step(np.ones((1, 3), np.float32))[0].creator.scope == ("gru",)


def test_step_and_initial_state_reject_shapes_naming_the_layer():
    lstm = L.LSTM(3, 2, num_layers=2)
    with pytest.raises(ValueError, match=r"LSTM.step: input of shape \(4, 5\) does not fit \(N, D\) with D=3"):
        lstm.step(np.ones((4, 5), np.float32))
    with pytest.raises(ValueError, match=r"LSTM.step: input of shape \(4, 1, 3\) does not fit \(N, D\)"):
        lstm.step(np.ones((4, 1, 3), np.float32))
    state = lstm.initial_state(4)
    with pytest.raises(ValueError, match=r"LSTM.step: state of shape \(3, 2\) does not fit \(N, H\) = \(4, 2\)"):
        lstm.step(np.ones((4, 3), np.float32), state[:2] + (np.zeros((3, 2)), np.zeros((3, 2))))
    with pytest.raises(ValueError, match=r"LSTM.step: a state of 2 arrays does not fit num_layers=2 times \(h, c\)"):
        lstm.step(np.ones((4, 3), np.float32), state[:2])
    with pytest.raises(ValueError, match=r"LSTM.sequence: a state of 3 arrays does not fit num_layers=2 times"):
        lstm.sequence(np.ones((4, 1, 3), np.float32), state[:3])
    with pytest.raises(ValueError, match=r"LSTM.initial_state: h of shape \(3, 4, 2\) does not fit \(num_layers"):
        lstm.initial_state(h=np.zeros((3, 4, 2)))
    with pytest.raises(ValueError, match=r"LSTM.initial_state: state of shape \(4, 3\) does not fit \(N, H\)"):
        lstm.initial_state(h=np.zeros((2, 4, 3)))
    with pytest.raises(ValueError, match=r"LSTM.initial_state: state of shape \(4, 2\) does not fit .* \(5, 2\)"):
        lstm.initial_state(5, h=np.zeros((2, 4, 2)))
    with pytest.raises(ValueError, match="GRU.initial_state: needs the batch size n"):
        L.GRU(3, 2).initial_state()
    with pytest.raises(ValueError, match="RNN.initial_state: n must be a positive integer, got 0"):
        L.RNN(3, 2).initial_state(0)
    with pytest.raises(TypeError, match="'c'"):
        L.GRU(3, 2).initial_state(2, c=np.zeros((2, 2)))  # only an LSTM has a cell state


def _dropped_inputs_of_top_layer(variational, seed=0):
    """Outputs of a 2-layer RNN whose top cell passes its (dropped) input through tanh only,
    so that an output is exactly 0 where dropout zeroed the input."""
    layer = L.RNN(4, 6, num_layers=2, dropout=0.5, variational=variational, seed=seed)
    top = layer.cell1
    top.Wx.data = np.eye(6, dtype=np.float32)
    top.Wh.data[...] = 0
    xs = np.random.default_rng(seed).standard_normal((5, 7, 4)).astype(np.float32) + 3
    return layer, xs


def test_variational_dropout_shares_one_mask_across_time_and_is_identity_in_test_mode():
    layer, xs = _dropped_inputs_of_top_layer(variational=True)
    zeros = layer(xs).data == 0
    assert zeros.any() and not zeros.all()
    assert (zeros == zeros[:, :1]).all()  # same pattern at every step
    with tg.test_mode():
        kept = layer(xs).data
    reference = L.RNN(4, 6, num_layers=2, seed=0)
    reference.load_state_dict(layer.state_dict())
    np.testing.assert_allclose(kept, reference(xs).data, rtol=1e-6)


@pytest.mark.parametrize("variational", [False, True])
def test_step_drops_between_layers_as_forward_does(variational):
    layer, xs = _dropped_inputs_of_top_layer(variational)
    zeros = np.stack([layer.step(xs[:, k])[0].data == 0 for k in range(xs.shape[1])], axis=1)
    assert zeros.any() and not zeros.all()
    assert not (zeros == zeros[:, :1]).all()  # a step cannot know its sequence: a new mask each call
    with tg.test_mode():
        assert (layer.step(xs[:, 0])[0].data != 0).all()


def test_plain_dropout_between_layers_draws_a_mask_per_step():
    layer, xs = _dropped_inputs_of_top_layer(variational=False)
    zeros = layer(xs).data == 0
    assert zeros.any() and not (zeros == zeros[:, :1]).all()


# --- Truncated BPTT --------------------------------------------------------------------------------


def test_unchain_backward_frees_the_graph_of_the_previous_window():
    lstm = L.LSTM(3, 4, stateful=True, seed=0)
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((2, 3, 3)).astype(np.float32)
    gy = rng.standard_normal((2, 3, 4)).astype(np.float32)
    loss = F.sum(lstm(xs) * gy)
    first_step = weakref.ref(lstm.state[0].creator)
    stack = weakref.ref(loss.creator.inputs[0].creator.inputs[0].creator)
    loss.backward()
    loss.unchain_backward()
    assert all(v.creator is None for v in lstm.state)  # the carried state is leaves now
    del loss
    gc.collect()
    assert first_step() is None and stack() is None
    loss = F.sum(lstm(xs) * gy)  # the next window starts from the carried, detached state
    loss.backward()
    assert lstm.cells[0].Wh.grad is not None


def test_carried_state_round_trips_by_layer_path_and_moves_to_the_model_device(xp):
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((2, 6, 3)).astype(np.float32)

    def build():
        model = L.Layer()
        model.lstm = L.LSTM(3, 4, num_layers=2, stateful=True, seed=0)
        model.gru = L.GRU(4, 2, stateful=True, seed=1)
        return model if xp is np else model.to_gpu()

    def run(model, part):
        return model.gru(model.lstm(xp.asarray(part))).data

    a, b = build(), build()
    run(a, xs[:, :3])
    carried = a.carried_state()
    assert list(carried) == ["lstm/0", "lstm/1", "lstm/2", "lstm/3", "gru/0"]  # (h, c) of each layer, bottom first
    assert all(carried[f"lstm/{k}"] is v.data for k, v in enumerate(a.lstm.state))
    b.load_carried_state({k: tg.as_numpy(v) for k, v in carried.items()})  # as a checkpoint holds them
    assert all(tg.get_array_module(v) is xp for v in b.lstm.state + b.gru.state)
    np.testing.assert_array_equal(tg.as_numpy(run(b, xs[:, 3:])), tg.as_numpy(run(a, xs[:, 3:])))
    b.reset_state()
    assert b.lstm.state is None and b.gru.state is None and b.carried_state() == {}

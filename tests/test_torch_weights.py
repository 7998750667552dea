"""torch_weights: PyTorch's state-dict layouts, checked against PyTorch's equations written out in NumPy
(no torch here): round trips both ways, key names, bias conventions, prefixes and errors."""
import numpy as np
import pytest

from tinygrad_rnn import layers as L
from tinygrad_rnn.torch_weights import load_torch, to_torch

F64 = np.float64
N, T, D, H = 2, 3, 3, 4


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _torch_forward(kind, sd, xs, num_layers):
    """nn.RNN (tanh) / nn.LSTM / nn.GRU with batch_first=True and a zero initial state, from PyTorch's
    documented equations and its state dict."""
    for k in range(num_layers):
        W_ih, W_hh, b_ih, b_hh = (sd[f"{name}_l{k}"] for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
        h = c = np.zeros((xs.shape[0], W_hh.shape[1]))
        outputs = []
        for t in range(xs.shape[1]):
            gi, gh = xs[:, t] @ W_ih.T + b_ih, h @ W_hh.T + b_hh
            if kind == "rnn":
                h = np.tanh(gi + gh)
            elif kind == "lstm":
                i, f, g, o = np.split(gi + gh, 4, axis=1)
                c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
                h = _sigmoid(o) * np.tanh(c)
            else:
                (i_r, i_z, i_n), (h_r, h_z, h_n) = np.split(gi, 3, axis=1), np.split(gh, 3, axis=1)
                r, z = _sigmoid(i_r + h_r), _sigmoid(i_z + h_z)
                n = np.tanh(i_n + r * h_n)
                h = (1 - z) * n + z * h
            outputs.append(h)
        xs = np.stack(outputs, axis=1)
    return xs


RECURRENT = [(L.RNN, "rnn", 1), (L.LSTM, "lstm", 4), (L.GRU, "gru", 3)]
# (class, kind, gate blocks, two_biases): the RNN holds one bias only
BIAS_CASES = [(*case, two) for case in RECURRENT for two in (False, True) if case[0] is not L.RNN or not two]


def _recurrent(cls, num_layers, two_biases, seed=0):
    kwargs = {} if cls is L.RNN else {"two_biases": two_biases}
    return cls(D, H, num_layers=num_layers, seed=seed, dtype=F64, init="pytorch", **kwargs)


def _torch_dict(blocks, num_layers, seed):
    """A random PyTorch state dict of an nn.RNN/LSTM/GRU(D, H, num_layers), every bias nonzero."""
    rng = np.random.default_rng(seed)
    sd = {}
    for k in range(num_layers):
        sd.update({f"weight_ih_l{k}": rng.uniform(-.5, .5, (blocks * H, D if k == 0 else H)),
                   f"weight_hh_l{k}": rng.uniform(-.5, .5, (blocks * H, H)),
                   f"bias_ih_l{k}": rng.uniform(-.5, .5, blocks * H),
                   f"bias_hh_l{k}": rng.uniform(-.5, .5, blocks * H)})
    return sd


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


# --- recurrent layers -----------------------------------------------------------------------------------


@pytest.mark.parametrize("cls, kind, blocks, two_biases", BIAS_CASES)
@pytest.mark.parametrize("num_layers", [1, 2])
def test_a_loaded_pytorch_state_dict_computes_pytorchs_function(cls, kind, blocks, two_biases, num_layers):
    xs = np.random.default_rng(1).standard_normal((N, T, D))
    sd = _torch_dict(blocks, num_layers, seed=2)
    layer = _recurrent(cls, num_layers, two_biases)
    load_torch(layer, sd)
    np.testing.assert_allclose(layer(xs).data, _torch_forward(kind, sd, xs, num_layers), rtol=1e-12, atol=1e-14)
    back = to_torch(layer)
    if two_biases:
        _assert_same(back, sd)  # a pair of biases copies exactly
    else:  # one bias: another state dict of the same function
        np.testing.assert_allclose(_torch_forward(kind, back, xs, num_layers), layer(xs).data, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("cls, kind, blocks, two_biases", BIAS_CASES)
def test_our_layer_round_trips_exactly_and_pytorch_computes_our_function(cls, kind, blocks, two_biases):
    xs = np.random.default_rng(1).standard_normal((N, T, D))
    layer = _recurrent(cls, 2, two_biases, seed=3)
    sd = to_torch(layer)
    np.testing.assert_allclose(_torch_forward(kind, sd, xs, 2), layer(xs).data, rtol=1e-12, atol=1e-14)
    copy = _recurrent(cls, 2, two_biases, seed=4)
    load_torch(copy, sd)
    _assert_same(copy.state_dict(), layer.state_dict())  # b + 0 is b: exact for one bias too


def test_layouts_follow_pytorchs_gate_blocks_and_bias_conventions():
    lstm = _recurrent(L.LSTM, 1, False)
    sd = to_torch(lstm)
    np.testing.assert_array_equal(sd["weight_ih_l0"][H:2 * H], lstm.cell0.Wx.data[:, H:2 * H].T)  # forget gate
    np.testing.assert_array_equal(sd["weight_hh_l0"][3 * H:], lstm.cell0.Wh.data[:, 3 * H:].T)  # output gate
    np.testing.assert_array_equal(sd["bias_ih_l0"], lstm.cell0.b.data)
    assert not sd["bias_hh_l0"].any()
    gru = _recurrent(L.GRU, 1, False)
    sd = to_torch(gru)
    np.testing.assert_array_equal(sd["bias_hh_l0"], np.concatenate([np.zeros(2 * H), gru.cell0.bh.data]))
    torch_sd = _torch_dict(3, 1, seed=5)
    load_torch(gru, torch_sd)
    b_ih, b_hh = torch_sd["bias_ih_l0"], torch_sd["bias_hh_l0"]
    np.testing.assert_array_equal(gru.cell0.bh.data, b_hh[2 * H:])  # PyTorch's n block of b_hh is our bh
    np.testing.assert_array_equal(gru.cell0.b.data, np.concatenate([b_ih[:2 * H] + b_hh[:2 * H], b_ih[2 * H:]]))
    lstm2 = _recurrent(L.LSTM, 1, True)
    load_torch(lstm2, _torch_dict(4, 1, seed=6))
    np.testing.assert_array_equal(lstm2.cell0.bh.data, _torch_dict(4, 1, seed=6)["bias_hh_l0"])


def test_two_layer_keys_and_shapes_are_pytorchs():
    sd = to_torch(L.GRU(D, H, num_layers=2), prefix="rnn.")
    assert {k: v.shape for k, v in sd.items()} == {
        "rnn.weight_ih_l0": (3 * H, D), "rnn.weight_hh_l0": (3 * H, H), "rnn.bias_ih_l0": (3 * H,),
        "rnn.bias_hh_l0": (3 * H,), "rnn.weight_ih_l1": (3 * H, H), "rnn.weight_hh_l1": (3 * H, H),
        "rnn.bias_ih_l1": (3 * H,), "rnn.bias_hh_l1": (3 * H,)}
    assert all(v.dtype == np.float32 and v.flags.c_contiguous for v in sd.values())


@pytest.mark.parametrize("cls, blocks", [(L.RNNCell, 1), (L.LSTMCell, 4), (L.GRUCell, 3)])
def test_cells_use_the_keys_of_pytorchs_cells(cls, blocks):
    cell = cls(D, H, seed=0, dtype=F64)
    sd = to_torch(cell)
    assert sorted(sd) == ["bias_hh", "bias_ih", "weight_hh", "weight_ih"]
    assert sd["weight_ih"].shape == (blocks * H, D)
    copy = cls(D, H, seed=1, dtype=F64)
    load_torch(copy, sd)
    _assert_same(copy.state_dict(), cell.state_dict())


# --- feed-forward layers --------------------------------------------------------------------------------


def test_linear_embedding_and_conv_round_trip_in_pytorchs_layout():
    rng = np.random.default_rng(0)
    linear = L.Linear(D, 5, seed=0, dtype=F64, init="pytorch")
    sd = to_torch(linear, prefix="decoder.")
    np.testing.assert_array_equal(sd["decoder.weight"], linear.W.data.T)
    x = rng.standard_normal((N, D))
    np.testing.assert_allclose(x @ sd["decoder.weight"].T + sd["decoder.bias"], linear(x).data, rtol=1e-15)
    torch_linear = {"weight": rng.standard_normal((5, D)), "bias": rng.standard_normal(5)}
    load_torch(linear, torch_linear)
    _assert_same(to_torch(linear), torch_linear)
    assert list(to_torch(L.Linear(D, 5, nobias=True))) == ["weight"]

    embed = L.Embedding(7, D, seed=0, dtype=F64)
    weight = rng.standard_normal((7, D))
    load_torch(embed, {"weight": weight})
    np.testing.assert_array_equal(embed(np.array([[3, 0]])).data, weight[[[3, 0]]])
    _assert_same(to_torch(embed), {"weight": weight})

    conv = L.Conv2d(2, 3, (3, 2), seed=0)
    torch_conv = {"weight": rng.standard_normal((3, 2, 3, 2)), "bias": rng.standard_normal(3)}
    load_torch(conv, torch_conv)
    _assert_same(to_torch(conv), {k: v.astype(np.float32) for k, v in torch_conv.items()})


def test_a_word_language_model_state_dict_loads_layer_by_layer_with_prefixes():
    # PyTorch's RNNModel: encoder (Embedding), rnn (LSTM, 2 layers), decoder (Linear tied to the encoder)
    rng = np.random.default_rng(0)
    V = 6
    shared = rng.standard_normal((V, H))
    sd = {"encoder.weight": shared, **{f"rnn.{k}": v for k, v in _torch_dict(4, 2, seed=1).items()},
          "decoder.weight": shared, "decoder.bias": rng.standard_normal(V)}
    sd["rnn.weight_ih_l0"] = rng.standard_normal((4 * H, H))  # the embedding size is H here
    model = L.Layer()
    model.embed = L.Embedding(V, H, dtype=F64)
    model.lstm = L.LSTM(H, H, num_layers=2, dtype=F64, two_biases=True)
    model.out = L.TiedLinear(model.embed)
    for layer, prefix in [(model.embed, "encoder."), (model.lstm, "rnn."), (model.out, "decoder.")]:
        load_torch(layer, sd, prefix=prefix)
    assert model.out.W is model.embed.W
    back = {**to_torch(model.embed, "encoder."), **to_torch(model.lstm, "rnn."), **to_torch(model.out, "decoder.")}
    _assert_same(back, sd)
    ids = rng.integers(0, V, (N, T))
    expected = _torch_forward("lstm", {k[4:]: v for k, v in sd.items() if k.startswith("rnn.")}, shared[ids], 2)
    expected = expected @ shared.T + sd["decoder.bias"]
    np.testing.assert_allclose(model.out(model.lstm(model.embed(ids))).data, expected, rtol=1e-12)


def test_loading_casts_to_the_layer_dtype_and_to_torch_returns_copies():
    layer = L.LSTM(D, H, seed=0)
    load_torch(layer, {k: v.astype(F64) for k, v in to_torch(L.LSTM(D, H, seed=1, dtype=F64)).items()})
    assert all(p.dtype == np.float32 for p in layer.params())
    sd = to_torch(layer)
    before = layer.cell0.b.data.copy()
    sd["bias_ih_l0"][...] = 7.0
    np.testing.assert_array_equal(layer.cell0.b.data, before)
    load_torch(layer, {k: v.tolist() for k, v in sd.items()})  # anything numpy.asarray takes
    np.testing.assert_array_equal(layer.cell0.b.data, np.full(4 * H, 7.0, np.float32))


# --- errors ---------------------------------------------------------------------------------------------


def test_errors_list_every_problem_and_change_nothing():
    layer = L.LSTM(D, H, num_layers=2, seed=0)
    before = {k: v.copy() for k, v in layer.state_dict().items()}
    sd = to_torch(layer, prefix="rnn.")
    del sd["rnn.bias_hh_l1"]
    sd["rnn.weight_hr_l0"] = np.zeros((4 * H, H))  # a projection PyTorch's proj_size adds
    sd["rnn.weight_hh_l0"] = np.zeros((4 * H, H + 1))
    sd["decoder.weight"] = np.zeros(3)  # another prefix: not read
    with pytest.raises(ValueError) as error:
        load_torch(layer, sd, prefix="rnn.")
    assert str(error.value) == (
        "load_torch: LSTM (prefix 'rnn.'): missing rnn.bias_hh_l1; unexpected rnn.weight_hr_l0; "
        "shape mismatch rnn.weight_hh_l0 (expected (16, 4), got (16, 5))")
    _assert_same(layer.state_dict(), before)
    with pytest.raises(ValueError, match=r"load_torch: Linear \(prefix ''\): missing bias, weight"):
        load_torch(L.Linear(2, 3), {})
    with pytest.raises(ValueError, match=r"load_torch: Embedding \(prefix ''\): unexpected bias"):
        load_torch(L.Embedding(2, 3), {"weight": np.zeros((2, 3)), "bias": np.zeros(2)})
    with pytest.raises(ValueError, match=r"load_torch: RNNCell \(prefix ''\): not numbers bias_hh \(<U1\)"):
        load_torch(L.RNNCell(2, 3), {**to_torch(L.RNNCell(2, 3)), "bias_hh": np.array(list("abc"))})


def test_unsupported_layers_and_lazy_linears_are_rejected():
    with pytest.raises(TypeError, match="torch_weights: no PyTorch layout for Dropout; supported: Linear, TiedLinear"):
        to_torch(L.Dropout(0.5))
    with pytest.raises(TypeError, match="no PyTorch layout for MaxPool2d"):
        load_torch(L.MaxPool2d(2), {})
    with pytest.raises(ValueError, match="torch_weights: this Linear has no weight yet"):
        to_torch(L.Linear(None, 3))

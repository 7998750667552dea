"""Initializers: PyTorch's formulas and gains, argument checks, the presets of every layer, and the
"classic" preset pinned to the values the layers drew before initializer objects existed."""
import hashlib
import math

import numpy as np
import pytest

from tinygrad_rnn import initializers as I
from tinygrad_rnn import layers as L

F64 = np.float64


def _draw(init, shape, fan_in=4, fan_out=6, seed=0, dtype=F64):
    return init(shape, fan_in=fan_in, fan_out=fan_out, rng=np.random.default_rng(seed), dtype=dtype)


class _Recorder:
    """An initializer that records what a layer asks of it (any callable with the signature will do)."""

    def __init__(self):
        self.calls = []

    def __call__(self, shape, *, fan_in, fan_out, rng, dtype):
        self.calls.append((tuple(shape), fan_in, fan_out))
        return np.zeros(shape, dtype)


# --- "classic": every bit as before ------------------------------------------------------------------


def _classic_model(dtype):
    rng = np.random.default_rng(1234)
    model = L.Layer()
    model.embed = L.Embedding(7, 3, seed=rng, dtype=dtype)
    model.lstm = L.LSTM(3, 4, num_layers=2, seed=rng, dtype=dtype, forget_bias=1.0)
    model.gru = L.GRU(4, 2, seed=rng, dtype=dtype)
    model.rnn = L.RNN(2, 3, seed=rng, dtype=dtype)
    model.fc = L.Linear(3, 5, seed=rng, dtype=dtype)
    model.conv = L.Conv2d(2, 3, (3, 2), seed=rng, dtype=dtype)
    model.lazy = L.Linear(None, 2, seed=rng, dtype=dtype)
    model.lazy(np.zeros((1, 3), dtype))
    return model, rng


# First, middle and last element of each weight, and a digest of all parameter bytes, as the
# layers drew them before the initializer objects (same seed, same draw order).
_PINNED = {
    "embed/W": (-0.016038368053963015, -0.005124437092848578, 0.0026834554039213577),
    "lstm/cell0/Wx": (0.442928519837654, 0.9180516348209963, 1.0030853593691165),
    "lstm/cell0/Wh": (-0.06832183130716218, 0.08080709765341638, -0.8364026934712396),
    "lstm/cell1/Wx": (0.0414159021945394, -0.5513361575808507, 0.36937058027580616),
    "lstm/cell1/Wh": (0.1873585007367587, -0.9949198471721986, -0.23757983718964143),
    "gru/cell0/Wx": (0.01212226073026494, -0.5257479633376972, -0.44325304412857136),
    "gru/cell0/Wh": (-0.4494240033982665, -0.8578695854324481, -0.41779160123979986),
    "rnn/cell0/Wx": (-1.2011235283261301, -0.8376366192026928, 0.9668357781658761),
    "rnn/cell0/Wh": (0.9815659298718447, 0.18740536196654597, -0.8824391438320606),
    "fc/W": (-0.538344619453311, -0.26359486821548755, 0.8692246996816619),
    "conv/W": (0.272715303189535, -0.09530343261628581, -0.388956533839625),
    "lazy/W": (-0.8759482637294778, -0.10778201791581678, 0.7957176241244885),
}
_DIGESTS = {np.float64: "119c2c2a29f5b9ff1a1eb0ca08202ae3232e66fe121871c445b7477ed865e4be",
            np.float32: "f8e9f34e65c1a80fd381119d8420d68890db595deabde8f0699dcfb851278a2c"}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_classic_preset_keeps_every_bit_of_the_earlier_layers(dtype):
    model, _ = _classic_model(dtype)
    params = dict(model.namedparams())
    for name, values in _PINNED.items():
        flat = params[name].data.ravel()
        assert (flat[0], flat[len(flat) // 2], flat[-1]) == tuple(dtype(v) for v in values), name
    digest = hashlib.sha256()
    for p in params.values():
        digest.update(np.ascontiguousarray(p.data).tobytes())
    assert digest.hexdigest() == _DIGESTS[dtype]
    for name, p in params.items():
        if name.endswith("/b") or name.endswith("/bh"):
            expected = np.zeros(p.shape)
            if name.startswith("lstm/"):
                expected[4:8] = 1.0  # forget_bias
            np.testing.assert_array_equal(p.data, expected, err_msg=name)


def test_classic_preset_draws_the_classic_formulas_in_order():
    # the same arrays recomputed from NumPy alone: weights N(0, 1/fan_in) as standard_normal * (1/sqrt(fan_in)),
    # embeddings * 0.01, convolutions * sqrt(2/fan_in), one Generator for all, biases drawing nothing
    model, rng_after = _classic_model(F64)
    rng = np.random.default_rng(1234)
    expected = {"embed/W": rng.standard_normal((7, 3)) * 0.01}
    for name, (d, h, g) in {"lstm/cell0": (3, 4, 4), "lstm/cell1": (4, 4, 4), "gru/cell0": (4, 2, 3),
                            "rnn/cell0": (2, 3, 1)}.items():
        expected[f"{name}/Wx"] = rng.standard_normal((d, g * h)) * (1.0 / np.sqrt(d))
        expected[f"{name}/Wh"] = rng.standard_normal((h, g * h)) * (1.0 / np.sqrt(h))
    expected["fc/W"] = rng.standard_normal((3, 5)) * (1.0 / np.sqrt(3))
    expected["conv/W"] = rng.standard_normal((3, 2, 3, 2)) * np.sqrt(2.0 / 12)
    expected["lazy/W"] = rng.standard_normal((3, 2)) * (1.0 / np.sqrt(3))
    params = dict(model.namedparams())
    for name, array in expected.items():
        np.testing.assert_array_equal(params[name].data, array, err_msg=name)
    assert rng_after.standard_normal() == rng.standard_normal()  # nothing else was drawn


def test_float32_and_float64_draws_agree_up_to_rounding():
    for init in [I.Normal(0.3, 1.0), I.Uniform(2.0), I.XavierNormal(), I.KaimingUniform(), I.Orthogonal(),
                 I.FanInNormal(), I.FanInUniform()]:
        single, double = _draw(init, (4, 6), dtype=np.float32), _draw(init, (4, 6))
        assert single.dtype == np.float32 and double.dtype == F64
        np.testing.assert_array_equal(single, double.astype(np.float32), err_msg=repr(init))


# --- the laws and PyTorch's formulas -------------------------------------------------------------------


def test_constant_and_zeros_draw_nothing():
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(I.Constant(0.5)((2, 3), fan_in=1, fan_out=1, rng=rng, dtype=F64), np.full((2, 3), .5))
    assert not I.Zeros()((3,), fan_in=1, fan_out=1, rng=rng).any()
    assert I.Zeros()((3,), fan_in=1, fan_out=1, rng=rng).dtype == np.float32  # the layers' default dtype
    assert rng.standard_normal() == np.random.default_rng(0).standard_normal()


@pytest.mark.parametrize("init, law", [
    (I.Uniform(0.3), ("uniform", 0.3)),
    (I.Normal(0.2, mean=1.5), ("normal", 0.2, 1.5)),
    (I.FanInNormal(), ("normal", 1 / math.sqrt(4))),
    (I.FanInUniform(), ("uniform", 1 / math.sqrt(4))),
    (I.XavierUniform(gain=2.0), ("uniform", math.sqrt(3.0) * (2.0 * math.sqrt(2.0 / 10)))),
    (I.XavierNormal(gain=0.5), ("normal", 0.5 * math.sqrt(2.0 / 10))),
    (I.KaimingUniform(), ("uniform", math.sqrt(3.0) * (math.sqrt(2.0) / math.sqrt(4)))),
    (I.KaimingUniform(a=math.sqrt(5)), ("uniform", math.sqrt(3.0) * (math.sqrt(2.0 / 6) / math.sqrt(4)))),
    (I.KaimingNormal(nonlinearity="relu"), ("normal", math.sqrt(2.0) / math.sqrt(4))),
    (I.KaimingNormal(mode="fan_out", nonlinearity="tanh"), ("normal", 5.0 / 3 / math.sqrt(6))),
    (I.KaimingNormal(nonlinearity="sigmoid", a=3.0), ("normal", 1.0 / math.sqrt(4))),
    (I.KaimingUniform(mode="fan_out", nonlinearity="linear"), ("uniform", math.sqrt(3.0) / math.sqrt(6))),
    (I.KaimingNormal(a=0.2), ("normal", math.sqrt(2.0 / 1.04) / math.sqrt(4))),
])
def test_initializers_draw_pytorchs_formulas_from_the_generator(init, law):
    # fan_in 4, fan_out 6: the expected draws are recomputed from the same Generator
    rng = np.random.default_rng(0)
    if law[0] == "uniform":
        expected = rng.uniform(-law[1], law[1], (4, 6))
    else:
        expected = rng.standard_normal((4, 6)) * law[1] + (law[2] if len(law) > 2 else 0.0)
    np.testing.assert_allclose(_draw(init, (4, 6)), expected, rtol=1e-15, atol=1e-15)


@pytest.mark.parametrize("shape", [(3, 5), (5, 3), (4, 2, 3), (4, 4)])
def test_orthogonal_makes_the_shorter_side_orthonormal(shape):
    q = _draw(I.Orthogonal(gain=2.0), shape).reshape(shape[0], -1)
    short = min(q.shape)
    gram = q @ q.T if q.shape[0] == short else q.T @ q
    np.testing.assert_allclose(gram, 4.0 * np.eye(short), atol=1e-12)


def test_orthogonal_moves_the_signs_of_r_into_q():
    g = np.random.default_rng(0).standard_normal((5, 3))
    q, r = np.linalg.qr(g)
    np.testing.assert_allclose(_draw(I.Orthogonal(), (5, 3)), q * np.sign(np.diag(r)), atol=1e-15)


@pytest.mark.parametrize("make, message", [
    (lambda: I.Uniform(-0.1), r"Uniform: scale must be a finite number >= 0, got -0.1"),
    (lambda: I.Uniform(float("inf")), "Uniform: scale"),
    (lambda: I.Normal(std=float("nan")), "Normal: std"),
    (lambda: I.Normal(mean=float("inf")), "Normal: mean"),
    (lambda: I.XavierUniform(gain=-1), "XavierUniform: gain"),
    (lambda: I.XavierNormal(gain=float("nan")), "XavierNormal: gain"),
    (lambda: I.Orthogonal(gain=-2.0), "Orthogonal: gain"),
    (lambda: I.Constant(float("nan")), "Constant: value"),
    (lambda: I.KaimingUniform(mode="fan_avg"), "KaimingUniform: mode must be 'fan_in' or 'fan_out'"),
    (lambda: I.KaimingNormal(nonlinearity="selu"), "KaimingNormal: unknown nonlinearity 'selu'; valid: 'linear'"),
    (lambda: I.KaimingNormal(a=float("inf")), "KaimingNormal: a"),
    (lambda: _draw(I.FanInNormal(), (2, 3), fan_in=0), "FanInNormal: fan_in must be a positive integer, got 0"),
    (lambda: _draw(I.XavierUniform(), (2, 3), fan_out=None), "XavierUniform: fan_out"),
    (lambda: _draw(I.KaimingNormal(mode="fan_out"), (2, 3), fan_out=0), "KaimingNormal: fan_out"),
    (lambda: _draw(I.Orthogonal(), (4,)), r"Orthogonal: needs a shape of at least 2 dimensions, got \(4,\)"),
])
def test_initializers_reject_nonsense_and_name_themselves(make, message):
    with pytest.raises((TypeError, ValueError), match=message):
        make()


# --- presets and overrides in the layers -------------------------------------------------------------


def test_pytorch_preset_draws_pytorchs_defaults_in_parameter_order():
    seed = 3

    def uniform(rng, bound, shape):
        return rng.uniform(-bound, bound, shape)

    rng = np.random.default_rng(seed)
    linear = L.Linear(5, 2, seed=seed, dtype=F64, init="pytorch")
    np.testing.assert_array_equal(linear.W.data, uniform(rng, 1 / math.sqrt(5), (5, 2)))
    np.testing.assert_array_equal(linear.b.data, uniform(rng, 1 / math.sqrt(5), (2,)))

    rng = np.random.default_rng(seed)
    conv = L.Conv2d(2, 3, (3, 2), seed=seed, dtype=F64, init="pytorch")
    np.testing.assert_array_equal(conv.W.data, uniform(rng, 1 / math.sqrt(12), (3, 2, 3, 2)))
    np.testing.assert_array_equal(conv.b.data, uniform(rng, 1 / math.sqrt(12), (3,)))

    embed = L.Embedding(6, 4, seed=seed, dtype=F64, init="pytorch")
    np.testing.assert_array_equal(embed.W.data, np.random.default_rng(seed).standard_normal((6, 4)))

    tied = L.TiedLinear(embed, seed=seed, init="pytorch")
    np.testing.assert_array_equal(tied.b.data, uniform(np.random.default_rng(seed), 1 / math.sqrt(4), (6,)))

    for cls, blocks, extra in [(L.RNN, 1, {}), (L.LSTM, 4, {"two_biases": True}), (L.GRU, 3, {})]:
        rng = np.random.default_rng(seed)
        layer = cls(3, 2, num_layers=2, seed=seed, dtype=F64, init="pytorch", **extra)
        for k, cell in enumerate(layer.cells):  # every weight and bias U(+-1/sqrt(H)), whatever its fan_in
            bound = 1 / math.sqrt(2)
            np.testing.assert_array_equal(cell.Wx.data, uniform(rng, bound, (3 if k == 0 else 2, blocks * 2)))
            np.testing.assert_array_equal(cell.Wh.data, uniform(rng, bound, (2, blocks * 2)))
            np.testing.assert_array_equal(cell.b.data, uniform(rng, bound, (blocks * 2,)))
            if hasattr(cell, "bh"):
                np.testing.assert_array_equal(cell.bh.data, uniform(rng, bound, cell.bh.shape))


def test_pytorch_preset_does_not_imply_two_biases_and_forget_bias_sets_the_effective_bias():
    assert not hasattr(L.LSTM(3, 2, init="pytorch").cell0, "bh")
    assert L.GRU(3, 2, init="pytorch").cell0.bh.shape == (2,)
    cell = L.LSTMCell(3, 2, forget_bias=1.0, init="pytorch", two_biases=True, seed=0)
    np.testing.assert_array_equal(cell.b.data[2:4] + cell.bh.data[2:4], [1.0, 1.0])
    assert (cell.b.data[:2] != 0).all() and (cell.bh.data[4:] != 0).all()  # the other blocks keep their draws
    assert (L.LSTMCell(3, 2, init="pytorch", seed=0).b.data != 0).all()  # no forget_bias: nothing overwritten


def test_an_override_beats_the_preset():
    lstm = L.LSTM(3, 2, num_layers=2, init="pytorch", b_init=I.Constant(0.5), Wh_init=I.Orthogonal(), seed=0,
                  dtype=F64)
    for cell in lstm.cells:
        np.testing.assert_array_equal(cell.b.data, np.full(8, 0.5))
        np.testing.assert_allclose(cell.Wh.data @ cell.Wh.data.T, np.eye(2), atol=1e-12)
        assert np.abs(cell.Wx.data).max() <= 1 / math.sqrt(2)
    linear = L.Linear(3, 2, W_init=I.Zeros(), b_init=I.Constant(-1.0))
    assert not linear.W.data.any() and (linear.b.data == -1).all()
    assert (L.Embedding(4, 3, W_init=I.Constant(2.0)).W.data == 2).all()
    assert (L.Conv2d(1, 2, 3, init="pytorch", b_init=I.Zeros()).b.data == 0).all()
    assert (L.TiedLinear(L.Embedding(4, 3), b_init=I.Constant(1.0)).b.data == 1).all()


def test_layers_give_initializers_pytorchs_fans():
    cases = [
        (lambda r: L.Linear(3, 5, W_init=r, b_init=r), [((3, 5), 3, 5), ((5,), 3, 5)]),
        (lambda r: L.Embedding(7, 4, W_init=r), [((7, 4), 4, 7)]),
        (lambda r: L.TiedLinear(L.Embedding(7, 4), b_init=r), [((7,), 4, 7)]),
        (lambda r: L.Conv2d(2, 6, (3, 5), W_init=r, b_init=r), [((6, 2, 3, 5), 30, 90), ((6,), 30, 90)]),
        (lambda r: L.LSTM(3, 2, Wx_init=r, Wh_init=r, b_init=r, two_biases=True),
         [((3, 8), 3, 8), ((2, 8), 2, 8), ((8,), 3, 8), ((8,), 2, 8)]),
        (lambda r: L.GRUCell(3, 2, Wx_init=r, Wh_init=r, b_init=r), [((3, 6), 3, 6), ((2, 6), 2, 6), ((6,), 3, 6),
                                                                    ((2,), 2, 6)]),
        (lambda r: L.RNN(3, 2, num_layers=2, Wx_init=r), [((3, 2), 3, 2), ((2, 2), 2, 2)]),
    ]
    for make, expected in cases:
        recorder = _Recorder()
        make(recorder)
        assert recorder.calls == expected


@pytest.mark.parametrize("make, owner", [
    (lambda **kw: L.Linear(2, 3, **kw), "Linear"),
    (lambda **kw: L.Embedding(2, 3, **kw), "Embedding"),
    (lambda **kw: L.TiedLinear(L.Embedding(2, 3), **kw), "TiedLinear"),
    (lambda **kw: L.Conv2d(1, 2, 3, **kw), "Conv2d"),
    (lambda **kw: L.GRUCell(2, 3, **kw), "GRUCell"),
    (lambda **kw: L.LSTM(2, 3, **kw), "LSTM"),
])
def test_unknown_presets_and_uncallable_overrides_are_rejected(make, owner):
    with pytest.raises(ValueError, match=f"{owner}: unknown init preset 'xavier'; valid: 'classic', 'pytorch'"):
        make(init="xavier")
    role = "W" if owner == "Embedding" else "b"
    with pytest.raises(TypeError, match=f"{owner}: {role}_init must be an initializer"):
        make(**{f"{role}_init": 0.1})

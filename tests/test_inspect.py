"""tinygrad_rnn.inspect: the gradient norm through time and the gates of every step, fused or composed."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_rnn as tg
from tinygrad_rnn import functions as F
from tinygrad_rnn import initializers, inspect
from tinygrad_rnn import layers as L
from tinygrad_rnn.graph import _walk
from tinygrad_rnn.models import BetterLSTMLM, Seq2seq

sizes = st.integers(1, 4)
seeds = st.integers(0, 2**32 - 1)
CLASSES = [L.RNN, L.LSTM, L.GRU]


def _layer(cls, d, h, num_layers, seed, fused, **kwargs):
    if cls is not L.RNN:
        kwargs["fused"] = fused
    return cls(d, h, num_layers=num_layers, seed=seed, dtype=np.float64, **kwargs)


def _problem(cls, n, t, d, h, num_layers, seed):
    """Inputs, an initial state and random weights of the outputs (hs and every final state part)."""
    rng = np.random.default_rng(seed)
    parts = 2 if cls is L.LSTM else 1
    xs = rng.standard_normal((n, t, d))
    state = [rng.standard_normal((n, h)) for _ in range(parts * num_layers)]
    weights = [rng.standard_normal((n, t, h))] + [rng.standard_normal((n, h)) for _ in state]
    return xs, state, weights


def _loss(outputs, weights):
    return F.sum(F.stack([F.sum(y * w) for y, w in zip(outputs, weights)]))


def _by_hand(layer, xs, state, weights):
    """||dL/dh_t|| from the cells' steps in a Python loop, every h_t kept, with retain_grad."""
    parts = len(state) // layer.num_layers
    inputs = [tg.Variable(xs[:, k]) for k in range(xs.shape[1])]
    kept, final = [], []
    for k, cell in enumerate(layer.cells):
        cell_state = tuple(tg.Variable(s) for s in state[k * parts:(k + 1) * parts])
        hs = []
        for x in inputs:
            cell_state = cell.step(x, cell_state)
            hs.append(cell_state[0])
        kept.append(hs)
        final += cell_state
        inputs = hs
    _loss([F.stack(inputs, axis=1), *final], weights).backward(retain_grad=True)
    return np.array([[np.linalg.norm(h.grad.data) for h in hs] for hs in kept])


@settings(max_examples=10)
@given(cls=st.sampled_from(CLASSES), n=st.integers(1, 3), t=st.integers(1, 5), d=sizes, h=sizes,
       num_layers=st.integers(1, 2), seed=seeds)
def test_gradient_flow_of_fused_and_composed_layers_equals_retain_grad_on_the_steps(cls, n, t, d, h, num_layers,
                                                                                     seed):
    xs, state, weights = _problem(cls, n, t, d, h, num_layers, seed)
    for fused in (True, False):
        layer = _layer(cls, d, h, num_layers, seed, fused, **({"forget_bias": 0.7} if cls is L.LSTM else {}))

        def loss(xs):
            hs, final = layer.sequence(xs, state)
            return _loss([hs, *final], weights)

        flows = inspect.gradient_flow(layer, xs, loss=loss)
        assert list(flows) == ["."]
        assert flows["."].shape == (num_layers, t) and flows["."].dtype == np.float64
        np.testing.assert_allclose(flows["."], _by_hand(layer, xs, state, weights), rtol=1e-9, atol=1e-12)


@settings(max_examples=10)
@given(cls=st.sampled_from([L.LSTM, L.GRU]), n=st.integers(1, 3), t=st.integers(1, 5), d=sizes, h=sizes,
       num_layers=st.integers(1, 2), seed=seeds)
def test_gates_of_the_fused_layer_equal_the_composed_graphs_named_variables(cls, n, t, d, h, num_layers, seed):
    xs, state, _ = _problem(cls, n, t, d, h, num_layers, seed)
    results = []
    for fused in (True, False):
        layer = _layer(cls, d, h, num_layers, seed, fused)
        results.append(inspect.gates(layer, xs, run=lambda xs: layer.sequence(xs, state)[0])["."])
        hs = layer.sequence(xs, state)[0].data
    names = list("ifgoch") if cls is L.LSTM else list("rznh")
    for fused, composed in zip(*results):
        assert list(fused) == list(composed) == names
        for name in names:
            assert fused[name].shape == (t, n, h)
            np.testing.assert_allclose(fused[name], composed[name], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(results[0][-1]["h"], hs.transpose(1, 0, 2), rtol=1e-9, atol=1e-12)


def test_lstm_gates_satisfy_the_cell_equations():
    layer = L.LSTM(3, 4, seed=0, dtype=np.float64)
    xs = np.random.default_rng(1).standard_normal((2, 6, 3))
    g = inspect.gates(layer, xs)["."][0]
    c_prev = np.concatenate([np.zeros((1, 2, 4)), g["c"][:-1]])
    np.testing.assert_allclose(g["c"], g["f"] * c_prev + g["i"] * g["g"], rtol=1e-12)
    np.testing.assert_allclose(g["h"], g["o"] * np.tanh(g["c"]), rtol=1e-12)
    assert ((g["f"] > 0) & (g["f"] < 1)).all()


@pytest.mark.parametrize("fused", [True, False])
def test_gradient_flow_and_gates_name_every_recurrent_layer_of_a_model_by_path(fused):
    model = Seq2seq(7, 3, 4, seed=0, dtype=np.float64, fused=fused)
    rng = np.random.default_rng(0)
    xs, ts = rng.integers(0, 7, (2, 5)), rng.integers(0, 7, (2, 4))
    flows = inspect.gradient_flow(model, xs, ts)
    assert {path: f.shape for path, f in flows.items()} == {"encoder/lstm": (1, 5), "decoder/lstm": (1, 3)}
    assert all((f > 0).all() for f in flows.values())
    gates = inspect.gates(model, xs, ts)
    assert gates["encoder/lstm"][0]["f"].shape == (5, 2, 4)


def test_gradient_flow_of_a_model_with_stacked_cells_has_one_row_per_layer():
    model = L.GRU(3, 4, num_layers=3, seed=0)
    flows = inspect.gradient_flow(model, np.ones((2, 6, 3), np.float32), loss=lambda xs: F.sum(model(xs)[:, -1]))
    assert flows["."].shape == (3, 6)


@settings(max_examples=10)
@given(cls=st.sampled_from(CLASSES), n=st.integers(1, 3), t=st.integers(1, 5), d=sizes, h=sizes,
       num_layers=st.integers(1, 2), fused=st.booleans(), seed=seeds)
def test_a_layer_run_step_by_step_in_a_python_loop_gives_the_sequences_flow_and_gates(cls, n, t, d, h, num_layers,
                                                                                      fused, seed):
    xs, state, weights = _problem(cls, n, t, d, h, num_layers, seed)
    layer = _layer(cls, d, h, num_layers, seed, fused)

    def stepped(xs):
        hs, step_state = [], tuple(state)
        for k in range(xs.shape[1]):
            h_t, step_state = layer.step(xs[:, k], step_state)
            hs.append(h_t)
        return _loss([F.stack(hs, axis=1), *step_state], weights)

    def sequence(xs):
        hs, final = layer.sequence(xs, state)
        return _loss([hs, *final], weights)

    np.testing.assert_allclose(inspect.gradient_flow(layer, xs, loss=stepped)["."],
                               _by_hand(layer, xs, state, weights), rtol=1e-9, atol=1e-12)
    by_steps, by_sequence = inspect.gates(layer, xs, run=stepped)["."], inspect.gates(layer, xs, run=sequence)["."]
    for k in range(num_layers):
        assert list(by_steps[k]) == list(by_sequence[k])
        for name in by_steps[k]:
            np.testing.assert_allclose(by_steps[k][name], by_sequence[k][name], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("fused", [True, False])
def test_a_decoder_run_step_by_step_is_seen_with_its_encoder(fused):
    class Stepped(L.Layer):
        def __init__(self):
            super().__init__()
            self.encoder = L.LSTM(3, 4, seed=0, dtype=np.float64, fused=fused)
            self.decoder = L.LSTM(3, 4, seed=1, dtype=np.float64, fused=fused)

        def loss(self, xs):
            _, state = self.encoder.sequence(xs)
            total = 0
            for k in range(xs.shape[1]):
                h, state = self.decoder.step(xs[:, k], state)
                total = total + F.sum(h * h)
            return total

    flows = inspect.gradient_flow(Stepped(), np.random.default_rng(0).standard_normal((2, 6, 3)))
    assert {path: f.shape for path, f in flows.items()} == {"encoder": (1, 6), "decoder": (1, 6)}
    assert (flows["decoder"] > 0).all()


def test_a_cell_run_over_a_sequence_is_seen():
    class Model(L.Layer):
        def __init__(self):
            super().__init__()
            self.cell = L.LSTMCell(3, 4, seed=0, dtype=np.float64, fused=False)

        def loss(self, xs):
            return F.sum(self.cell.sequence(xs)[0])

    flows = inspect.gradient_flow(Model(), np.ones((2, 5, 3)))
    assert flows["cell"].shape == (1, 5)


def test_the_model_is_left_as_it_was_gradients_carried_state_and_dropout_generators():
    model = BetterLSTMLM(7, 4, 4, dropout=0.5, seed=0)
    rng = np.random.default_rng(0)
    xs, ts = rng.integers(0, 7, (2, 5)), rng.integers(0, 7, (2, 5))
    model.loss(xs, ts).backward()  # gradients and a carried state (with its graph) to keep
    model.lstm1.state[0].creator  # noqa: B018  (the carried state still links to its graph)
    grads = {path: p.grad.data.copy() for path, p in model.namedparams()}
    carried = model.carried_state()
    generators = {path: g.state_dict() for path, g in model.generators().items()}
    flows = inspect.gradient_flow(model, xs, ts)
    inspect.gates(model, xs, ts)
    assert set(flows) == {"lstm1", "lstm2"}
    for path, p in model.namedparams():
        np.testing.assert_array_equal(p.grad.data, grads[path])
    assert model.carried_state().keys() == carried.keys()
    for key, a in model.carried_state().items():
        np.testing.assert_array_equal(a, carried[key])
    assert {path: g.state_dict() for path, g in model.generators().items()} == generators
    assert model.lstm1.state[0].creator is not None


@pytest.mark.parametrize("fused", [True, False])
def test_nothing_is_recorded_or_kept_when_not_asked_for(fused):
    layer = L.LSTM(3, 4, seed=0, fused=fused)
    xs = np.ones((2, 5, 3), np.float32)

    def ops():
        nodes, _ = _walk([F.sum(layer(xs))], grads=False)
        return [type(node).__name__ for node in nodes if isinstance(node, tg.Function)]

    before, attributes = ops(), dict(vars(layer))
    inspect.gradient_flow(layer, xs, loss=lambda xs: F.sum(layer(xs)))
    inspect.gates(layer, xs)
    assert ops() == before
    assert vars(layer) == attributes


def test_a_fused_ops_activations_are_gone_after_backward():
    xw, h, c, Wh = (np.ones(shape) for shape in [(2, 1, 8), (1, 2), (1, 2), (2, 8)])
    hs, _, _ = F.lstm_sequence(xw, h, c, Wh)
    op = hs.creator
    assert set(op.activations()) == set("ifgoch")
    F.sum(hs).backward()
    with pytest.raises(RuntimeError, match="lstm_sequence: activations asked after backward freed them"):
        op.activations()


def test_errors_name_the_function_and_the_mistake():
    xs = np.ones((2, 3, 3), np.float32)
    lstm = L.LSTM(3, 4, seed=0)
    with pytest.raises(TypeError, match="gradient_flow: model must be a Layer, got function"):
        inspect.gradient_flow(lambda xs: xs, xs)
    with pytest.raises(ValueError, match="gradient_flow: Linear holds no recurrent layer"):
        inspect.gradient_flow(L.Linear(3, 2), xs, loss=lambda xs: F.sum(xs))
    with pytest.raises(TypeError, match="gradient_flow: LSTM has no loss method"):
        inspect.gradient_flow(lstm, xs)
    with pytest.raises(ValueError, match=r"gradient_flow: the loss must be a scalar, got shape \(2, 3, 4\)"):
        inspect.gradient_flow(lstm, xs, loss=lstm)
    with pytest.raises(TypeError, match="gates: run must return a Variable, got tuple"):
        inspect.gates(lstm, xs, run=lstm.sequence)
    with tg.no_grad(), pytest.raises(ValueError, match="gates: the result has no graph"):
        inspect.gates(lstm, xs)


@pytest.mark.parametrize("fused", [True, False])
def test_a_layer_the_result_does_not_depend_on_or_one_that_ran_twice_is_named(fused):
    class Two(L.Layer):
        def __init__(self):
            super().__init__()
            self.first = L.LSTM(3, 4, seed=0, fused=fused)
            self.second = L.LSTM(3, 4, seed=1, fused=fused)

    model, xs = Two(), np.ones((2, 3, 3), np.float32)
    with pytest.raises(ValueError, match="gradient_flow: the result does not depend on the recurrent layer 'second'"):
        inspect.gradient_flow(model, xs, loss=lambda xs: F.sum(model.first(xs)))
    with pytest.raises(ValueError, match="gates: the recurrent layer 'first' ran 2 times in the graph"):
        inspect.gates(model, xs, run=lambda xs: model.first(xs) + model.first(xs) + model.second(xs))
    stepped = lambda xs: F.sum(model.first(xs)) + F.sum(model.second.step(xs[:, 0])[0])  # noqa: E731
    assert inspect.gradient_flow(model, xs, loss=stepped)["second"].shape == (1, 1)


def test_two_cells_stepped_in_one_name_scope_are_refused_by_name():
    class Two(L.Layer):
        def __init__(self):
            super().__init__()
            self.a, self.b = L.LSTMCell(3, 4, seed=0), L.LSTMCell(3, 4, seed=1)

        def loss(self, xs):  # cell.step records in the caller's scope: the two cannot be told apart
            return F.sum(self.a.step(xs[:, 0])[0] + self.b.step(xs[:, 1])[0])

    with pytest.raises(ValueError, match="gradient_flow: the recurrent layers 'a' and 'b' ran step by step in one "
                                         "name scope \\(the top level\\)"):
        inspect.gradient_flow(Two(), np.ones((2, 3, 3), np.float32))


def test_plots_are_written_and_bad_input_is_named(tmp_path):
    pytest.importorskip("matplotlib")
    layer = L.LSTM(3, 4, num_layers=2, seed=0)
    xs = np.ones((2, 6, 3), np.float32)
    flows = inspect.gradient_flow(layer, xs, loss=lambda xs: F.sum(layer(xs)[:, -1]))
    inspect.plot_gradient_flow({"LSTM": flows["."], "bottom only": flows["."][0]}, tmp_path / "flow.png")
    inspect.plot_gates(inspect.gates(layer, xs)["."][1], tmp_path / "gates.svg", example=1, title="LSTM")
    assert (tmp_path / "flow.png").stat().st_size > 0 and (tmp_path / "gates.svg").stat().st_size > 0
    with pytest.raises(ValueError, match="plot_gradient_flow: flows is empty"):
        inspect.plot_gradient_flow({}, tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"plot_gradient_flow: 'x' has shape \(1, 2, 3\)"):
        inspect.plot_gradient_flow({"x": np.ones((1, 2, 3))}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="plot_gates: expected arrays of one shape"):
        inspect.plot_gates({"i": np.ones((2, 3, 4)), "f": np.ones((2, 3))}, tmp_path / "x.png")
    with pytest.raises(IndexError, match="plot_gates: example 2 is outside a batch of N=2"):
        inspect.plot_gates(inspect.gates(layer, xs)["."][0], tmp_path / "x.png", example=2)


@pytest.mark.parametrize("gain", [0.5, 1.5])
def test_a_linear_rnn_scales_the_gradient_by_the_gain_of_an_orthogonal_wh_per_step(gain):
    # zero inputs and state keep h at 0 and tanh's slope at 1: dL/dh_t = (Wh^T)^(T-1-t) dL/dh_{T-1}
    layer = L.RNN(5, 6, seed=0, dtype=np.float64, Wh_init=initializers.Orthogonal(gain))
    w = np.random.default_rng(0).standard_normal((3, 6))
    flow = inspect.gradient_flow(layer, np.zeros((3, 8, 5)), loss=lambda xs: F.sum(layer(xs)[:, -1] * w))["."][0]
    np.testing.assert_allclose(flow, np.linalg.norm(w) * gain ** np.arange(7, -1, -1.0), rtol=1e-9)


@pytest.mark.gpu
@pytest.mark.parametrize("cls", [L.LSTM, L.GRU])
def test_gradient_flow_and_gates_on_the_gpu_equal_the_cpus(cls, cupy):
    xs = np.random.default_rng(0).standard_normal((2, 5, 3))
    results = []
    for gpu in (False, True):
        layer = cls(3, 4, num_layers=2, seed=0, dtype=np.float64)
        inputs = cupy.asarray(xs) if gpu else xs
        if gpu:
            layer.to_gpu()
        flows = inspect.gradient_flow(layer, inputs, loss=lambda xs: F.sum(layer(xs)[:, -1]))["."]
        results.append([flows] + [a for layer_gates in inspect.gates(layer, inputs)["."] for a in layer_gates.values()])
    for cpu, gpu in zip(*results):
        assert isinstance(gpu, np.ndarray)
        np.testing.assert_allclose(gpu, cpu, rtol=1e-4, atol=1e-5)

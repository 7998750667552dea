"""Seq2seq models, decoding (greedy, beam search), training through the Trainer and the tool."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_layers import check_layer_grads

from tinygrad_rnn.models import AttentionSeq2seq, DecodingMixin, PeekySeq2seq, Seq2seq, beam_search, greedy_search
from tinygrad_rnn.models.decoding import sequence_log_prob
import tinygrad_rnn as tg
from tinygrad_rnn import Variable
from tinygrad_rnn.data import ShuffledBatcher, toy_seq
from tinygrad_rnn.optimizers import Adam
from tinygrad_rnn.training import ExactMatch, History, Trainer

ROOT = Path(__file__).resolve().parents[1]
V, D, H, TQ, TA, N = 7, 3, 4, 3, 4, 2
MODELS = {
    "Seq2seq": lambda **kw: Seq2seq(V, D, H, **kw),
    "PeekySeq2seq": lambda **kw: PeekySeq2seq(V, D, H, **kw),
    "AttentionSeq2seq": lambda **kw: AttentionSeq2seq(V, D, H, **kw),
    "AttentionSeq2seq-bidirectional": lambda **kw: AttentionSeq2seq(V, D, H, bidirectional=True, **kw),
}


def _batch(n=N, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, V, (n, TQ)).astype(np.int32), rng.integers(0, V, (n, TA)).astype(np.int32)


@pytest.mark.parametrize("name", MODELS)
def test_model_loss_backward_matches_numerical_end_to_end(name):
    model = MODELS[name](seed=0, dtype=np.float64)
    xs, ts = _batch()
    check_layer_grads(model, lambda: model.loss(xs, ts))


@pytest.mark.parametrize("name", MODELS)
def test_the_teacher_forced_loss_is_the_mean_of_the_step_by_step_negative_log_probabilities(name):
    model = MODELS[name](seed=3, dtype=np.float64)
    xs, ts = _batch(n=5, seed=1)
    ts[:, 0] = ts[0, 0]  # one start token, as decoding uses
    with tg.test_mode():
        loss = float(model.loss(xs, ts).data)
    per_token = -sequence_log_prob(model, xs, ts[0, 0], ts[:, 1:]).sum() / ts[:, 1:].size
    assert loss == pytest.approx(per_token, rel=1e-12)
    scores = model(xs, ts[:, :-1])  # __call__ gives the teacher-forced scores
    assert scores.shape == (5, TA - 1, V)


@pytest.mark.parametrize("name", MODELS)
def test_loss_is_the_mean_cross_entropy_of_ts_after_the_start_token(name):
    model = MODELS[name](seed=0)
    xs, ts = _batch()
    loss = model.loss(xs, ts)
    assert loss.shape == () and loss.dtype == np.float32
    # untrained, the scores are near uniform: the loss is near log V
    assert abs(float(loss.data) - np.log(V)) < 0.1
    assert all(p.dtype == np.float32 for p in model.params())


def test_default_initialization_is_the_classic_one():
    model = Seq2seq(13, 16, 128, seed=0)
    params = dict(model.namedparams())
    assert abs(params["encoder/embed/W"].data.std() - 0.01) < 0.002
    assert abs(params["decoder/lstm/cell0/Wh"].data.std() - 128 ** -0.5) < 0.005
    assert abs(params["encoder/lstm/cell0/Wx"].data.std() - 16 ** -0.5) < 0.02
    assert not params["decoder/fc/b"].data.any() and not params["encoder/lstm/cell0/b"].data.any()


@pytest.mark.parametrize("name", MODELS)
def test_generate_shapes_and_beam_width_1_equals_greedy(name):
    model = MODELS[name](seed=1)
    xs, _ = _batch(n=6)
    ids = model.generate(xs, 0, 5)
    assert ids.shape == (6, 5) and ids.dtype == np.int32 and isinstance(ids, np.ndarray)
    beam_ids, scores = beam_search(model, xs, 0, 5, beam_width=1)
    np.testing.assert_array_equal(beam_ids, ids)
    np.testing.assert_array_equal(greedy_search(model, xs, 0, 5), ids)
    np.testing.assert_allclose(scores, sequence_log_prob(model, xs, 0, ids), rtol=1e-12)
    wide, wide_scores = model.beam_search(xs, 0, 5, beam_width=4)
    assert wide.shape == (6, 5)
    np.testing.assert_allclose(wide_scores, sequence_log_prob(model, xs, 0, wide), rtol=1e-12)
    assert model.generate(xs, 0, 0).shape == (6, 0)


class TableModel(DecodingMixin):
    """A decoder whose next-token probabilities depend only on the previous token: ``P[prev]``."""

    def __init__(self, probs):
        self.log_p = np.log(np.asarray(probs, dtype=np.float64))

    def init_decoder(self, xs):
        return (np.zeros(len(xs), dtype=np.int32),)

    def decode_step(self, state, ids):
        return Variable(self.log_p[ids]), (ids,)


def test_beam_search_finds_a_sequence_greedy_misses():
    # start -> A (0.5) or B (0.4); after A every token is equally likely, after B comes C (0.97)
    model = TableModel([[1e-9, 0.5, 0.4, 0.1],
                        [0.25, 0.25, 0.25, 0.25],
                        [0.01, 0.01, 0.01, 0.97],
                        [0.25, 0.25, 0.25, 0.25]])
    xs = np.zeros((3, 1), dtype=np.int32)
    greedy = model.generate(xs, 0, 2)
    np.testing.assert_array_equal(greedy, [[1, 0]] * 3)
    ids, scores = model.beam_search(xs, 0, 2, beam_width=2)
    np.testing.assert_array_equal(ids, [[2, 3]] * 3)
    np.testing.assert_allclose(scores, np.log(0.4 * 0.97))
    assert (scores > sequence_log_prob(model, xs, 0, greedy)).all()
    np.testing.assert_allclose(sequence_log_prob(model, xs, 0, greedy), np.log(0.5 * 0.25))


def test_beam_search_keeps_finished_sequences_at_their_score():
    end = 3  # A then end is the best sequence; after end, a free run of end tokens
    model = TableModel([[1e-9, 0.5, 0.45, 0.05],
                        [0.05, 0.025, 0.025, 0.9],
                        [0.1, 0.0001, 0.3, 0.5999],
                        [0.25, 0.25, 0.25, 0.25]])
    xs = np.zeros((1, 1), dtype=np.int32)
    ids, scores = beam_search(model, xs, 0, 4, beam_width=3, end_id=end)
    np.testing.assert_array_equal(ids, [[1, end, end, end]])
    np.testing.assert_allclose(scores, [np.log(0.5 * 0.9)])


def test_beam_search_rejects_a_zero_width():
    with pytest.raises(ValueError, match="beam_width"):
        beam_search(Seq2seq(V, D, H, seed=0), _batch()[0], 0, 3, beam_width=0)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_attention_weights_come_on_request_as_distributions_over_the_input(bidirectional):
    model = AttentionSeq2seq(V, D, H, bidirectional=bidirectional, seed=2)
    xs, _ = _batch(n=5)
    before = dict(vars(model))
    ids, w = model.generate(xs, 0, 6, return_attention=True)
    np.testing.assert_array_equal(ids, model.generate(xs, 0, 6))
    assert w.shape == (5, 6, TQ) and (w >= 0).all()
    np.testing.assert_allclose(w.sum(axis=2), 1.0, rtol=1e-5)
    assert vars(model) == before  # nothing is left on the model
    wide, _ = model.beam_search(xs, 0, 2, beam_width=3)
    assert model.attention_weights(xs, 0, wide).shape == (5, 2, TQ)


def test_bidirectional_encoder_sees_the_whole_question_at_every_position():
    model = AttentionSeq2seq(V, D, H, bidirectional=True, seed=0, dtype=np.float64)
    xs, _ = _batch()
    changed = xs.copy()
    changed[:, -1] = (changed[:, -1] + 1) % V
    first, _ = model.encoder(xs)
    after, _ = model.encoder(changed)
    assert not np.allclose(first.data[:, 0], after.data[:, 0])  # position 0 depends on the last input


def _addition(count, test_size, seed=0):
    return toy_seq.load_task("addition", count=count, test_size=test_size, seed=seed, reverse=True)


def _trainer(out_dir, data, seed=0):
    model = PeekySeq2seq(13, 8, 24, seed=seed)
    batches = ShuffledBatcher((data.x_train, data.t_train), 40, seed=seed, vocab_size=13)
    return Trainer(model, Adam(0.01).setup(model), batches, clip=5.0,
                   evaluators=[ExactMatch(data.x_test, data.t_test)], extensions=[History(out_dir)], log_every=5)


def test_short_training_lowers_the_loss_and_writes_history(tmp_path):
    data = _addition(1200, 200)
    history = _trainer(tmp_path, data).fit(epochs=3)
    losses = [r["train_loss"] for r in history["epochs"]]
    assert losses[-1] < losses[0] - 0.3
    assert all(0.0 <= r["test_exact_match"] <= 1.0 and r["test_total"] == 200 for r in history["epochs"])
    written = json.loads((tmp_path / "history.json").read_text())
    assert [r["epoch"] for r in written["epochs"]] == [1, 2, 3] and written["iterations_per_epoch"] == 25
    assert (tmp_path / "history.png").stat().st_size > 0


def _run_tool(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONIOENCODING="utf-8")
    done = subprocess.run([sys.executable, "tools/train_seq2seq.py", "--no-progress", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines(), json.loads(done.stdout.splitlines()[-1])


def test_train_tool_prints_examples_and_a_json_summary(tmp_path):
    lines, result = _run_tool("--task", "addition", "--model", "peeky", "--reverse", "--epochs", "2", "--count",
                              "700", "--test-size", "100", "--hidden", "16", "--out", str(tmp_path))
    assert {"test_exact_match", "train_seconds", "test_exact_match_per_epoch", "samples_per_second"} <= result.keys()
    assert len(result["test_exact_match_per_epoch"]) == 2 and result["iterations"] == 2 * (600 // 128)
    assert json.loads((tmp_path / "summary.json").read_text()) == result
    assert any("☑" in line or "☒" in line for line in lines)
    assert (tmp_path / "history.png").exists()
    history = json.loads((tmp_path / "history.json").read_text())
    assert [r["lr"] for r in history["epochs"]] == pytest.approx([0.001, 0.0005])  # cosine, one step an epoch


def test_train_tool_draws_an_attention_heatmap_of_a_date(tmp_path):
    lines, result = _run_tool("--task", "date", "--model", "attention", "--reverse", "--epochs", "1", "--count",
                              "300", "--test-size", "50", "--hidden", "16", "--examples", "0", "--out", str(tmp_path))
    assert Path(result["attention_plot"]).stat().st_size > 0
    assert not any("☑" in line or "☒" in line for line in lines)  # --examples 0 prints none

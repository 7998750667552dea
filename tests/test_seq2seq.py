"""Seq2seq models, decoding (greedy, beam search) and SeqTrainer."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_layers import check_layer_grads

from models import AttentionSeq2seq, DecodingMixin, PeekySeq2seq, Seq2seq, beam_search, greedy_search
from models.decoding import sequence_log_prob
from tinygrad_rnn import Variable
from tinygrad_rnn.data import toy_seq
from tinygrad_rnn.optimizers import Adam
from tinygrad_rnn.training import SeqTrainer, exact_match

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
    check_layer_grads(model, lambda: model(xs, ts))


@pytest.mark.parametrize("name", MODELS)
def test_loss_is_the_mean_cross_entropy_of_ts_after_the_start_token(name):
    model = MODELS[name](seed=0)
    xs, ts = _batch()
    loss = model(xs, ts)
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
def test_attention_weights_of_generate_are_distributions_over_the_input(bidirectional):
    model = AttentionSeq2seq(V, D, H, bidirectional=bidirectional, seed=2)
    xs, _ = _batch(n=5)
    model.generate(xs, 0, 6)
    w = model.attention_weights
    assert w.shape == (5, 6, TQ) and (w >= 0).all()
    np.testing.assert_allclose(w.sum(axis=2), 1.0, rtol=1e-5)
    model.beam_search(xs, 0, 2, beam_width=3)
    assert model.attention_weights.shape == (5, 2, TQ)


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


def _trainer(out_dir, seed=0, **kwargs):
    model = PeekySeq2seq(13, 8, 24, seed=seed)
    return SeqTrainer(model, Adam(0.01).setup(model), batch_size=40, max_grad_norm=5.0, seed=seed, out_dir=out_dir,
                      progress=False, log_every=5, **kwargs)


def test_short_training_lowers_the_loss_and_writes_history(tmp_path):
    data = _addition(1200, 200)
    seen = []
    trainer = _trainer(tmp_path, callback=lambda t, record: seen.append(record["epoch"]))
    history = trainer.fit(data.x_train, data.t_train, data.x_test, data.t_test, epochs=3)
    losses = [r["loss"] for r in history["epochs"]]
    assert losses[-1] < losses[0] - 0.3
    assert seen == [1, 2, 3]
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in history["epochs"])
    written = json.loads((tmp_path / "history.json").read_text())
    assert [r["epoch"] for r in written["epochs"]] == [1, 2, 3] and written["iterations_per_epoch"] == 25
    assert (tmp_path / "history.png").stat().st_size > 0 and (tmp_path / "last.npz").exists()


def test_seq_trainer_resume_continues_bit_for_bit(tmp_path):
    data = _addition(240, 40)
    straight = _trainer(tmp_path / "straight")
    straight.fit(data.x_train, data.t_train, data.x_test, data.t_test, epochs=2)
    first = _trainer(tmp_path / "resumed")
    first.fit(data.x_train, data.t_train, data.x_test, data.t_test, epochs=1)
    second = _trainer(tmp_path / "resumed", seed=5)  # weights and shuffling must come from the checkpoint
    second.resume(tmp_path / "resumed" / "last.npz")
    second.fit(data.x_train, data.t_train, data.x_test, data.t_test, epochs=2)
    for (name, p), (_, q) in zip(straight.model.namedparams(), second.model.namedparams()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)
    drop = ("seconds", "eval_seconds", "samples_per_second")
    assert [{k: v for k, v in r.items() if k not in drop} for r in straight.history["epochs"]] == \
           [{k: v for k, v in r.items() if k not in drop} for r in second.history["epochs"]]


def test_exact_match_scores_whole_answers_and_ignores_padding():
    class Fixed:  # answers row xs[n, 0] of a table
        def generate(self, xs, start_id, length, beam_width=1):
            return np.array([[1, 2, 3], [1, 2, 2], [4, 0, 0]], dtype=np.int32)[xs[:, 0], :length]

    ts = np.array([[9, 1, 2, 3], [9, 1, 2, 3], [9, 4, 5, 5]])
    xs = np.arange(3)[:, None]
    assert exact_match(Fixed(), xs, ts) == pytest.approx(1 / 3)
    assert exact_match(Fixed(), xs, ts, batch_size=2, ignore_id=5) == pytest.approx(2 / 3)
    ts[1, 0] = 8
    with pytest.raises(ValueError, match="start token"):
        exact_match(Fixed(), xs, ts)


def test_fit_needs_one_full_batch():
    data = _addition(50, 20)
    with pytest.raises(ValueError, match="fewer than one batch"):
        _trainer(None).fit(data.x_train, data.t_train, epochs=1)


def _run_tool(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONIOENCODING="utf-8")
    done = subprocess.run([sys.executable, "tools/train_seq2seq.py", "--no-progress", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines(), json.loads(done.stdout.splitlines()[-1])


def test_train_tool_prints_examples_and_a_json_summary(tmp_path):
    lines, result = _run_tool("--task", "addition", "--model", "peeky", "--reverse", "--epochs", "2", "--count",
                              "700", "--test-size", "100", "--hidden", "16", "--out", str(tmp_path))
    assert {"test_accuracy", "train_seconds", "accuracy"} <= result.keys() and len(result["accuracy"]) == 2
    assert any("☑" in line or "☒" in line for line in lines)
    assert (tmp_path / "history.png").exists()
    history = json.loads((tmp_path / "history.json").read_text())
    assert [r["lr"] for r in history["epochs"]] == pytest.approx([0.001, 0.0005])  # cosine, one step an epoch


def test_train_tool_draws_an_attention_heatmap_of_a_date(tmp_path):
    lines, result = _run_tool("--task", "date", "--model", "attention", "--reverse", "--epochs", "1", "--count",
                              "300", "--test-size", "50", "--hidden", "16", "--examples", "0", "--out", str(tmp_path))
    assert Path(result["attention_plot"]).stat().st_size > 0
    assert not any("☑" in line or "☒" in line for line in lines)  # --examples 0 prints none

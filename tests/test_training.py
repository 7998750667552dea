import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models import LSTMLM, BetterLSTMLM
from tinygrad_rnn import functions as F
from tinygrad_rnn import layers as L
from tinygrad_rnn.data import BPTTBatcher, ptb
from tinygrad_rnn.optimizers import SGD, Adam, ReduceOnPlateau
from tinygrad_rnn.serialization import load_npz
from tinygrad_rnn.training import LMTrainer, checkpoint_arrays, eval_perplexity, generators

ROOT = Path(__file__).resolve().parents[1]
V = 11
TRAIN = np.random.default_rng(0).integers(0, V, 420).astype(np.int32)
VALID = np.random.default_rng(1).integers(0, V, 120).astype(np.int32)


def make_trainer(out_dir, seed=0, **kwargs):
    model = BetterLSTMLM(V, 6, 6, dropout=0.3, seed=seed)
    opt = Adam(lr=0.01).setup(model)
    return LMTrainer(model, opt, batch_size=4, time_size=5, max_grad_norm=0.5, schedule=ReduceOnPlateau(opt),
                     eval_batch_size=2, eval_time_size=5, out_dir=out_dir, progress=False, log_every=5, **kwargs)


def without_times(history):
    drop = ("seconds", "eval_seconds", "words_per_second")
    return [{k: v for k, v in r.items() if k not in drop} for r in history["epochs"]]


def test_resume_continues_bit_for_bit(tmp_path):
    straight = make_trainer(tmp_path / "straight")
    straight.fit(TRAIN, VALID, epochs=2)

    first = make_trainer(tmp_path / "resumed")
    first.fit(TRAIN, VALID, epochs=1)
    # another seed: the weights and, above all, the dropout generator must come from the checkpoint
    second = make_trainer(tmp_path / "resumed", seed=123)
    second.resume(tmp_path / "resumed" / "last.npz")
    second.fit(TRAIN, VALID, epochs=2)

    for (name, p), (_, q) in zip(straight.model.namedparams(), second.model.namedparams()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)
    a, b = straight.optimizer.state_dict(), second.optimizer.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert without_times(straight.history) == without_times(second.history)
    assert straight.history["iterations"] == second.history["iterations"]
    assert second.epoch == 2 and second.total_iterations == 2 * len(BPTTBatcher(TRAIN, 4, 5))


def test_resume_inside_an_epoch_restores_the_carried_state(tmp_path):
    straight = make_trainer(tmp_path / "straight")
    straight.fit(TRAIN, VALID, epochs=1)
    first = make_trainer(tmp_path / "resumed")
    first.fit(TRAIN, VALID, epochs=1, max_iters=3)
    second = make_trainer(tmp_path / "resumed", seed=123)
    second.resume(tmp_path / "resumed" / "last.npz")
    second.fit(TRAIN, VALID, epochs=1)
    for (name, p), (_, q) in zip(straight.model.namedparams(), second.model.namedparams()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)


def test_evaluation_leaves_the_carried_training_state_in_place():
    model = BetterLSTMLM(V, 4, 4, seed=0)
    model(TRAIN[None, :6])
    before = {k: v.copy() for k, v in model.carried_state().items()}
    assert before  # two LSTM layers, h and c each
    eval_perplexity(model, VALID, 2, 5)
    after = model.carried_state()
    assert before.keys() == after.keys()
    for k in before:
        np.testing.assert_array_equal(before[k], after[k], err_msg=k)


def test_generators_finds_the_shared_dropout_generator():
    model = BetterLSTMLM(V, 4, 4, seed=0)
    found = generators(model)
    assert len(found) == 1 and found["drop0/rng"] is model.drop0.rng is model.drop2.rng


def test_fit_writes_history_plot_and_checkpoints_atomically(tmp_path):
    trainer = make_trainer(tmp_path, meta={"model": {"kind": "better"}})
    history = trainer.fit(TRAIN, VALID, epochs=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.npz", "history.json", "history.png", "last.npz"]
    saved = json.loads((tmp_path / "history.json").read_text())
    assert saved == json.loads(json.dumps(history))
    assert [r["epoch"] for r in saved["epochs"]] == [1, 2]
    for r in saved["epochs"]:
        assert r["iterations"] == 20 and r["train_perplexity"] > 1 and r["valid_perplexity"] > 1
        assert r["lr"] > 0 and r["seconds"] > 0 and r["words_per_second"] > 0
    assert [r["iteration"] for r in saved["iterations"]] == [5, 10, 15, 20, 25, 30, 35, 40]
    assert (tmp_path / "history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    arrays, meta = load_npz(tmp_path / "best.npz")
    assert meta["run"] == {"model": {"kind": "better"}}
    best_epoch = min(saved["epochs"], key=lambda r: r["valid_perplexity"])["epoch"]
    assert meta["epoch"] == best_epoch and meta["best_valid"] == min(r["valid_perplexity"] for r in saved["epochs"])
    assert set(checkpoint_arrays(arrays, "model")) == {name for name, _ in trainer.model.namedparams()}


def test_failed_checkpoint_write_keeps_the_previous_file(tmp_path, monkeypatch):
    trainer = make_trainer(tmp_path)
    trainer.fit(TRAIN, None, epochs=1)
    before = (tmp_path / "last.npz").read_bytes()

    def broken_savez(file, *args, **kwargs):
        file.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        trainer.save_checkpoint(tmp_path / "last.npz")
    assert (tmp_path / "last.npz").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.json", "history.png", "last.npz"]


def test_max_iters_stops_inside_an_epoch_and_resume_finishes_it(tmp_path):
    trainer = make_trainer(tmp_path)
    trainer.fit(TRAIN, VALID, epochs=1, max_iters=7)
    assert (trainer.epoch, trainer.iteration, trainer.total_iterations) == (0, 7, 7)
    assert trainer.history["epochs"][0]["iterations"] == 7
    resumed = make_trainer(tmp_path)
    resumed.resume(tmp_path / "last.npz")
    resumed.fit(TRAIN, VALID, epochs=1)
    assert (resumed.epoch, resumed.iteration, resumed.total_iterations) == (1, 0, 20)
    assert [r["iterations"] for r in resumed.history["epochs"]] == [7, 13]


def test_training_lowers_perplexity_on_a_learnable_stream():
    model = LSTMLM(V, 8, 16, seed=0)
    trainer = LMTrainer(model, Adam(lr=0.02).setup(model), batch_size=4, time_size=5, progress=False)
    stream = np.tile(np.arange(V, dtype=np.int32), 40)
    before = eval_perplexity(model, stream, 4, 5)
    history = trainer.fit(stream, epochs=4)
    assert before > 0.8 * V  # an untrained model is close to uniform
    assert history["epochs"][-1]["train_perplexity"] < 2.0
    assert eval_perplexity(model, stream, 4, 5) < 1.5


def test_lr_schedule_divides_lr_when_validation_stops_improving():
    model = LSTMLM(V, 4, 4, seed=0)
    opt = SGD(lr=50.0).setup(model)  # far too large: validation gets worse, so the lr must drop
    trainer = LMTrainer(model, opt, batch_size=4, time_size=5, schedule=ReduceOnPlateau(opt, factor=0.25),
                        eval_batch_size=2, eval_time_size=5, progress=False)
    history = trainer.fit(TRAIN, VALID, epochs=4)
    valid = [r["valid_perplexity"] for r in history["epochs"]]
    lrs = [r["lr"] for r in history["epochs"]] + [opt.lr]
    for k in range(4):
        improved = valid[k] < min(valid[:k], default=math.inf)
        assert lrs[k + 1] == (lrs[k] if improved else lrs[k] * 0.25)
    assert opt.lr < 50.0


class Spy(L.Layer):
    """Wraps a model and keeps every output it returns."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.outputs = []

    def forward(self, xs):
        y = self.inner(xs)
        self.outputs.append(y)
        return y


def test_eval_perplexity_builds_no_graph_and_matches_mean_loss():
    model = Spy(BetterLSTMLM(V, 6, 6, dropout=0.5, seed=0))
    ppl = eval_perplexity(model, VALID, batch_size=2, time_size=5)
    assert len(model.outputs) == len(BPTTBatcher(VALID, 2, 5))
    assert all(y.creator is None for y in model.outputs)
    assert all(p.grad is None for p in model.params())
    assert eval_perplexity(model, VALID, batch_size=2, time_size=5) == ppl  # dropout is off, state reset
    batches = BPTTBatcher(VALID, 2, 5)  # exp of the mean loss over the same windows
    losses = [float(F.softmax_cross_entropy(y, ts).data) for y, (_, ts) in zip(model.outputs, batches)]
    assert ppl == pytest.approx(math.exp(np.mean(losses)), rel=1e-6)


def ptb_dir():
    data = os.environ.get("TINYGRAD_RNN_DATA") or str(ROOT.parent / "shared" / "data")
    if not (Path(data) / "ptb" / "ptb.train.txt").is_file() and ptb.locate("train", download=False) is None:
        pytest.skip("PTB not found: set TINYGRAD_RNN_DATA to a folder holding ptb/ptb.{train,valid,test}.txt")
    return data


def run_tool(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, *args], check=False, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_train_lm_smoke_run_prints_final_json_and_generate_reads_checkpoint(tmp_path):
    data = ptb_dir()
    out = run_tool("tools/train_lm.py", "--model", "lstm", "--wordvec", "8", "--hidden", "8", "--corpus-size",
                   "3000", "--max-iters", "3", "--batch-size", "4", "--time-size", "5", "--data-dir", data,
                   "--out", str(tmp_path), "--no-progress", "--seed", "0")
    result = json.loads(out.strip().splitlines()[-1])
    for key in ("valid_perplexity", "test_perplexity", "train_seconds", "words_per_second"):
        assert key in result
    assert result["iterations"] == 3 and result["train_perplexity"] > 1
    assert {"history.json", "history.png", "last.npz"} <= {p.name for p in tmp_path.iterdir()}
    text = run_tool("tools/generate.py", str(tmp_path / "last.npz"), "--start", "the", "--length", "5", "--seed", "1")
    assert text.split()[0] == "the" and "<unk>" not in text

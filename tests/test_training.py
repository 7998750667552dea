"""The trainer: one step, the loop, exact resume in every configuration, checkpoint checks, evaluators, schedules."""
import json
import math
import os
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import untimed

from tinygrad_rnn import core
from tinygrad_rnn import functions as F
from tinygrad_rnn import layers as L
from tinygrad_rnn.data import BPTTBatcher, ShuffledBatcher, toy_seq
from tinygrad_rnn.models import LSTMLM, BetterLSTMLM, PeekySeq2seq
from tinygrad_rnn.core import Config
from tinygrad_rnn.optimizers import SGD, Adam, GradientClipping
from tinygrad_rnn.serialization import load_npz, save_npz
from tinygrad_rnn.training import (Checkpoint, Constant, Cosine, ExactMatch, ExponentialDecay, History,
                                   LogReport, Perplexity, ReduceOnPlateau, StepDecay, Trainer, checkpoint, exact_match,
                                   perplexity, plot_history)

V = 11
TRAIN = np.random.default_rng(0).integers(0, V, 420).astype(np.int32)
VALID = np.random.default_rng(1).integers(0, V, 120).astype(np.int32)
ADDITION = toy_seq.load_task("addition", count=260, test_size=40, seed=0, reverse=True)


def lm_trainer(out, seed=0, convention="textbook", drop_last=True, model="better", optimizer="adam", batch_size=4,
               time_size=5, extensions=None):
    net = BetterLSTMLM(V, 6, 6, dropout=0.3, seed=seed) if model == "better" else LSTMLM(V, 6, 6, seed=seed)
    opt = Adam(lr=0.01).setup(net) if optimizer == "adam" else SGD(lr=0.5).setup(net)
    batches = BPTTBatcher(TRAIN, batch_size, time_size, convention=convention, drop_last=drop_last, vocab_size=V)
    if extensions is None:
        extensions = [ReduceOnPlateau("valid_perplexity"), Checkpoint(out, "valid_perplexity"), History(out)]
    return Trainer(net, opt, batches, clip=0.5, evaluators=[Perplexity(VALID, 2, 5)], extensions=extensions,
                   log_every=3)


def seq_trainer(out, seed=0, drop_last=True):
    net = PeekySeq2seq(13, 8, 24, seed=seed)
    batches = ShuffledBatcher((ADDITION.x_train, ADDITION.t_train), 40, seed=0, drop_last=drop_last, vocab_size=13)
    return Trainer(net, Adam(0.01).setup(net), batches, clip=5.0,
                   evaluators=[ExactMatch(ADDITION.x_test, ADDITION.t_test)],
                   extensions=[Cosine(3), Checkpoint(out, "test_exact_match", "max"), History(out)], log_every=2)


CONFIGURATIONS = {
    "BetterLSTMLM, textbook streams, Adam, plateau": lambda out, seed=0: lm_trainer(out, seed),
    "LSTMLM, PyTorch streams with the last window, SGD": lambda out, seed=0: lm_trainer(
        out, seed, convention="pytorch", drop_last=False, model="lstm", optimizer="sgd"),
    "PeekySeq2seq, shuffled minibatches, cosine": lambda out, seed=0: seq_trainer(out, seed),
    "PeekySeq2seq, shuffled with the last batch": lambda out, seed=0: seq_trainer(out, seed, drop_last=False),
}


def assert_same_training(a, b):
    for (name, p), (_, q) in zip(a.model.namedparams(), b.model.namedparams()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)
    sa, sb = a.optimizer.state_dict(), b.optimizer.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)
    assert {k: g.state_dict() for k, g in a.model.generators().items()} == \
           {k: g.state_dict() for k, g in b.model.generators().items()}
    assert untimed(a.history["epochs"]) == untimed(b.history["epochs"])
    assert a.history["iterations"] == b.history["iterations"]


@pytest.mark.parametrize("stop", [7, 21], ids=["inside an epoch", "after an epoch"])
@pytest.mark.parametrize("name", CONFIGURATIONS)
def test_an_interrupted_and_resumed_run_equals_an_uninterrupted_one(tmp_path, name, stop):
    make = CONFIGURATIONS[name]
    straight = make(tmp_path / "straight")
    straight.fit(epochs=3)
    first = make(tmp_path / "resumed")
    first.fit(epochs=3, max_iters=stop)
    # another seed: the weights and the dropout generators must come from the checkpoint
    second = make(tmp_path / "resumed", seed=123)
    second.resume(tmp_path / "resumed" / "last.npz")
    second.fit(epochs=3)
    assert_same_training(straight, second)
    assert second.total_iterations == straight.total_iterations == 3 * len(straight.batches)
    whole, resumed = straight.summary(), second.summary()
    assert resumed["iterations"] == whole["iterations"] and resumed["epochs"] == 3
    assert resumed["train_seconds"] > 0 and resumed["train_loss"] == whole["train_loss"]


def test_the_best_checkpoint_resumes_too_and_holds_the_best_record(tmp_path):
    trainer = lm_trainer(tmp_path)
    trainer.fit(epochs=3)
    best_epoch = min(trainer.history["epochs"], key=lambda r: r["valid_perplexity"])["epoch"]
    params, meta = checkpoint.read(tmp_path / "best.npz")
    assert meta["trainer"]["epoch"] == best_epoch
    assert set(params) == {name for name, _ in trainer.model.namedparams()}
    again = lm_trainer(tmp_path / "other", seed=9)
    again.resume(tmp_path / "best.npz")
    assert again.epoch == best_epoch and len(again.history["epochs"]) == best_epoch


def test_fit_writes_history_plot_and_checkpoints_atomically(tmp_path):
    trainer = lm_trainer(tmp_path)
    history = trainer.fit(epochs=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.npz", "history.json", "history.png", "last.npz"]
    saved = json.loads((tmp_path / "history.json").read_text())
    assert saved == json.loads(json.dumps(history))
    assert [r["epoch"] for r in saved["epochs"]] == [1, 2] and saved["iterations_per_epoch"] == 20
    for r in saved["epochs"]:
        assert r["iterations"] == 20 and r["complete"] and r["train_perplexity"] == pytest.approx(
            math.exp(r["train_loss"]))
        assert r["valid_perplexity"] > 1 and r["valid_tokens"] == len(VALID) - 1
        assert r["lr"] > 0 and r["seconds"] > 0 and r["words_per_second"] > 0
    assert [r["iteration"] for r in saved["iterations"]] == [3, 6, 9, 12, 15, 18, 23, 26, 29, 32, 35, 38]
    assert (tmp_path / "history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_max_iters_stops_inside_an_epoch_and_resume_completes_that_epoch(tmp_path):
    trainer = lm_trainer(tmp_path)
    trainer.fit(epochs=1, max_iters=7)
    assert (trainer.epoch, trainer.iteration, trainer.total_iterations) == (0, 7, 7)
    partial = trainer.history["epochs"][0]
    assert not partial["complete"] and partial["iterations"] == 7 and "valid_perplexity" in partial
    resumed = lm_trainer(tmp_path)
    resumed.resume(tmp_path / "last.npz")
    resumed.fit(epochs=1)
    assert (resumed.epoch, resumed.iteration, resumed.total_iterations) == (1, 0, 20)
    assert [(r["iterations"], r["complete"]) for r in resumed.history["epochs"]] == [(7, False), (20, True)]


@pytest.mark.parametrize("change, message", [
    (dict(optimizer="sgd"), "optimizer Adam in the checkpoint, SGD in this run"),
    (dict(batch_size=2), "batches batch_size 4 in the checkpoint, 2 in this run"),
    (dict(time_size=7), "batches time_size 5 in the checkpoint, 7 in this run"),
    (dict(convention="pytorch"), "batches convention 'textbook' in the checkpoint, 'pytorch' in this run"),
    (dict(model="lstm"), "model parameters"),
])
def test_a_checkpoint_that_does_not_fit_the_run_is_refused_and_changes_nothing(tmp_path, change, message):
    lm_trainer(tmp_path).fit(epochs=1, max_iters=5)
    other = lm_trainer(tmp_path / "other", seed=4, **change)
    before = {k: v.copy() for k, v in other.model.state_dict().items()}
    with pytest.raises(ValueError, match="does not fit this run") as info:
        other.resume(tmp_path / "last.npz")
    assert message in str(info.value) and str(tmp_path / "last.npz") in str(info.value)
    for k, v in other.model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    assert (other.epoch, other.total_iterations, other.history["epochs"]) == (0, 0, [])


def test_another_shuffling_seed_is_named(tmp_path):
    seq_trainer(tmp_path).fit(epochs=1, max_iters=2)
    other = seq_trainer(tmp_path / "other")
    other.batches.seed = 5
    with pytest.raises(ValueError, match="batches seed 0 in the checkpoint, 5 in this run"):
        other.resume(tmp_path / "last.npz")


def test_another_optimizer_setting_is_named(tmp_path):
    lm_trainer(tmp_path).fit(epochs=1, max_iters=2)
    other = lm_trainer(tmp_path / "other")
    other.optimizer = Adam(lr=0.01, beta1=0.5).setup(other.model)
    with pytest.raises(ValueError, match="optimizer beta1 0.9 in the checkpoint, 0.5 in this run"):
        other.resume(tmp_path / "last.npz")


@pytest.mark.parametrize("damage", ["empty", "truncated", "random", "npy", "parameters only"])
def test_a_damaged_checkpoint_gives_one_error_naming_the_file(tmp_path, damage):
    lm_trainer(tmp_path).fit(epochs=1, max_iters=2)
    good = (tmp_path / "last.npz").read_bytes()
    bad = tmp_path / "bad.npz"
    if damage == "npy":
        np.save(bad.with_suffix(".npy"), np.ones(3))
        bad.with_suffix(".npy").rename(bad)
    elif damage == "parameters only":
        L.Layer.save(lm_trainer(tmp_path / "x").model, bad)
    else:
        bad.write_bytes({"empty": b"", "truncated": good[:len(good) // 2],
                         "random": np.random.default_rng(0).bytes(300)}[damage])
    with pytest.raises(ValueError, match=f"{bad} is not a tinygrad_rnn (trainer )?checkpoint"):
        lm_trainer(tmp_path / "other").resume(bad)


def test_a_failure_while_loading_restores_everything(tmp_path, monkeypatch):
    lm_trainer(tmp_path).fit(epochs=1, max_iters=5)
    other = lm_trainer(tmp_path / "other", seed=4)
    other.fit(epochs=1, max_iters=2)
    before = (other.model.state_dict(), other.optimizer.state_dict(), other.history, other.total_iterations)
    before = ({k: v.copy() for k, v in before[0].items()}, before[1], json.dumps(before[2]), before[3])

    plateau = other.extensions[0]
    original = plateau.load_state_dict
    calls = []

    def broken(state):  # the first load fails, the restore that follows succeeds
        calls.append(state)
        if len(calls) == 1:
            raise RuntimeError("disk gone")
        original(state)

    monkeypatch.setattr(plateau, "load_state_dict", broken)  # late in the load: model and optimizer are loaded
    with pytest.raises(RuntimeError, match="disk gone"):
        other.resume(tmp_path / "last.npz")
    for k, v in other.model.state_dict().items():
        np.testing.assert_array_equal(v, before[0][k])
    after = other.optimizer.state_dict()
    assert after.keys() == before[1].keys() and all(np.array_equal(after[k], before[1][k]) for k in after)
    assert (json.dumps(other.history), other.total_iterations) == (before[2], before[3])


def test_training_lowers_perplexity_on_a_learnable_stream():
    model = LSTMLM(V, 8, 16, seed=0)
    stream = np.tile(np.arange(V, dtype=np.int32), 40)
    trainer = Trainer(model, Adam(lr=0.02).setup(model), BPTTBatcher(stream, 4, 5))
    before = perplexity(model, stream, 4, 5)["perplexity"]
    history = trainer.fit(epochs=4)
    assert before > 0.8 * V  # an untrained model is close to uniform
    assert history["epochs"][-1]["train_perplexity"] < 2.0
    assert perplexity(model, stream, 4, 5)["perplexity"] < 1.5


def test_the_pytorch_convention_resets_the_state_each_epoch_and_the_textbook_one_carries_it():
    for convention, resets_wanted in (("pytorch", 3), ("textbook", 1)):
        model = LSTMLM(V, 4, 4, seed=0)
        resets = []
        model.reset_state = lambda model=model, resets=resets: resets.append(1) or L.Layer.reset_state(model)
        Trainer(model, SGD(0.1).setup(model), BPTTBatcher(TRAIN, 4, 5, convention=convention)).fit(epochs=3)
        assert len(resets) == resets_wanted


class Bigram(L.Layer):
    """Scores that depend on the current id only: a stateless model whose perplexity has a closed form."""

    def __init__(self):
        super().__init__()
        self.table = L.Embedding(V, V, seed=0)
        self.table.W.data = np.random.default_rng(0).normal(size=(V, V)).astype(np.float32)

    def forward(self, xs):
        return self.table(xs)

    def loss(self, xs, ts, ignore_label=None):
        return F.softmax_cross_entropy(self(xs), ts, ignore_label=ignore_label)


def test_perplexity_counts_every_target_token_exactly_once():
    model = Bigram()
    logits = model.table.W.data
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    for corpus in (VALID, VALID[:37], VALID[:2]):
        expected = -logp[corpus[:-1], corpus[1:]].mean()
        for n, t in ((10, 35), (3, 4), (1, 1), (50, 2)):
            result = perplexity(model, corpus, n, t)
            assert result["tokens"] == len(corpus) - 1
            assert result["loss"] == pytest.approx(expected, rel=1e-6)
            assert result["perplexity"] == pytest.approx(math.exp(expected), rel=1e-6)


def test_perplexity_scores_through_the_models_loss_and_names_a_model_without_one():
    class Halved(Bigram):
        def loss(self, xs, ts, ignore_label=None):
            return super().loss(xs, ts, ignore_label) * 0.5

    assert perplexity(Halved(), VALID, 3, 4)["loss"] == pytest.approx(perplexity(Bigram(), VALID, 3, 4)["loss"] / 2)
    with pytest.raises(TypeError, match=r"perplexity: the Embedding has no loss\(xs, ts, ignore_label\)"):
        perplexity(L.Embedding(V, V, seed=0), VALID)


def test_perplexity_leaves_the_carried_training_state_in_place():
    model = BetterLSTMLM(V, 4, 4, seed=0)
    model(TRAIN[None, :6])
    before = {k: v.copy() for k, v in model.carried_state().items()}
    assert before  # two LSTM layers, h and c each
    perplexity(model, VALID, 2, 5)
    after = model.carried_state()
    assert before.keys() == after.keys() and all(np.array_equal(before[k], after[k]) for k in before)


def test_exact_match_counts_whole_answers_and_ignores_padding():
    class Fixed:  # answers row xs[n, 0] of a table
        def params(self):
            return iter(())

        def generate(self, xs, start_id, length, beam_width=1):
            return np.array([[1, 2, 3], [1, 2, 2], [4, 0, 0]], dtype=np.int32)[xs[:, 0], :length]

    ts = np.array([[9, 1, 2, 3], [9, 1, 2, 3], [9, 4, 5, 5]])
    xs = np.arange(3)[:, None]
    assert exact_match(Fixed(), xs, ts) == {"correct": 1, "total": 3, "exact_match": pytest.approx(1 / 3)}
    assert exact_match(Fixed(), xs, ts, batch_size=2, ignore_id=5)["correct"] == 2
    ts[1, 0] = 8
    with pytest.raises(ValueError, match="start token"):
        exact_match(Fixed(), xs, ts)


def test_a_diverged_run_reports_an_infinite_perplexity_and_keeps_valid_json(tmp_path):
    model = LSTMLM(V, 4, 4, seed=0)
    trainer = Trainer(model, SGD(lr=1e6).setup(model), BPTTBatcher(TRAIN, 4, 5), evaluators=[Perplexity(VALID)],
                      extensions=[History(tmp_path), LogReport(lambda line: None)])
    with np.errstate(all="ignore"):
        history = trainer.fit(epochs=2)
    last = history["epochs"][-1]
    assert not math.isfinite(last["valid_perplexity"]) and not math.isfinite(last["train_perplexity"])

    def refuse(token):
        raise AssertionError(f"history.json holds {token}, which is not JSON")

    saved = json.loads((tmp_path / "history.json").read_text(), parse_constant=refuse)
    assert saved["epochs"][-1]["valid_perplexity"] in ("inf", "nan")


@pytest.mark.parametrize("schedule, rates", [
    (Constant(), [1.0, 1.0, 1.0, 1.0]),
    (Cosine(4), [1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5, 0.5 * (1 + math.cos(3 * math.pi / 4))]),
    (StepDecay(2, 0.1), [1.0, 1.0, 0.1, 0.1]),
    (ExponentialDecay(0.5), [1.0, 0.5, 0.25, 0.125]),
])
def test_epoch_schedules_set_the_rate_of_each_epoch(schedule, rates):
    model = LSTMLM(V, 4, 4, seed=0)
    trainer = Trainer(model, SGD(lr=1.0).setup(model), BPTTBatcher(TRAIN, 4, 5), extensions=[schedule])
    history = trainer.fit(epochs=4)
    assert [r["lr"] for r in history["epochs"]] == pytest.approx(rates)


def test_reduce_on_plateau_divides_the_rate_when_the_monitored_number_stops_improving():
    opt = SGD(lr=20.0)
    schedule = ReduceOnPlateau("valid_perplexity", factor=0.25)
    rates = []
    for k, metric in enumerate((200.0, 150.0, 151.0, 140.0, 140.0), start=1):
        schedule.update(opt, k, {"valid_perplexity": metric})
        rates.append(opt.lr)
    assert rates == [20.0, 20.0, 5.0, 5.0, 1.25]
    patient = ReduceOnPlateau("m", factor=0.5, patience=1)
    opt = SGD(lr=1.0)
    for k, metric in enumerate((10.0, 11.0, 12.0, 13.0)):
        patient.update(opt, k, {"m": metric})
    assert opt.lr == 0.5
    other = ReduceOnPlateau("m", factor=0.5, patience=1)
    other.load_state_dict(json.loads(json.dumps(patient.state_dict())))
    other.update(opt, 5, {"m": 14.0})
    assert opt.lr == 0.25
    with pytest.raises(KeyError, match="no 'valid_perplexity'"):
        ReduceOnPlateau().update(opt, 1, {"train_loss": 1.0})


@pytest.mark.parametrize("bad", [lambda: Cosine(0), lambda: StepDecay(0), lambda: ExponentialDecay(1.5),
                                 lambda: ReduceOnPlateau(factor=1.0), lambda: ReduceOnPlateau(patience=-1),
                                 lambda: ReduceOnPlateau(mode="up"), lambda: Cosine(3, min_lr=float("nan"))])
def test_schedules_refuse_nonsense_settings(bad):
    with pytest.raises(ValueError):
        bad()


def test_the_trainer_refuses_bad_settings_and_batches_on_another_device(tmp_path):
    model = LSTMLM(V, 4, 4, seed=0)
    opt = SGD(0.1).setup(model)
    for clip in (-1.0, 0.0, float("inf")):
        with pytest.raises(ValueError, match="Trainer: clip"):
            Trainer(model, opt, BPTTBatcher(TRAIN, 4, 5), clip=clip)
    ordered = Trainer(model, opt, BPTTBatcher(TRAIN, 4, 5),
                      extensions=[History(tmp_path), Checkpoint(tmp_path), LogReport(), Cosine(2)]).extensions
    assert [type(e).__name__ for e in ordered] == ["Cosine", "Checkpoint", "History", "LogReport"]  # by priority
    with pytest.raises(ValueError, match="share a name"):
        Trainer(model, opt, BPTTBatcher(TRAIN, 4, 5), extensions=[History(tmp_path), History(tmp_path / "b")])
    with pytest.raises(ValueError, match="the optimizer is set up for another LSTMLM, not this LSTMLM"):
        Trainer(LSTMLM(V, 4, 4), opt, None)
    with pytest.raises(ValueError, match="set up for no model"):
        Trainer(model, SGD(0.1), None)
    with pytest.raises(ValueError, match="no batch source"):
        Trainer(model, opt, None).fit(epochs=1)
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        Trainer(model, opt, BPTTBatcher(TRAIN, 4, 5)).fit(epochs=0)
    source = BPTTBatcher(TRAIN, 4, 5)
    source.device = "gpu"  # as if built for the GPU while the model stayed on the CPU
    with pytest.raises(ValueError, match="batches are on the gpu, the model on the cpu"):
        Trainer(model, opt, source).fit(epochs=1)


def test_importing_changes_nothing_and_the_trainer_tunes_malloc():
    code = ("import tinygrad_rnn, tinygrad_rnn.training, tinygrad_rnn.models; from tinygrad_rnn import backend; "
            "assert not backend._malloc['tuned']; from tinygrad_rnn.models import LSTMLM; "
            "from tinygrad_rnn.optimizers import SGD; from tinygrad_rnn.training import Trainer; m = LSTMLM(5, 2, 2); "
            "Trainer(m, SGD(0.1).setup(m), None); print(backend._malloc['tuned'])")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == ("True" if sys.platform.startswith("linux") else "False")


def test_checkpoint_files_hold_no_pickle_and_the_run_metadata(tmp_path):
    trainer = lm_trainer(tmp_path)
    trainer.meta = {"model": {"kind": "better"}}
    trainer.fit(epochs=1, max_iters=3)
    arrays, meta = load_npz(tmp_path / "last.npz")
    assert meta["run"] == {"model": {"kind": "better"}} and meta["format"] == checkpoint.FORMAT
    assert all(a.dtype != object for a in arrays.values())
    assert {"drop0/generator", "drop1/generator", "drop2/generator"} <= set(meta["generators"])


def test_a_checkpoint_written_before_the_trainer_owned_its_state_resumes_exactly(tmp_path):
    """tests/data/checkpoint_v2.npz was written by the trainer of commit 00bf268 (format /2, checkpoint.py
    reading the trainer's fields): lm_trainer's run stopped at step 27, in epoch 2. It holds no gradient norms
    (recorded since): the epoch it stopped in reports them as unknown (NaN), everything else as before. That
    trainer's fused layers gave the NumPy path's bits, which the cpu extra's float32 tanh does not: both runs take
    the NumPy path."""
    with core.using_config("compiled_kernels", False):
        straight = lm_trainer(tmp_path / "straight")
        straight.fit(epochs=2)
        resumed = lm_trainer(tmp_path / "resumed", seed=5)
        run = resumed.resume(Path(__file__).with_name("data") / "checkpoint_v2.npz")
        assert run == {"written_by": "00bf268"} and (resumed.epoch, resumed.iteration) == (1, 7)
        resumed.fit(epochs=2)
    stopped_in = resumed.history["epochs"][-1]
    first_log = next(e for e in resumed.history["iterations"] if e["iteration"] > 27)  # its window began before 27
    assert first_log["iteration"] == 29 and math.isnan(first_log["grad_norm"])
    assert math.isnan(stopped_in["grad_norm"]) and math.isnan(stopped_in["clip_fraction"])
    later = [e for e in resumed.history["iterations"] if e["iteration"] > 29]
    assert later and later == [e for e in straight.history["iterations"] if e["iteration"] > 29]
    for trainer in (straight, resumed):  # the rest of the history as before the norms were recorded
        for entry in trainer.history["epochs"] + trainer.history["iterations"]:
            entry.pop("grad_norm", None), entry.pop("clip_fraction", None)
    assert_same_training(straight, resumed)


def test_the_state_of_a_trainer_round_trips_in_memory_and_through_a_file(tmp_path):
    first = lm_trainer(tmp_path / "a")
    first.fit(epochs=2, max_iters=9)
    state = first.state_dict()
    assert state["trainer"]["iteration"] == 9 and state["optimizer"]["class"] == "Adam"
    second = lm_trainer(tmp_path / "b", seed=3)
    second.load_state_dict(state)
    third = lm_trainer(tmp_path / "c", seed=4)
    checkpoint.save(tmp_path / "state.npz", state, {})
    third.load_state_dict(checkpoint.load(tmp_path / "state.npz", first.comm)[0])
    for t in (first, second, third):
        t.fit(epochs=2)
    assert_same_training(first, second)
    assert_same_training(first, third)


@pytest.mark.parametrize("craft, message", [
    (lambda meta: meta["trainer"].pop("sums"), "no trainer.sums in the checkpoint"),
    (lambda meta: meta.pop("generators"), "no generators in the checkpoint"),
    (lambda meta: meta["trainer"]["sums"].pop("window"), "no trainer.sums.window in the checkpoint"),
    (lambda meta: meta["trainer"].update(iteration=40), "trainer iteration 40 in the checkpoint, but an epoch of "
                                                         "this run has 20"),
    (lambda meta: meta["trainer"].update(epoch=-1), "trainer epoch -1 in the checkpoint is not a count"),
])
def test_a_crafted_checkpoint_is_refused_by_name_before_anything_changes(tmp_path, craft, message):
    lm_trainer(tmp_path).fit(epochs=1, max_iters=3)
    arrays, meta = load_npz(tmp_path / "last.npz")
    craft(meta)
    save_npz(tmp_path / "crafted.npz", arrays, meta)
    other = lm_trainer(tmp_path / "other", seed=4)
    with pytest.raises(ValueError, match="crafted.npz does not fit this run") as info:
        other.resume(tmp_path / "crafted.npz")
    assert message in str(info.value)
    assert (other.epoch, other.total_iterations, other.history["epochs"]) == (0, 0, [])


class NotASource:
    def __init__(self, batches):
        self.batches = batches


class ArrayLoss(L.Layer):
    def loss(self, xs, ts):
        return np.zeros(())


def test_the_trainer_names_a_mistaken_part_where_it_is_made():
    model = LSTMLM(V, 4, 4, seed=0)
    opt = SGD(0.1).setup(model)
    with pytest.raises(TypeError, match="batches must be a batch source .* a NotASource has no __len__, count"):
        Trainer(model, opt, NotASource([(TRAIN[:5], TRAIN[1:6])]))
    with pytest.raises(TypeError, match="evaluator .* has no name"):
        Trainer(model, opt, None, evaluators=[lambda model, comm: {"x": 1.0}])
    with pytest.raises(ValueError, match="two evaluators share a name"):
        Trainer(model, opt, None, evaluators=[Perplexity(VALID), Perplexity(VALID)])
    bare = ArrayLoss()
    bare.w = L.Linear(2, 2, seed=0)
    with pytest.raises(TypeError, match="Trainer.step: ArrayLoss.loss returned a ndarray, not a Variable"):
        Trainer(bare, SGD(0.1).setup(bare), None).step((TRAIN[:5], TRAIN[1:6]))


@pytest.mark.parametrize("extension", [lambda out: Checkpoint(out, "valid_perplexty"),
                                       lambda out: ReduceOnPlateau("valid_perplexty")])
def test_a_misspelled_monitor_is_refused_when_fit_starts(tmp_path, extension):
    trainer = lm_trainer(tmp_path, extensions=[extension(tmp_path)])
    with pytest.raises(ValueError, match=r"monitor 'valid_perplexty' is not a key of the epoch records "
                                         r"\(evaluated: valid_loss, valid_tokens, valid_perplexity"):
        trainer.fit(epochs=1)
    assert trainer.total_iterations == 0


class Scaled(LSTMLM):
    def loss(self, xs, ts):
        return super().loss(xs, ts) * np.float16(1024.0)  # a scaled loss: gradient norms far past 256


def test_a_float16_model_clipped_by_the_trainer_keeps_learning():
    """The squared norm summed in float16 overflowed past a norm of 256 and clipping zeroed every gradient."""
    model = Scaled(V, 8, 8, seed=0, dtype=np.float16)
    before = [p.data.copy() for p in model.params()]
    trainer = Trainer(model, SGD(0.1).setup(model), BPTTBatcher(TRAIN, 4, 5), clip=1.0)
    trainer.fit(epochs=1, max_iters=19)
    assert all(not np.array_equal(b, p.data) and np.isfinite(p.data).all() for b, p in zip(before, model.params()))
    norm = trainer.optimizer.hooks[0].norm
    assert norm.dtype == np.float32 and 256 < float(norm) < np.inf


class Toggling(LSTMLM):
    """Records the configuration each training step's loss sees."""

    def loss(self, xs, ts, ignore_label=None):
        if Config.enable_backprop:
            self.modes.append(Config.train)
        return super().loss(xs, ts, ignore_label=ignore_label)


class LeavesTestMode:
    """An evaluator that switches to test mode and never switches back."""

    name, main, keys, higher_is_better = "left", "x", ("x",), True

    def __call__(self, model, comm):
        core._settings.set(core._settings.get()._replace(train=False))  # as an unexited test_mode() leaves it
        return {"x": float(Config.train)}


def test_an_evaluator_that_leaves_test_mode_on_does_not_switch_training_to_test_mode():
    model = Toggling(V, 4, 4, seed=0)
    model.modes = []
    trainer = Trainer(model, SGD(0.1).setup(model), BPTTBatcher(TRAIN, 4, 5), evaluators=[LeavesTestMode()])
    trainer.fit(epochs=2)
    assert [r["left_x"] for r in trainer.history["epochs"]] == [0.0, 0.0]  # it did switch, inside its call
    assert len(model.modes) == 2 * len(trainer.batches) and all(model.modes) and Config.train


def test_the_trainer_records_the_gradient_norm_before_clipping_and_how_often_it_clipped():
    clip, log_every = 0.25, 4
    batches = BPTTBatcher(TRAIN, 4, 5, vocab_size=V)
    model = LSTMLM(V, 6, 6, seed=0)
    trainer = Trainer(model, SGD(lr=0.5).setup(model), batches, clip=clip, log_every=log_every)
    trainer.fit(epochs=2)
    model = LSTMLM(V, 6, 6, seed=0)  # the same run by hand, reading the hook's norm after every step
    hook = GradientClipping(clip)
    opt = SGD(lr=0.5).setup(model).add_hook(hook)
    norms = []
    for epoch in range(2):
        for xs, ts in batches.batches(epoch):
            loss = model.loss(xs, ts)
            loss.backward()
            loss.unchain_backward()
            opt.update()
            model.cleargrads()
            norms.append(float(hook.norm))
    norms = np.array(norms).reshape(2, -1)
    clipped = norms > clip
    assert 0 < clipped.mean() < 1  # clipping acted on some steps only: the fraction means something
    for record, epoch_norms, epoch_clipped in zip(trainer.history["epochs"], norms, clipped):
        assert record["grad_norm"] == pytest.approx(epoch_norms.mean(), rel=1e-6)
        assert record["clip_fraction"] == epoch_clipped.mean()
    for entry in trainer.history["iterations"]:
        window = slice(entry["iteration"] - log_every, entry["iteration"])
        assert entry["grad_norm"] == pytest.approx(norms.ravel()[window].mean(), rel=1e-6)
        assert entry["clip_fraction"] == clipped.ravel()[window].mean()
    unclipped = Trainer(model, SGD(0.1).setup(model), batches, log_every=log_every)
    unclipped.fit(epochs=1)
    assert "grad_norm" not in unclipped.history["epochs"][0] and "grad_norm" not in unclipped.history["iterations"][0]
    with pytest.raises(ValueError, match="monitor 'grad_norm' is not a key"):
        unclipped.check_record_key("Checkpoint", "monitor", "grad_norm")
    trainer.check_record_key("Checkpoint", "monitor", "clip_fraction")


def _png_width(path):
    with open(path, "rb") as f:
        return struct.unpack(">I", f.read(24)[16:20])[0]  # IHDR's width


def test_the_history_plot_has_a_gradient_norm_panel_when_the_trainer_clips(tmp_path):
    clipped = lm_trainer(tmp_path / "clipped", model="lstm", optimizer="sgd", extensions=[History(tmp_path / "a")])
    clipped.fit(epochs=1)
    plot_history(clipped.history, tmp_path / "with.png", clipped.evaluators)
    for record in clipped.history["epochs"] + clipped.history["iterations"]:
        record.pop("grad_norm"), record.pop("clip_fraction")
    plot_history(clipped.history, tmp_path / "without.png", clipped.evaluators)
    assert _png_width(tmp_path / "with.png") == 3 * 450 and _png_width(tmp_path / "without.png") == 2 * 450
    assert _png_width(tmp_path / "a" / "history.png") == 3 * 450


def test_log_lines_show_the_gradient_norm_and_the_fraction_clipped(tmp_path):
    lines = []
    trainer = lm_trainer(tmp_path, model="lstm", optimizer="sgd", extensions=[LogReport(lines.append)])
    trainer.fit(epochs=1)
    record = trainer.history["epochs"][0]
    assert f"grad norm {record['grad_norm']:.4g} (clipped {100 * record['clip_fraction']:.0f} %)" in lines[0]


class Stateless(L.Layer):
    def __init__(self, stateful):
        super().__init__()
        self.embed = L.Embedding(V, 4, seed=0)
        self.lstm = L.LSTM(4, 4, num_layers=2, stateful=stateful, seed=0)
        self.fc = L.Linear(4, V, seed=0)

    def loss(self, xs, ts, ignore_label=None):
        return F.softmax_cross_entropy(self.fc(self.lstm(self.embed(xs))), ts, ignore_label=ignore_label)


def test_bptt_streams_and_recurrent_layers_that_forget_their_state_warn_naming_the_layers():
    model = Stateless(stateful=False)
    with pytest.warns(UserWarning, match=r"BPTTBatcher carries the state .* no recurrent layer of the Stateless is "
                                         r"stateful: lstm \(LSTM\) starts every call from zeros. Build it with "
                                         r"stateful=True"):
        Trainer(model, SGD(0.1).setup(model), BPTTBatcher(TRAIN, 4, 5))
    bare = L.GRU(V, 3, seed=0)
    bare.loss = lambda xs, ts: F.sum(bare(xs))
    with pytest.warns(UserWarning, match=r"\(the model itself\) \(GRU\)"):
        Trainer(bare, SGD(0.1).setup(bare), BPTTBatcher(TRAIN, 4, 5))
    stateful = Stateless(stateful=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Trainer(stateful, SGD(0.1).setup(stateful), BPTTBatcher(TRAIN, 4, 5))
        bigram = Bigram()
        Trainer(bigram, SGD(0.1).setup(bigram), BPTTBatcher(TRAIN, 4, 5))  # no recurrent layer: nothing to carry
        seq = PeekySeq2seq(13, 8, 24, seed=0)  # stateless layers and independent examples: as it should be
        Trainer(seq, SGD(0.1).setup(seq), ShuffledBatcher((ADDITION.x_train, ADDITION.t_train), 40, vocab_size=13))


def test_a_model_without_loss_is_refused_when_the_trainer_is_built():
    model = L.Linear(3, 3, seed=0)
    with pytest.raises(TypeError, match=r"Trainer: the Linear has no loss\(\*batch\) method"):
        Trainer(model, SGD(0.1).setup(model), BPTTBatcher(TRAIN, 4, 5))


def _word_language_model_evaluate(model, corpus, eval_batch_size, bptt):
    """PyTorch's word_language_model ``batchify`` and ``evaluate``, transcribed (time-major, as there)."""
    nbatch = len(corpus) // eval_batch_size
    source = corpus[:nbatch * eval_batch_size].reshape(eval_batch_size, -1).T  # data.view(bsz, -1).t()
    total_loss = 0.0
    model.reset_state()  # hidden = model.init_hidden(eval_batch_size)
    for i in range(0, source.shape[0] - 1, bptt):
        seq_len = min(bptt, len(source) - 1 - i)
        data, targets = source[i:i + seq_len], source[i + 1:i + 1 + seq_len]
        with core.no_grad(), core.test_mode():
            loss = model.loss(np.ascontiguousarray(data.T), np.ascontiguousarray(targets.T))
        total_loss += len(data) * float(loss.data)
    return total_loss / (len(source) - 1)


def test_perplexity_with_the_pytorch_convention_is_word_language_models_evaluate():
    model = BetterLSTMLM(V, 6, 6, dropout=0.4, seed=0)
    for corpus, n, t in ((VALID, 10, 35), (VALID, 3, 4), (VALID[:37], 4, 3), (VALID[:37], 1, 50), (VALID[:4], 2, 1)):
        expected = _word_language_model_evaluate(model, corpus, n, t)
        result = perplexity(model, corpus, n, t, convention="pytorch")
        assert result["tokens"] == n * (len(corpus) // n - 1)
        assert result["loss"] == pytest.approx(expected, rel=1e-6)
        assert result["perplexity"] == pytest.approx(math.exp(expected), rel=1e-6)
        assert Perplexity(corpus, n, t, convention="pytorch")(model) == result
    assert perplexity(model, VALID, 3, 4, convention="pytorch")["loss"] != perplexity(model, VALID, 3, 4)["loss"]
    with pytest.raises(ValueError, match="perplexity: convention 'pytorch' cuts 5 tokens into 3 streams of 1"):
        perplexity(model, VALID[:5], 3, 4, convention="pytorch")
    with pytest.raises(ValueError, match="Perplexity: convention must be one of all, pytorch, got 'textbook'"):
        Perplexity(VALID, convention="textbook")

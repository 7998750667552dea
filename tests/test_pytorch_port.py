"""docs/pytorch.md's port of PyTorch's word_language_model, run as written at its toy size, trains exactly as
the loop of main.py written out by hand (PyTorch itself is no test dependency). The page's blocks run in
order in one namespace, but those marked as needing PyTorch."""
import warnings
from pathlib import Path

import numpy as np
import pytest
from test_docs import python_blocks

from tinygrad_rnn import core
from tinygrad_rnn.data import ptb
from tinygrad_rnn.optimizers import SGD, GradientClipping

PAGE = Path(__file__).resolve().parent.parent / "docs" / "pytorch.md"
WALKTHROUGH = "## The word_language_model port, step by step"


def _runnable_blocks():
    """The page's python blocks that run without PyTorch, in order; the walkthrough's are all among them."""
    text = PAGE.read_text()
    start = text.index(WALKTHROUGH)
    first, last = (text.count("\n", 0, i) + 1 for i in (start, text.index("\n## ", start + len(WALKTHROUGH))))
    blocks = python_blocks(PAGE)
    walkthrough = [reason for where, _, reason in blocks if first <= int(where.rsplit(":", 1)[1]) <= last]
    assert walkthrough and not any(walkthrough), "every block of the walkthrough runs without PyTorch"
    return [code for _, code, reason in blocks if reason is None]


@pytest.fixture(scope="module")
def port(tmp_path_factory):
    """The namespace the page's blocks leave, run in a folder of their own (they write a checkpoint), any
    warning an error."""
    if any(ptb.locate(split, download=False) is None for split in ("train", "valid", "test")):
        pytest.skip("PTB not found: set TINYGRAD_RNN_DATA to a folder holding ptb/ptb.{train,valid,test}.txt")
    with pytest.MonkeyPatch.context() as patch, warnings.catch_warnings():
        patch.chdir(tmp_path_factory.mktemp("port"))
        warnings.simplefilter("error")  # a trap the trainer warns about (a stateless LSTM) fails the page
        namespace = {}
        for code in _runnable_blocks():
            exec(compile(code, str(PAGE), "exec"), namespace)
    return namespace


def _batchify(data, bsz):
    """main.py's batchify: (len // bsz, bsz), time-major."""
    nbatch = len(data) // bsz
    return data[:nbatch * bsz].reshape(bsz, -1).T


def _window(source, i, bptt):
    """main.py's get_batch, turned batch-major for our loss: (N, seq_len) inputs and targets."""
    seq_len = min(bptt, len(source) - 1 - i)
    return np.ascontiguousarray(source[i:i + seq_len].T), np.ascontiguousarray(source[i + 1:i + 1 + seq_len].T)


def _evaluate(model, source, bptt):
    """main.py's evaluate: the mean loss per target, len(data) * the window's mean summed over windows."""
    total_loss = 0.0
    model.reset_state()  # hidden = model.init_hidden(eval_batch_size)
    with core.no_grad(), core.test_mode():  # model.eval(), torch.no_grad()
        for i in range(0, source.shape[0] - 1, bptt):
            data, targets = _window(source, i, bptt)
            total_loss += data.shape[1] * float(model.loss(data, targets).data)
    return total_loss / (len(source) - 1)


def _main_py(ns):
    """main.py's training, written out: the same model class and settings as the page, no trainer."""
    model = ns["RNNModel"](ns["ntokens"], ns["emsize"], ns["nhid"], ns["nlayers"], ns["dropout"], seed=0)
    clipping = GradientClipping(ns["clip"])
    opt = SGD(lr=ns["lr"]).setup(model).add_hook(clipping)  # clip_grad_norm_, then p -= lr * grad
    train_data = _batchify(ns["train"], ns["batch_size"])
    val_data = _batchify(ns["valid"], ns["eval_batch_size"])
    test_data = _batchify(ns["test"], ns["eval_batch_size"])
    best_val_loss, best, val_losses, lrs = None, None, [], []
    for _ in range(ns["epochs"]):
        lrs.append(opt.lr)
        model.reset_state()  # hidden = model.init_hidden(args.batch_size)
        for i in range(0, train_data.shape[0] - 1, ns["bptt"]):
            data, targets = _window(train_data, i, ns["bptt"])
            loss = model.loss(data, targets)
            loss.backward()
            loss.unchain_backward()  # repackage_hidden
            opt.update()
            model.cleargrads()
        val_loss = _evaluate(model, val_data, ns["bptt"])
        val_losses.append(val_loss)
        if best_val_loss is None or val_loss < best_val_loss:
            best_val_loss, best = val_loss, {k: v.copy() for k, v in model.state_dict().items()}
        else:
            opt.lr /= 4.0
    model.load_state_dict(best)
    return model, val_losses, lrs, _evaluate(model, test_data, ns["bptt"])


def test_the_pages_port_trains_as_main_py_written_out_by_hand(port):
    trainer = port["trainer"]
    assert [r["epoch"] for r in trainer.history["epochs"]] == list(range(1, port["epochs"] + 1))
    model, val_losses, lrs, test_loss = _main_py(port)
    records = trainer.history["epochs"]
    assert [r["lr"] for r in records] == lrs and len(set(lrs)) > 1  # the schedule acted: its rule is checked
    assert [r["valid_loss"] for r in records] == pytest.approx(val_losses, rel=1e-6)
    for (name, p), (_, q) in zip(port["model"].namedparams(), model.namedparams()):  # the best epoch's, both
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)
    assert port["perplexity"](port["model"], port["test"], port["eval_batch_size"], port["bptt"],
                              convention="pytorch")["loss"] == pytest.approx(test_loss, rel=1e-6)
    assert all(0 < r["clip_fraction"] <= 1 and r["grad_norm"] > 0 for r in records)


def test_the_port_round_trips_pytorchs_layout(port):
    for (name, p), (_, q) in zip(port["model"].namedparams(), port["ported"].namedparams()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)
    assert {"encoder.weight", "rnn.weight_ih_l1", "rnn.bias_hh_l1", "decoder.bias"} <= set(port["arrays"])

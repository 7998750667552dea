"""Language-model training: perplexity evaluation and a truncated-BPTT trainer with exact resume.

Usage::

    opt = SGD(lr=20.0).setup(model)
    trainer = LMTrainer(model, opt, batch_size=20, time_size=35, max_grad_norm=0.25,
                        schedule=ReduceOnPlateau(opt, factor=0.25), out_dir="runs/lstm")
    trainer.fit(train_ids, valid_ids, epochs=4)
    eval_perplexity(model, test_ids)

``out_dir`` receives ``history.json`` and ``history.png`` (after every epoch), ``last.npz``
(the latest state, for ``LMTrainer.resume``) and ``best.npz`` (the parameters with the lowest
validation perplexity so far). Every file is written to a temporary file and renamed into place.
"""
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tinygrad_rnn import functions as F
from tinygrad_rnn.backend import get_array_module
from tinygrad_rnn.core import no_grad, test_mode
from tinygrad_rnn.data.batching import BPTTBatcher
from tinygrad_rnn.layers import Layer
from tinygrad_rnn.optimizers import clip_grads
from tinygrad_rnn.serialization import load_npz, save_npz

CHECKPOINT_FORMAT = "tinygrad_rnn.lm_checkpoint/1"


def _device(model):
    """``"gpu"`` when the model's parameters are CuPy arrays, else ``"cpu"``."""
    p = next(model.params(), None)
    return "cpu" if p is None or get_array_module(p) is np else "gpu"


def eval_perplexity(model, corpus, batch_size=10, time_size=35):
    """Perplexity of a language model on a token stream, read as truncated-BPTT batches.

    Runs under ``no_grad()`` and ``test_mode()`` (no graph, no dropout) and resets the model's
    state before and after, so evaluation leaves training state untouched.

    Args:
        model (Layer): maps (N, T) int ids to (N, T, V) scores; has ``reset_state()``.
        corpus (ndarray): (L,) int ids.
        batch_size (int): N parallel streams.
        time_size (int): T steps per window.
    Returns:
        float: exp of the mean cross-entropy over all ``(L - 1) // (N * T)`` windows.
    Raises:
        ValueError: the corpus is too short for one batch.
    """
    batches = BPTTBatcher(corpus, batch_size, time_size, device=_device(model))
    model.reset_state()
    total = 0.0
    with no_grad(), test_mode():
        for xs, ts in batches:
            total += float(F.softmax_cross_entropy(model(xs), ts).data)
    model.reset_state()
    return math.exp(total / len(batches))


def generators(model):
    """Every NumPy Generator held by the model's layers (dropout masks, lazy initialization).

    Args:
        model (Layer): the model.
    Returns:
        dict[str, numpy.random.Generator]: by attribute path (``"dropout1/rng"``), each once.
    """
    found, seen = {}, set()

    def walk(layer, prefix):
        for name, value in vars(layer).items():
            if id(value) in seen:
                continue
            if isinstance(value, np.random.Generator):
                seen.add(id(value))
                found[prefix + name] = value
            elif isinstance(value, Layer):
                seen.add(id(value))
                walk(value, f"{prefix}{name}/")

    seen.add(id(model))
    walk(model, "")
    return found


def _write_atomic(path, write):
    """Call ``write(tmp_path)`` on a temporary file next to ``path``, then rename it into place."""
    path = Path(path)
    # a plain open (not mkstemp) so that the file gets the usual umask permissions, not 0600
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def plot_history(history, path):
    """Draw train and validation perplexity per epoch (log scale) into a PNG file.

    Args:
        history (dict): ``LMTrainer.history``.
        path (str | Path): the PNG file (written atomically).
    """
    from matplotlib.figure import Figure  # the object API: no pyplot, no global backend switch

    fig = Figure(figsize=(7, 4.5), dpi=100)
    ax = fig.add_subplot()
    per_epoch = history["iterations_per_epoch"]
    its = history["iterations"]
    if its:
        ax.plot([r["iteration"] / per_epoch for r in its], [r["train_perplexity"] for r in its],
                color="tab:blue", alpha=0.3, linewidth=1, label="train (running)")
    eps = history["epochs"]
    ax.plot([r["iteration"] / per_epoch for r in eps], [r["train_perplexity"] for r in eps],
            "o-", color="tab:blue", label="train (epoch mean)")
    valid = [r for r in eps if r["valid_perplexity"] is not None]
    if valid:
        ax.plot([r["iteration"] / per_epoch for r in valid], [r["valid_perplexity"] for r in valid],
                "s-", color="tab:orange", label="validation")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("perplexity")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    _write_atomic(path, lambda tmp: fig.savefig(tmp, format="png"))


class LMTrainer:
    """Truncated-BPTT training of a language model, with evaluation, schedules and checkpoints.

    One iteration: forward a (N, T) batch, ``softmax_cross_entropy`` against the next tokens,
    ``loss.backward()``, ``loss.unchain_backward()`` (the hidden state is carried on, its
    graph is cut), clip, update, clear gradients. The model's state is reset only at the
    start of each epoch.

    Checkpoints hold the model's parameters, the optimizer's state, the schedule's state, the
    epoch and iteration counters, the history and the state of every NumPy Generator of the
    model's layers, so that ``resume`` continues exactly where the run stopped: 2 epochs in
    one go and 1 + resume + 1 give the same parameters bit for bit. (A run stopped by
    ``max_iters`` inside an epoch resumes with a fresh hidden state, since the carried state
    is not saved.)

    Args:
        model (Layer): maps (N, T) int ids to (N, T, V) scores; stateful with ``reset_state()``.
        optimizer (Optimizer): already ``setup(model)``.
        batch_size (int): N.
        time_size (int): T.
        max_grad_norm (float, optional): clip the global gradient norm to this.
        schedule (optional): called as ``schedule.step(valid_perplexity)`` after each complete
            epoch that was evaluated; needs ``state_dict()``/``load_state_dict()``
            (e.g. ``ReduceOnPlateau``).
        eval_batch_size (int): N for validation.
        eval_time_size (int): T for validation.
        out_dir (str | Path, optional): where history, plot and checkpoints go; nothing is
            written when None.
        progress (bool, optional): show a tqdm bar; None shows it only when stderr is a terminal.
        log (callable, optional): receives one summary line per epoch (e.g. ``print``).
        log_every (int): record the running train perplexity every this many iterations.
        meta (dict, optional): JSON-ready information stored in every checkpoint under
            ``"run"`` (model kind and sizes, vocabulary), e.g. to rebuild the model.
    """

    def __init__(self, model, optimizer, *, batch_size, time_size, max_grad_norm=None, schedule=None,
                 eval_batch_size=10, eval_time_size=35, out_dir=None, progress=None, log=None, log_every=20,
                 meta=None):
        self.model = model
        self.optimizer = optimizer
        self.batch_size, self.time_size = batch_size, time_size
        self.max_grad_norm = max_grad_norm
        self.schedule = schedule
        self.eval_batch_size, self.eval_time_size = eval_batch_size, eval_time_size
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.log = log
        self.log_every = log_every
        self.meta = meta or {}
        self.epoch = 0  # epochs completed
        self.iteration = 0  # iterations done in the current epoch
        self.total_iterations = 0
        self.best_valid = None
        self.history = {"iterations_per_epoch": None, "epochs": [], "iterations": []}

    def step(self, xs, ts):
        """One training iteration on one batch.

        Args:
            xs (ndarray): (N, T) int32 ids on the model's device.
            ts (ndarray): (N, T) int32 next-token ids.
        Returns:
            ndarray: () the loss (on the model's device, not synchronized).
        """
        loss = F.softmax_cross_entropy(self.model(xs), ts)
        loss.backward()
        loss.unchain_backward()
        if self.max_grad_norm is not None:
            clip_grads(self.model.params(), self.max_grad_norm)
        self.optimizer.update()
        self.model.cleargrads()
        return loss.data

    def fit(self, train, valid=None, epochs=1, max_iters=None):
        """Train until ``epochs`` epochs (counted from the first run, resumes included) are done.

        Args:
            train (ndarray): (L,) int ids.
            valid (ndarray, optional): (L',) int ids, evaluated after each epoch (and after a
                stop by ``max_iters``).
            epochs (int): total number of epochs.
            max_iters (int, optional): stop once this many iterations (in total) are done.
        Returns:
            dict: ``self.history``: ``epochs`` (one record per epoch or partial epoch: epoch,
            iteration, iterations, train_perplexity, valid_perplexity, lr, seconds,
            eval_seconds, words_per_second) and ``iterations`` (running train perplexity
            every ``log_every`` iterations).
        """
        batches = BPTTBatcher(train, self.batch_size, self.time_size, device=_device(self.model))
        self.history["iterations_per_epoch"] = len(batches)
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        self.model.cleargrads()
        while self.epoch < epochs and (max_iters is None or self.total_iterations < max_iters):
            budget = len(batches) if max_iters is None else max_iters - self.total_iterations
            self._run_epoch(batches, epochs, budget, valid)
        return self.history

    def _run_epoch(self, batches, epochs, budget, valid):
        start = self.iteration
        if start == 0:
            self.model.reset_state()
        lr = self.optimizer.lr
        epoch_sum = window_sum = 0.0
        window = 0
        bar = tqdm(total=len(batches), initial=start, desc=f"epoch {self.epoch + 1}/{epochs}",
                   disable=not self.progress, leave=False, dynamic_ncols=True)
        began = time.perf_counter()
        for xs, ts in batches.iterate(start):
            loss = self.step(xs, ts)
            epoch_sum = epoch_sum + loss  # device scalars: no synchronization per iteration
            window_sum = window_sum + loss
            window += 1
            self.iteration += 1
            self.total_iterations += 1
            bar.update()
            if window == self.log_every:
                ppl = math.exp(float(window_sum) / window)
                self.history["iterations"].append({"iteration": self.total_iterations, "epoch": self.epoch + 1,
                                                   "train_perplexity": ppl})
                bar.set_postfix(loss=f"{math.log(ppl):.3f}", ppl=f"{ppl:.1f}")
                window_sum, window = 0.0, 0
            if self.iteration - start == budget:
                break
        seconds = time.perf_counter() - began
        bar.close()
        done = self.iteration - start
        record = {"epoch": self.epoch + 1, "iteration": self.total_iterations, "iterations": done,
                  "train_perplexity": math.exp(float(epoch_sum) / done), "valid_perplexity": None, "lr": lr,
                  "seconds": seconds, "eval_seconds": 0.0,
                  "words_per_second": done * self.batch_size * self.time_size / seconds}
        complete = self.iteration == len(batches)
        if complete:
            self.epoch += 1
            self.iteration = 0
        self._close_epoch(record, complete, valid, epochs)

    def _close_epoch(self, record, complete, valid, epochs):
        """Evaluate, step the schedule, log, and write history and checkpoints after an epoch."""
        if valid is not None:
            began = time.perf_counter()
            record["valid_perplexity"] = eval_perplexity(self.model, valid, self.eval_batch_size, self.eval_time_size)
            record["eval_seconds"] = time.perf_counter() - began
        self.history["epochs"].append(record)
        valid_ppl = record["valid_perplexity"]
        improved = valid_ppl is not None and (self.best_valid is None or valid_ppl < self.best_valid)
        if improved:
            self.best_valid = valid_ppl
        if complete and self.schedule is not None and valid_ppl is not None:
            self.schedule.step(valid_ppl)
        if self.log is not None:
            valid_text = "" if valid_ppl is None else f"  valid ppl {valid_ppl:.2f}"
            self.log(f"epoch {record['epoch']}/{epochs} ({record['iterations']} it)  train ppl "
                     f"{record['train_perplexity']:.2f}{valid_text}  lr {record['lr']:g}  {record['seconds']:.1f} s  "
                     f"{record['words_per_second']:.0f} words/s")
        if self.out_dir is not None:
            if improved:
                self.save_checkpoint(self.out_dir / "best.npz")
            self.save_checkpoint(self.out_dir / "last.npz")
            self.save_history()

    def save_history(self):
        """Write ``history.json`` and ``history.png`` into ``out_dir`` (atomically)."""
        text = json.dumps(self.history, indent=1)
        _write_atomic(self.out_dir / "history.json", lambda tmp: Path(tmp).write_text(text))
        plot_history(self.history, self.out_dir / "history.png")

    def save_checkpoint(self, path):
        """Write everything ``resume`` needs into one ``.npz`` file (atomically, no pickle).

        Args:
            path (str | Path): the file.
        """
        arrays = {f"model/{k}": v for k, v in self.model.state_dict().items()}
        arrays.update({f"optimizer/{k}": v for k, v in self.optimizer.state_dict().items()})
        meta = {
            "format": CHECKPOINT_FORMAT,
            "epoch": self.epoch, "iteration": self.iteration, "total_iterations": self.total_iterations,
            "best_valid": self.best_valid,
            "schedule": None if self.schedule is None else self.schedule.state_dict(),
            "generators": {name: g.bit_generator.state for name, g in generators(self.model).items()},
            "history": self.history,
            "run": self.meta,
        }
        save_npz(path, arrays, meta)

    def resume(self, path):
        """Restore a checkpoint written by ``save_checkpoint``; ``fit`` then continues from it.

        Args:
            path (str | Path): the checkpoint.
        Returns:
            dict: the checkpoint's ``"run"`` metadata.
        Raises:
            ValueError: not a checkpoint of this format, or parameter names/shapes differ.
            KeyError: the model holds a Generator the checkpoint lacks.
        """
        arrays, meta = load_npz(path)
        if meta is None or meta.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"LMTrainer.resume: {path} is not a {CHECKPOINT_FORMAT} checkpoint")
        self.model.load_state_dict(checkpoint_arrays(arrays, "model"))
        self.optimizer.load_state_dict(checkpoint_arrays(arrays, "optimizer"))
        if self.schedule is not None:
            self.schedule.load_state_dict(meta["schedule"])
        for name, g in generators(self.model).items():
            g.bit_generator.state = meta["generators"][name]
        self.epoch, self.iteration = meta["epoch"], meta["iteration"]
        self.total_iterations = meta["total_iterations"]
        self.best_valid = meta["best_valid"]
        self.history = meta["history"]
        return meta["run"]


def checkpoint_arrays(arrays, part):
    """The arrays of one part of a checkpoint, with the part's prefix removed.

    Args:
        arrays (dict): as returned by ``serialization.load_npz`` for a checkpoint.
        part (str): ``"model"`` or ``"optimizer"``.
    Returns:
        dict[str, ndarray]: e.g. ``{"lstm/Wx": ...}`` for ``part="model"``.
    """
    prefix = f"{part}/"
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}

"""Training loops: a truncated-BPTT language-model trainer (``LMTrainer``) and a supervised
sequence trainer (``SeqTrainer``: seq2seq, captioning), both with history plots and exact resume.

Usage::

    opt = SGD(lr=20.0).setup(model)
    trainer = LMTrainer(model, opt, batch_size=20, time_size=35, max_grad_norm=0.25,
                        schedule=ReduceOnPlateau(opt, factor=0.25), out_dir="runs/lstm")
    trainer.fit(train_ids, valid_ids, epochs=4)
    eval_perplexity(model, test_ids)

``out_dir`` receives ``history.json`` and ``history.png`` (after every epoch), ``last.npz``
(the latest state, for ``LMTrainer.resume``) and ``best.npz`` (the parameters with the lowest
validation perplexity so far). Every file is written to a temporary file and renamed into place.

``SeqTrainer`` trains any model with ``model(xs, ts) -> loss`` and
``model.generate(xs, start_id, length) -> ids`` on shuffled minibatches and scores the
held-out set by exact match of whole decoded answers after each epoch::

    trainer = SeqTrainer(model, Adam(1e-3).setup(model), batch_size=128, max_grad_norm=5.0,
                         out_dir="runs/addition")
    trainer.fit(data.x_train, data.t_train, data.x_test, data.t_test, epochs=25)
"""
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tinygrad_rnn import backend
from tinygrad_rnn import functions as F
from tinygrad_rnn.backend import get_array_module
from tinygrad_rnn.core import no_grad, test_mode
from tinygrad_rnn.data.batching import BPTTBatcher
from tinygrad_rnn.layers import Layer
from tinygrad_rnn.optimizers import clip_grads
from tinygrad_rnn.serialization import atomic_write, load_npz, save_npz

CHECKPOINT_FORMAT = "tinygrad_rnn.lm_checkpoint/1"


def _device(model):
    """``"gpu"`` when the model's parameters are CuPy arrays, else ``"cpu"``."""
    p = next(model.params(), None)
    return "cpu" if p is None or get_array_module(p) is np else "gpu"


def eval_perplexity(model, corpus, batch_size=10, time_size=35):
    """Perplexity of a language model on a token stream, read as truncated-BPTT batches.

    Runs under ``no_grad()`` and ``test_mode()`` (no graph, no dropout), from a fresh state;
    the state the model carried before is restored afterwards, so a training run evaluated
    between epochs continues its streams undisturbed.

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
    carried = model.carried_state()
    model.reset_state()
    total = 0.0
    with no_grad(), test_mode():
        for xs, ts in batches:
            total += float(F.softmax_cross_entropy(model(xs), ts).data)
    model.load_carried_state(carried)
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
    with atomic_write(path) as f:
        fig.savefig(f, format="png")


class _Trainer:
    """What both trainers share: the end of an iteration, history files and exact checkpoints.

    Subclasses set ``checkpoint_format`` and ``plot``, hold ``model``, ``optimizer``,
    ``max_grad_norm``, ``out_dir``, ``meta``, ``epoch``, ``total_iterations`` and ``history``,
    and add their own resumable state through ``_extra_state`` / ``_load_extra_state``.
    """

    checkpoint_format = None
    plot = None

    def _update(self, loss):
        """Backward, clip, update, clear: one iteration after its forward pass.

        Args:
            loss (Variable): () the iteration's loss.
        Returns:
            ndarray: () the loss (on the model's device, not synchronized).
        """
        loss.backward()
        loss.unchain_backward()  # a carried state must not keep this graph alive
        if self.max_grad_norm is not None:
            clip_grads(self.model.params(), self.max_grad_norm)
        self.optimizer.update()
        self.model.cleargrads()
        return loss.data

    def save_history(self):
        """Write ``history.json`` and ``history.png`` into ``out_dir`` (atomically)."""
        with atomic_write(self.out_dir / "history.json", "w") as f:
            json.dump(self.history, f, indent=1)
        self.plot(self.history, self.out_dir / "history.png")

    def _extra_state(self):
        return {}

    def _load_extra_state(self, meta):
        pass

    def save_checkpoint(self, path):
        """Write everything ``resume`` needs into one ``.npz`` file (atomically, no pickle).

        Args:
            path (str | Path): the file.
        """
        arrays = {f"model/{k}": v for k, v in self.model.state_dict().items()}
        arrays.update({f"optimizer/{k}": v for k, v in self.optimizer.state_dict().items()})
        arrays.update({f"carried/{k}": v for k, v in self.model.carried_state().items()})
        meta = {
            "format": self.checkpoint_format,
            "epoch": self.epoch, "total_iterations": self.total_iterations,
            "generators": {name: g.bit_generator.state for name, g in generators(self.model).items()},
            "history": self.history,
            "run": self.meta,
            **self._extra_state(),
        }
        save_npz(path, arrays, meta)

    def resume(self, path):
        """Restore a checkpoint written by ``save_checkpoint``; ``fit`` then continues from it.

        Args:
            path (str | Path): the checkpoint.
        Returns:
            dict: the checkpoint's ``"run"`` metadata.
        Raises:
            ValueError: not a checkpoint of this trainer, or parameter names/shapes differ.
            KeyError: the model holds a Generator the checkpoint lacks.
        """
        arrays, meta = load_npz(path)
        if meta is None or meta.get("format") != self.checkpoint_format:
            raise ValueError(f"{type(self).__name__}.resume: {path} is not a {self.checkpoint_format} checkpoint")
        self.model.load_state_dict(checkpoint_arrays(arrays, "model"))
        self.model.load_carried_state(checkpoint_arrays(arrays, "carried"))
        self.optimizer.load_state_dict(checkpoint_arrays(arrays, "optimizer"))
        for name, g in generators(self.model).items():
            g.bit_generator.state = meta["generators"][name]
        self.epoch, self.total_iterations = meta["epoch"], meta["total_iterations"]
        self.history = meta["history"]
        self._load_extra_state(meta)
        return meta["run"]


class LMTrainer(_Trainer):
    """Truncated-BPTT training of a language model, with evaluation, schedules and checkpoints.

    One iteration: forward a (N, T) batch, ``softmax_cross_entropy`` against the next tokens,
    ``loss.backward()``, ``loss.unchain_backward()`` (the hidden state is carried on, its
    graph is cut), clip, update, clear gradients. As in the classic textbook trainer, the
    state is reset only when training starts: each epoch continues the streams where the last
    one stopped (see ``BPTTBatcher``), which cuts the text at new places every epoch (on PTB
    with the classic LSTMLM this lowers test perplexity by about 5).

    Checkpoints hold the model's parameters and carried state, the optimizer's state, the
    schedule's state, the epoch and iteration counters, the history and the state of every
    NumPy Generator of the model's layers, so that ``resume`` continues exactly where the run
    stopped, also inside an epoch: 2 epochs in one go and 1 + resume + 1 give the same
    parameters bit for bit.

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

    checkpoint_format = CHECKPOINT_FORMAT
    plot = staticmethod(plot_history)

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
        return self._update(F.softmax_cross_entropy(self.model(xs), ts))

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
        if self.total_iterations == 0:
            self.model.reset_state()
        lr = self.optimizer.lr
        epoch_sum = window_sum = 0.0
        window = 0
        bar = tqdm(total=len(batches), initial=start, desc=f"epoch {self.epoch + 1}/{epochs}",
                   disable=not self.progress, leave=False, dynamic_ncols=True)
        began = time.perf_counter()
        for xs, ts in batches.iterate(self.epoch, start):
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

    def _extra_state(self):
        return {"iteration": self.iteration, "best_valid": self.best_valid,
                "schedule": None if self.schedule is None else self.schedule.state_dict()}

    def _load_extra_state(self, meta):
        self.iteration, self.best_valid = meta["iteration"], meta["best_valid"]
        if self.schedule is not None:
            self.schedule.load_state_dict(meta["schedule"])


def checkpoint_arrays(arrays, part):
    """The arrays of one part of a checkpoint, with the part's prefix removed.

    Args:
        arrays (dict): as returned by ``serialization.load_npz`` for a checkpoint.
        part (str): ``"model"``, ``"optimizer"`` or ``"carried"``.
    Returns:
        dict[str, ndarray]: e.g. ``{"lstm/Wx": ...}`` for ``part="model"``.
    """
    prefix = f"{part}/"
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


SEQ_CHECKPOINT_FORMAT = "tinygrad_rnn.seq_checkpoint/1"


def _start_id(ts, where):
    """The start token shared by every row of ``ts[:, 0]``."""
    first = backend.as_numpy(ts[:, 0])
    if first.size and (first != first[0]).any():
        raise ValueError(f"{where}: ts[:, 0] must hold one start token, got {sorted(set(first.tolist()))}")
    return int(first[0])


def exact_match(model, xs, ts, batch_size=1000, ignore_id=None, beam_width=1):
    """Fraction of examples whose whole decoded answer is right.

    Each batch is decoded with ``model.generate(xs, start_id, Ta - 1)`` (greedy for
    ``beam_width`` 1) and compared with ``ts[:, 1:]`` position by position.

    Args:
        model: has ``generate(xs, start_id, length, beam_width=...)`` -> (N, length) ids.
        xs (ndarray): (N, ...) inputs, on the model's device.
        ts (ndarray): (N, Ta) int answers; ``ts[:, 0]`` is the start token (the same in every row).
        batch_size (int): examples decoded at once.
        ignore_id (int, optional): target positions holding it are not compared (padding
            after an end token).
        beam_width (int): passed to ``generate``.
    Returns:
        float: in [0, 1].
    Raises:
        ValueError: ``ts[:, 0]`` is not constant.
    """
    start = _start_id(ts, "exact_match")
    hits = 0
    for i in range(0, len(xs), batch_size):
        target = backend.as_numpy(ts[i:i + batch_size, 1:])
        ids = backend.as_numpy(model.generate(xs[i:i + batch_size], start, target.shape[1], beam_width=beam_width))
        right = ids == target
        if ignore_id is not None:
            right |= target == ignore_id
        hits += int(right.all(axis=1).sum())
    return hits / len(xs)


def plot_seq_history(history, path):
    """Draw held-out accuracy and training loss per epoch into a PNG file (two panels).

    Args:
        history (dict): ``SeqTrainer.history``.
        path (str | Path): the PNG file (written atomically).
    """
    from matplotlib.figure import Figure  # the object API: no pyplot, no global backend switch

    fig = Figure(figsize=(9, 4), dpi=100)
    acc_ax, loss_ax = fig.subplots(1, 2)
    eps = history["epochs"]
    scored = [r for r in eps if r["accuracy"] is not None]
    acc_ax.plot([r["epoch"] for r in scored], [100 * r["accuracy"] for r in scored], "o-", color="tab:orange")
    acc_ax.set_ylim(-2, 102)
    acc_ax.set_ylabel("held-out exact match (%)")
    per_epoch = history["iterations_per_epoch"]
    its = history["iterations"]
    if its:
        loss_ax.plot([r["iteration"] / per_epoch for r in its], [r["loss"] for r in its], color="tab:blue",
                     alpha=0.3, linewidth=1, label="running")
    loss_ax.plot([r["epoch"] for r in eps], [r["loss"] for r in eps], "o-", color="tab:blue", label="epoch mean")
    loss_ax.set_yscale("log")
    loss_ax.set_ylabel("training loss (cross-entropy)")
    loss_ax.legend()
    for ax in (acc_ax, loss_ax):
        ax.set_xlabel("epoch")
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, format="png")


class SeqTrainer(_Trainer):
    """Supervised training of sequence models (seq2seq, captioning) with held-out exact match.

    The model maps ``model(xs, ts)`` to a scalar loss and decodes with
    ``model.generate(xs, start_id, length)``. One epoch visits ``len(xs) // batch_size``
    minibatches of a fresh permutation drawn from the trainer's seeded Generator (the last
    partial batch is left out, as in the classic textbook); an iteration is forward, backward,
    clipping, update. After each epoch the held-out set is decoded (``exact_match``).

    Checkpoints hold the model's parameters, the optimizer's state, the shuffling Generator,
    every Generator of the model's layers, the epoch counter and the history, so that
    ``resume`` continues exactly: 2 epochs in one go and 1 + resume + 1 give the same
    parameters bit for bit.

    Args:
        model (Layer): as above.
        optimizer (Optimizer): already ``setup(model)``.
        batch_size (int): N.
        max_grad_norm (float, optional): clip the global gradient norm to this.
        seed (int | numpy.random.Generator | None): randomness of the shuffling.
        eval_batch_size (int): examples decoded at once for the accuracy.
        ignore_id (int, optional): target id not compared by ``exact_match`` (padding).
        out_dir (str | Path, optional): receives ``history.json``, ``history.png`` and
            ``last.npz`` after every epoch; nothing is written when None.
        progress (bool, optional): show a tqdm bar; None shows it only when stderr is a terminal.
        log (callable, optional): receives one summary line per epoch (e.g. ``print``).
        callback (callable, optional): called as ``callback(trainer, record)`` after each
            epoch's record is complete (e.g. to print decoded examples).
        log_every (int): record the running loss every this many iterations.
        meta (dict, optional): JSON-ready information stored in checkpoints under ``"run"``.
    Raises:
        ValueError: ``batch_size < 1``.
    """

    checkpoint_format = SEQ_CHECKPOINT_FORMAT
    plot = staticmethod(plot_seq_history)

    def __init__(self, model, optimizer, *, batch_size, max_grad_norm=None, seed=0, eval_batch_size=1000,
                 ignore_id=None, out_dir=None, progress=None, log=None, callback=None, log_every=20, meta=None):
        if batch_size < 1:
            raise ValueError(f"SeqTrainer: batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.optimizer = optimizer
        self.batch_size = batch_size
        self.max_grad_norm = max_grad_norm
        self.rng = np.random.default_rng(seed)
        self.eval_batch_size = eval_batch_size
        self.ignore_id = ignore_id
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.log = log
        self.callback = callback
        self.log_every = log_every
        self.meta = meta or {}
        self.epoch = 0  # epochs completed
        self.total_iterations = 0
        self.history = {"iterations_per_epoch": None, "epochs": [], "iterations": []}

    def step(self, xs, ts):
        """One training iteration on one batch.

        Args:
            xs (ndarray): (N, ...) inputs on the model's device.
            ts (ndarray): (N, Ta) int targets on the model's device.
        Returns:
            ndarray: () the loss (on the model's device, not synchronized).
        """
        return self._update(self.model(xs, ts))

    def evaluate(self, xs, ts, beam_width=1):
        """Held-out exact match (see ``exact_match``) with the trainer's batch size and ``ignore_id``.

        Args:
            xs (ndarray): (N, ...) inputs.
            ts (ndarray): (N, Ta) int answers, ``ts[:, 0]`` the start token.
            beam_width (int): 1 for greedy decoding.
        Returns:
            float: in [0, 1].
        """
        xs, ts = self._on_device(xs), self._on_device(ts)
        return exact_match(self.model, xs, ts, self.eval_batch_size, self.ignore_id, beam_width)

    def _on_device(self, a):
        return backend.as_cupy(a) if _device(self.model) == "gpu" else backend.as_numpy(a)

    def fit(self, xs, ts, x_test=None, t_test=None, epochs=1):
        """Train until ``epochs`` epochs (counted from the first run, resumes included) are done.

        Args:
            xs (ndarray): (N, ...) training inputs (CPU or the model's device).
            ts (ndarray): (N, Ta) int training targets, ``ts[:, 0]`` the start token.
            x_test, t_test (ndarray, optional): held-out set, decoded after each epoch.
            epochs (int): total number of epochs.
        Returns:
            dict: ``self.history``: ``epochs`` (one record per epoch: epoch, iterations, loss,
            accuracy (None without a held-out set), lr, seconds, eval_seconds,
            samples_per_second) and ``iterations`` (running loss every ``log_every`` iterations).
        Raises:
            ValueError: fewer examples than one batch, or ``len(xs) != len(ts)``.
        """
        if len(xs) != len(ts):
            raise ValueError(f"SeqTrainer.fit: {len(xs)} inputs but {len(ts)} targets")
        per_epoch = len(xs) // self.batch_size
        if per_epoch == 0:
            raise ValueError(f"SeqTrainer.fit: {len(xs)} examples are fewer than one batch of {self.batch_size}")
        self.history["iterations_per_epoch"] = per_epoch
        xs, ts = self._on_device(xs), self._on_device(ts)
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        self.model.cleargrads()
        while self.epoch < epochs:
            record = self._run_epoch(xs, ts, per_epoch, epochs)
            self._close_epoch(record, x_test, t_test, epochs)
        return self.history

    def _run_epoch(self, xs, ts, per_epoch, epochs):
        order = self.rng.permutation(len(xs))[:per_epoch * self.batch_size].reshape(per_epoch, self.batch_size)
        if _device(self.model) == "gpu":
            order = backend.as_cupy(order)
        lr = self.optimizer.lr
        epoch_sum = window_sum = 0.0
        window = 0
        bar = tqdm(total=per_epoch, desc=f"epoch {self.epoch + 1}/{epochs}", disable=not self.progress, leave=False,
                   dynamic_ncols=True)
        began = time.perf_counter()
        for index in order:
            loss = self.step(xs[index], ts[index])
            epoch_sum = epoch_sum + loss  # device scalars: no synchronization per iteration
            window_sum = window_sum + loss
            window += 1
            self.total_iterations += 1
            bar.update()
            if window == self.log_every:
                mean = float(window_sum) / window
                self.history["iterations"].append({"iteration": self.total_iterations, "epoch": self.epoch + 1,
                                                   "loss": mean})
                bar.set_postfix(loss=f"{mean:.4f}")
                window_sum, window = 0.0, 0
        loss = float(epoch_sum) / per_epoch
        seconds = time.perf_counter() - began
        bar.close()
        self.epoch += 1
        return {"epoch": self.epoch, "iterations": per_epoch, "loss": loss, "accuracy": None, "lr": lr,
                "seconds": seconds, "eval_seconds": 0.0,
                "samples_per_second": per_epoch * self.batch_size / seconds}

    def _close_epoch(self, record, x_test, t_test, epochs):
        """Evaluate, log, call back, and write history and checkpoint after an epoch."""
        if x_test is not None:
            began = time.perf_counter()
            record["accuracy"] = self.evaluate(x_test, t_test)
            record["eval_seconds"] = time.perf_counter() - began
        self.history["epochs"].append(record)
        if self.log is not None:
            acc = "" if record["accuracy"] is None else f"  held-out exact match {100 * record['accuracy']:.2f}%"
            self.log(f"epoch {record['epoch']}/{epochs}  loss {record['loss']:.4f}{acc}  {record['seconds']:.1f} s "
                     f"({record['samples_per_second']:.0f} samples/s), eval {record['eval_seconds']:.1f} s")
        if self.callback is not None:
            self.callback(self, record)
        if self.out_dir is not None:
            self.save_checkpoint(self.out_dir / "last.npz")
            self.save_history()

    def _extra_state(self):
        return {"shuffle": self.rng.bit_generator.state}

    def _load_extra_state(self, meta):
        self.rng.bit_generator.state = meta["shuffle"]

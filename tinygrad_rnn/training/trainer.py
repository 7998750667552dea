"""The trainer: one training step, and the loop that runs it over a batch source.

Usage::

    model = LSTMLM(10000, 100, 100, seed=0)
    opt = SGD(lr=20.0).setup(model)
    trainer = Trainer(model, opt, BPTTBatcher(train_ids, 20, 35), clip=0.25,
                      evaluators=[Perplexity(valid_ids)],
                      extensions=[ReduceOnPlateau("valid_perplexity"), Checkpoint("runs/lm", "valid_perplexity"),
                                  History("runs/lm"), LogReport()])
    trainer.fit(epochs=4)

``step(batch)`` is the whole of an iteration (forward through ``model.loss``, backward,
clipping, update, graph cut): the one function every loop, benchmark and wrapper calls. It
never reads a device value back to the host; ``fit`` reads the loss only every ``log_every``
steps and at the end of an epoch.

With ``comm`` (``distributed.init()`` under ``mpirun``) the same trainer runs data parallel:
each rank takes its rows of every batch, the step averages the gradients over the ranks before
clipping, the running sums and the evaluators are reduced over the ranks, so that every rank
records the same numbers and takes the same decisions, and only rank 0 writes (extensions
with ``root_only``; checkpoints gather the other ranks' carried state first).
"""
import time

from tinygrad_rnn import backend
from tinygrad_rnn.checks import integer, number
from tinygrad_rnn.distributed import DistributedOptimizer, SerialComm, Shard
from tinygrad_rnn.functions import batch_rows
from tinygrad_rnn.optimizers import clip_grads
from tinygrad_rnn.training import checkpoint
from tinygrad_rnn.training.evaluation import exp
from tinygrad_rnn.training.extensions import Checkpoint
from tinygrad_rnn.training.phases import END, mark
from tinygrad_rnn.training.schedules import Schedule


class Trainer:
    """Train any model with ``loss(*batch) -> scalar Variable`` on a batch source.

    One epoch runs ``step`` on every batch of ``batches.batches(epoch, start)``; a stateful
    model's carried state is reset when training starts and, if the source says so
    (``reset_each_epoch``), at the start of every epoch. After each epoch (or the part of one
    that ``max_iters`` allows) the evaluators run and the extensions get the epoch's record.

    Checkpoints (``save_checkpoint``; the ``Checkpoint`` extension writes them) hold the
    parameters and carried state, the optimizer's state, every random generator of the model,
    the trainer's counters and running sums, the history and each extension's state, so that
    ``resume`` continues exactly, inside an epoch too: an interrupted and resumed run gives
    the same parameters and numbers as an uninterrupted one.

    Args:
        model (Layer): has ``loss(*batch)`` returning a () Variable; data parallel, a model whose
            mean loss leaves some targets out also has ``loss_terms(*batch)``, the number of
            terms it covers (a host number).
        optimizer (Optimizer): already ``setup(model)``.
        batches (iterable | None): a batch source (``data.BPTTBatcher``, ``data.ShuffledBatcher``; see
            ``tinygrad_rnn.data.batching`` for the protocol) on the model's device; None for a
            trainer whose ``step`` is called by hand (``fit`` then refuses to run).
        clip (float, optional): clip the global gradient norm to this (> 0).
        evaluators (sequence): called as ``evaluator(model, comm)`` after each epoch
            (``evaluation.Perplexity``, ``evaluation.ExactMatch``); each has ``name``, ``main``
            and ``higher_is_better``, and returns numbers reduced over the ranks of ``comm``.
        extensions (sequence of Extension): progress, logs, history, checkpoints, schedules;
            called in this order (schedules before checkpoints, so that a checkpoint holds
            the next epoch's learning rate); those with ``root_only`` run on rank 0 only.
        log_every (int): read and record the running loss every this many steps.
        meta (dict, optional): JSON-ready information kept in checkpoints under ``"run"``
            (the model's spec for ``models.build_model``, the vocabulary, the settings).
        comm (optional): a communicator (``distributed.init()``); with more than one rank the
            optimizer is wrapped in a ``distributed.DistributedOptimizer`` (which gives every
            rank rank 0's parameters and optimizer state now) and ``batches`` in a
            ``distributed.Shard``. Every rank must build the same trainer.
    Raises:
        ValueError: an optimizer set up for another model, a bad ``clip`` or ``log_every``, two
            extensions of one name, a schedule listed after a checkpoint, or (with ``comm``)
            ranks that hold different models or batches their number does not split.
    """

    def __init__(self, model, optimizer, batches, *, clip=None, evaluators=(), extensions=(), log_every=20,
                 meta=None, comm=None):
        if optimizer.target is not model:
            target = "no model" if optimizer.target is None else f"another {type(optimizer.target).__name__}"
            raise ValueError(f"Trainer: the optimizer is set up for {target}, not this {type(model).__name__}: "
                             "call optimizer.setup(model) first")
        self.comm = SerialComm() if comm is None else comm
        distributed = self.comm.size > 1
        self._reducer = DistributedOptimizer(optimizer, self.comm) if distributed else None
        if distributed and batches is not None and not isinstance(batches, Shard):
            batches = Shard(batches, self.comm)
        self.model, self.optimizer, self.batches = model, optimizer, batches
        self.clip = None if clip is None else number("Trainer", "clip", clip, 0.0, low_open=True)
        self.evaluators, self.extensions = list(evaluators), list(extensions)
        self.log_every = integer("Trainer", "log_every", log_every)
        self.meta = meta or {}
        names = [e.name for e in self.extensions]
        if len(set(names)) != len(names):
            raise ValueError(f"Trainer: two extensions share a name ({', '.join(names)}); their states would mix")
        kinds = [isinstance(e, Checkpoint) for e in self.extensions]
        if True in kinds and any(isinstance(e, Schedule) for e in self.extensions[kinds.index(True):]):
            raise ValueError("Trainer: list schedules before Checkpoint, so that checkpoints hold the next "
                             "epoch's learning rate")
        self._here = [e for e in self.extensions if self.comm.is_root or not e.root_only]
        backend.keep_freed_memory()  # each step frees and reallocates its activations
        self.epoch = 0  # epochs completed
        self.iteration = 0  # steps done in the current epoch
        self.total_iterations = 0
        self.epochs = None  # the target of the running fit
        self.history = {"iterations_per_epoch": None if batches is None else len(batches), "epochs": [],
                        "iterations": []}
        self._open_epoch()

    def _open_epoch(self):
        # sums of the current epoch; device scalars while running (no synchronization per step)
        self.sums = {"loss": 0.0, "items": 0, "seconds": 0.0, "window_loss": 0.0, "window": 0}

    def step(self, batch):
        """One training iteration: loss, backward, clipping, update, graph cut.

        Data parallel, the gradients are averaged over the ranks, each weighted by the terms its
        loss covers (``model.loss_terms(*batch)`` where the model defines it, else
        ``batches.count``), before clipping, and dropout draws this part's rows of the combined batch's masks
        (``functions.batch_rows``), so the ranks update exactly as one process would.

        Args:
            batch (tuple): the arrays of ``model.loss(*batch)``, on the model's device (data
                parallel: this rank's ``distributed.Part``).
        Returns:
            ndarray: () the loss, on the model's device (not read back); data parallel, this
            rank's share of the combined batch's loss (their sum over the ranks is that loss).
        """
        mark("forward")
        with batch_rows(getattr(batch, "rows", None)):
            loss = self.model.loss(*batch)
        mark("backward")
        loss.backward()
        loss.unchain_backward()  # a carried state must not lead back into this step's graph
        share = 1.0
        if self._reducer is not None:
            mark("reduce")
            share = self._reducer.reduce_grads(self._loss_terms(batch))
        if self.clip is not None:
            mark("clip")
            clip_grads(self.model.params(), self.clip)
        mark("update")
        (self.optimizer if self._reducer is None else self._reducer).update()
        self.model.cleargrads()
        mark(END)
        return loss.data if share == 1.0 else loss.data * loss.data.dtype.type(share)

    def _loss_terms(self, batch):
        """This rank's weight in the combined loss: the terms its mean covers.

        A model whose loss leaves targets out (``ignore_label``) counts its terms itself with
        ``loss_terms(*batch)``; otherwise the batch source's ``count`` is proportional to them
        (the tokens of a BPTT window, the examples of fixed-length answers). Without a source
        every rank counts the same.
        """
        count = getattr(self.model, "loss_terms", None)
        if count is not None:
            return count(*batch)
        return None if self.batches is None else self.batches.count(batch)

    def fit(self, epochs, max_iters=None):
        """Train until ``epochs`` epochs are complete (counted from the start, resumes included).

        Args:
            epochs (int): the total number of epochs.
            max_iters (int, optional): stop once this many steps in total are done (inside an
                epoch too: the part is recorded and checkpointed, and ``resume`` completes it).
        Returns:
            dict: ``self.history``: ``epochs``, one record per epoch or part of one (see
            ``_record``), and ``iterations``, the running loss every ``log_every`` steps.
        Raises:
            ValueError: bad ``epochs``/``max_iters``, or batches on another device than the model.
        """
        if self.batches is None:
            raise ValueError("Trainer.fit: the trainer has no batch source (built with batches=None)")
        self.epochs = integer("Trainer.fit", "epochs", epochs)
        if max_iters is not None:
            integer("Trainer.fit", "max_iters", max_iters)
        p = next(self.model.params(), None)
        device = "gpu" if p is not None and backend.is_cupy_array(p.data) else "cpu"
        if self.batches.device != device:
            raise ValueError(f"Trainer.fit: the batches are on the {self.batches.device}, the model on the {device}")
        for e in self._here:
            e.on_start(self)
        self.model.cleargrads()
        while self.epoch < epochs and (max_iters is None or self.total_iterations < max_iters):
            self._run_epoch(max_iters)
        for e in self._here:
            e.on_end(self)
        return self.history

    def _run_epoch(self, max_iters):
        if self.iteration == 0 and (self.epoch == 0 or self.batches.reset_each_epoch):
            self.model.reset_state()
        sums = self.sums
        began = time.perf_counter()
        for batch in self.batches.batches(self.epoch, self.iteration):
            loss = self.step(batch)
            sums["loss"] = sums["loss"] + loss
            sums["window_loss"] = sums["window_loss"] + loss
            sums["window"] += 1
            sums["items"] += self.batches.count(batch)
            self.iteration += 1
            self.total_iterations += 1
            for e in self._here:
                e.on_iteration(self)
            if sums["window"] == self.log_every:
                self._log()
            if self.total_iterations == max_iters:
                break
        sums["seconds"] += time.perf_counter() - began
        complete = self.iteration == len(self.batches)
        if complete:
            self.epoch += 1
        record = self._record(complete)
        if complete:
            self.iteration = 0
            self._open_epoch()
        for e in self._here:
            e.on_epoch_end(self, record)

    def _log(self):
        sums = self.sums
        window_loss, = self.comm.allreduce_numbers([sums["window_loss"]])
        entry = {"iteration": self.total_iterations, "epoch": self.epoch + 1, "loss": window_loss / sums["window"]}
        sums["window_loss"], sums["window"] = 0.0, 0
        self.history["iterations"].append(entry)
        for e in self._here:
            e.on_log(self, entry)

    def _record(self, complete):
        """The numbers of the epoch so far, evaluated, appended to the history.

        Keys: ``epoch`` (1-based), ``iteration`` (steps in total), ``iterations`` (steps of
        this epoch so far), ``complete``, ``train_loss`` (mean over this epoch's steps),
        ``train_perplexity`` (its exp: per-token perplexity of a cross-entropy loss), ``lr``,
        ``seconds`` (training time of the epoch so far), ``<unit>_per_second``,
        ``eval_seconds``, and ``<evaluator name>_<key>`` for every evaluator's numbers.
        """
        sums = self.sums
        loss, items = self.comm.allreduce_numbers([sums["loss"], sums["items"]])
        train_loss = loss / self.iteration
        record = {"epoch": self.epoch if complete else self.epoch + 1, "iteration": self.total_iterations,
                  "iterations": self.iteration, "complete": complete, "train_loss": train_loss,
                  "train_perplexity": exp(train_loss), "lr": self.optimizer.lr, "seconds": sums["seconds"],
                  f"{self.batches.unit}_per_second": items / max(sums["seconds"], 1e-12)}
        began = time.perf_counter()
        for evaluator in self.evaluators:
            record.update({f"{evaluator.name}_{k}": v for k, v in evaluator(self.model, self.comm).items()})
        record["eval_seconds"] = time.perf_counter() - began
        self.history["epochs"].append(record)
        return record

    def summary(self):
        """Totals of the whole run (resumed parts included), from the history.

        Returns:
            dict: ``epochs`` (complete), ``iterations``, ``train_seconds``, ``eval_seconds``,
            ``<unit>_per_second`` and ``train_loss`` (of the last record).
        """
        records = self.history["epochs"]
        last_of_epoch = {r["epoch"]: r for r in records}  # a resumed epoch's record covers its part before the stop
        seconds = sum(r["seconds"] for r in last_of_epoch.values())
        rate = f"{self.batches.unit}_per_second"
        items = sum(r[rate] * r["seconds"] for r in last_of_epoch.values())
        out = {"epochs": self.epoch, "iterations": self.total_iterations, "train_seconds": seconds,
               "eval_seconds": sum(r["eval_seconds"] for r in records), rate: items / max(seconds, 1e-12)}
        if records:
            out["train_loss"] = records[-1]["train_loss"]
        return out

    def save_checkpoint(self, path):
        """Write everything ``resume`` needs into one ``.npz`` file (atomically, no pickle).

        Args:
            path (str | Path): the file.
        """
        checkpoint.save(self, path)

    def resume(self, path):
        """Continue from a checkpoint of this run; all or nothing.

        Args:
            path (str | Path): a file written by ``save_checkpoint``.
        Returns:
            dict: the checkpoint's ``"run"`` metadata.
        Raises:
            ValueError: the file is not a tinygrad_rnn checkpoint, or it does not fit this run
                (another optimizer or its settings, other batch or window sizes, other
                parameters, generators or extensions); one message lists every difference and
                nothing is changed.
        """
        run = checkpoint.load(self, path)
        if self._reducer is not None:  # every rank read rank 0's file; make sure they agree
            self._reducer.synchronize()
        return run

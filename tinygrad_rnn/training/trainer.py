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
never reads a device value back to the host; ``fit`` sums the loss (and, with ``clip``, the
global gradient norm before clipping and whether clipping acted) on the device and reads the
sums only every ``log_every`` steps and at the end of an epoch.

With ``comm`` (``distributed.init()`` under ``mpirun``) the same trainer runs data parallel by
composition: the optimizer is wrapped in a ``distributed.DistributedOptimizer`` (its ``update``
averages the gradients over the ranks, then runs the clipping hook and the update) and the batch
source in a ``distributed.Shard`` (each rank's rows of every batch, with their weight and the
dropout rows), so ``step`` is the same few lines. The running sums and the evaluators are
reduced over the ranks, so that every rank records the same numbers and takes the same
decisions, and only rank 0 writes (extensions with ``root_only``, and checkpoint files).

The trainer owns its state: ``state_dict()`` holds its counters, running sums and history and
delegates to the model (parameters, carried state, random generators), the optimizer and the
extensions; ``training.checkpoint`` only writes and reads the file.
"""
import contextvars
import copy
import math
import time
import warnings

from tinygrad_rnn import backend
from tinygrad_rnn.checks import integer, number
from tinygrad_rnn.core import Variable
from tinygrad_rnn.distributed import DistributedOptimizer, SerialComm, Shard, gather_rows, shard_rows
from tinygrad_rnn.optimizers import GradientClipping
from tinygrad_rnn.training import checkpoint
from tinygrad_rnn.training.evaluation import exp
from tinygrad_rnn.phases import END, mark

# the running sums of an epoch: name -> zero; device scalars while running (no synchronization per step).
# With clipping, grad_norm sums the global norm before clipping and clipped the steps it scaled down.
_SUMS = {"loss": 0.0, "items": 0, "seconds": 0.0, "window_loss": 0.0, "window": 0, "grad_norm": 0.0,
         "clipped": 0.0, "window_grad_norm": 0.0, "window_clipped": 0.0}
_SUMMED = ("loss", "window_loss", "items")  # per rank while running, totals over the ranks in a state
# sums that checkpoints written before them lack, and the counter of the steps each covers: zero
# when that counter is 0, unknown (NaN) otherwise
_LATER_SUMS = {"grad_norm": "iteration", "clipped": "iteration", "window_grad_norm": "window",
               "window_clipped": "window"}
# what the trainer reads of a batch source (tinygrad_rnn.data.batching)
_SOURCE = ("__len__", "batches", "count", "spec", "unit", "device", "reset_each_epoch", "carries_state")
_EVALUATOR = ("name", "main", "keys", "higher_is_better")
# the entries of a state and their keys that a checkpoint must have; "model" and "carried" are arrays
# only, and a file has none of them for a model without parameters or carried state
_STATE = {"trainer": ("epoch", "iteration", "total_iterations", "sums"), "history": ("epochs", "iterations"),
          "optimizer": ("class", "hyperparameters"), "batches": (), "clip": (), "generators": (), "extensions": ()}


class Trainer:
    """Train any model with ``loss(*batch) -> scalar Variable`` on a batch source.

    One epoch runs ``step`` on every batch of ``batches.batches(epoch, start)``; a stateful
    model's carried state is reset when training starts and, if the source says so
    (``reset_each_epoch``), at the start of every epoch. After each epoch (or the part of one
    that ``max_iters`` allows) the evaluators run and the extensions get the epoch's record.

    Checkpoints (``save_checkpoint``; the ``Checkpoint`` extension writes them) hold
    ``state_dict()``: the parameters and carried state, the optimizer's state, every random
    generator of the model, the trainer's counters and running sums, the history and each
    extension's state, so that ``resume`` continues exactly, inside an epoch too: an interrupted
    and resumed run gives the same parameters and numbers as an uninterrupted one.

    Args:
        model (Layer): has ``loss(*batch)`` returning a () Variable; data parallel, a model whose
            mean loss leaves some targets out also has ``loss_weight(*batch)``, the number of
            terms it covers (a host number), which weights its rank's gradient.
        optimizer (Optimizer): already ``setup(model)``.
        batches (iterable | None): a batch source (``data.BPTTBatcher``, ``data.ShuffledBatcher``; see
            ``tinygrad_rnn.data.batching`` for the protocol) on the model's device; None for a
            trainer whose ``step`` is called by hand (``fit`` then refuses to run).
        clip (float, optional): clip the global gradient norm to this (> 0): the trainer adds
            an ``optimizers.GradientClipping`` hook to the optimizer, and its log entries and
            epoch records get ``grad_norm`` (the mean global norm before clipping) and
            ``clip_fraction`` (the fraction of steps whose norm exceeded ``clip``).
        evaluators (sequence): called as ``evaluator(model, comm)`` after each epoch
            (``evaluation.Perplexity``, ``evaluation.ExactMatch``); each has ``name``, ``main``,
            ``keys`` and ``higher_is_better``, and returns its ``keys``' numbers, reduced over
            the ranks of ``comm``. Each runs in a copy of the caller's configuration
            (``contextvars``), so that one which switches to test mode and does not switch back
            leaves training with dropout on.
        extensions (sequence of Extension): progress, logs, history, checkpoints, schedules;
            called by ``priority``, highest first, in the given order among equals (schedules
            before checkpoints, so that a checkpoint holds the next epoch's learning rate); those
            with ``root_only`` run on rank 0 only.
        log_every (int): read and record the running loss every this many steps.
        meta (dict, optional): JSON-ready information kept in checkpoints under ``"run"``
            (the model's spec for ``models.build_model``, the vocabulary, the settings).
        comm (optional): a communicator (``distributed.init()``); with more than one rank the
            optimizer is wrapped in a ``distributed.DistributedOptimizer`` (which gives every
            rank rank 0's parameters and optimizer state now) and ``batches`` in a
            ``distributed.Shard``. Every rank must build the same trainer.
    Attributes:
        optimizer: the optimizer ``step`` updates through (the wrapped one, data parallel).
        batches: the batch source ``fit`` reads (the ``Shard``, data parallel).
    Raises:
        TypeError: a model without a callable ``loss``, or a batch source or an evaluator that
            lacks part of its protocol.
        ValueError: an optimizer set up for another model, a bad ``clip`` or ``log_every``, two
            extensions or evaluators of one name, or (with ``comm``) ranks that hold different
            models or batch sources, or batches their number does not split.
    Warns:
        UserWarning: ``batches`` carries state from batch to batch (``carries_state``: BPTT
            streams) but every recurrent layer of the model (a layer with ``stateful``) starts
            each call from zeros; the warning names them. Build them with ``stateful=True`` to
            carry the state, or ignore the warning for a deliberately stateless model.
    """

    def __init__(self, model, optimizer, batches, *, clip=None, evaluators=(), extensions=(), log_every=20,
                 meta=None, comm=None):
        if not callable(getattr(model, "loss", None)):
            raise TypeError(f"Trainer: the {type(model).__name__} has no loss(*batch) method, the scalar Variable "
                            "that step trains on (a model is trained through model.loss, not its forward)")
        if optimizer.target is not model:
            target = "no model" if optimizer.target is None else f"another {type(optimizer.target).__name__}"
            raise ValueError(f"Trainer: the optimizer is set up for {target}, not this {type(model).__name__}: "
                             "call optimizer.setup(model) first")
        if batches is not None:
            missing = [a for a in _SOURCE if not hasattr(batches, a)]
            if missing:
                raise TypeError(f"Trainer: batches must be a batch source (see tinygrad_rnn.data.batching); a "
                                f"{type(batches).__name__} has no {', '.join(missing)}")
            if batches.carries_state:
                _warn_if_nothing_carries(model, batches)
        self.clip = None if clip is None else number("Trainer", "clip", clip, 0.0, low_open=True)
        self.log_every = integer("Trainer", "log_every", log_every)
        self.evaluators = _checked_evaluators(evaluators)
        self.extensions = sorted(extensions, key=lambda e: -e.priority)
        names = [e.name for e in self.extensions]
        if len(set(names)) != len(names):
            raise ValueError(f"Trainer: two extensions share a name ({', '.join(names)}); their states would mix")
        self.comm = SerialComm() if comm is None else comm
        if self.comm.size > 1:  # compose the data-parallel parts once; step stays the same
            if not isinstance(optimizer, DistributedOptimizer):
                optimizer = DistributedOptimizer(optimizer, self.comm)
            if batches is not None and not isinstance(batches, Shard):
                batches = Shard(batches, self.comm, model)
        self._clipping = None if self.clip is None else GradientClipping(self.clip)  # read for the records
        if self._clipping is not None:
            optimizer.add_hook(self._clipping)
        self.model, self.optimizer, self.batches = model, optimizer, batches
        self.meta = meta or {}
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
        self.sums = dict(_SUMS)

    def step(self, batch):
        """One training iteration: loss, backward, graph cut, update (the optimizer's hooks clip first).

        Data parallel, the optimizer averages the gradients over the ranks, each weighted by its
        part's ``weight`` (a ``distributed.Part``; a batch without one counts as much as any
        other), before its hooks run, and dropout draws this part's rows of the combined
        batch's masks, so the ranks update exactly as one process would.

        Args:
            batch (tuple): the arrays of ``model.loss(*batch)``, on the model's device (data
                parallel: this rank's ``distributed.Part``).
        Returns:
            ndarray: () the loss, on the model's device (not read back); data parallel, this
            rank's share of the combined batch's loss (their sum over the ranks is that loss).
        Raises:
            TypeError: ``model.loss`` returned something other than a Variable.
        """
        mark("forward")
        loss = self.model.loss(*batch)
        if not isinstance(loss, Variable):
            raise TypeError(f"Trainer.step: {type(self.model).__name__}.loss returned a {type(loss).__name__}, "
                            "not a Variable: it must be built from the model's Variables to have a gradient")
        mark("backward")
        loss.backward()
        loss.unchain_backward()  # a carried state must not lead back into this step's graph
        share = self.optimizer.update(getattr(batch, "weight", None))  # marks reduce, clip and update
        self.model.cleargrads()
        mark(END)
        return loss.data if share == 1.0 else loss.data * loss.data.dtype.type(share)

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
            BaseException: what an extension, the model or the data raise; data parallel, the
                rank prints it and ends the whole job instead (``comm.leave``), ``sys.exit`` too.
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
        try:
            for e in self._here:
                e.on_start(self)
            self.model.cleargrads()
            while self.epoch < epochs and (max_iters is None or self.total_iterations < max_iters):
                self._run_epoch(max_iters)
            for e in self._here:
                e.on_end(self)
        except BaseException as error:  # data parallel, the other ranks would wait for this one: end the job
            self.comm.leave(error)
            raise
        return self.history

    def _run_epoch(self, max_iters):
        if self.iteration == 0 and (self.epoch == 0 or self.batches.reset_each_epoch):
            self.model.reset_state()
        sums = self.sums
        began = time.perf_counter()
        for batch in self.batches.batches(self.epoch, self.iteration):
            summed = {"loss": self.step(batch)}
            if self._clipping is not None:
                summed.update(grad_norm=self._clipping.norm, clipped=self._clipping.clipped)
            for key, value in summed.items():
                sums[key] = sums[key] + value
                sums[f"window_{key}"] = sums[f"window_{key}"] + value
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
        entry.update(self._clipping_numbers("window_", sums["window"]))
        sums.update({k: _SUMS[k] for k in _SUMS if k.startswith("window")})
        self.history["iterations"].append(entry)
        for e in self._here:
            e.on_log(self, entry)

    def _clipping_numbers(self, prefix, steps):
        """``grad_norm`` and ``clip_fraction`` over ``steps`` steps from the sums named with ``prefix``
        (none without clipping). The norm is computed after the ranks' gradients are averaged, so
        every rank holds the same sums: no reduction."""
        if self._clipping is None:
            return {}
        return {"grad_norm": float(self.sums[f"{prefix}grad_norm"]) / steps,
                "clip_fraction": float(self.sums[f"{prefix}clipped"]) / steps}

    def _record(self, complete):
        """The numbers of the epoch so far, evaluated, appended to the history.

        Keys: ``epoch`` (1-based), ``iteration`` (steps in total), ``iterations`` (steps of
        this epoch so far), ``complete``, ``train_loss`` (mean over this epoch's steps),
        ``train_perplexity`` (its exp: per-token perplexity of a cross-entropy loss), ``lr``,
        ``seconds`` (training time of the epoch so far), ``<unit>_per_second``,
        ``eval_seconds``, with ``clip`` ``grad_norm`` (mean global gradient norm before
        clipping) and ``clip_fraction`` (fraction of steps clipped), and
        ``<evaluator name>_<key>`` for every evaluator's numbers.
        """
        sums = self.sums
        loss, items = self.comm.allreduce_numbers([sums["loss"], sums["items"]])
        train_loss = loss / self.iteration
        record = {"epoch": self.epoch if complete else self.epoch + 1, "iteration": self.total_iterations,
                  "iterations": self.iteration, "complete": complete, "train_loss": train_loss,
                  "train_perplexity": exp(train_loss), "lr": self.optimizer.lr, "seconds": sums["seconds"],
                  f"{self.batches.unit}_per_second": items / max(sums["seconds"], 1e-12)}
        record.update(self._clipping_numbers("", self.iteration))
        began = time.perf_counter()
        for evaluator in self.evaluators:
            # in a copy of this context: a configuration the evaluator leaves changed (test mode) stays there
            numbers = contextvars.copy_context().run(evaluator, self.model, self.comm)
            if set(numbers) != set(evaluator.keys):
                raise ValueError(f"Trainer: evaluator {evaluator.name!r} returned {sorted(numbers)}, its keys are "
                                 f"{sorted(evaluator.keys)}")
            record.update({f"{evaluator.name}_{k}": v for k, v in numbers.items()})
        record["eval_seconds"] = time.perf_counter() - began
        self.history["epochs"].append(record)
        return record

    def check_record_key(self, who, what, key):
        """Refuse, before training, a key that the epoch records of this trainer will not have.

        Args:
            who (str): the extension that asks (for the message).
            what (str): its argument (``"monitor"``).
            key (str): the record key.
        Raises:
            ValueError: ``key`` is neither a key of every record nor ``<evaluator name>_<key>``.
        """
        unit = "items" if self.batches is None else self.batches.unit
        fixed = ("epoch", "iteration", "iterations", "complete", "train_loss", "train_perplexity", "lr", "seconds",
                 f"{unit}_per_second", "eval_seconds") + (() if self.clip is None else ("grad_norm", "clip_fraction"))
        evaluated = [f"{e.name}_{k}" for e in self.evaluators for k in e.keys]
        if key in fixed or key in evaluated:
            return
        evaluated = ", ".join(evaluated) or "none: no evaluators"
        raise ValueError(f"{who}: {what} {key!r} is not a key of the epoch records (evaluated: {evaluated}; "
                         f"always: {', '.join(fixed)})")

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

    def state_dict(self):
        """Everything a resumed run needs, the checkpoint one process would hold; every rank calls it.

        The trainer writes its counters, running sums and history, and asks its parts for
        theirs: the model (``state_dict``, ``carried_state``, ``generators``), the optimizer
        (``spec``, ``state_dict``), the batch source (``spec``) and each extension with state.
        Data parallel, the running sums are totals over the ranks and the carried state holds
        the rows of every rank (gathered on rank 0, which alone gets them: elsewhere
        ``carried`` is None).

        Returns:
            dict: JSON-ready values and, under ``model``, ``carried`` and ``optimizer``, arrays
            (the layout of ``training.checkpoint``).
        """
        carried = gather_rows(self.model.carried_state(), self.comm)
        sums = dict(self.sums)
        sums.update(zip(_SUMMED, self.comm.allreduce_numbers([sums[k] for k in _SUMMED])))
        sums = {k: type(zero)(round(sums[k]) if isinstance(zero, int) else sums[k]) for k, zero in _SUMS.items()}
        return {
            "trainer": {"epoch": self.epoch, "iteration": self.iteration, "total_iterations": self.total_iterations,
                        "sums": sums},
            "history": copy.deepcopy(self.history),
            "model": self.model.state_dict(),
            "carried": carried,
            "optimizer": {**self.optimizer.spec(), **self.optimizer.state_dict()},
            "batches": None if self.batches is None else self.batches.spec(),
            "clip": self.clip,
            "generators": {name: g.state_dict() for name, g in self.model.generators().items()},
            "extensions": {name: e.state_dict() for name, e in self._stateful().items()},
        }

    def load_state_dict(self, state):
        """Continue from ``state_dict()``'s result (of this run, at any process count); all or nothing.

        Args:
            state (dict): as returned by ``state_dict`` (or read by ``checkpoint.load``), of the
                combined batch: data parallel, each rank takes its rows of the carried state and
                rank 0 the totals of the running sums.
        Raises:
            ValueError: the state does not fit this run (another optimizer or its settings, other
                batch or window sizes, other parameters, generators or extensions, missing or
                out-of-range entries); one message lists every difference and nothing changes.
        """
        problems = self._differences(state)
        if problems:
            raise ValueError("Trainer.load_state_dict: the state does not fit this run: " + "; ".join(problems))
        before = self._own_state()
        try:
            self._apply(state, split=True)
        except BaseException:
            self._apply(before, split=False)
            raise

    def _stateful(self):
        return {e.name: e for e in self.extensions if e.state_dict()}

    def _own_state(self):
        """This rank's own state, as ``_apply`` takes it back after a failed load (no collective)."""
        sums = {k: type(zero)(self.sums[k]) for k, zero in _SUMS.items()}
        return {"trainer": {"epoch": self.epoch, "iteration": self.iteration,
                            "total_iterations": self.total_iterations, "sums": sums},
                "history": copy.deepcopy(self.history),
                "model": {k: backend.as_numpy(v).copy() for k, v in self.model.state_dict().items()},
                "carried": {k: backend.as_numpy(v).copy() for k, v in self.model.carried_state().items()},
                "optimizer": self.optimizer.state_dict(),
                "generators": {name: g.state_dict() for name, g in self.model.generators().items()},
                "extensions": {name: e.state_dict() for name, e in self._stateful().items()}}

    def _apply(self, state, split):
        """Load ``state`` (``split``: of the combined batch, which each rank takes its part of)."""
        self.model.load_state_dict(state.get("model", {}))
        carried = state.get("carried", {})
        if split:  # this rank's rows of the combined batch's state (all of it on one process)
            carried = {k: a[slice(*shard_rows(len(a), self.comm))] for k, a in carried.items()}
        self.model.load_carried_state(carried)
        for name, g in self.model.generators().items():
            g.load_state_dict(state["generators"][name])
        for name, e in self._stateful().items():
            e.load_state_dict(state["extensions"][name])
        self.optimizer.load_state_dict({k: v for k, v in state["optimizer"].items() if k not in _STATE["optimizer"]})
        mine = state["trainer"]
        self.epoch, self.iteration, self.total_iterations = mine["epoch"], mine["iteration"], mine["total_iterations"]
        counts = {"iteration": mine["iteration"], "window": mine["sums"]["window"]}
        self.sums = {k: 0.0 if counts[count] == 0 else math.nan for k, count in _LATER_SUMS.items()}
        self.sums.update(mine["sums"])
        if split and not self.comm.is_root:  # the totals are rank 0's to carry on
            self.sums.update({k: _SUMS[k] for k in _SUMMED})
        self.history = copy.deepcopy(state["history"])

    def _differences(self, state):
        """Every way ``state`` does not fit this run, as phrases (empty: it fits)."""
        missing = [key for key in _STATE if key not in state]
        missing += [f"{key}.{sub}" for key, subs in _STATE.items() if isinstance(state.get(key), dict)
                    for sub in subs if sub not in state[key]]
        sums = state.get("trainer", {}).get("sums")
        missing += [f"trainer.sums.{k}" for k in _SUMS if isinstance(sums, dict) and k not in sums
                    and k not in _LATER_SUMS]
        if missing:
            return [f"no {', '.join(missing)} in the checkpoint"]
        out = []
        theirs, mine = state["optimizer"], self.optimizer.spec()
        if theirs["class"] != mine["class"]:
            out.append(f"optimizer {theirs['class']} in the checkpoint, {mine['class']} in this run")
        else:
            out += [f"optimizer {k} {v} in the checkpoint, {mine['hyperparameters'].get(k)} in this run"
                    for k, v in theirs["hyperparameters"].items() if mine["hyperparameters"].get(k) != v]
        spec = None if self.batches is None else self.batches.spec()
        if (spec is None) != (state["batches"] is None):
            out.append(f"batches {state['batches']} in the checkpoint, {spec} in this run")
        elif spec is not None:
            out += [f"batches {k} {v!r} in the checkpoint, {spec.get(k)!r} in this run"
                    for k, v in state["batches"].items() if spec.get(k) != v]
        if state["clip"] != self.clip:
            out.append(f"clip {state['clip']} in the checkpoint, {self.clip} in this run")
        try:
            self.model.check_state_dict(state.get("model", {}))
        except ValueError as e:
            out.append(f"model parameters: {str(e).split(': ', 1)[1]}")
        if self.batches is not None:  # the carried state is the combined batch's, which the ranks split
            rows = self.batches.batch_size
            out += [f"carried state {k} has {a.shape[0] if a.ndim else 0} rows, the batch {rows}"
                    for k, a in state.get("carried", {}).items() if not a.ndim or a.shape[0] != rows]
        for what, theirs, mine in (("generators", state["generators"], self.model.generators()),
                                   ("extensions with state", state["extensions"], self._stateful())):
            if set(theirs) != set(mine):
                out.append(f"{what} {sorted(theirs)} in the checkpoint, {sorted(mine)} in this run")
        counters = state["trainer"]
        for key in ("epoch", "iteration", "total_iterations"):
            if not isinstance(counters[key], int) or counters[key] < 0:
                out.append(f"trainer {key} {counters[key]!r} in the checkpoint is not a count")
        if self.batches is not None and isinstance(counters["iteration"], int) \
                and counters["iteration"] >= len(self.batches):
            out.append(f"trainer iteration {counters['iteration']} in the checkpoint, but an epoch of this run has "
                       f"{len(self.batches)}")
        return out

    def save_checkpoint(self, path):
        """Write ``state_dict()`` and ``meta`` into one ``.npz`` file (atomically, no pickle); every rank calls it.

        Args:
            path (str | Path): the file (written by rank 0 only).
        """
        state = self.state_dict()
        if self.comm.is_root:  # one file: only rank 0 writes it
            checkpoint.save(path, state, self.meta)

    def resume(self, path):
        """Continue from a checkpoint of this run; all or nothing.

        Rank 0 reads the file and sends it to the other ranks, so only rank 0 needs to see it.

        Args:
            path (str | Path): a file written by ``save_checkpoint``.
        Returns:
            dict: the checkpoint's ``"run"`` metadata.
        Raises:
            ValueError: the file is not a tinygrad_rnn checkpoint, or it does not fit this run
                (another optimizer or its settings, other batch or window sizes, other
                parameters, generators or extensions); one message names the file, lists every
                difference, and nothing is changed.
        """
        state, run = checkpoint.load(path, self.comm)
        problems = self._differences(state)
        if problems:
            raise ValueError(f"Trainer.resume: {path} does not fit this run: " + "; ".join(problems))
        self.load_state_dict(state)
        return run


def _warn_if_nothing_carries(model, batches):
    """Warn when BPTT streams meet a model whose recurrent layers all forget their state after every call."""
    recurrent = [layer for layer in model.layers() if hasattr(layer, "stateful")]
    if not recurrent or any(layer.stateful for layer in recurrent):
        return
    where = {id(p): path for path, p in model.namedparams()}

    def path(layer):  # the model's path of a layer: that of its first parameter, less the layer's part of it
        inside, p = next(layer.namedparams())
        return where[id(p)][:-len(inside)].rstrip("/") or "(the model itself)"

    names = ", ".join(f"{path(layer)} ({type(layer).__name__})" for layer in recurrent)
    warnings.warn(f"Trainer: the {type(batches).__name__} carries the state from batch to batch (row i continues "
                  f"row i of the last batch), but no recurrent layer of the {type(model).__name__} is stateful: "
                  f"{names} start{'s' if len(recurrent) == 1 else ''} every call from zeros. Build "
                  f"{'it' if len(recurrent) == 1 else 'them'} with stateful=True to carry the state "
                  "(truncated BPTT), or ignore this for a deliberately stateless model.", stacklevel=3)


def _checked_evaluators(evaluators):
    """The evaluators as a list, refused now (not after the first epoch) when one lacks part of its protocol."""
    evaluators = list(evaluators)
    for e in evaluators:
        missing = [a for a in _EVALUATOR if not hasattr(e, a)] + ([] if callable(e) else ["__call__"])
        if missing:
            raise TypeError(f"Trainer: evaluator {e!r} has no {', '.join(missing)} (an evaluator is called as "
                            "evaluator(model, comm) and has name, main, keys and higher_is_better)")
    names = [e.name for e in evaluators]
    if len(set(names)) != len(names):
        raise ValueError(f"Trainer: two evaluators share a name ({', '.join(names)}); their record keys would mix")
    return evaluators

"""Trainer extensions: a progress bar, a log line per epoch, the history as JSON and PNG, and checkpoints.

An extension is called by ``Trainer.fit`` at fixed points, by ``priority``, highest first
(``PRIORITY_EDITOR`` for what changes the training, such as schedules, then ``PRIORITY_WRITER``
for checkpoints, which so hold the next epoch's learning rate, then ``PRIORITY_READER`` for what
only reports), in the order of the trainer's ``extensions`` list among equals:
``on_start(trainer)`` when ``fit`` begins, ``on_iteration(trainer)`` after every step,
``on_log(trainer, entry)`` every ``log_every`` steps with the running loss,
``on_epoch_end(trainer, record)`` after each epoch (or part of one, when ``max_iters`` stops
it) once the evaluators have run, and ``on_end(trainer)``. Extensions with state (schedules,
the best value a checkpoint tracks) return it from ``state_dict`` and the trainer's checkpoints
keep it under the extension's ``name``.

In a data-parallel run every rank calls the extensions but those with ``root_only`` (the
progress bar, the log lines, the history files), which only rank 0 runs. Schedules and
``Checkpoint`` run on every rank: a schedule changes every rank's learning rate, and writing a
checkpoint is collective (``Trainer.state_dict`` gathers the carried state, then rank 0 writes alone).
"""
import math
import sys
from pathlib import Path

from tinygrad_rnn.optional import require
from tinygrad_rnn.serialization import atomic_write, write_json


PRIORITY_EDITOR = 300  # changes the training (schedules): runs first
PRIORITY_WRITER = 200  # writes the run's state (checkpoints): sees the editors' changes
PRIORITY_READER = 100  # only reads and reports (progress, logs, history)


class Extension:
    """Base class; every hook does nothing. ``name`` (default: the class name) keys the state in checkpoints.

    ``root_only`` (False here) makes a data-parallel run call the extension on rank 0 only: set it
    for extensions that only write or print, never for ones that change the training.
    ``priority`` (``PRIORITY_READER`` here) orders the extensions, highest first.
    """

    root_only = False
    priority = PRIORITY_READER

    @property
    def name(self):
        return type(self).__name__

    def on_start(self, trainer):
        pass

    def on_iteration(self, trainer):
        pass

    def on_log(self, trainer, entry):
        pass

    def on_epoch_end(self, trainer, record):
        pass

    def on_end(self, trainer):
        pass

    def state_dict(self):
        """Returns:
            dict: JSON-ready state (empty: nothing to keep)."""
        return {}

    def load_state_dict(self, state):
        """Restore what ``state_dict`` returned."""


class ProgressBar(Extension):
    """A tqdm bar per epoch with the running loss.

    Args:
        enabled (bool, optional): None shows it only when stderr is a terminal.
    Raises:
        ImportError: enabled, and tqdm is not installed (``pip install 'tinygrad_rnn[progress]'``).
    """

    root_only = True

    def __init__(self, enabled=None):
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        # imported here, not with the package: a run without a bar needs no tqdm, one with it learns at once
        self.tqdm = require("tqdm", "ProgressBar").tqdm if self.enabled else None
        self.bar = None

    def on_iteration(self, trainer):
        if not self.enabled:
            return
        if self.bar is None:
            self.bar = self.tqdm(total=len(trainer.batches), initial=trainer.iteration - 1, leave=False,
                            desc=f"epoch {trainer.epoch + 1}/{trainer.epochs}", dynamic_ncols=True)
        self.bar.update()

    def on_log(self, trainer, entry):
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{entry['loss']:.4f}")

    def on_epoch_end(self, trainer, record):
        self.on_end(trainer)

    def on_end(self, trainer):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _fmt(value):
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class LogReport(Extension):
    """One line per epoch: iterations, training loss, every evaluator's main number, lr, the gradient norm
    and how often it was clipped (with ``Trainer(clip=...)``), time, throughput.

    Args:
        write (callable): receives each line (default ``print``).
    """

    root_only = True

    def __init__(self, write=print):
        self.write = write

    def on_epoch_end(self, trainer, record):
        part = "" if record["complete"] else f", stopped after {record['iterations']} iterations"
        metrics = "".join(f"  {e.name} {e.main} {_fmt(record[f'{e.name}_{e.main}'])}" for e in trainer.evaluators)
        rate = trainer.batches.unit + "_per_second"
        clipping = "" if "grad_norm" not in record else \
            f"  grad norm {_fmt(record['grad_norm'])} (clipped {100 * record['clip_fraction']:.0f} %)"
        self.write(f"epoch {record['epoch']}/{trainer.epochs}{part}  train loss {_fmt(record['train_loss'])}"
                   f" (ppl {_fmt(record['train_perplexity'])}){metrics}  lr {record['lr']:g}{clipping}"
                   f"  {record['seconds']:.1f} s  {record[rate]:,.0f} {trainer.batches.unit}/s"
                   f"  eval {record['eval_seconds']:.1f} s")


def plot_history(history, path, evaluators=()):
    """Draw the training loss (running and per epoch) and each evaluator's main number per epoch into a PNG.

    A history with gradient norms (a trainer with ``clip``) gets a panel of them too: the mean
    global norm before clipping, running and per epoch, on a log scale, and the fraction of
    steps clipped in each epoch on a second axis.

    Args:
        history (dict): ``Trainer.history``.
        path (str | Path): the PNG file (written atomically).
        evaluators (sequence): the trainer's evaluators (name and main number of each).
    Raises:
        ImportError: matplotlib is not installed (``pip install 'tinygrad_rnn[plot]'``).
    """
    Figure = require("matplotlib.figure", "plot_history").Figure  # the object API: no pyplot, no backend switch

    clipped = any("grad_norm" in r for r in history["epochs"])
    panels = 1 + clipped + len(evaluators)
    fig = Figure(figsize=(4.5 * panels, 4), dpi=100)
    axes = fig.subplots(1, panels, squeeze=False)[0]
    per_epoch = history["iterations_per_epoch"] or 1
    its = history["iterations"]
    loss_ax = axes[0]
    if its:
        loss_ax.plot([r["iteration"] / per_epoch for r in its], [float(r["loss"]) for r in its], color="tab:blue",
                     alpha=0.3, linewidth=1, label="running")
    done = [r for r in history["epochs"] if r["complete"]]
    loss_ax.plot([r["iteration"] / per_epoch for r in done], [float(r["train_loss"]) for r in done], "o-",
                 color="tab:blue", label="epoch mean")
    loss_ax.set_ylabel("training loss")
    loss_ax.legend()
    if clipped:
        _plot_clipping(axes[1], history, per_epoch)
    for ax, e in zip(axes[1 + clipped:], evaluators):
        key = f"{e.name}_{e.main}"
        scored = [r for r in history["epochs"] if key in r]
        ax.plot([r["iteration"] / per_epoch for r in scored], [float(r[key]) for r in scored], "s-",
                color="tab:orange")
        ax.set_ylabel(key.replace("_", " "))
        if not e.higher_is_better:
            ax.set_yscale("log")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, format="png")


def _plot_clipping(ax, history, per_epoch):
    """The gradient norm panel of ``plot_history``: norms on ``ax``, the clipped fraction on a twin axis."""
    its = [r for r in history["iterations"] if "grad_norm" in r]
    if its:
        ax.plot([r["iteration"] / per_epoch for r in its], [float(r["grad_norm"]) for r in its], color="tab:green",
                alpha=0.3, linewidth=1, label="running")
    done = [r for r in history["epochs"] if r["complete"] and "grad_norm" in r]
    ax.plot([r["iteration"] / per_epoch for r in done], [float(r["grad_norm"]) for r in done], "o-",
            color="tab:green", label="epoch mean")
    ax.set_ylabel("gradient norm before clipping")
    ax.set_yscale("log")
    ax.legend(loc="upper left")
    fraction = ax.twinx()
    fraction.plot([r["iteration"] / per_epoch for r in done], [float(r["clip_fraction"]) for r in done], "^--",
                  color="tab:red")
    fraction.set_ylim(0, 1.05)
    fraction.set_ylabel("fraction of steps clipped", color="tab:red")


class History(Extension):
    """Write ``history.json`` (valid JSON: a diverged run's ``inf`` is kept as ``"inf"``) and
    ``history.png`` into ``out_dir`` after every epoch record, atomically.

    Args:
        out_dir (str | Path): the folder (created when missing).
    Raises:
        ImportError: matplotlib, which draws ``history.png``, is not installed
            (``pip install 'tinygrad_rnn[plot]'``).
    """

    root_only = True

    def __init__(self, out_dir):
        require("matplotlib.figure", "History")  # now, not after the first epoch of training
        self.out_dir = Path(out_dir)

    def on_start(self, trainer):
        self.out_dir.mkdir(parents=True, exist_ok=True)

    def on_epoch_end(self, trainer, record):
        write_json(self.out_dir / "history.json", trainer.history)
        plot_history(trainer.history, self.out_dir / "history.png", trainer.evaluators)


class Checkpoint(Extension):
    """Write ``last.npz`` after every epoch record and, when ``monitor`` improves, ``best.npz``.

    Both are complete checkpoints (``Trainer.save_checkpoint``): ``Trainer.resume`` continues
    from either exactly. A crash while writing leaves the previous file intact.

    Args:
        out_dir (str | Path): the folder (created when missing).
        monitor (str, optional): record key deciding ``best.npz`` (``"valid_perplexity"``);
            None writes only ``last.npz``. ``fit`` refuses a key the records will not have.
        mode (str): ``"min"`` or ``"max"``: which direction of ``monitor`` is better.
    """

    priority = PRIORITY_WRITER

    def __init__(self, out_dir, monitor=None, mode="min"):
        if mode not in ("min", "max"):
            raise ValueError(f"Checkpoint: mode must be 'min' or 'max', got {mode!r}")
        self.out_dir, self.monitor, self.mode = Path(out_dir), monitor, mode
        self.best = None

    def on_start(self, trainer):
        if self.monitor is not None:
            trainer.check_record_key("Checkpoint", "monitor", self.monitor)
        if trainer.comm.is_root:  # only rank 0 writes the files
            self.out_dir.mkdir(parents=True, exist_ok=True)

    def on_epoch_end(self, trainer, record):
        if self.monitor is not None and self.monitor in record:
            value = float(record[self.monitor])
            if math.isfinite(value) and (self.best is None or (value < self.best if self.mode == "min"
                                                                else value > self.best)):
                self.best = value
                trainer.save_checkpoint(self.out_dir / "best.npz")
        trainer.save_checkpoint(self.out_dir / "last.npz")

    def state_dict(self):
        return {"best": self.best}

    def load_state_dict(self, state):
        self.best = None if state["best"] is None else float(state["best"])

"""Learning-rate schedules: objects that set ``optimizer.lr`` after each complete epoch, with state for checkpoints.

Each schedule has ``update(optimizer, epoch, record=None)`` (``epoch``: epochs completed so
far; ``record``: that epoch's numbers, which ``ReduceOnPlateau`` reads) for a hand-written
loop, and is a trainer extension too: ``Trainer(..., extensions=[Cosine(epochs=25)])`` calls it
after every complete epoch, before checkpoints are written, so a checkpoint holds the learning
rate of the next epoch and the schedule's state (``state_dict``), and a resumed run follows the
same rates. Epoch-based schedules remember the learning rate they started from (``base_lr``,
the optimizer's at their first update).
"""
import math

from tinygrad_rnn.checks import integer, number
from tinygrad_rnn.training.extensions import PRIORITY_EDITOR, Extension


class Schedule(Extension):
    """Base class: ``update`` after each complete epoch; ``state_dict`` / ``load_state_dict``.

    Its ``priority`` (``PRIORITY_EDITOR``) makes the trainer call it before checkpoints.
    """

    priority = PRIORITY_EDITOR

    def update(self, optimizer, epoch, record=None):
        """Set ``optimizer.lr`` for the epoch after ``epoch`` complete ones.

        Args:
            optimizer (Optimizer): whose ``lr`` is set.
            epoch (int): epochs completed.
            record (dict, optional): the numbers of the epoch just completed.
        """
        raise NotImplementedError

    def on_epoch_end(self, trainer, record):
        if record["complete"]:
            self.update(trainer.optimizer, trainer.epoch, record)


class Constant(Schedule):
    """The learning rate never changes (the textbook's seq2seq recipe)."""

    def update(self, optimizer, epoch, record=None):
        pass


class _FromBase(Schedule):
    """A rate computed from the epoch and the rate at the start (``base_lr``)."""

    def __init__(self):
        self.base_lr = None

    def update(self, optimizer, epoch, record=None):
        if self.base_lr is None:
            self.base_lr = optimizer.lr
        optimizer.lr = self.rate(epoch)

    def rate(self, epoch):
        raise NotImplementedError

    def state_dict(self):
        return {"base_lr": self.base_lr}

    def load_state_dict(self, state):
        base = state["base_lr"]
        self.base_lr = None if base is None else number(type(self).__name__, "base_lr", base, 0.0)


class Cosine(_FromBase):
    """Cosine annealing, one step an epoch: ``lr = min_lr + (base_lr - min_lr) * (1 + cos(pi * e / epochs)) / 2``.

    Args:
        epochs (int): the length of the run; the rate reaches ``min_lr`` after it.
        min_lr (float): the final rate, >= 0.
    """

    def __init__(self, epochs, min_lr=0.0):
        super().__init__()
        self.epochs, self.min_lr = integer("Cosine", "epochs", epochs), number("Cosine", "min_lr", min_lr, 0.0)

    def rate(self, epoch):
        fraction = min(epoch, self.epochs) / self.epochs
        return self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * fraction))


class StepDecay(_FromBase):
    """``lr = base_lr * gamma ** (epoch // step_size)``: a drop every ``step_size`` epochs.

    Args:
        step_size (int): epochs between drops.
        gamma (float): the factor of a drop, in (0, 1].
    """

    def __init__(self, step_size, gamma=0.1):
        super().__init__()
        self.step_size = integer("StepDecay", "step_size", step_size)
        self.gamma = number("StepDecay", "gamma", gamma, 0.0, 1.0, low_open=True, high_open=False)

    def rate(self, epoch):
        return self.base_lr * self.gamma ** (epoch // self.step_size)


class ExponentialDecay(_FromBase):
    """``lr = base_lr * gamma ** epoch`` (the caption recipe halves it every epoch with 0.5).

    Args:
        gamma (float): the factor per epoch, in (0, 1].
    """

    def __init__(self, gamma):
        super().__init__()
        self.gamma = number("ExponentialDecay", "gamma", gamma, 0.0, 1.0, True, False)

    def rate(self, epoch):
        return self.base_lr * self.gamma ** epoch


class ReduceOnPlateau(Schedule):
    """Multiply the learning rate by ``factor`` when a monitored number stops improving.

    With the defaults this is the classic language-model rule: divide the learning rate by 4
    after every epoch whose validation perplexity is not below the best so far.

    Args:
        monitor (str): the record key watched, e.g. ``"valid_perplexity"``; ``Trainer.fit`` refuses
            a key the records will not have.
        factor (float): multiplier in (0, 1).
        patience (int): epochs without improvement tolerated before a reduction, >= 0.
        mode (str): ``"min"`` (lower is better) or ``"max"``.
    """

    def __init__(self, monitor="valid_perplexity", factor=0.25, patience=0, mode="min"):
        self.monitor = monitor
        self.factor = number("ReduceOnPlateau", "factor", factor, 0.0, 1.0, low_open=True)
        self.patience = integer("ReduceOnPlateau", "patience", patience, low=0)
        if mode not in ("min", "max"):
            raise ValueError(f"ReduceOnPlateau: mode must be 'min' or 'max', got {mode!r}")
        self.mode = mode
        self.best = None
        self.bad_epochs = 0

    def on_start(self, trainer):
        trainer.check_record_key("ReduceOnPlateau", "monitor", self.monitor)

    def update(self, optimizer, epoch, record=None):
        """Compare ``record[monitor]`` with the best so far; reduce the rate after too many bad epochs.

        Raises:
            KeyError: the record has no ``monitor`` value (no such evaluator).
        """
        if record is None or self.monitor not in record:
            raise KeyError(f"ReduceOnPlateau: the epoch's record has no {self.monitor!r} "
                           f"(keys: {', '.join(sorted(record or {}))})")
        value = float(record[self.monitor])
        better = self.best is None or (value < self.best if self.mode == "min" else value > self.best)
        if better and math.isfinite(value):
            self.best, self.bad_epochs = value, 0
            return
        self.bad_epochs += 1
        if self.bad_epochs > self.patience:
            optimizer.lr *= self.factor
            self.bad_epochs = 0

    def state_dict(self):
        return {"best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state):
        self.best = None if state["best"] is None else float(state["best"])
        self.bad_epochs = int(state["bad_epochs"])

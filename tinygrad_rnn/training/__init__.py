"""Training: one ``Trainer`` whose ``step`` is the whole iteration, evaluators, schedules and extensions.

One concern a module: ``trainer`` (the step and the loop), ``evaluation`` (perplexity, exact
match), ``schedules`` (learning-rate schedules with state), ``extensions`` (progress, log
lines, history JSON and PNG, checkpoints) and ``checkpoint`` (the file format and its checks).
The batch sources are in ``tinygrad_rnn.data.batching``.
"""
from tinygrad_rnn.training.evaluation import ExactMatch, Perplexity, exact_match, perplexity
from tinygrad_rnn.training.extensions import Checkpoint, Extension, History, LogReport, ProgressBar, plot_history
from tinygrad_rnn.training.schedules import (Constant, Cosine, ExponentialDecay, ReduceOnPlateau, Schedule,
                                             StepDecay)
from tinygrad_rnn.training.trainer import Trainer

__all__ = [
    "Checkpoint", "Constant", "Cosine", "ExactMatch", "ExponentialDecay", "Extension", "History", "LogReport",
    "Perplexity", "ProgressBar", "ReduceOnPlateau", "Schedule", "StepDecay", "Trainer", "exact_match",
    "perplexity", "plot_history",
]

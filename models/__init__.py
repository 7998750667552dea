"""Models built only from the public API of tinygrad_rnn."""
from models.rnnlm import LSTMLM, BetterLSTMLM, SimpleRNNLM

__all__ = ["LSTMLM", "BetterLSTMLM", "SimpleRNNLM"]
from models.generation import generate, greedy

__all__ += ["generate", "greedy"]

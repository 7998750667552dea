"""Data sets and batchers: ``ptb`` (Penn Treebank, downloaded and checked) and ``batching`` (truncated BPTT)."""
from tinygrad_rnn.data import batching, ptb
from tinygrad_rnn.data.batching import BPTTBatcher
from tinygrad_rnn.data.ptb import Vocabulary

__all__ = ["BPTTBatcher", "Vocabulary", "batching", "ptb"]

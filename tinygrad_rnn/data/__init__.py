"""Data sets and batchers: ``ptb`` (Penn Treebank, downloaded and checked), ``batching`` (truncated BPTT) and
``toy_seq`` (generated addition and date tasks for seq2seq)."""
from tinygrad_rnn.data import batching, ptb, toy_seq
from tinygrad_rnn.data.batching import BPTTBatcher
from tinygrad_rnn.data.ptb import Vocabulary
from tinygrad_rnn.data.toy_seq import CharVocabulary

__all__ = ["BPTTBatcher", "CharVocabulary", "Vocabulary", "batching", "ptb", "toy_seq"]
from tinygrad_rnn.data import captions

__all__ += ["captions"]

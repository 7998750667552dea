"""Data sets and batch sources: ``ptb`` (Penn Treebank, downloaded and checked), ``toy_seq`` (generated
addition and date tasks for seq2seq), ``captions`` (generated digit images) and ``batching`` (the
truncated-BPTT and the shuffled minibatch sources the trainer loops over)."""
from tinygrad_rnn.data import batching, captions, ptb, toy_seq
from tinygrad_rnn.data.batching import BPTTBatcher, ShuffledBatcher
from tinygrad_rnn.data.ptb import Vocabulary
from tinygrad_rnn.data.toy_seq import CharVocabulary

__all__ = ["BPTTBatcher", "CharVocabulary", "ShuffledBatcher", "Vocabulary", "batching", "captions", "ptb",
           "toy_seq"]

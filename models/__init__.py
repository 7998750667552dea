"""Models built only from the public API of tinygrad_rnn."""
from models.attention import AttentionSeq2seq
from models.captioning import CaptionModel
from models.decoding import DecodingMixin, beam_search, greedy_search, sequence_log_prob
from models.generation import generate, greedy
from models.rnnlm import LSTMLM, BetterLSTMLM, SimpleRNNLM
from models.seq2seq import PeekySeq2seq, Seq2seq

__all__ = [
    "LSTMLM", "AttentionSeq2seq", "BetterLSTMLM", "CaptionModel", "DecodingMixin", "PeekySeq2seq", "Seq2seq",
    "SimpleRNNLM", "beam_search", "generate", "greedy", "greedy_search", "sequence_log_prob",
]

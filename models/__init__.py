"""Models built only from the public API of tinygrad_rnn."""
from models.rnnlm import LSTMLM, BetterLSTMLM, SimpleRNNLM

__all__ = ["LSTMLM", "BetterLSTMLM", "SimpleRNNLM"]
from models.generation import generate, greedy

__all__ += ["generate", "greedy"]
from models.attention import AttentionSeq2seq
from models.decoding import DecodingMixin, beam_search, greedy_search, sequence_log_prob
from models.seq2seq import PeekySeq2seq, Seq2seq

__all__ += ["AttentionSeq2seq", "DecodingMixin", "PeekySeq2seq", "Seq2seq", "beam_search", "greedy_search",
            "sequence_log_prob"]
from models.captioning import CaptionModel

__all__ += ["CaptionModel"]

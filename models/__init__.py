"""Models built only from the public API of tinygrad_rnn (installed as ``tinygrad_rnn.models``)."""
from tinygrad_rnn.models.attention import AttentionSeq2seq
from tinygrad_rnn.models.captioning import CaptionModel
from tinygrad_rnn.models.decoding import DecodingMixin, beam_search, greedy_search, sequence_log_prob
from tinygrad_rnn.models.factory import MODELS, build_model
from tinygrad_rnn.models.generation import generate, greedy
from tinygrad_rnn.models.rnnlm import LSTMLM, BetterLSTMLM, SimpleRNNLM
from tinygrad_rnn.models.seq2seq import PeekySeq2seq, Seq2seq

__all__ = [
    "LSTMLM", "MODELS", "AttentionSeq2seq", "BetterLSTMLM", "CaptionModel", "DecodingMixin", "PeekySeq2seq",
    "Seq2seq", "SimpleRNNLM", "beam_search", "build_model", "generate", "greedy", "greedy_search",
    "sequence_log_prob",
]

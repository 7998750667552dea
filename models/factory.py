"""One factory for every model, keyed by the spec that checkpoints store (``run["model"]``).

A spec is a JSON-ready dict: ``kind`` plus the model's constructor arguments, e.g.
``{"kind": "lstm", "vocab_size": 10000, "wordvec_size": 100, "hidden_size": 100}``. The
training tools write it into every checkpoint, so ``build_model(meta["run"]["model"])``
rebuilds the model a checkpoint belongs to (``tinygrad-rnn-generate`` does).
"""
import numpy as np

from tinygrad_rnn.models.attention import AttentionSeq2seq
from tinygrad_rnn.models.captioning import CaptionModel
from tinygrad_rnn.models.rnnlm import LSTMLM, BetterLSTMLM, SimpleRNNLM
from tinygrad_rnn.models.seq2seq import PeekySeq2seq, Seq2seq

MODELS = {
    "rnn": SimpleRNNLM, "lstm": LSTMLM, "better": BetterLSTMLM,
    "seq2seq": Seq2seq, "peeky": PeekySeq2seq, "attention": AttentionSeq2seq,
    "caption": CaptionModel,
}


def build_model(spec, seed=None, dtype=np.float32):
    """The model a spec describes, freshly initialized, on the CPU.

    Args:
        spec (dict): ``kind`` (one of ``MODELS``) and the constructor's arguments (lists
            are passed as tuples, as JSON gives them back).
        seed (int | numpy.random.Generator | None): randomness of the weights (and dropout).
        dtype (numpy.dtype): float dtype of the parameters.
    Returns:
        Layer: the model.
    Raises:
        ValueError: no or an unknown ``kind``, or arguments the model does not take.
    """
    spec = dict(spec)
    kind = spec.pop("kind", None)
    if kind not in MODELS:
        raise ValueError(f"build_model: kind must be one of {', '.join(MODELS)}, got {kind!r}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()}
    try:
        return MODELS[kind](**kwargs, seed=seed, dtype=dtype)
    except TypeError as e:
        raise ValueError(f"build_model: the spec {spec} does not fit {MODELS[kind].__name__} ({e})") from None

"""Word-level language models: SimpleRNNLM, LSTMLM, BetterLSTMLM.

Each maps token ids (N, T) to next-token scores (N, T, V) and carries its recurrent state
across calls (truncated BPTT) until ``reset_state()``.
"""
import numpy as np

from tinygrad_rnn import layers as L


class _LanguageModel(L.Layer):
    """Shared parts (``forward``, ``loss``); subclasses implement ``features`` and have an output layer ``fc``."""

    def forward(self, xs):
        """Scores of the next token.

        Args:
            xs (ndarray): (N, T) integer ids in [0, V).
        Returns:
            Variable: (N, T, V).
        """
        return self.fc(self.features(xs))

    def loss(self, xs, ts, ignore_label=None):
        """Mean cross-entropy of the next-token scores: the one contract of training and evaluation.

        The output layer's ``softmax_cross_entropy``: the value and gradients of
        ``F.softmax_cross_entropy(self(xs), ts)`` without keeping the (N, T, V) scores.

        Args:
            xs (ndarray): (N, T) integer ids.
            ts (ndarray): (N, T) integer target ids.
            ignore_label (int, optional): targets holding it are left out of the mean (the
                padding after the end of an evaluated text).
        Returns:
            Variable: () float.
        """
        return self.fc.softmax_cross_entropy(self.features(xs), ts, ignore_label=ignore_label)


class SimpleRNNLM(_LanguageModel):
    """Embedding -> tanh RNN -> Linear.

    Args:
        vocab_size (int): V.
        wordvec_size (int): D.
        hidden_size (int): H.
        seed (int | numpy.random.Generator | None): randomness of the weights.
        dtype (numpy.dtype): float dtype of the parameters.
    """

    def __init__(self, vocab_size, wordvec_size, hidden_size, seed=None, dtype=np.float32):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.embed = L.Embedding(vocab_size, wordvec_size, seed=rng, dtype=dtype)
        self.rnn = L.RNN(wordvec_size, hidden_size, stateful=True, seed=rng, dtype=dtype)
        self.fc = L.Linear(hidden_size, vocab_size, seed=rng, dtype=dtype)

    def features(self, xs):
        """What the output layer ``fc`` maps to the next token's scores.

        Args:
            xs (ndarray): (N, T) integer ids in [0, V).
        Returns:
            Variable: (N, T, H).
        """
        return self.rnn(self.embed(xs))


class LSTMLM(_LanguageModel):
    """Embedding -> LSTM -> Linear.

    Args:
        vocab_size (int): V.
        wordvec_size (int): D.
        hidden_size (int): H.
        seed (int | numpy.random.Generator | None): randomness of the weights.
        dtype (numpy.dtype): float dtype of the parameters.
        fused (bool): the LSTMs run the fused ops (True) or record every gate (see ``layers.LSTM``).
    """

    def __init__(self, vocab_size, wordvec_size, hidden_size, seed=None, dtype=np.float32, fused=True):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.embed = L.Embedding(vocab_size, wordvec_size, seed=rng, dtype=dtype)
        self.lstm = L.LSTM(wordvec_size, hidden_size, stateful=True, seed=rng, dtype=dtype, fused=fused)
        self.fc = L.Linear(hidden_size, vocab_size, seed=rng, dtype=dtype)

    def features(self, xs):
        """What the output layer ``fc`` maps to the next token's scores.

        Args:
            xs (ndarray): (N, T) integer ids in [0, V).
        Returns:
            Variable: (N, T, H).
        """
        return self.lstm(self.embed(xs))


class BetterLSTMLM(_LanguageModel):
    """Embedding -> dropout -> LSTM -> dropout -> LSTM -> dropout -> output tied to the embedding.

    Args:
        vocab_size (int): V.
        wordvec_size (int): D, must equal H (the output projection reuses the embedding).
        hidden_size (int): H.
        dropout (float): drop probability of the three dropout layers.
        seed (int | numpy.random.Generator | None): randomness of the weights and masks.
        dtype (numpy.dtype): float dtype of the parameters.
        fused (bool): the LSTMs run the fused ops (True) or record every gate (see ``layers.LSTM``).
    Raises:
        ValueError: ``wordvec_size != hidden_size``.
    """

    def __init__(self, vocab_size, wordvec_size, hidden_size, dropout=0.5, seed=None, dtype=np.float32, fused=True):
        super().__init__()
        if wordvec_size != hidden_size:
            raise ValueError(f"BetterLSTMLM: weight tying needs wordvec_size == hidden_size, "
                             f"got {wordvec_size} and {hidden_size}")
        rng = np.random.default_rng(seed)
        self.embed = L.Embedding(vocab_size, wordvec_size, seed=rng, dtype=dtype)
        self.drop0 = L.Dropout(dropout, seed=rng)
        self.lstm1 = L.LSTM(wordvec_size, hidden_size, stateful=True, seed=rng, dtype=dtype, fused=fused)
        self.drop1 = L.Dropout(dropout, seed=rng)
        self.lstm2 = L.LSTM(hidden_size, hidden_size, stateful=True, seed=rng, dtype=dtype, fused=fused)
        self.drop2 = L.Dropout(dropout, seed=rng)
        self.fc = L.TiedLinear(self.embed)

    def features(self, xs):
        """What the output layer ``fc`` maps to the next token's scores.

        Args:
            xs (ndarray): (N, T) integer ids in [0, V).
        Returns:
            Variable: (N, T, H).
        """
        hs = self.lstm1(self.drop0(self.embed(xs)))
        hs = self.lstm2(self.drop1(hs))
        return self.drop2(hs)

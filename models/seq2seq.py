"""Encoder-decoder models: Seq2seq and PeekySeq2seq (the classic textbook's lessons).

An Encoder (Embedding -> LSTM) reads the question; its last hidden state, the code ``h``
(N, H), starts the Decoder's LSTM (cell state zero). The decoder is trained with teacher
forcing: it reads the answer shifted by one (``ts[:, :-1]``, starting with the start token)
and predicts ``ts[:, 1:]``. A peeky decoder also sees ``h`` at every step: concatenated to
its input embedding and to the input of its output Linear.

Every model maps ``model(xs, inputs)`` to teacher-forced scores, ``model.loss(xs, ts)`` to the
mean cross-entropy, and decodes with ``generate(xs, start_id, length, beam_width=1)``
(``tinygrad_rnn.models.decoding``). Teacher-forced training runs the decoder's LSTM over the
whole answer at once; decoding runs it one step at a time (``LSTM.step``), the same function.
"""
import numpy as np

from tinygrad_rnn import functions as F
from tinygrad_rnn import layers as L
from tinygrad_rnn.models.decoding import DecodingMixin


class Encoder(L.Layer):
    """Embedding -> LSTM over the question.

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
        self.lstm = L.LSTM(wordvec_size, hidden_size, seed=rng, dtype=dtype, fused=fused)

    def forward(self, xs):
        """Encode a batch of questions.

        Args:
            xs (ndarray): (N, T) int ids.
        Returns:
            tuple of Variable: all hidden states (N, T, H) and the last one (N, H).
        """
        hs, (h, _) = self.lstm.sequence(self.embed(xs))
        return hs, h


class Decoder(L.Layer):
    """Embedding -> LSTM (started from the code) -> Linear.

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
        lstm_in, fc_in = self._input_sizes(wordvec_size, hidden_size)
        self.embed = L.Embedding(vocab_size, wordvec_size, seed=rng, dtype=dtype)
        self.lstm = L.LSTM(lstm_in, hidden_size, seed=rng, dtype=dtype, fused=fused)
        self.fc = L.Linear(fc_in, vocab_size, seed=rng, dtype=dtype)

    def _input_sizes(self, wordvec_size, hidden_size):
        """Input widths of the LSTM and of the output Linear."""
        return wordvec_size, hidden_size

    def forward(self, ts, h):
        """Teacher-forced scores.

        Args:
            ts (ndarray): (N, T) int decoder inputs.
            h (Variable): (N, H) the code.
        Returns:
            Variable: (N, T, V) scores of the next tokens.
        """
        out, _ = self.lstm.sequence(self.embed(ts), self.lstm.initial_state(h=h))
        return self.fc(out)

    def init_state(self, h):
        """The decoding state before the first step: ``(lstm state,)``, from the code (c zero, as in ``forward``)."""
        return (self.lstm.initial_state(h=h),)

    def step(self, state, ids):
        """One decoding step.

        Args:
            state (tuple): from ``init_state`` or the previous step.
            ids (ndarray): (N,) int inputs.
        Returns:
            tuple: scores (N, V) and the next state.
        """
        (lstm_state,) = state
        h, lstm_state = self.lstm.step(self.embed(ids), lstm_state)
        return self.fc(h), (lstm_state,)


class PeekyDecoder(Decoder):
    """A Decoder whose LSTM and output Linear also read the code at every step.

    The LSTM input is ``[embedding, h]`` (D + H) and the Linear input ``[lstm output, h]`` (2H).
    Takes the arguments of ``Decoder``.
    """

    def _input_sizes(self, wordvec_size, hidden_size):
        return wordvec_size + hidden_size, 2 * hidden_size

    def forward(self, ts, h):
        """Teacher-forced scores (see ``Decoder.forward``).

        The LSTM reads ``h`` as its ``static`` input: the same values as ``[embedding, h]`` at every
        step, with ``h``'s part of the input projection computed once for all steps, not once a step.
        """
        n, steps = ts.shape
        out, _ = self.lstm.sequence(self.embed(ts), self.lstm.initial_state(h=h), static=h)
        hs = F.broadcast_to(F.reshape(h, (n, 1, h.shape[1])), (n, steps, h.shape[1]))
        return self.fc(F.concat([out, hs], axis=2))

    def init_state(self, h):
        """The decoding state before the first step: ``(lstm state, code)``."""
        return self.lstm.initial_state(h=h), h

    def step(self, state, ids):
        """One decoding step (see ``Decoder.step``)."""
        lstm_state, code = state
        h, lstm_state = self.lstm.step(F.concat([self.embed(ids), code], axis=1), lstm_state)
        return self.fc(F.concat([h, code], axis=1)), (lstm_state, code)


class Seq2seq(DecodingMixin, L.Layer):
    """Encoder-decoder: the encoder's last hidden state starts the decoder.

    Args:
        vocab_size (int): V, shared by questions and answers.
        wordvec_size (int): D.
        hidden_size (int): H.
        seed (int | numpy.random.Generator | None): randomness of the weights.
        dtype (numpy.dtype): float dtype of the parameters.
        fused (bool): the LSTMs run the fused ops (True) or record every gate (see ``layers.LSTM``).
    """

    decoder_class = Decoder

    def __init__(self, vocab_size, wordvec_size, hidden_size, seed=None, dtype=np.float32, fused=True):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.encoder = Encoder(vocab_size, wordvec_size, hidden_size, seed=rng, dtype=dtype, fused=fused)
        self.decoder = self.decoder_class(vocab_size, wordvec_size, hidden_size, seed=rng, dtype=dtype,
                                          fused=fused)

    def forward(self, xs, inputs):
        """Teacher-forced scores.

        Args:
            xs (ndarray): (N, Tq) int questions.
            inputs (ndarray): (N, T) int decoder inputs (an answer without its last token).
        Returns:
            Variable: (N, T, V) scores of the next tokens.
        """
        return self.decoder(inputs, self.encoder(xs)[1])

    def init_decoder(self, xs):
        """Encode for ``tinygrad_rnn.models.decoding``: the decoder's state before the first step."""
        return self.decoder.init_state(self.encoder(xs)[1])


class PeekySeq2seq(Seq2seq):
    """Seq2seq with a ``PeekyDecoder``; takes the arguments of ``Seq2seq``."""

    decoder_class = PeekyDecoder

"""AttentionSeq2seq: a decoder that attends over all the encoder's hidden states.

At each decoder step with hidden state ``h`` (N, H), dot-product attention over the encoder
states ``hs`` (N, Tq, H) gives weights ``a = softmax(hs . h)`` (N, Tq) and a context
``c = sum_t a_t hs_t`` (N, H); the output Linear reads ``[c, h]`` (2H). Teacher-forced
training computes all decoder steps' attention at once with two batched products.

With ``bidirectional=True`` a second LSTM reads the question backwards and its states are
added to the forward ones (position by position), so ``hs`` holds context from both sides
and keeps the width H; the decoder starts from the sum of both LSTMs' final states.
"""
import numpy as np

from tinygrad_rnn import as_numpy, get_array_module, no_grad, test_mode
from tinygrad_rnn import functions as F
from tinygrad_rnn import layers as L
from tinygrad_rnn.models.decoding import DecodingMixin
from tinygrad_rnn.models.seq2seq import Decoder, Encoder


def attend(hs_dec, hs_enc):
    """Dot-product attention of every decoder state over the encoder states.

    Args:
        hs_dec (Variable): (N, Td, H) decoder hidden states.
        hs_enc (Variable | ndarray): (N, Tq, H) encoder hidden states.
    Returns:
        tuple of Variable: contexts (N, Td, H) and weights (N, Td, Tq), each row summing to 1.
    """
    weights = F.softmax(F.matmul(hs_dec, F.transpose(hs_enc, (0, 2, 1))), axis=-1)
    return F.matmul(weights, hs_enc), weights


class AttentionEncoder(Encoder):
    """Embedding -> LSTM, optionally with a backward LSTM whose states are added.

    Args:
        vocab_size (int): V.
        wordvec_size (int): D.
        hidden_size (int): H.
        bidirectional (bool): add a backward LSTM.
        seed (int | numpy.random.Generator | None): randomness of the weights.
        dtype (numpy.dtype): float dtype of the parameters.
        fused (bool): the LSTMs run the fused ops (True) or record every gate (see ``layers.LSTM``).
    """

    def __init__(self, vocab_size, wordvec_size, hidden_size, bidirectional=False, seed=None, dtype=np.float32,
                 fused=True):
        rng = np.random.default_rng(seed)
        super().__init__(vocab_size, wordvec_size, hidden_size, seed=rng, dtype=dtype, fused=fused)
        self.bidirectional = bidirectional
        if bidirectional:
            self.lstm_backward = L.LSTM(wordvec_size, hidden_size, seed=rng, dtype=dtype, fused=fused)

    def forward(self, xs):
        """Encode a batch of questions.

        Args:
            xs (ndarray): (N, T) int ids.
        Returns:
            tuple of Variable: hidden states (N, T, H) and the decoder's initial state (N, H).
        """
        es = self.embed(xs)
        hs, (h, _) = self.lstm.sequence(es)
        if not self.bidirectional:
            return hs, h
        backward, (h_backward, _) = self.lstm_backward.sequence(es[:, ::-1])
        # back in reading order: position t then holds what the backward LSTM read of x[t:]
        return hs + backward[:, ::-1], h + h_backward


class AttentionDecoder(Decoder):
    """Embedding -> LSTM (started from the encoder's state) -> attention -> Linear([c, h]).

    Takes the arguments of ``Decoder``.
    """

    def _input_sizes(self, wordvec_size, hidden_size):
        return wordvec_size, 2 * hidden_size

    def forward(self, ts, hs_enc, h):
        """Teacher-forced scores and attention weights.

        Args:
            ts (ndarray): (N, Td) int decoder inputs.
            hs_enc (Variable): (N, Tq, H) encoder states.
            h (Variable): (N, H) initial decoder state.
        Returns:
            tuple of Variable: scores (N, Td, V) and weights (N, Td, Tq).
        """
        out, _ = self.lstm.sequence(self.embed(ts), self.lstm.initial_state(h=h))
        context, weights = attend(out, hs_enc)
        return self.fc(F.concat([context, out], axis=2)), weights

    def init_state(self, hs_enc, h):
        """The decoding state before the first step: ``(lstm state, encoder states)``."""
        return self.lstm.initial_state(h=h), hs_enc

    def step(self, state, ids):
        """One decoding step (see ``Decoder.step``)."""
        lstm_state, hs_enc = state
        h, lstm_state = self.lstm.step(self.embed(ids), lstm_state)
        n, width = h.shape
        context, _ = attend(F.reshape(h, (n, 1, width)), hs_enc)
        return self.fc(F.concat([F.reshape(context, (n, width)), h], axis=1)), (lstm_state, hs_enc)


class AttentionSeq2seq(DecodingMixin, L.Layer):
    """Encoder-decoder with dot-product attention.

    Args:
        vocab_size (int): V, shared by questions and answers.
        wordvec_size (int): D.
        hidden_size (int): H.
        bidirectional (bool): the encoder also reads the question backwards.
        seed (int | numpy.random.Generator | None): randomness of the weights.
        dtype (numpy.dtype): float dtype of the parameters.
        fused (bool): the LSTMs run the fused ops (True) or record every gate (see ``layers.LSTM``).
    """

    def __init__(self, vocab_size, wordvec_size, hidden_size, bidirectional=False, seed=None, dtype=np.float32,
                 fused=True):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.encoder = AttentionEncoder(vocab_size, wordvec_size, hidden_size, bidirectional, seed=rng, dtype=dtype,
                                        fused=fused)
        self.decoder = AttentionDecoder(vocab_size, wordvec_size, hidden_size, seed=rng, dtype=dtype, fused=fused)

    def forward(self, xs, inputs):
        """Teacher-forced scores (N, T, V), as ``Seq2seq.forward``: questions (N, Tq), decoder inputs (N, T)."""
        hs, h = self.encoder(xs)
        return self.decoder(inputs, hs, h)[0]

    def init_decoder(self, xs):
        """Encode for ``tinygrad_rnn.models.decoding``: the decoder's state before the first step."""
        return self.decoder.init_state(*self.encoder(xs))

    def attention_weights(self, xs, start_id, ids):
        """Attention weights of decoding the given outputs (teacher forcing on them).

        For the ids ``generate`` returned, these are the weights its decoding steps used.

        Args:
            xs (ndarray): (N, Tq) int question ids.
            start_id (int): the first decoder input.
            ids (array-like): (N, L) int outputs, L >= 1, e.g. from ``generate``.
        Returns:
            ndarray: (N, L, Tq) on the CPU; row ``[n, t]`` is how output token t of example n
            attended over its input positions (it sums to 1).
        """
        xp = get_array_module(xs)
        ids = xp.asarray(ids, dtype=xp.int32)
        inputs = xp.concatenate([xp.full((len(ids), 1), start_id, dtype=xp.int32), ids[:, :-1]], axis=1)
        with no_grad(), test_mode():
            hs, h = self.encoder(xs)
            return as_numpy(self.decoder(inputs, hs, h)[1].data)

    def generate(self, xs, start_id, length, beam_width=1, return_attention=False):
        """Decode (see ``DecodingMixin.generate``), with the attention weights on request.

        Args:
            xs (ndarray): (N, Tq) int questions, on the model's device.
            start_id (int): the first decoder input.
            length (int): tokens to generate.
            beam_width (int): 1 for greedy search, more for beam search.
            return_attention (bool): also return ``attention_weights`` of the decoded ids.
        Returns:
            ndarray | tuple: (N, length) int32 ids on the CPU, and with ``return_attention``
            the (N, length, Tq) weights too.
        """
        ids = super().generate(xs, start_id, length, beam_width)
        if not return_attention:
            return ids
        return ids, self.attention_weights(xs, start_id, ids)

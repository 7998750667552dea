"""Image captioning: a small CNN encodes the image, a peeky LSTM decoder writes the caption.

The encoder's feature vector ``h`` (N, H) plays the part of a seq2seq encoder's code: it
starts the decoder's LSTM (cell state zero) and, as in ``PeekySeq2seq``, is concatenated to
the decoder's input embedding and to the input of its output Linear at every step. The
decoder is ``tinygrad_rnn.models.seq2seq.PeekyDecoder`` itself; decoding (greedy and beam search)
comes from ``tinygrad_rnn.models.decoding``.
"""
import numpy as np

from tinygrad_rnn import functions as F
from tinygrad_rnn import layers as L
from tinygrad_rnn.models.decoding import DecodingMixin
from tinygrad_rnn.models.seq2seq import PeekyDecoder


class CNNEncoder(L.Layer):
    """(Conv 3x3 -> ReLU -> MaxPool 2x2) per entry of ``channels``, a max over the remaining
    rows, then Flatten -> Linear -> tanh.

    The max over rows makes the code independent of how high the text sits; the Linear reads
    every column, so the code keeps the left-to-right order the decoder needs. tanh keeps the
    code in the range of an LSTM's hidden state.

    Args:
        hidden_size (int): H, the size of the code.
        image_shape (tuple): (C, H, W) of the input images.
        channels (sequence of int): output channels of each convolution block.
        seed (int | numpy.random.Generator | None): randomness of the weights.
        dtype (numpy.dtype): float dtype of the parameters.
    Raises:
        ValueError: the image is too small for ``len(channels)`` halvings.
    """

    def __init__(self, hidden_size, image_shape=(1, 32, 96), channels=(8, 32, 64), seed=None, dtype=np.float32):
        super().__init__()
        rng = np.random.default_rng(seed)
        c, h, w = image_shape
        if min(h, w) < 2 ** len(channels):
            raise ValueError(f"CNNEncoder: images of shape {tuple(image_shape)} are too small for "
                             f"{len(channels)} 2x2 poolings")
        self.depth = len(channels)
        for k, (c_in, c_out) in enumerate(zip((c,) + tuple(channels), channels)):
            setattr(self, f"conv{k}", L.Conv2d(c_in, c_out, 3, pad=1, seed=rng, dtype=dtype))
            w //= 2
        self.pool = L.MaxPool2d(2)
        self.flatten = L.Flatten()
        self.fc = L.Linear(channels[-1] * w, hidden_size, seed=rng, dtype=dtype)

    def forward(self, xs):
        """Encode a batch of images.

        Args:
            xs (Variable | ndarray): (N, C, H, W) float images.
        Returns:
            Variable: (N, H) codes in (-1, 1).
        """
        for k in range(self.depth):
            xs = self.pool(F.relu(getattr(self, f"conv{k}")(xs)))
        xs = F.max_pool2d(xs, (xs.shape[2], 1))  # (N, C, 1, W'): one feature vector per column
        return F.tanh(self.fc(self.flatten(xs)))


class CaptionModel(DecodingMixin, L.Layer):
    """CNN encoder + peeky LSTM decoder.

    Args:
        vocab_size (int): V, caption words.
        wordvec_size (int): D.
        hidden_size (int): H, the code and the decoder LSTM.
        image_shape (tuple): (C, H, W) of the images.
        channels (sequence of int): output channels of the encoder's convolution blocks.
        seed (int | numpy.random.Generator | None): randomness of the weights.
        dtype (numpy.dtype): float dtype of the parameters.
        fused (bool): the decoder's LSTM runs the fused ops (True) or records every gate (see ``layers.LSTM``).
    """

    def __init__(self, vocab_size, wordvec_size, hidden_size, image_shape=(1, 32, 96), channels=(8, 32, 64),
                 seed=None, dtype=np.float32, fused=True):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.encoder = CNNEncoder(hidden_size, image_shape, channels, seed=rng, dtype=dtype)
        self.decoder = PeekyDecoder(vocab_size, wordvec_size, hidden_size, seed=rng, dtype=dtype, fused=fused)

    def forward(self, xs, inputs):
        """Teacher-forced scores.

        Args:
            xs (Variable | ndarray): (N, C, H, W) float images.
            inputs (ndarray): (N, T) int caption inputs (a caption without its last token).
        Returns:
            Variable: (N, T, V) scores of the next tokens.
        """
        return self.decoder(inputs, self.encoder(xs))

    def init_decoder(self, xs):
        """Encode for ``tinygrad_rnn.models.decoding``: the decoder's state before the first step."""
        return self.decoder.init_state(self.encoder(xs))


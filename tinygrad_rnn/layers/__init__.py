"""Layers; ``from tinygrad_rnn import layers as L``.

A ``Layer`` registers Parameters and sub-layers by attribute assignment. Cells (``LSTMCell``)
run one step; sequence layers (``LSTM``) run (N, T, D) -> (N, T, H) and can carry their state.
"""
from tinygrad_rnn.layers.base import Layer
from tinygrad_rnn.layers.basic import Dropout, Embedding, Linear, TiedLinear
from tinygrad_rnn.layers.recurrent import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell

__all__ = ["GRU", "LSTM", "RNN", "Dropout", "Embedding", "GRUCell", "LSTMCell", "Layer", "Linear", "RNNCell",
           "TiedLinear"]
from tinygrad_rnn.layers.conv import Conv2d, Flatten, MaxPool2d

__all__ += ["Conv2d", "Flatten", "MaxPool2d"]

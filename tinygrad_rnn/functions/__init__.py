"""Differentiable ops; ``from tinygrad_rnn import functions as F``.

Each op is a Function subclass with a hand-written backward and a lowercase wrapper here.
"""
from tinygrad_rnn.functions.activation import log_softmax, relu, sigmoid, softmax, tanh
from tinygrad_rnn.functions.array import (broadcast_to, concat, embed_id, getitem, reshape, split, stack, sum_to,
                                          transpose)
from tinygrad_rnn.functions.conv import conv2d, flatten, max_pool2d
from tinygrad_rnn.functions.linalg import linear, matmul
from tinygrad_rnn.functions.loss import (accuracy, linear_softmax_cross_entropy, mean_squared_error,
                                         sigmoid_cross_entropy, softmax_cross_entropy)
from tinygrad_rnn.functions.math import add, clip, div, exp, log, max, mean, min, mul, neg, pow, sub, sum
from tinygrad_rnn.functions.noise import dropout, dropout_mask
from tinygrad_rnn.functions.rnn import gru, gru_sequence, lstm, lstm_sequence

__all__ = [
    "accuracy", "add", "broadcast_to", "clip", "concat", "div", "dropout", "dropout_mask", "embed_id", "exp",
    "getitem", "gru", "gru_sequence", "linear", "linear_softmax_cross_entropy", "log", "log_softmax", "lstm",
    "lstm_sequence", "matmul", "max", "mean", "mean_squared_error", "min", "mul", "neg", "pow", "relu", "reshape",
    "sigmoid", "sigmoid_cross_entropy", "softmax", "softmax_cross_entropy", "split", "stack", "sub", "sum",
    "sum_to", "tanh", "transpose",
]
__all__ += ["conv2d", "flatten", "max_pool2d"]

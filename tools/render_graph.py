"""Render the example graphs of docs/graph.md: RNN and LSTM steps, unrolls, a 35-step LSTM, a gradient view.

Usage (once installed, e.g. by ``make``)::

    tinygrad-rnn-render-graph --out docs/img --format svg   (or python tools/render_graph.py ...)

Only shapes reach the drawings of the forward graph, so their inputs are zeros; the gradient
view draws the gradients of a seeded random RNN (``--seed``).
"""
import argparse
import os

import numpy as np

from tinygrad_rnn import Parameter, Variable, name_scope
from tinygrad_rnn import functions as F
from tinygrad_rnn import layers as L
from tinygrad_rnn.graph import render

N, D, H, T = 2, 3, 4, 3  # batch, input size, hidden size, time steps of the hand-written unroll
LONG_T = 35  # time steps of the layer graphs: the textbook's BPTT window


def _zeros(*shape):
    return np.zeros(shape, dtype=np.float32)


def _rnn_params(prefix):
    return (Parameter(_zeros(D, H), name=f"{prefix}/Wx"), Parameter(_zeros(H, H), name=f"{prefix}/Wh"),
            Parameter(_zeros(H), name=f"{prefix}/b"))


def _tanh_step(x, h, Wx, Wh, b):
    return F.tanh(F.matmul(x, Wx) + F.matmul(h, Wh) + b)


def tanh_rnn_step():
    """One step ``h' = tanh(x @ Wx + h @ Wh + b)``.

    Returns:
        list of Variable: ``[h']``, (N, H) float32.
    """
    x, h = Variable(_zeros(N, D), name="x"), Variable(_zeros(N, H), name="h")
    h_next = _tanh_step(x, h, *_rnn_params("rnn"))
    h_next.name = "h'"
    return [h_next]


def lstm_step():
    """One LSTM step from primitives, inside ``name_scope('lstm')``.

    The fused weights ``Wx`` (D, 4H), ``Wh`` (H, 4H) and ``b`` (4H,) hold the gate blocks in the
    order i, f, g, o.

    Returns:
        list of Variable: ``[h', c']``, each (N, H) float32.
    """
    x, h, c = (Variable(_zeros(N, D), name="x"), Variable(_zeros(N, H), name="h"),
               Variable(_zeros(N, H), name="c"))
    Wx, Wh = Parameter(_zeros(D, 4 * H), name="lstm/Wx"), Parameter(_zeros(H, 4 * H), name="lstm/Wh")
    b = Parameter(_zeros(4 * H), name="lstm/b")
    with name_scope("lstm"):
        a = F.matmul(x, Wx) + F.matmul(h, Wh) + b
        i, f, g, o = F.split(a, 4, axis=1)
        i, f, g, o = F.sigmoid(i), F.sigmoid(f), F.tanh(g), F.sigmoid(o)
        i.name, f.name, g.name, o.name = "i", "f", "g", "o"
        c_next = f * c + i * g
        h_next = o * F.tanh(c_next)
    h_next.name, c_next.name = "h'", "c'"
    return [h_next, c_next]


def unrolled_rnn():
    """``T`` tanh-RNN steps sharing one set of weights, step ``t`` inside ``rnn/t<t>`` scopes.

    Returns:
        list of Variable: ``[h_T]``, (N, H) float32.
    """
    Wx, Wh, b = _rnn_params("rnn")
    h = Variable(_zeros(N, H), name="h0")
    for t in range(T):
        x = Variable(_zeros(N, D), name=f"x{t}")
        with name_scope("rnn"), name_scope(f"t{t}"):
            h = _tanh_step(x, h, Wx, Wh, b)
        h.name = f"h{t + 1}"
    return [h]


def lstm_layer():
    """An ``L.LSTM`` layer over ``LONG_T`` steps, composed from primitives (``fused=False``).

    Returns:
        list of Variable: ``[hs]``, (N, LONG_T, H) float32.
    """
    lstm = L.LSTM(D, H, seed=0, fused=False)
    hs = lstm(_zeros(N, LONG_T, D))
    hs.name = "hs"
    return [hs]


def rnn_gradients(seed):
    """A tanh ``L.RNN`` over ``LONG_T`` steps whose loss reads the last step only, after a backward
    that keeps the graph and every gradient, so that the gradient view can draw them.

    Args:
        seed (int): seeds the weights and the inputs.
    Returns:
        list of Variable: ``[loss]``, a float32 scalar holding its gradient.
    """
    rng = np.random.default_rng(seed)
    rnn = L.RNN(D, H, seed=rng)
    hs = rnn(rng.standard_normal((N, LONG_T, D)).astype(np.float32))
    loss = F.sum(hs[:, -1] * rng.standard_normal((N, H)).astype(np.float32))
    loss.name = "loss"
    loss.backward(retain_grad=True, retain_graph=True)
    return [loss]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join("docs", "img"), help="output directory (created if missing)")
    parser.add_argument("--format", default="svg", choices=["svg", "png", "pdf"], help="image format")
    parser.add_argument("--seed", type=int, default=0, help="seed of the gradient view's weights and inputs")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    unrolled = unrolled_rnn()
    jobs = [("rnn_step", tanh_rnn_step(), {}), ("lstm_step", lstm_step(), {}),
            ("rnn_unrolled", unrolled, {"expand_all": True}), ("rnn_unrolled_collapsed", unrolled, {}),
            ("lstm_layer", lstm_layer(), {}), ("rnn_gradients", rnn_gradients(args.seed), {"grads": True})]
    for name, outputs, options in jobs:
        path = os.path.join(args.out, f"{name}.{args.format}")
        render(*outputs, path=path, format=args.format, **options)
        print(path)


if __name__ == "__main__":
    main()

"""Render the example graphs of docs/graph.md: a tanh-RNN step, an LSTM step and a 3-step unrolled RNN.

Usage (once installed, e.g. by ``make``)::

    tinygrad-rnn-render-graph --out docs/img --format svg   (or python tools/render_graph.py ...)

Only shapes reach the drawings, so the inputs are zeros and no seed is needed.
"""
import argparse
import os

import numpy as np

from tinygrad_rnn import Parameter, Variable, name_scope
from tinygrad_rnn import functions as F
from tinygrad_rnn.graph import render

N, D, H, T = 2, 3, 4, 3  # batch, input size, hidden size, time steps


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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join("docs", "img"), help="output directory (created if missing)")
    parser.add_argument("--format", default="svg", choices=["svg", "png", "pdf"], help="image format")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    unrolled = unrolled_rnn()
    jobs = [("rnn_step", tanh_rnn_step(), {}), ("lstm_step", lstm_step(), {}),
            ("rnn_unrolled", unrolled, {}), ("rnn_unrolled_collapsed", unrolled, {"collapse_scopes": 2})]
    for name, outputs, options in jobs:
        path = os.path.join(args.out, f"{name}.{args.format}")
        render(*outputs, path=path, format=args.format, **options)
        print(path)


if __name__ == "__main__":
    main()

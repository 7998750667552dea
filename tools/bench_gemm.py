"""The recurrent products of an LSTM layer on one CPU thread: NumPy's BLAS against oneDNN's matmul primitive.

For each shape (T, N, H) it times the three products of one LSTM layer (4H gate columns), the sides
interleaved repetition by repetition so that a slow phase of the machine hits every side, and keeps
the minimum over ``--rounds``:

- ``h @ Wh``: (N, H) @ (H, 4H), once a forward step;
- ``da @ Wh.T``: (N, 4H) @ (4H, H), once a backward step (NumPy reads a C-ordered copy of Wh.T, as
  ``lstm_sequence`` does; oneDNN reads the transposed view);
- ``dWh``: (H, T*N) @ (T*N, 4H), ``hs.T @ da``, once a backward.

Sides: ``numpy`` (``np.matmul`` into a preallocated result), ``onednn`` (``tinygrad_rnn.onednn.MatMul``
reading the weights in place, what ``lstm_sequence`` runs) and, for the two per-step products,
``onednn_packed`` (the weights reordered once into the layout the primitive prefers). A ``setup`` line
gives the time to build each ``MatMul`` (once a layer call: its cost is paid every forward and
backward). Each oneDNN result is checked against NumPy's first (``max_rel_diff``: the largest
difference over the largest magnitude).

Everything runs in one worker process with one BLAS and OpenMP thread (oneDNN's wheel uses GNU
OpenMP). Prints one JSON object a line: the benchmarks' header (with oneDNN's version and the
implementation its matmul chose), then ``kind: "product"`` lines (``shape``, ``product``,
``operands``, ``<side>_ms``, ``numpy_to_onednn``: NumPy's time over oneDNN's) and ``kind: "setup"``
lines. Needs the ``onednn`` extra (``pip install 'tinygrad_rnn[onednn]'``).

    python tools/bench_gemm.py [--shapes 35x20x650,35x20x100,35x20x128,7x128x100,7x128x128] [--rounds 200]
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np

from tinygrad_rnn import onednn
from tinygrad_rnn.tools import benchmark
from tinygrad_rnn.tools.common import usage_error

# BetterLSTMLM's layer, LSTMLM's and seq2seq's encoder, each also at the other batch and size
SHAPES = "35x20x650,35x20x100,35x20x128,7x128x100,7x128x128"


def _operands(steps, batch, size, rng):
    """The three products' (x, w, out) of one (T, N, H) LSTM layer, float32."""
    def normal(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    wh, hs, das = normal(size, 4 * size), normal(steps * batch, size), normal(steps * batch, 4 * size)
    return {"h @ Wh": (hs[:batch], wh, np.empty((batch, 4 * size), np.float32)),
            "da @ Wh.T": (das[:batch], wh.T, np.empty((batch, size), np.float32)),
            "dWh": (hs.T, das, np.empty((size, 4 * size), np.float32))}


def _sides(name, x, w, out):
    """name -> a function of no arguments computing ``out = x @ w`` that way; and the implementations oneDNN chose."""
    w_numpy = np.ascontiguousarray(w)  # what lstm_sequence gives BLAS: a C-ordered copy of Wh.T
    sides = {"numpy": lambda: np.matmul(x, w_numpy, out=out)}
    kinds = {"onednn": False} if name == "dWh" else {"onednn": False, "onednn_packed": True}
    impls = {}
    for side, packed in kinds.items():
        product = onednn.MatMul(x, w, out, packed=packed)
        sides[side] = lambda product=product: product(x)
        impls[side] = product.impl
    return sides, impls


def _difference(sides, out):
    """The largest difference of each oneDNN side's result from NumPy's, over NumPy's largest magnitude."""
    sides["numpy"]()
    want = out.copy()
    diffs = {}
    for side, run in sides.items():
        if side != "numpy":
            run()
            diffs[side] = float(np.abs(out - want).max() / np.abs(want).max())
    return diffs


def _setup_times(x, w, out, rounds):
    """Milliseconds to build a ``MatMul`` reading the weights in place and one packing them (min over rounds)."""
    best = benchmark.fastest({"onednn": lambda: onednn.MatMul(x, w, out, packed=False),
                              "onednn_packed": lambda: onednn.MatMul(x, w, out, packed=True)}, rounds)
    return {f"{side}_ms": round(seconds * 1e3, 4) for side, seconds in best.items()}


def worker(args):
    rng = np.random.default_rng(0)
    for steps, batch, size in args.shapes:
        for name, (x, w, out) in _operands(steps, batch, size, rng).items():
            sides, impls = _sides(name, x, w, out)
            diffs = _difference(sides, out)
            best = benchmark.fastest(sides, args.rounds)
            print(json.dumps({"kind": "product", "shape": [steps, batch, size], "product": name,
                              "operands": [list(x.shape), list(w.shape)],
                              **{f"{side}_ms": round(s * 1e3, 4) for side, s in best.items()},
                              "numpy_to_onednn": round(best["numpy"] / best["onednn"], 3), "impl": impls,
                              "max_rel_diff": diffs}), flush=True)
        x, w, out = _operands(steps, batch, size, rng)["h @ Wh"]
        print(json.dumps({"kind": "setup", "shape": [steps, batch, size], "operands": [list(x.shape), list(w.shape)],
                          **_setup_times(x, w, out, max(1, args.rounds // 10))}), flush=True)


def main():
    parser = benchmark.parser(__doc__, rounds=200, devices=("cpu",), workers=False, seed=False)
    parser.add_argument("--shapes", type=benchmark.layer_shapes, default=SHAPES,
                        help="comma-separated TxNxH (default %(default)s)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    if not onednn.available():
        usage_error(f"needs oneDNN, which is not installed: pip install 'tinygrad_rnn[onednn]' "
                    f"(the {onednn.DISTRIBUTION} wheel)")
    header = benchmark.header(args, threads=1)
    header["versions"]["onednn"] = onednn.version()
    header["kernels"]["onednn"] = f"oneDNN {onednn.version()} matmul primitive"
    print(json.dumps(header), flush=True)
    # the BLAS and OpenMP read their thread counts when they load: set them for a fresh interpreter
    env = dict(os.environ, **dict.fromkeys(benchmark.THREAD_VARIABLES, "1"))
    done = subprocess.run([sys.executable, __file__, "--worker", *sys.argv[1:]], env=env)
    sys.exit(done.returncode)


if __name__ == "__main__":
    main()

"""The recurrent products of an LSTM layer on one CPU thread: NumPy's BLAS against oneDNN's matmul primitive.

For each shape (T, N, H) it times the three products of one LSTM layer (4H gate columns), the sides
interleaved repetition by repetition so that a slow phase of the machine hits every side, and keeps
the minimum over ``--rounds``:

- ``h @ Wh``: (N, H) @ (H, 4H), once a forward step;
- ``da @ Wh.T``: (N, 4H) @ (4H, H), once a backward step (NumPy reads a C-ordered copy of Wh.T, as
  ``lstm_sequence`` does; oneDNN reads the transposed view);
- ``dWh``: (H, T*N) @ (T*N, 4H), ``hs.T @ da``, once a backward.

Sides: ``numpy`` (``np.matmul`` into a preallocated result), ``onednn`` (``tinygrad_rnn.onednn.MatMul``
reading the weights in place) and, for the two per-step products, ``onednn_packed`` (the weights
reordered once into the layout the primitive prefers: what ``lstm_sequence`` runs). A ``setup`` line
gives the time to build each ``MatMul`` and to load new weights into a built one (``MatMul.load``:
what a layer call pays, forward and backward, once ``onednn.acquire``'s pool holds one). Each oneDNN
result is checked against NumPy's first (``max_rel_diff``: the largest difference over the largest
magnitude).

Then, for each of ``--layers``, one whole LSTM layer forward + backward with input size 1 (as
bench_rnn.py's PyTorch side): ``ours`` (``F.lstm_sequence`` with whatever extras are installed, its
input projection included) against ``onednn_lstm``, oneDNN's LSTM primitive, what PyTorch's CPU
``nn.LSTM`` runs, bound here (forward for training, backward, the weights reordered into each
direction's layout at every call and their gradients zeroed, as PyTorch does), with ``--rounds`` / 20
repetitions; both checked against each other (``max_rel_diff`` of the hidden states and of Wh's gradient).

Last, for each of ``--linear`` (M, K, N), the three products of a Linear layer ``x @ W`` (M, K) @ (K, N):
``x @ W``, ``gy @ W.T`` and ``x.T @ gy`` (W.T and x.T transposed views, as Linear's backward passes
them), ``numpy`` against ``onednn`` (``onednn.product``: a pooled ``MatMul`` reading the weights in
place), with ``linear``: the side ``functions.linalg.onednn_for`` picks for that shape (what Linear and
MatMul run).

Everything runs in one worker process with one BLAS and OpenMP thread (oneDNN's wheel uses GNU
OpenMP). Prints one JSON object a line: the benchmarks' header (with oneDNN's version), then
``kind: "product"`` lines (``shape``, ``product``, ``operands``, ``<side>_ms``, ``numpy_to_onednn``:
NumPy's time over oneDNN's, ``impl``: the implementation oneDNN chose), ``kind: "setup"`` lines and
``kind: "layer"`` lines (``ours_ms``, ``onednn_lstm_ms``, ``ours_to_onednn_lstm``), ``kind: "linear"`` lines
(``shape``, ``product``, ``numpy_ms``, ``onednn_ms``, ``numpy_to_onednn``, ``linear``). Needs the
``onednn`` extra (``pip install 'tinygrad_rnn[onednn]'``).

    python tools/bench_gemm.py [--shapes 35x20x650,35x20x100,35x20x128,7x128x100,7x128x128]
        [--layers 7x128x128,35x20x100,35x20x650] [--linear 896x16x512,512x128x13,...] [--rounds 200]
"""
import argparse
import ctypes
import json

import numpy as np

from tinygrad_rnn import onednn
from tinygrad_rnn.functions import linalg
from tinygrad_rnn.tools import benchmark
from tinygrad_rnn.tools.common import usage_error

# BetterLSTMLM's layer, LSTMLM's and seq2seq's encoder, each also at the other batch and size
SHAPES = "35x20x650,35x20x100,35x20x128,7x128x100,7x128x128"
LAYERS = "7x128x128,35x20x100,35x20x650"  # the whole layers of bench_rnn.py
# Seq2seq's input projections and output layer, LSTMLM's input projection and vocabulary layer,
# BetterLSTMLM's input projection, and a grid around them
LINEAR = ("896x16x512,512x16x512,512x128x13,700x100x400,700x100x10000,700x650x2600,"
          "128x128x512,512x512x128,896x128x128,2560x128x512,512x16x2600,2560x512x13")


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
    """Milliseconds to build a ``MatMul`` reading the weights in place and one packing them, and to load
    new weights into the packed one (min over rounds)."""
    built = onednn.MatMul(x, w, out)
    best = benchmark.fastest({"onednn": lambda: onednn.MatMul(x, w, out, packed=False),
                              "onednn_packed": lambda: onednn.MatMul(x, w, out, packed=True),
                              "onednn_packed_load": lambda: built.load(w, out)}, rounds)
    return {f"{side}_ms": round(seconds * 1e3, 4) for side, seconds in best.items()}


# oneDNN's LSTM primitive (oneapi/dnnl/dnnl_types.h): propagation kinds, direction, argument indices
_TRAINING, _BACKWARD, _LEFT_TO_RIGHT, _QUERY_ARG_MD = 64, 128, 1, 255
_ARGS = {"src_layer": 1, "src_iter": 2, "src_iter_c": 3, "weights_layer": 33, "weights_iter": 34, "bias": 41,
         "dst_layer": 17, "dst_iter": 18, "dst_iter_c": 19, "workspace": 64, "diff_src_layer": 129,
         "diff_src_iter": 130, "diff_src_iter_c": 131, "diff_weights_layer": 161, "diff_weights_iter": 162,
         "diff_bias": 169, "diff_dst_layer": 145, "diff_dst_iter": 146, "diff_dst_iter_c": 147}
_P = ctypes.c_void_p


class _LSTMPrimitive:
    """oneDNN's LSTM primitive (what PyTorch's CPU ``nn.LSTM`` runs) over one (T, N, C -> H) layer, forward
    for training and backward, the weights reordered into each direction's layout at every call as PyTorch
    does, and the weight gradients zeroed.

    Gate blocks i, f, g, o as ours. ``run()`` does one forward + backward on the arrays given; the outputs
    and gradients land in ``self.arrays``. Handles are kept for the life of the process (a benchmark).
    """

    def __init__(self, xs, h0, c0, w_layer, w_iter, bias, gys):
        lib, cpu = onednn.library(), onednn.engine()
        steps, batch, _ = xs.shape
        size = h0.shape[1]
        lstm_fwd, lstm_bwd = lib.dnnl_lstm_forward_primitive_desc_create, lib.dnnl_lstm_backward_primitive_desc_create
        lstm_fwd.argtypes = [ctypes.POINTER(_P), _P, ctypes.c_int, ctypes.c_int] + [_P] * 11 + [ctypes.c_uint, _P]
        lstm_bwd.argtypes = [ctypes.POINTER(_P), _P, ctypes.c_int, ctypes.c_int] + [_P] * 22 + [ctypes.c_uint, _P, _P]
        state = (1, 1, batch, size)  # (layers, directions, N, H)
        a = {"src_layer": xs, "src_iter": h0.reshape(state), "src_iter_c": c0.reshape(state),
             "weights_layer": w_layer.reshape(1, 1, -1, 4, size), "weights_iter": w_iter.reshape(1, 1, size, 4, size),
             "bias": bias.reshape(1, 1, 4, size), "dst_layer": np.empty((steps, batch, size), np.float32),
             "dst_iter": np.empty(state, np.float32), "dst_iter_c": np.empty(state, np.float32),
             "diff_dst_layer": gys, "diff_dst_iter": np.zeros(state, np.float32),
             "diff_dst_iter_c": np.zeros(state, np.float32)}
        for name in ("src_layer", "src_iter", "src_iter_c", "bias"):
            a[f"diff_{name}"] = np.empty_like(a[name])
        self.arrays = a
        md = {name: onednn.descriptor(array) for name, array in a.items()}
        anys = {name: onednn.descriptor(a[name], any_layout=True) for name in ("weights_layer", "weights_iter")}
        for name in ("weights_layer", "weights_iter"):  # the gradients in the user's layout
            md[f"diff_{name}"] = md[name]
            a[f"diff_{name}"] = np.empty_like(a[name])
        forward_mds = [md[k] for k in ("src_layer", "src_iter", "src_iter_c")] + [anys["weights_layer"],
                                                                                  anys["weights_iter"], None, None]
        forward_mds += [md[k] for k in ("bias", "dst_layer", "dst_iter", "dst_iter_c")]
        fwd = onednn.create(lstm_fwd, "LSTM forward", cpu, _TRAINING, _LEFT_TO_RIGHT, *forward_mds, 0, None)
        diff_mds = [md[k] for k in ("diff_src_layer", "diff_src_iter", "diff_src_iter_c", "diff_weights_layer",
                                    "diff_weights_iter")] + [None, None]
        diff_mds += [md[k] for k in ("diff_bias", "diff_dst_layer", "diff_dst_iter", "diff_dst_iter_c")]
        bwd = onednn.create(lstm_bwd, "LSTM backward", cpu, _BACKWARD, _LEFT_TO_RIGHT, *forward_mds, *diff_mds, 0,
                            fwd, None)
        self.impl = self._impl(lib, fwd)
        self._stream = onednn.create(lib.dnnl_stream_create, "stream", cpu, 1)
        memories = {name: onednn.create(lib.dnnl_memory_create, "memory", md[name], cpu, array.ctypes.data)
                    for name, array in a.items()}
        memories["workspace"] = onednn.create(lib.dnnl_memory_create, "memory", lib.dnnl_primitive_desc_query_md(
            fwd, _QUERY_ARG_MD, _ARGS["workspace"]), cpu, onednn.ALLOCATE)
        self._steps = []
        for pd, names in ((fwd, list(_ARGS)[:10]), (bwd, list(_ARGS))):  # forward: up to the workspace
            packed = {}
            for name in ("weights_layer", "weights_iter"):  # reorder the user's weights into this direction's layout
                packed_md = lib.dnnl_primitive_desc_query_md(pd, _QUERY_ARG_MD, _ARGS[name])
                packed[name] = onednn.create(lib.dnnl_memory_create, "memory", packed_md, cpu, onednn.ALLOCATE)
                reorder_pd = onednn.create(lib.dnnl_reorder_primitive_desc_create, "reorder", md[name], cpu,
                                           packed_md, cpu, None)
                reorder = onednn.create(lib.dnnl_primitive_create, "primitive", reorder_pd)
                self._steps.append((reorder, self._args({1: memories[name], 17: packed[name]})))
            primitive = onednn.create(lib.dnnl_primitive_create, "primitive", pd)
            args = {_ARGS[n]: packed.get(n, memories.get(n)) for n in names}
            self._steps.append((primitive, self._args(args)))
        self._execute = lib.dnnl_primitive_execute

    @staticmethod
    def _impl(lib, pd):
        impl = ctypes.c_char_p()
        onednn.check(lib.dnnl_primitive_desc_query(pd, 8, 0, ctypes.byref(impl)), "query")
        return impl.value.decode()

    @staticmethod
    def _args(by_index):
        return len(by_index), (onednn.ExecArg * len(by_index))(*(onednn.ExecArg(i, m) for i, m in by_index.items()))

    def run(self):
        for name in ("diff_weights_layer", "diff_weights_iter", "diff_bias"):
            self.arrays[name].fill(0)  # the backward adds to them, and PyTorch zeros them too
        for primitive, (count, args) in self._steps:
            onednn.check(self._execute(primitive, self._stream, count, args), "LSTM")


def _layer(steps, batch, size, rounds):
    """Forward + backward of one LSTM layer with input size 1: ours (``F.lstm_sequence`` on the input
    projections, with the extras installed) against oneDNN's LSTM primitive; checked against each other."""
    from tinygrad_rnn import functions as F
    from tinygrad_rnn.core import Variable

    rng = np.random.default_rng(0)
    xs, h0, c0 = (rng.uniform(-1, 1, s).astype(np.float32) for s in ((steps, batch, 1), (batch, size),
                                                                     (batch, size)))
    w_layer, w_iter, bias = ((rng.uniform(-1, 1, s) / np.sqrt(size)).astype(np.float32)
                             for s in ((1, 4 * size), (size, 4 * size), (4 * size,)))
    gys = rng.standard_normal((steps, batch, size)).astype(np.float32)
    primitive = _LSTMPrimitive(xs, h0, c0, w_layer, w_iter, bias, gys)
    got = {}

    def ours():
        inputs = [Variable(a) for a in (xs, h0, c0, w_layer, w_iter, bias)]
        xw = F.matmul(F.reshape(inputs[0], (steps * batch, 1)), inputs[3]) + inputs[5]
        hs = F.lstm_sequence(F.reshape(xw, (steps, batch, 4 * size)), *inputs[1:3], inputs[4])[0]
        F.sum(hs * gys).backward()
        got.update(hs=hs.data, dw_iter=inputs[4].grad.data)

    ours()
    primitive.run()
    want = {"hs": primitive.arrays["dst_layer"], "dw_iter": primitive.arrays["diff_weights_iter"].reshape(size, -1)}
    diffs = {k: float(np.abs(got[k] - want[k]).max() / np.abs(want[k]).max()) for k in want}
    best = benchmark.fastest({"ours": ours, "onednn_lstm": primitive.run}, rounds)
    return {"kind": "layer", "shape": [steps, batch, size], **{f"{k}_ms": round(s * 1e3, 4) for k, s in best.items()},
            "ours_to_onednn_lstm": round(best["ours"] / best["onednn_lstm"], 3), "impl": primitive.impl,
            "max_rel_diff": diffs}


def _linear(m, k, n, rng, rounds):
    """The ``kind: "linear"`` lines of one Linear layer's three products (M, K) @ (K, N)."""
    x, w, gy = (rng.standard_normal(shape).astype(np.float32) for shape in [(m, k), (k, n), (m, n)])
    for name, a, b in [("x @ W", x, w), ("gy @ W.T", gy, w.T), ("x.T @ gy", x.T, gy)]:
        best = benchmark.fastest({"numpy": lambda: a @ b, "onednn": lambda: onednn.product(a, b)}, rounds)
        yield {"kind": "linear", "shape": [m, k, n], "product": name,
               **{f"{side}_ms": round(s * 1e3, 4) for side, s in best.items()},
               "numpy_to_onednn": round(best["numpy"] / best["onednn"], 3),
               "linear": "numpy" if linalg.onednn_for(a, b) is None else "onednn"}


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
    for steps, batch, size in args.layers:
        print(json.dumps(_layer(steps, batch, size, max(1, args.rounds // 20))), flush=True)
    for m, k, n in args.linear:
        for line in _linear(m, k, n, rng, max(1, args.rounds // 10)):
            print(json.dumps(line), flush=True)


def main():
    parser = benchmark.parser(__doc__, rounds=200, devices=("cpu",), workers=False, seed=False)
    parser.add_argument("--shapes", type=benchmark.shapes("TxNxH"), default=SHAPES,
                        help="comma-separated TxNxH (default %(default)s)")
    parser.add_argument("--layers", type=benchmark.shapes("TxNxH"), default=LAYERS,
                        help="comma-separated TxNxH of the whole-layer comparison (default %(default)s)")
    parser.add_argument("--linear", type=benchmark.shapes("MxKxN"), default=LINEAR,
                        help="comma-separated MxKxN of Linear layers' products (default %(default)s)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    if not onednn.available():
        usage_error(f"needs oneDNN, which is not installed: pip install 'tinygrad_rnn[onednn]' "
                    f"(the {onednn.DISTRIBUTION} wheel)")
    header = benchmark.header(args, threads=1)
    header["kernels"]["onednn"] = f"oneDNN {onednn.version()}: its matmul and LSTM primitives"
    print(json.dumps(header), flush=True)
    benchmark.rerun_on_one_thread(__file__)


if __name__ == "__main__":
    main()

"""One recurrent layer, forward and backward, on one CPU thread: tinygrad_rnn's fused ops against PyTorch.

For each cell (LSTM, GRU) and shape (T, N, H) it times, interleaved repetition by repetition so
that a slow phase of the machine hits every side, and keeps the minimum over ``--reps``:

- ``numpy``: ``F.lstm_sequence`` / ``F.gru_sequence`` forward + backward on the NumPy path
  (``using_config("compiled_kernels", False)``);
- ``compiled``: the same with the optional extras that ``compiled_kernels`` switches on, where installed:
  the ``cpu`` extra's compiled element-wise steps (Numba) and the ``onednn`` extra's matmul for the
  per-step products of at least ``rnn.ONEDNN_MIN_MULTIPLY_ADDS`` multiply-adds;
- ``gemms``: the recurrent products alone: T forward ``h @ Wh``, T backward ``da @ Wh.T``, one ``dWh``;
- ``torch_onednn`` / ``torch_no_onednn``: PyTorch's ``nn.LSTM`` / ``nn.GRU`` with input size 1 (so
  that nearly all of the work is recurrent), forward + backward, with and without oneDNN's fused
  RNN primitive (``torch.backends.mkldnn.flags``); only where PyTorch is importable.

Then (``kind: "products"``) the three recurrent products of the largest shape alone, NumPy's BLAS
against ``torch.mm`` (PyTorch's own BLAS): ``h @ Wh``, ``da @ Wh.T`` and ``dWh``.

Everything runs in one worker process with one BLAS and OpenMP thread. Prints one JSON object a line:
the benchmarks' header (``benchmark.header``: command, machine, BLAS, versions, Numba's and oneDNN's among them,
and the kernels each side runs), then ``kind: "layer"`` lines (``cell``, ``shape``, ``impl``, ``ms``,
and the ratios ``to_torch_onednn`` and ``to_gemms``) and ``kind: "products"`` lines.

    python tools/bench_rnn.py [--shapes 7x128x128,35x20x100,35x20x650] [--cells lstm,gru] [--rounds 60]
"""
import argparse
import importlib.util
import json
import warnings

import numpy as np

from tinygrad_rnn import onednn
from tinygrad_rnn.tools import benchmark

SHAPES = "7x128x128,35x20x100,35x20x650"  # seq2seq's encoder, LSTMLM, BetterLSTMLM
BLOCKS = {"lstm": 4, "gru": 3}


def _ours(cell, steps, batch, size, compiled):
    """Forward + backward of one fused layer op on float32 inputs, as a function of no arguments."""
    from tinygrad_rnn import functions as F
    from tinygrad_rnn.core import Variable, using_config

    rng = np.random.default_rng(0)
    width = BLOCKS[cell] * size
    arrays = [rng.standard_normal((steps, batch, width)), rng.standard_normal((batch, size)) * 0.1]
    arrays += [rng.standard_normal((batch, size)) * 0.1] if cell == "lstm" else []
    arrays += [rng.standard_normal((size, width)) / np.sqrt(size)]
    arrays += [rng.standard_normal(size) * 0.1] if cell == "gru" else []
    arrays = [a.astype(np.float32) for a in arrays]
    op = F.lstm_sequence if cell == "lstm" else F.gru_sequence
    weights = rng.standard_normal((steps, batch, size)).astype(np.float32)

    def run():
        with using_config("compiled_kernels", compiled):
            inputs = [Variable(a) for a in arrays]
            hs = op(*inputs)[0]
            F.sum(hs * weights).backward()

    return run


def _gemms(steps, batch, size, blocks):
    """The recurrent products of one layer alone: T ``h @ Wh``, T ``da @ Wh.T`` and one ``dWh``."""
    rng = np.random.default_rng(0)
    h, wh = (rng.standard_normal(s).astype(np.float32) for s in ((batch, size), (size, blocks * size)))
    hs, da = (rng.standard_normal((steps * batch, s)).astype(np.float32) for s in (size, blocks * size))
    a, g = np.empty((batch, blocks * size), np.float32), np.empty((batch, size), np.float32)

    def run():
        for _ in range(steps):
            np.matmul(h, wh, out=a)
        wh_t = np.ascontiguousarray(wh.T)  # as the fused backward does
        for t in range(steps):
            np.matmul(da[t * batch:(t + 1) * batch], wh_t, out=g)
        hs.T @ da

    return run


def _torch(cell, steps, batch, size, onednn):
    """Forward + backward of PyTorch's nn.LSTM / nn.GRU with input size 1, with or without oneDNN."""
    import torch

    # torch.backends.mkldnn.flags warns about TF32 on Intel GPUs, which a CPU build lacks
    warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")
    torch.manual_seed(0)
    layer = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(1, size)
    xs = torch.randn(steps, batch, 1)
    weights = torch.randn(steps, batch, size)

    def run():
        with torch.backends.mkldnn.flags(enabled=onednn):
            layer.zero_grad()
            (layer(xs)[0] * weights).sum().backward()

    return run


def _products(steps, batch, size, reps, torch_there):
    """NumPy's BLAS against torch.mm on the three products of one (T, N, H) LSTM layer."""
    rng = np.random.default_rng(0)
    h, wh, da = (rng.standard_normal(s).astype(np.float32) for s in ((batch, size), (size, 4 * size),
                                                                     (batch, 4 * size)))
    hs, das = (rng.standard_normal(s).astype(np.float32) for s in ((steps * batch, size), (steps * batch, 4 * size)))
    wh_t = np.ascontiguousarray(wh.T)
    cases = {"h @ Wh": (h, wh), "da @ Wh.T": (da, wh_t), "dWh": (hs.T, das)}
    for name, (x, y) in cases.items():
        runs = {"numpy": lambda x=x, y=y: x @ y}
        if torch_there:
            import torch

            tx, ty = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y)
            if name == "dWh":  # the same transposed layout as NumPy's product
                tx = torch.from_numpy(hs).T
            runs["torch_mm"] = lambda tx=tx, ty=ty: torch.mm(tx, ty)
        best = benchmark.fastest(runs, reps)
        print(json.dumps({"kind": "products", "product": name, "shape": [list(x.shape), list(y.shape)],
                          **{f"{impl}_ms": round(s * 1e3, 4) for impl, s in best.items()}}), flush=True)


def worker(args):
    torch_there = importlib.util.find_spec("torch") is not None
    if torch_there:
        import torch

        torch.set_num_threads(1)
    compiled = importlib.util.find_spec("numba") is not None or onednn.available()
    for cell in args.cells:
        for steps, batch, size in args.shapes:
            runs = {"numpy": _ours(cell, steps, batch, size, False)}
            if compiled:
                runs["compiled"] = _ours(cell, steps, batch, size, True)
            runs["gemms"] = _gemms(steps, batch, size, BLOCKS[cell])
            if torch_there:
                runs["torch_onednn"] = _torch(cell, steps, batch, size, True)
                runs["torch_no_onednn"] = _torch(cell, steps, batch, size, False)
            best = benchmark.fastest(runs, args.rounds)
            for impl, seconds in best.items():
                line = {"kind": "layer", "cell": cell, "shape": [steps, batch, size], "impl": impl,
                        "ms": round(seconds * 1e3, 4), "to_gemms": round(seconds / best["gemms"], 3)}
                if torch_there:
                    line["to_torch_onednn"] = round(seconds / best["torch_onednn"], 3)
                print(json.dumps(line), flush=True)
    _products(*max(args.shapes, key=lambda s: s[2]), args.rounds, torch_there)


def main():
    parser = benchmark.parser(__doc__, rounds=60, devices=("cpu",), workers=False, seed=False)
    parser.add_argument("--shapes", type=benchmark.shapes("TxNxH"), default=SHAPES,
                        help="comma-separated TxNxH (default %(default)s)")
    parser.add_argument("--cells", type=lambda text: text.split(","), default="lstm,gru",
                        help="comma-separated cells among lstm, gru (default %(default)s)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    unknown = sorted(set(args.cells) - set(BLOCKS))
    if unknown:
        parser.error(f"--cells: unknown cell {', '.join(unknown)}; cells: lstm, gru")
    if args.worker:
        worker(args)
        return
    benchmark.print_header(args, threads=1)
    benchmark.rerun_on_one_thread(__file__)


if __name__ == "__main__":
    main()

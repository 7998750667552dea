"""Per-op overhead of the engine: microseconds per forward + backward of a tiny op in a long chain.

Prints one JSON object a line: the header (``benchmark.header``), then ``impl``, ``op``, ``chain``,
``us_per_op`` (best of ``--rounds``),
for tinygrad_rnn and, where torch is importable, for PyTorch's eager mode on the same chain
(``mul`` and ``add`` combine the running value with a second (1,) leaf, as an LSTM step does).
The two sides alternate, so a slow phase of the machine hits both. A last line gives the
time to import tinygrad_rnn in a fresh interpreter.

    python tools/bench_engine.py [--chain 10000] [--rounds 5]
"""
import json
import subprocess
import sys
import time

import numpy as np

import tinygrad_rnn as tg
from tinygrad_rnn import functions as F
from tinygrad_rnn.tools.benchmark import parser, print_header
from tinygrad_rnn.tools.common import positive_int


def _ours(op, chain):
    x = tg.Variable(np.array([0.5], dtype=np.float32))
    w = tg.Variable(np.array([0.999], dtype=np.float32))
    start = time.perf_counter()
    y = x
    for _ in range(chain):
        y = op(y, w)
    y.backward()
    return time.perf_counter() - start


def _torch(torch, op, chain):
    x = torch.tensor([0.5], requires_grad=True)
    w = torch.tensor([0.999], requires_grad=True)
    start = time.perf_counter()
    y = x
    for _ in range(chain):
        y = op(y, w)
    y.backward()
    return time.perf_counter() - start


def _import_seconds():
    code = "import time; t = time.perf_counter(); import tinygrad_rnn; print(time.perf_counter() - t)"
    return min(float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                    check=True).stdout) for _ in range(3))


def main(argv=None):
    p = parser(__doc__, rounds=5, devices=("cpu",), workers=False, seed=False)
    p.add_argument("--chain", type=positive_int, default=10_000, help="ops in the chain")
    args = p.parse_args(argv)
    try:
        import torch

        torch.set_num_threads(1)  # a (1,) op: threads only add overhead
    except ImportError:
        torch = None
    print_header(args, threads=1)
    ops = {
        "tanh": (lambda v, w: F.tanh(v), lambda t, w: t.tanh()),
        "mul": (lambda v, w: v * w, lambda t, w: t * w),
        "add": (lambda v, w: v + w, lambda t, w: t + w),
    }
    for name, (ours, theirs) in ops.items():
        best = {"tinygrad_rnn": float("inf"), "pytorch": float("inf")}
        _ours(ours, 100)
        for _ in range(args.rounds):
            best["tinygrad_rnn"] = min(best["tinygrad_rnn"], _ours(ours, args.chain))
            if torch is not None:
                best["pytorch"] = min(best["pytorch"], _torch(torch, theirs, args.chain))
        for impl, seconds in best.items():
            if seconds != float("inf"):
                print(json.dumps({"impl": impl, "op": name, "chain": args.chain,
                                  "us_per_op": round(seconds / args.chain * 1e6, 2)}))
        if torch is not None:
            print(json.dumps({"op": name, "ratio_to_pytorch": round(best["tinygrad_rnn"] / best["pytorch"], 2)}))
    print(json.dumps({"impl": "tinygrad_rnn", "import_seconds": round(_import_seconds(), 3)}))


if __name__ == "__main__":
    main()

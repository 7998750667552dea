"""Per-op overhead of the engine: microseconds per forward + backward of a tiny op in a long chain.

Prints one JSON object a line: ``impl``, ``op``, ``chain``, ``us_per_op`` (best of ``--repeats``),
for tinygrad_rnn and, where torch is importable, for PyTorch's eager mode on the same chain.
The two sides alternate, so a slow phase of the machine hits both.

    python tools/bench_engine.py [--chain 10000] [--repeats 5]
"""
import argparse
import json
import time

import numpy as np

import tinygrad_rnn as tg
from tinygrad_rnn import functions as F


def _ours(op, chain):
    x = tg.Variable(np.array([0.5], dtype=np.float32))
    start = time.perf_counter()
    y = x
    for _ in range(chain):
        y = op(y)
    y.backward()
    return time.perf_counter() - start


def _torch(torch, op, chain):
    x = torch.tensor([0.5], requires_grad=True)
    start = time.perf_counter()
    y = x
    for _ in range(chain):
        y = op(y)
    y.backward()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chain", type=int, default=10_000, help="ops in the chain")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per side; the best is reported")
    args = parser.parse_args()
    try:
        import torch

        torch.set_num_threads(1)  # a (1,) op: threads only add overhead
    except ImportError:
        torch = None
    ops = {
        "tanh": (F.tanh, None if torch is None else torch.tanh),
        "mul_scalar": (lambda v: v * 0.999, lambda t: t * 0.999),
        "add_scalar": (lambda v: v + 1e-3, lambda t: t + 1e-3),
    }
    for name, (ours, theirs) in ops.items():
        best = {"tinygrad_rnn": float("inf"), "pytorch": float("inf")}
        _ours(ours, 100)
        for _ in range(args.repeats):
            best["tinygrad_rnn"] = min(best["tinygrad_rnn"], _ours(ours, args.chain))
            if torch is not None:
                best["pytorch"] = min(best["pytorch"], _torch(torch, theirs, args.chain))
        for impl, seconds in best.items():
            if seconds != float("inf"):
                print(json.dumps({"impl": impl, "op": name, "chain": args.chain,
                                  "us_per_op": round(seconds / args.chain * 1e6, 2)}))
        if torch is not None:
            print(json.dumps({"op": name, "ratio_to_pytorch": round(best["tinygrad_rnn"] / best["pytorch"], 2)}))


if __name__ == "__main__":
    main()

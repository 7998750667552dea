"""Where one eager training step of a language model spends its time, phase by phase, and what a launch costs.

The step runs as stages whose outputs are cut into new leaves, so that each stage's forward and
backward can be timed alone: embedding, each dropout, each LSTM layer, the output projection,
the loss, then backward stage by stage in reverse, clipping and the update. On the GPU every
boundary is a CUDA event on the current stream (device time, nothing synchronizes inside the
step); on the CPU, where every op is synchronous, a clock. The staged step does the same
arithmetic as ``Trainer.step``; ``step_ms`` times ``Trainer.step`` itself on alternate steps,
so that the cost of the cuts shows.

Then the cost per call of what a step launches (``kind: "launch"``): the recurrent product at
the model's shape (``matmul``), the fused LSTM cell, and on the GPU an empty RawKernel and a
direct cuBLAS call (``cublas_sgemm``): host microseconds to issue one call (``host_us``) and
device microseconds per call (``device_us``, from events around many calls).

Prints one JSON object a line (a header with ``command`` first): ``kind: "phases"`` with
``<phase>_ms`` (median over steps), ``phases_ms`` and ``step_ms``; then the launch lines.

    python tools/bench_phases.py [--models lstm,better] [--device cpu|gpu] [--iters 20] [--warmup 3]
"""
import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from tinygrad_rnn.tools.common import nonnegative_int, positive_int

VOCAB, BATCH, TIME, LR, CLIP = 10000, 20, 35, 20.0, 0.25
SIZES = {"lstm": 100, "better": 650}


class Clock:
    """Marks between phases: CUDA events on the GPU (read once, after the step), a clock on the CPU."""

    def __init__(self, cupy):
        self.cupy, self.marks = cupy, []

    def mark(self, name):
        if self.cupy is None:
            self.marks.append((name, time.perf_counter()))
        else:
            event = self.cupy.cuda.Event()
            event.record()
            self.marks.append((name, event))

    def phases(self):
        """{phase: ms} from each mark to the next (the last mark only ends the previous phase)."""
        if self.cupy is not None:
            self.marks[-1][1].synchronize()
            elapsed = [self.cupy.cuda.get_elapsed_time(a, b) for (_, a), (_, b) in zip(self.marks, self.marks[1:])]
        else:
            elapsed = [1e3 * (b - a) for (_, a), (_, b) in zip(self.marks, self.marks[1:])]
        out = {}
        for (name, _), ms in zip(self.marks, elapsed):
            out[name] = out.get(name, 0.0) + ms
        self.marks = []
        return out


def _stages(model, kind):
    """The model's forward as (name, function) stages, each taking the previous stage's output."""
    if kind == "lstm":
        return [("embed", model.embed), ("lstm", model.lstm), ("projection", model.fc)]
    return [("embed", model.embed), ("dropout0", model.drop0), ("lstm1", model.lstm1), ("dropout1", model.drop1),
            ("lstm2", model.lstm2), ("dropout2", model.drop2), ("projection", model.fc)]


def staged_step(model, kind, optimizer, batch, clock):
    """``Trainer.step``'s arithmetic, stage by stage, with a clock mark at every boundary."""
    from tinygrad_rnn import Variable
    from tinygrad_rnn import functions as F
    from tinygrad_rnn.optimizers import clip_grads

    xs, ts = batch
    x, cuts = xs, []
    for name, stage in _stages(model, kind):
        clock.mark(f"{name}_forward")
        y = stage(x)
        cuts.append((name, x, y))
        x = Variable(y.data)  # a new leaf: its gradient is what backward hands the stage before
    clock.mark("loss_forward")
    loss = F.softmax_cross_entropy(x, ts)
    clock.mark("loss_backward")
    loss.backward()
    grad = x.grad
    for name, inputs, y in reversed(cuts):
        clock.mark(f"{name}_backward")
        y.backward(grad=grad)
        y.unchain_backward()
        grad = inputs.grad if isinstance(inputs, Variable) else None
    clock.mark("clip")
    clip_grads(model.params(), CLIP)
    clock.mark("update")
    optimizer.update()
    model.cleargrads()
    clock.mark("end")
    return loss.data


def phases(kind, device, iters, warmup):
    """One JSON line: the median of every phase over ``iters`` staged steps, and ``Trainer.step``'s time."""
    from tinygrad_rnn import backend
    from tinygrad_rnn.models import LSTMLM, BetterLSTMLM
    from tinygrad_rnn.optimizers import SGD
    from tinygrad_rnn.training import Trainer

    size = SIZES[kind]
    model = LSTMLM(VOCAB, size, size, seed=0) if kind == "lstm" else BetterLSTMLM(VOCAB, size, size, seed=0)
    cupy = backend.cupy() if device == "gpu" else None
    if device == "gpu":
        model.to_gpu()
    optimizer = SGD(LR).setup(model)
    trainer = Trainer(model, optimizer, None, clip=CLIP)
    move = backend.as_cupy if device == "gpu" else np.asarray
    ids = np.random.default_rng(0).integers(0, VOCAB, (warmup + 2 * iters, BATCH, TIME + 1)).astype(np.int32)
    batches = [(move(b[:, :-1]), move(b[:, 1:])) for b in ids]
    clock = Clock(cupy)

    def sync(value):
        return float(value)  # reads the loss: waits for the device

    for batch in batches[:warmup]:
        sync(trainer.step(batch))
    staged, whole = [], []
    for k in range(iters):
        sync(staged_step(model, kind, optimizer, batches[warmup + 2 * k], clock))
        staged.append(clock.phases())
        began = time.perf_counter()
        sync(trainer.step(batches[warmup + 2 * k + 1]))
        whole.append(1e3 * (time.perf_counter() - began))
    names = list(staged[0])
    out = {f"{name}_ms": float(np.median([s[name] for s in staged])) for name in names}
    return {"kind": "phases", "model": type(model).__name__, "device": device, "batch": BATCH, "time": TIME,
            **out, "phases_ms": float(np.median([sum(s.values()) for s in staged])),
            "step_ms": float(np.median(whole)), "iterations": iters}


def _per_call(call, cupy, count):
    """(host µs to issue one call, device µs per call): ``count`` calls back to back."""
    call()
    if cupy is None:
        began = time.perf_counter()
        for _ in range(count):
            call()
        us = 1e6 * (time.perf_counter() - began) / count
        return us, us
    cupy.cuda.get_current_stream().synchronize()
    start, stop = cupy.cuda.Event(), cupy.cuda.Event()
    began = time.perf_counter()
    start.record()
    for _ in range(count):
        call()
    host = 1e6 * (time.perf_counter() - began) / count
    stop.record()
    stop.synchronize()
    return host, 1e3 * cupy.cuda.get_elapsed_time(start, stop) / count


def launches(kind, device, count):
    """One JSON line a launch: host and device microseconds per call at the model's recurrent shape."""
    from tinygrad_rnn import backend
    from tinygrad_rnn.functions.rnn import _cell_forward

    size = SIZES[kind]
    cupy = backend.cupy() if device == "gpu" else None
    xp = np if cupy is None else cupy
    h = xp.ones((BATCH, size), dtype=np.float32)
    wh = xp.ones((size, 4 * size), dtype=np.float32)
    a = xp.ones((BATCH, 4 * size), dtype=np.float32)
    gates, outs = xp.empty_like(a), [xp.empty_like(h) for _ in range(3)]
    calls = {"matmul": lambda: xp.matmul(h, wh, out=a), "lstm_cell": lambda: _cell_forward(a, h, gates, *outs)}
    if cupy is not None:
        empty = cupy.RawKernel(r'extern "C" __global__ void tinygrad_rnn_empty() {}', "tinygrad_rnn_empty")
        calls["raw_kernel"] = lambda: empty((1,), (1,), ())
        cublas, handle = cupy.cuda.cublas, cupy.cuda.device.get_cublas_handle()
        one, zero = np.array(1.0, np.float32), np.array(0.0, np.float32)

        def sgemm():  # a (B, 4H) = h (B, H) @ wh (H, 4H), as column-major (4H, B) = wh^T (4H, H) @ h^T (H, B)
            cublas.sgemm(handle, cublas.CUBLAS_OP_N, cublas.CUBLAS_OP_N, 4 * size, BATCH, size, one.ctypes.data,
                         wh.data.ptr, 4 * size, h.data.ptr, size, zero.ctypes.data, a.data.ptr, 4 * size)

        cublas.setPointerMode(handle, cublas.CUBLAS_POINTER_MODE_HOST)
        calls["cublas_sgemm"] = sgemm
    out = []
    for name, call in calls.items():
        host, device_us = _per_call(call, cupy, count)
        out.append({"kind": "launch", "call": name, "device": device, "shape": [BATCH, size, 4 * size],
                    "host_us": host, "device_us": device_us, "calls": count})
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="lstm,better", help="comma-separated: lstm, better")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--iters", type=positive_int, default=20, help="timed steps of each kind")
    parser.add_argument("--warmup", type=nonnegative_int, default=3, help="untimed Trainer.step calls first")
    parser.add_argument("--calls", type=positive_int, default=1000, help="calls per launch measurement")
    args = parser.parse_args()
    kinds = args.models.split(",")
    if any(k not in SIZES for k in kinds):
        parser.error(f"--models takes {', '.join(SIZES)}, got {args.models}")
    print(json.dumps({"command": shlex.join(["python", f"tools/{Path(__file__).name}", *sys.argv[1:]])}), flush=True)
    for kind in kinds:
        print(json.dumps(phases(kind, args.device, args.iters, args.warmup)), flush=True)
        for line in launches(kind, args.device, args.calls):
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()

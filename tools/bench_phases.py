"""Where one training step of a language model spends its time, phase by phase, and what a launch costs.

The phases are those ``Trainer.step`` marks itself (``tinygrad_rnn.phases``: forward, backward, clip,
update), recorded by a ``PhaseRecorder`` around real steps: on the GPU every mark is a CUDA
event on the current stream (device time, nothing synchronizes inside the step); on the CPU,
where every op is synchronous, a clock. ``step_ms`` times ``Trainer.step`` with no recorder on,
on alternate steps, so that the cost of recording shows.

Then the cost per call of what a step launches (``kind: "launch"``): the recurrent product at
the model's shape (``matmul``), the fused LSTM cell, and on the GPU an empty RawKernel and a
direct cuBLAS call (``cublas_sgemm``): host microseconds to issue one call (``host_us``) and
device microseconds per call (``device_us``, from events around many calls).

Prints one JSON object a line: the header (``benchmark.header``), then ``kind: "phases"`` with
``<phase>_ms`` (median over steps), ``phases_ms`` and ``step_ms``; then the launch lines.
``--rounds`` repeats the whole measurement.

    python tools/bench_phases.py [--models lstm,better] [--device cpu|gpu] [--iters 20] [--warmup 3]
        [--calls 1000] [--rounds 1] [--seed 0]
"""
import json
import time

import numpy as np

from tinygrad_rnn.tools.benchmark import (BATCH, CLIP, LM_SPECS, LR, hand_trainer, lm_batches, parser,
                                          print_header, stepper)
from tinygrad_rnn.tools.common import positive_int


def phases(model, args):
    """One JSON line: the median of every phase of ``Trainer.step`` over ``args.iters`` recorded steps,
    and the median unrecorded step.

    Args:
        model (str): ``"lstm"`` or ``"better"``.
        args (argparse.Namespace): ``iters``, ``warmup``, ``device``, ``seed``.
    Returns:
        dict: ``kind``, ``model``, ``device``, ``batch``, ``time``, ``<phase>_ms``, ``phases_ms``,
        ``step_ms``, ``iterations``.
    """
    from tinygrad_rnn.optimizers import SGD
    from tinygrad_rnn.phases import PhaseRecorder

    trainer = hand_trainer(LM_SPECS[model], SGD(LR), args, CLIP)
    step = stepper(trainer, args)
    batches = lm_batches(args.warmup + 2 * args.iters, args.seed)
    recorder = PhaseRecorder(args.device)

    def sync(value):
        return float(value)  # reads the loss: waits for the device

    for batch in batches[:args.warmup]:
        sync(step(batch))
    recorded, whole = [], []
    for k in range(args.warmup, len(batches), 2):
        with recorder:
            sync(step(batches[k]))
        recorded.append(recorder.phases())
        began = time.perf_counter()
        sync(step(batches[k + 1]))
        whole.append(1e3 * (time.perf_counter() - began))
    out = {f"{name}_ms": float(np.median([r[name] for r in recorded])) for name in recorded[0]}
    return {"kind": "phases", "model": type(trainer.model).__name__, "device": args.device, "batch": BATCH,
            "time": batches[0][0].shape[1], **out, "phases_ms": float(np.median([sum(r.values()) for r in recorded])),
            "step_ms": float(np.median(whole)), "iterations": args.iters}


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


def launches(model, device, count):
    """One JSON line a launch: host and device microseconds per call at the model's recurrent shape.

    Args:
        model (str): ``"lstm"`` or ``"better"`` (its hidden size H).
        device (str): ``"cpu"`` or ``"gpu"``.
        count (int): calls a measurement.
    Returns:
        list of dict: ``kind: "launch"``, ``call``, ``device``, ``shape`` (N, H, 4H), ``host_us``,
        ``device_us``, ``calls``.
    """
    from tinygrad_rnn import backend
    from tinygrad_rnn.functions.rnn import _cell_forward

    size = LM_SPECS[model]["hidden_size"]
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


def main(argv=None):
    p = parser(__doc__, rounds=1, models=tuple(LM_SPECS), iters=20, warmup=3, workers=False)
    p.add_argument("--calls", type=positive_int, default=1000, help="calls per launch measurement")
    args = p.parse_args(argv)
    print_header(args)
    for _ in range(args.rounds):
        for model in args.models:
            print(json.dumps(phases(model, args)), flush=True)
            for line in launches(model, args.device, args.calls):
                print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()

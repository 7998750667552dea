"""Data parallelism on this machine: allreduce bandwidth, the LSTMLM step by phase, and a cost model.

Every measurement is one ``mpirun -n P python -m mpi4py tools/bench_dist.py --job ...`` job in a
new process group, ended on a bounded timeout, with one BLAS thread a rank (P = 1 runs the same
way, so that both sides of a ratio have the same settings). Times are the median over steps or
repetitions of the slowest rank's time; only rank 0 prints.

1. Allreduce (``kind: "allreduce"``): an in-place float32 sum of ``size_bytes`` on 2 ranks through
   ``MpiComm.allreduce`` (impl ``tinygrad_rnn``) and, where torch with gloo is importable,
   ``torch.distributed.all_reduce`` on gloo (impl ``torch-gloo``), sides alternating round by round.
   ``algbw_gbps = size / seconds``; ``busbw_gbps = algbw * 2 (P - 1) / P`` (the nccl-tests
   definition: the bandwidth a ring needs on each link).
2. The LSTMLM step (V 10000, D = H 100, float32, SGD lr 20, clip 0.25, T 35; ``kind: "step"``) at
   P = 1 with N 20 and 10, and at P = 2 with 10 streams a rank (strong scaling) and 20 (weak), by
   the phases ``Trainer.step`` marks itself (``tinygrad_rnn.phases``): ``forward`` (``model.loss``),
   ``backward`` (with ``unchain_backward``), with P > 1 ``wait`` (a barrier the recorder puts
   where ``reduce`` begins: the time the faster rank waits for the slower one, which the
   reduction's first collective would otherwise absorb) and ``reduce`` (pack, allreduce, unpack),
   ``clip`` and ``update`` (the update and ``cleargrads``); then ``allreduce``, a bare
   ``comm.allreduce`` of a buffer of all the gradients' bytes after the step, so that
   ``pack_unpack = reduce - allreduce``. ``phases_ms`` adds up the step's phases (not the bare
   allreduce); ``step_ms`` is ``Trainer.step`` with no recorder (no barrier), timed on the steps
   between the recorded ones. Then ``kind: "scaling"``: strong speedup ``S = t1(N 20) / t2(10 a
   rank)``, strong efficiency ``S / 2``, weak efficiency ``t1(N 20) / t2(20 a rank)``.
3. The cost model of weak scaling (``kind: "cost_model"``, then ``kind: "prediction"``):
   ``t_step(P) = t_compute + t_allreduce(S, P)`` with the ring bound ``t_allreduce = 2 (P - 1) alpha
   + 2 (P - 1) / P * S / B``. alpha and B of this machine are fitted to the 2-rank allreduce times
   (least squares on relative errors, so the small sizes count as much as the large ones; both
   terms >= 0). The predicted efficiency ``t_compute / t_step(P)`` covers LSTMLM and BetterLSTMLM
   (650 x 2, tied) with fp32 gradients, for P = 2 to 1024, on this machine's fit and on assumed
   networks, with ``t_compute`` the CPU step measured here at N 20 and an assumed GPU step: the
   assumed figures, with their sources, are read from ``docs/results/assumed.json`` (``--assumed``).

    python tools/bench_dist.py [--sizes 8192,...,67108864] [--reps 20] [--rounds 2] [--iters 100]
        [--warmup 20] [--better-iters 4] [--assumed docs/results/assumed.json] [--markdown] [--seed 0]
    python tools/bench_dist.py --from docs/results/bench_dist.jsonl --markdown   # predictions only
"""
import argparse
import importlib.util
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from tinygrad_rnn.tools.benchmark import (ASSUMED, CLIP, LM_SPECS, LR, TIME, VOCAB, alternating, parser,
                                          print_header)
from tinygrad_rnn.tools.common import nonnegative_int, positive_float, positive_int, run_mpi

SIZES = [8192 * 2**k for k in range(14)]  # 8 KiB to 64 MiB
PREDICTED_RANKS = [2**k for k in range(1, 11)]


def mpirun(ranks, args, timeout, **extra):
    """Run this script's worker on ``ranks`` MPI processes (``common.run_mpi``); print and return rank 0's JSON lines.

    Args:
        ranks (int): P.
        args (list of str): the worker's arguments.
        timeout (float): seconds before the job is killed.
        **extra: fields added to each result (e.g. ``round``).
    Returns:
        list of dict: the results, with ``extra``.
    Raises:
        RuntimeError: the job failed; the message holds its output.
        TimeoutError: it ran out of time.
    """
    done = run_mpi(ranks, ["-m", "mpi4py", __file__, "--job", *args], timeout)
    if done.returncode:
        raise RuntimeError(f"bench_dist.py: mpirun -n {ranks} {' '.join(args)} failed ({done.returncode}):\n"
                           f"{done.stdout}{done.stderr}")
    results = [dict(json.loads(line), **extra) for line in done.stdout.splitlines() if line.startswith("{")]
    for result in results:
        print(json.dumps(result), flush=True)
    return results


def _slowest(comm, times):
    """Rank 0: every step's time on the slowest rank, (steps,) seconds; None elsewhere."""
    gathered = comm.gather_obj(times)
    return None if gathered is None else np.max(gathered, axis=0)


def _torch_allreduce(comm, store):
    """``torch.distributed.all_reduce`` on gloo, the ranks and their number taken from MPI: a function
    that takes a buffer and returns the call that reduces it in place."""
    import torch
    import torch.distributed as tdist

    tdist.init_process_group("gloo", init_method=f"file://{store}", rank=comm.rank, world_size=comm.size)

    def on(buffer):
        tensor = torch.from_numpy(buffer)  # shares the buffer's memory, made once a size
        return lambda: tdist.all_reduce(tensor)

    return on


def allreduce_worker(impl, sizes, reps, warmup, store):
    """Run on every rank: time the in-place allreduce of each size; rank 0 prints one JSON line a size.

    Args:
        impl (str): ``"tinygrad_rnn"`` (``MpiComm.allreduce``) or ``"torch"`` (gloo).
        sizes (list of int): message sizes in bytes (multiples of 4: float32).
        reps (int): timed repetitions a size, each started by a barrier.
        warmup (int): untimed repetitions before them.
        store (str): the file of torch's rendezvous (unused by ``tinygrad_rnn``).
    """
    from tinygrad_rnn import distributed

    comm = distributed.init()
    on = (lambda buffer: lambda: comm.allreduce(buffer)) if impl == "tinygrad_rnn" else _torch_allreduce(comm, store)
    for size in sizes:
        reduce = on(np.zeros(size // 4, dtype=np.float32))  # zeros stay zeros however often they are summed
        for _ in range(warmup):
            reduce()
        times = []
        for _ in range(reps):
            comm.barrier()
            began = time.perf_counter()
            reduce()
            times.append(time.perf_counter() - began)
        slowest = _slowest(comm, times)
        if comm.is_root:
            seconds = float(np.median(slowest))
            algbw = size / seconds / 1e9
            print(json.dumps({"kind": "allreduce", "impl": "tinygrad_rnn" if impl == "tinygrad_rnn" else "torch-gloo",
                              "ranks": comm.size, "size_bytes": size, "seconds": seconds, "algbw_gbps": algbw,
                              "busbw_gbps": algbw * 2 * (comm.size - 1) / comm.size, "reps": reps}), flush=True)
    if impl == "torch":
        import torch.distributed as tdist

        tdist.destroy_process_group()  # its rendezvous file goes with it


def _recorder(comm):
    """A ``PhaseRecorder`` (CPU clock) that begins a ``wait`` phase, a barrier, where the step's ``reduce`` begins.

    Args:
        comm: the communicator of the ranks.
    Returns:
        PhaseRecorder.
    """
    from tinygrad_rnn.phases import PhaseRecorder

    class WaitBeforeReduce(PhaseRecorder):
        def mark(self, name):
            if name == "reduce":  # so that the reduction starts with the ranks together
                super().mark("wait")
                comm.barrier()
            super().mark(name)

    return WaitBeforeReduce("cpu")


def step_worker(args):
    """Run on every rank: time ``Trainer.step`` by phase and as a whole; rank 0 prints one JSON line.

    Recorded steps (each followed by the bare allreduce) alternate with unrecorded ones, so that
    a slow phase of the machine hits both.

    Args:
        args (argparse.Namespace): ``model`` (``"lstm"`` or ``"better"``), ``batch_size`` (N of the
            combined batch; each of the P ranks trains on N / P streams), ``iters`` (timed steps of
            each kind), ``warmup`` (untimed steps first), ``seed``.
    """
    from tinygrad_rnn import distributed
    from tinygrad_rnn.data import BPTTBatcher
    from tinygrad_rnn.models import build_model
    from tinygrad_rnn.optimizers import SGD
    from tinygrad_rnn.training import Trainer

    comm = distributed.init()
    model = build_model(LM_SPECS[args.model], seed=args.seed)
    steps = args.warmup + 2 * args.iters
    # random words: the speed does not depend on them
    corpus = np.random.default_rng(args.seed).integers(0, VOCAB, args.batch_size * TIME * steps + 1)
    trainer = Trainer(model, SGD(LR).setup(model), BPTTBatcher(corpus, args.batch_size, TIME), clip=CLIP, comm=comm)
    parts = list(trainer.batches.batches())
    model.reset_state()
    for part in parts[:args.warmup]:
        trainer.step(part)
    buffer = np.zeros(sum(p.data.size for p in model.params()), dtype=np.float32)
    recorder = _recorder(comm)
    phased, whole = [], []
    for k in range(args.warmup, steps, 2):
        with recorder:
            trainer.step(parts[k])
        phases = recorder.phases()
        began = time.perf_counter()
        comm.allreduce(buffer)
        phased.append({**phases, "allreduce": 1e3 * (time.perf_counter() - began)})
        began = time.perf_counter()
        trainer.step(parts[k + 1])
        whole.append(time.perf_counter() - began)
    gathered = comm.gather_obj((phased, whole))
    if not comm.is_root:
        return
    names = list(phased[0])
    # (ranks, iters, phases) ms; the slowest rank's time of each phase, and of the step's phases together
    ms = np.array([[[step[name] for name in names] for step in g[0]] for g in gathered])
    out = {f"{name}_ms": float(np.median(ms[:, :, i].max(axis=0))) for i, name in enumerate(names)}
    if "reduce_ms" in out:
        out["pack_unpack_ms"] = out["reduce_ms"] - out["allreduce_ms"]
    out["phases_ms"] = float(np.median(ms[:, :, :-1].sum(axis=2).max(axis=0)))
    step = float(np.median(np.max([g[1] for g in gathered], axis=0)))
    print(json.dumps({"kind": "step", "model": type(model).__name__, "ranks": comm.size,
                      "batch_size": args.batch_size, "batch_per_rank": args.batch_size // comm.size,
                      "parameters": int(buffer.size), "gradient_bytes": int(buffer.nbytes), **out,
                      "step_ms": 1e3 * step, "words_per_second": args.batch_size * TIME / step,
                      "iterations": args.iters}), flush=True)


def fit_ring(points, ranks):
    """alpha and B of the ring bound fitted to measured allreduce times of one process count.

    ``t = 2 (P - 1) alpha + 2 (P - 1) / P * S / B`` is linear in S; the fit minimizes the relative
    residuals ``(t_model - t) / t`` with both terms >= 0: noisy times, or only small sizes, can
    make the free fit's slope or intercept negative, which no network has.

    Args:
        points (list of tuple): ``(size_bytes, seconds)``, at least two sizes.
        ranks (int): P of the measurements.
    Returns:
        dict: ``alpha_us``, ``bandwidth_gbps`` (B; None when the times show no cost per byte) and
        ``rms_relative_error`` of the fit.
    """
    sizes, seconds = np.array(points, dtype=np.float64).T
    design = np.stack([np.ones_like(sizes), sizes], axis=1) / seconds[:, None]
    target = np.ones_like(seconds)
    fits = [np.linalg.lstsq(design, target, rcond=None)[0]]
    if (fits[0] < 0).any():  # then the best non-negative fit has one term 0: the better one-term fit
        fits = [np.where(np.arange(2) == j, np.linalg.lstsq(design[:, [j]], target, rcond=None)[0][0], 0.0)
                for j in range(2)]
    latency, per_byte = min(fits, key=lambda c: np.sum((design @ c - target)**2))
    residual = design @ np.array([latency, per_byte]) - target
    steps = 2 * (ranks - 1)
    return {"alpha_us": float(1e6 * latency / steps),
            "bandwidth_gbps": float(steps / ranks / per_byte / 1e9) if per_byte else None,
            "rms_relative_error": float(np.sqrt(np.mean(residual**2)))}


def ring_seconds(nbytes, ranks, alpha, bandwidth):
    """The ring allreduce bound: ``2 (P - 1) alpha + 2 (P - 1) / P * S / B`` seconds (0 for one rank)."""
    return 2 * (ranks - 1) * alpha + 2 * (ranks - 1) / ranks * nbytes / bandwidth


def predictions(results, assumed):
    """The weak-scaling efficiency the cost model predicts, one row a (model, step, network).

    Args:
        results (list of dict): the measured lines (``allreduce`` of ``tinygrad_rnn``, ``step``).
        assumed (dict): ``docs/results/assumed.json``: ``networks`` (name, ``bandwidth_bytes_per_s``,
            ``latency_s``) and ``gpu_step_ms`` (``ms`` by model name: ``LSTMLM``, ``BetterLSTMLM``).
    Returns:
        list of dict: the ``cost_model`` lines (one per allreduce impl), then the ``prediction`` rows.
    """
    from tinygrad_rnn.models import build_model  # the exact parameter counts, not measured ones

    out = []
    for impl in dict.fromkeys(r["impl"] for r in results if r.get("kind") == "allreduce"):
        measured = [r for r in results if r.get("kind") == "allreduce" and r["impl"] == impl]
        fit = fit_ring([(r["size_bytes"], r["seconds"]) for r in measured], measured[0]["ranks"])
        out.append({"kind": "cost_model", "impl": impl, "ranks": measured[0]["ranks"], **fit,
                    "sizes": len({r["size_bytes"] for r in measured}), "points": len(measured)})
    networks = [("this machine, fitted", fit["bandwidth_gbps"] * 1e9, fit["alpha_us"] * 1e-6)
                for fit in out if fit["impl"] == "tinygrad_rnn" and fit["bandwidth_gbps"]]
    networks += [(n["name"], n["bandwidth_bytes_per_s"], n["latency_s"]) for n in assumed["networks"]]
    cpu = {r["model"]: r["step_ms"] for r in results
           if r.get("kind") == "step" and r["ranks"] == 1 and r["batch_size"] == 20}
    for spec in LM_SPECS.values():
        layer = build_model(spec, seed=0)
        model, params = type(layer).__name__, sum(p.data.size for p in layer.params())
        steps = [("CPU, measured here", cpu[model])] if model in cpu else []
        steps.append(("GPU, assumed", assumed["gpu_step_ms"][model]["ms"]))
        for step_name, step_ms in steps:
            for network, bandwidth, alpha in networks:
                ar = {str(p): 1e3 * ring_seconds(4 * params, p, alpha, bandwidth) for p in PREDICTED_RANKS}
                out.append({"kind": "prediction", "model": model, "parameters": params, "gradient_bytes": 4 * params,
                            "step": step_name, "t_compute_ms": step_ms, "network": network,
                            "bandwidth_gbps": bandwidth / 1e9, "alpha_us": alpha * 1e6, "t_allreduce_ms": ar,
                            "efficiency": {p: step_ms / (step_ms + t) for p, t in ar.items()}})
    return out


def markdown(rows):
    """The prediction rows as a Markdown table (weak-scaling efficiency in percent by P)."""
    lines = ["| model (fp32 gradients) | t_compute | network (B, α) | "
             + " | ".join(f"P={p}" for p in PREDICTED_RANKS) + " |", "|" + "---|" * (3 + len(PREDICTED_RANKS))]
    for r in rows:
        lines.append(f"| {r['model']} ({r['parameters']:,} params, {r['gradient_bytes'] / 1e6:.1f} MB) | "
                     f"{r['t_compute_ms']:.1f} ms ({r['step']}) | {r['network']} "
                     f"({r['bandwidth_gbps']:.3g} GB/s, {r['alpha_us']:.3g} µs) | "
                     + " | ".join(f"{100 * r['efficiency'][str(p)]:.0f} %" for p in PREDICTED_RANKS) + " |")
    lines += ["", "Predicted weak-scaling efficiency t_compute / (t_compute + t_allreduce), N 20 streams a rank, "
              "t_allreduce = 2 (P - 1) α + 2 (P - 1) / P · S / B (ring bound, no overlap, no pack/unpack); "
              "S = 4 bytes a parameter. The GPU steps and the networks' B and α are assumed (docs/results/assumed.json "
              "says where each comes from), but for this machine's, fitted to its 2-rank allreduce times."]
    return "\n".join(lines)


def _scaling(steps):
    """The strong and weak scaling of LSTMLM from the four step runs."""
    t = {(r["ranks"], r["batch_per_rank"]): r["step_ms"] for r in steps if r["model"] == "LSTMLM"}
    speedup = t[1, 20] / t[2, 10]
    return {"kind": "scaling", "model": "LSTMLM", "ranks": 2, "t1_n20_ms": t[1, 20], "t1_n10_ms": t[1, 10],
            "t2_10_each_ms": t[2, 10], "t2_20_each_ms": t[2, 20], "strong_speedup": speedup,
            "strong_efficiency": speedup / 2, "weak_efficiency": t[1, 20] / t[2, 20]}


def _gloo_missing():
    """Why torch's gloo allreduce cannot be measured here, or None."""
    if importlib.util.find_spec("torch") is None:
        return "torch is not importable"
    import torch.distributed

    if not (torch.distributed.is_available() and torch.distributed.is_gloo_available()):
        return "this torch build has no gloo backend"
    return None


def _measure(args):
    """Run every measurement; returns the lines printed."""
    sizes = [str(s) for s in args.sizes]
    results = []
    gloo_missing = _gloo_missing()
    if gloo_missing:
        print(json.dumps({"kind": "skipped", "impl": "torch-gloo", "reason": gloo_missing}), flush=True)
    for r, impl in alternating(args.rounds):
        if impl == "torch" and gloo_missing:
            continue
        with tempfile.TemporaryDirectory() as folder:  # torch's rendezvous file, fresh for every job
            results += mpirun(2, ["allreduce", "--impl", impl, "--sizes", ",".join(sizes), "--reps", str(args.reps),
                                  "--ar-warmup", str(args.ar_warmup), "--store", str(Path(folder) / "store")],
                              args.timeout, round=r)
    runs = [(ranks, "lstm", batch_size, args.iters, args.warmup)  # P = 1 and P = 2 take turns
            for ranks, batch_size in ((1, 20), (2, 20), (1, 10), (2, 40))]
    if args.better_iters:
        runs.append((1, "better", 20, args.better_iters, args.better_warmup))
    steps = []
    for ranks, model, batch_size, iters, warmup in runs:
        steps += mpirun(ranks, ["step", "--model", model, "--batch-size", str(batch_size), "--iters", str(iters),
                                "--warmup", str(warmup), "--seed", str(args.seed)], args.timeout)
    scaling = _scaling(steps)
    print(json.dumps(scaling), flush=True)
    return results + steps + [scaling]


def _sizes(text):
    sizes = [positive_int(s) for s in text.split(",")]
    if any(s % 4 for s in sizes):
        raise argparse.ArgumentTypeError(f"sizes must be multiples of 4 bytes (float32), got {text}")
    return sizes


def main(argv=None):
    p = parser(__doc__, rounds=2, iters=100, warmup=20, devices=("cpu",), workers=False)
    p.add_argument("--sizes", type=_sizes, default=SIZES, help="comma-separated allreduce sizes in bytes")
    p.add_argument("--reps", type=positive_int, default=20, help="timed allreduce repetitions a size")
    p.add_argument("--ar-warmup", type=nonnegative_int, default=3, help="untimed allreduce repetitions first")
    p.add_argument("--better-iters", type=nonnegative_int, default=4,
                   help="timed BetterLSTMLM CPU steps for the model's CPU row (0: no CPU row)")
    p.add_argument("--better-warmup", type=nonnegative_int, default=1, help="untimed BetterLSTMLM steps first")
    p.add_argument("--assumed", type=Path, default=ASSUMED,
                   help="the assumed figures: networks and GPU steps (default: docs/results/assumed.json)")
    p.add_argument("--timeout", type=positive_float, default=600.0, help="seconds an mpirun job may take")
    p.add_argument("--markdown", action="store_true", help="also print the prediction table as Markdown")
    p.add_argument("--from", dest="source", help="predict from the lines of an earlier run instead of measuring")
    p.add_argument("--job", choices=("allreduce", "step"), help=argparse.SUPPRESS)
    p.add_argument("--impl", choices=("tinygrad_rnn", "torch"), help=argparse.SUPPRESS)
    p.add_argument("--model", choices=tuple(LM_SPECS), help=argparse.SUPPRESS)
    p.add_argument("--batch-size", type=positive_int, help=argparse.SUPPRESS)
    p.add_argument("--store", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.job == "allreduce":
        allreduce_worker(args.impl, args.sizes, args.reps, args.ar_warmup, args.store)
        return
    if args.job == "step":
        step_worker(args)
        return
    missing = [name for name, found in (("mpirun", shutil.which("mpirun")),
                                        ("mpi4py", importlib.util.find_spec("mpi4py"))) if found is None]
    if missing and not args.source:
        p.error(f"needs {' and '.join(missing)} (apt-get install openmpi-bin; pip install mpi4py)")
    try:
        assumed = json.loads(args.assumed.read_text())
    except (OSError, ValueError) as e:
        p.error(f"--assumed: cannot read {args.assumed}: {e}")
    print_header(args, threads=1)  # common.MPI_ENV: one BLAS thread a rank
    if args.source:
        results = [json.loads(line) for line in Path(args.source).read_text().splitlines() if line.strip()]
    else:
        results = _measure(args)
    rows = predictions(results, assumed)
    for row in rows:
        print(json.dumps(row), flush=True)
    if args.markdown:
        print(markdown([r for r in rows if r["kind"] == "prediction"]))


if __name__ == "__main__":
    main()

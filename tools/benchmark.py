"""What the benchmarks share: one parser, one JSON header, the classic language-model setting, fresh-process
measurements with the sides alternating, and a ``Trainer`` whose ``step`` is what they time.

A measurement runs ``SCRIPT --worker IMPL --models MODEL <the shared flags>`` in a new interpreter,
so that its memory figures are its own and no side inherits another's state (PyTorch's threads,
tinygrad_rnn's ``malloc`` settings). Rounds alternate the order of the sides, so that a slow phase
of the machine hits both. PyTorch is measured only where it is importable; it is never a dependency.
tinygrad_rnn's side is always ``Trainer.step`` itself, on a model from ``models.build_model``: a
change to the step changes what the benchmarks time.
"""
import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from tinygrad_rnn import backend, compiled, onednn
from tinygrad_rnn.tools.common import command_line, device_mover, nonnegative_int, positive_int

IMPLS = ("tinygrad_rnn", "torch")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")  # read by NumPy's BLAS and torch
# The classic language-model setting (PTB's vocabulary, N 20 x T 35, SGD lr 20, clip 0.25) and its two models
VOCAB, BATCH, TIME, LR, CLIP = 10000, 20, 35, 20.0, 0.25
LM_SPECS = {
    "lstm": {"kind": "lstm", "vocab_size": VOCAB, "wordvec_size": 100, "hidden_size": 100},
    "better": {"kind": "better", "vocab_size": VOCAB, "wordvec_size": 650, "hidden_size": 650, "dropout": 0.5},
}
# the figures the benchmarks assume rather than measure, each with its source
ASSUMED = Path(__file__).resolve().parent.parent / "docs" / "results" / "assumed.json"


def _model_list(choices):
    """An argparse ``type`` for a comma-separated list of model names out of ``choices``."""
    def parse(text):
        names = text.split(",")
        wrong = [n for n in names if n not in choices]
        if wrong:
            raise argparse.ArgumentTypeError(f"takes {', '.join(choices)} (comma-separated), got {', '.join(wrong)}")
        return names

    parse.__name__ = "model list"  # argparse names the type in its messages
    return parse


def parser(doc, *, rounds, models=None, iters=None, warmup=None, devices=("cpu", "gpu"), workers=True,
           seed=True):
    """An ArgumentParser with the flags every benchmark has.

    Flags: ``--rounds``, ``--device``, and where asked for ``--seed`` (weights and batches),
    ``--models`` (comma-separated), ``--iters`` and ``--warmup``, ``--threads`` (BLAS and
    PyTorch threads of every measurement; default: the libraries' own) and ``--worker`` (hidden:
    run one measurement, ``run_worker``).

    Args:
        doc (str): the tool's docstring: its first line is the description, the rest the epilog.
        rounds (int): default of ``--rounds``, the measurements of each side (alternating).
        models (sequence of str, optional): the names ``--models`` takes; all by default.
        iters (int, optional): default of ``--iters`` (timed steps a measurement).
        warmup (int, optional): default of ``--warmup`` (untimed steps first).
        devices (tuple of str): what ``--device`` accepts.
        workers (bool): every measurement is a fresh process (``run_worker``): offer ``--worker``
            and ``--threads`` (BLAS reads its thread count when it loads, so only a fresh
            process can take it).
        seed (bool): offer ``--seed`` (a benchmark with random weights or batches).
    Returns:
        argparse.ArgumentParser.
    """
    p = argparse.ArgumentParser(description=doc.splitlines()[0], epilog=doc.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    if models is not None:
        p.add_argument("--models", type=_model_list(tuple(models)), default=list(models),
                       help=f"comma-separated: {', '.join(models)}")
    if iters is not None:
        p.add_argument("--iters", type=positive_int, default=iters, help="timed steps a measurement")
        p.add_argument("--warmup", type=nonnegative_int, default=warmup, help="untimed steps before them")
    p.add_argument("--rounds", type=positive_int, default=rounds, help="measurements of each side, alternating")
    p.add_argument("--device", choices=devices, default="cpu")
    if seed:
        p.add_argument("--seed", type=nonnegative_int, default=0, help="seed of the weights and the batches")
    if workers:
        p.add_argument("--threads", type=positive_int,
                       help="BLAS and PyTorch threads of every measurement (default: the libraries' own)")
        p.add_argument("--worker", choices=IMPLS, help=argparse.SUPPRESS)
    return p


def _blas():
    """NumPy's BLAS, as its build configuration names it."""
    blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    return f"{blas['name']} {blas.get('version', '')}".strip()


def _version(distribution):
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


_TORCH_KERNELS = """
import sys, torch
if sys.argv[1] == "gpu":
    print(f"PyTorch CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
else:
    print(f"PyTorch ATen CPU (oneDNN {'on' if torch.backends.mkldnn.is_available() else 'off'})")
"""


def _torch_kernels(device):
    """What PyTorch's side runs on (its CPU kernels with or without oneDNN, or cuDNN), asked in a fresh
    interpreter, so that the process that prints the header (and may measure) never loads torch."""
    done = subprocess.run([sys.executable, "-c", _TORCH_KERNELS, device], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                        platform.processor())
    except OSError:
        return platform.processor()


def header(args, threads=None):
    """The first line every benchmark prints: how to reproduce what follows and what it ran on.

    Args:
        args (argparse.Namespace): the parsed flags (``device``, ``threads`` where the tool has it).
        threads (int | None): the BLAS threads of a tool without ``--threads`` that sets them itself.
    Returns:
        dict: ``command``, ``machine`` (CPU, cores, platform, load average), ``blas``,
        ``threads`` (None: the libraries' own), ``versions`` and ``kernels`` (what each side runs).
    """
    torch = importlib.util.find_spec("torch") is not None
    if args.device == "gpu":
        ours = f"CuPy {backend.cupy().__version__}: cuBLAS and its own kernels"
    else:
        ours = f"NumPy with {_blas()}" + _cpu_extras(getattr(args, "threads", None) or threads)
    result = {"command": command_line(),
            "machine": {"cpu": _cpu_name(), "cores": os.cpu_count(), "platform": platform.platform(),
                        "loadavg": os.getloadavg()},
            "blas": _blas(), "threads": getattr(args, "threads", threads),
            "versions": {"python": platform.python_version(), "numpy": np.__version__,
                         "tinygrad_rnn": _version("tinygrad_rnn"), "torch": _version("torch") if torch else None},
            "kernels": {"tinygrad_rnn": ours, **({"torch": _torch_kernels(args.device)} if torch else {})}}
    if args.device == "cpu":
        numba = importlib.util.find_spec("numba") is not None
        result["versions"]["numba"] = importlib.metadata.version("numba") if numba else None
        result["versions"]["onednn"] = onednn.version() if onednn.available() else None
    return result


def _cpu_extras(threads):
    """What the optional CPU extras installed here run for tinygrad_rnn with NumPy's BLAS on ``threads``
    threads (None: as the environment says, ``compiled.blas_threads``), for the header's ``kernels``."""
    from tinygrad_rnn.functions import linalg, rnn

    text = " (compiled kernels: Numba)" if importlib.util.find_spec("numba") is not None else ""
    if onednn.available():
        threads = threads or compiled.blas_threads()
        if threads == 1:
            text += (f" (oneDNN {onednn.version()} matmul: per-step products of at least "
                     f"{rnn.ONEDNN_MIN_MULTIPLY_ADDS} multiply-adds, and Linear's and MatMul's of at least "
                     f"{linalg.ONEDNN_MIN_MULTIPLY_ADDS}, at most {linalg.ONEDNN_MAX_COLUMNS} columns and "
                     f"{linalg.ONEDNN_MAX_RESULTS} results)")
        else:
            text += f" (oneDNN {onednn.version()} installed, not run: NumPy's BLAS runs on {threads} threads)"
    return text


def rerun_on_one_thread(script):
    """Run ``script --worker`` with this command's arguments in a fresh interpreter whose BLAS and OpenMP
    have one thread (they read their thread counts when they load), and exit with its status.

    Args:
        script (str): the benchmark script (its ``__file__``).
    Raises:
        SystemExit: always.
    """
    env = dict(os.environ, **dict.fromkeys(THREAD_VARIABLES, "1"))
    done = subprocess.run([sys.executable, script, "--worker", *sys.argv[1:]], env=env)
    sys.exit(done.returncode)


def print_header(args, threads=None):
    """Print ``header(args, threads)`` as one JSON line."""
    print(json.dumps(header(args, threads)), flush=True)


def alternating(rounds):
    """Yield (round, impl) pairs: every side once a round, in reversed order every other round."""
    impls = [impl for impl in IMPLS if impl == "tinygrad_rnn" or importlib.util.find_spec(impl) is not None]
    for r in range(rounds):
        for impl in impls if r % 2 == 0 else impls[::-1]:
            yield r, impl


def run_worker(script, args, impl, model, *more, **extra):
    """Run one measurement in a fresh interpreter: ``script --worker impl --models model`` and the shared flags.

    With ``--threads`` the worker's BLAS and PyTorch get that many threads (environment variables
    read when they load).

    Args:
        script (str): the benchmark script (its ``__file__``).
        args (argparse.Namespace): the parent's flags; ``iters``, ``warmup``, ``device``,
            ``threads`` and ``seed`` are passed on.
        impl (str): ``"tinygrad_rnn"`` or ``"torch"``.
        model (str): one of the tool's model names.
        *more (str): the tool's own worker arguments.
        **extra: fields added to the result (e.g. ``round``).
    Returns:
        dict: the worker's last JSON line with ``extra``; printed.
    Raises:
        RuntimeError: the worker failed; the message holds its stderr.
    """
    flags = ["--worker", impl, "--models", model, "--iters", str(args.iters), "--warmup", str(args.warmup),
             "--device", args.device, "--seed", str(args.seed), *more]
    threads = {} if args.threads is None else dict.fromkeys(THREAD_VARIABLES, str(args.threads))
    done = subprocess.run([sys.executable, script, *flags], capture_output=True, text=True,
                          env={**os.environ, **threads})
    if done.returncode:
        raise RuntimeError(f"{Path(script).name} worker {' '.join(flags)} failed:\n{done.stderr}")
    result = dict(json.loads(done.stdout.strip().splitlines()[-1]), **extra)
    print(json.dumps(result), flush=True)
    return result


def shapes(form):
    """An argparse ``type`` for comma-separated shapes of three sizes, each at least 1.

    Args:
        form (str): what the sizes are, for the messages: ``"TxNxH"`` (a recurrent layer's steps,
            batch and size) or ``"MxKxN"`` (a product's).
    Returns:
        callable: ``"AxBxC,..."`` -> [(A, B, C), ...].
    """
    def parse(text):
        found = []
        for shape in text.split(","):
            try:
                a, b, c = (int(part) for part in shape.split("x"))
            except ValueError:
                raise argparse.ArgumentTypeError(f"a shape is {form}, such as 35x20x100, got {shape!r}") from None
            if min(a, b, c) < 1:
                raise argparse.ArgumentTypeError(f"a shape's sizes must be at least 1, got {shape!r}")
            found.append((a, b, c))
        return found

    return parse


def fastest(runs, reps):
    """Each run's minimum seconds over ``reps`` rounds, the runs interleaved (after one untimed round)."""
    best = dict.fromkeys(runs, float("inf"))
    for rep in range(reps + 1):
        for name, run in runs.items():
            began = time.perf_counter()
            run()
            if rep:
                best[name] = min(best[name], time.perf_counter() - began)
    return best


def hand_trainer(spec, optimizer, args, clip):
    """A ``Trainer`` without a batch source on ``build_model(spec, seed=args.seed)``, on ``args.device``.

    Args:
        spec (dict): the model's spec (``models.build_model``).
        optimizer (Optimizer): not yet set up; set up for the model here.
        args (argparse.Namespace): ``seed`` and ``device``.
        clip (float): the gradient norm to clip to.
    Returns:
        Trainer: call ``step(batch)`` by hand (``stepper``).
    """
    from tinygrad_rnn.models import build_model
    from tinygrad_rnn.training import Trainer

    model = build_model(spec, seed=args.seed)
    if args.device == "gpu":
        model.to_gpu()
    return Trainer(model, optimizer.setup(model), None, clip=clip)


def stepper(trainer, args):
    """One timed iteration of tinygrad_rnn: put a NumPy batch on the device and call ``trainer.step``.

    Args:
        trainer (Trainer): from ``hand_trainer``.
        args (argparse.Namespace): ``device``.
    Returns:
        callable: batch (tuple of ndarray) -> the loss on the device (not read back).
    """
    move = device_mover(args)
    return lambda batch: trainer.step(tuple(move(a) for a in batch))


def lm_batches(count, seed):
    """``count`` (N 20, T 35) batches of random word ids and their next words (throughput ignores the words).

    Args:
        count (int): batches.
        seed (int): of the word ids.
    Returns:
        list of tuple: (xs, ts), each (BATCH, TIME) int32.
    """
    ids = np.random.default_rng(seed).integers(0, VOCAB, (count, BATCH, TIME + 1)).astype(np.int32)
    return [(b[:, :-1], b[:, 1:]) for b in ids]


def time_training(step, sync, batches, warmup):
    """Seconds taken by ``step`` on ``batches[warmup:]``, after untimed steps on the first ``warmup``.

    Args:
        step: one training iteration on a batch tuple; returns the loss.
        sync: waits for a loss (for asynchronous devices) and returns it as a float.
        batches (list of tuple): the batches.
        warmup (int): untimed iterations.
    Returns:
        float: seconds.
    """
    for batch in batches[:warmup]:
        sync(step(batch))
    began = time.perf_counter()
    for batch in batches[warmup:]:
        loss = step(batch)
    sync(loss)
    return time.perf_counter() - began


def torch_update(loss, model, optimizer, max_norm):
    """PyTorch's end of a training iteration, as tinygrad_rnn's trainer does it: backward, clip the
    global gradient norm to ``max_norm``, step.

    Args:
        loss (torch.Tensor): () the loss.
        model (torch.nn.Module): the model.
        optimizer (torch.optim.Optimizer): its optimizer.
        max_norm (float): the gradient norm to clip to.
    Returns:
        torch.Tensor: () the loss, detached (not synchronized).
    """
    from torch import nn

    optimizer.zero_grad()
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    optimizer.step()
    return loss.detach()

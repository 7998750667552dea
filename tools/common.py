"""What the tools share: the right/wrong marks of the training tools, and the benchmarks' runner.

Benchmarks take one measurement per fresh process, the sides alternating. A measurement runs
``SCRIPT --worker IMPL ...`` in a new interpreter, so that its memory figures are its own and no
side inherits another's state (PyTorch's threads, tinygrad_rnn's ``malloc`` settings). Rounds
alternate the order of the sides, so that a slow phase of the machine hits both. PyTorch is
measured only where it is importable; it is never a dependency.
"""
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def marks():
    """The (right, wrong) marks printed next to decoded examples, in what the terminal can print."""
    encoding = (sys.stdout.encoding or "").lower().replace("-", "")
    return ("☑", "☒") if encoding.startswith("utf") else ("OK", "X ")


def alternating(rounds):
    """Yield (round, impl) pairs: every side once a round, in reversed order every other round."""
    impls = ["tinygrad_rnn"] + (["torch"] if importlib.util.find_spec("torch") is not None else [])
    for r in range(rounds):
        for impl in impls if r % 2 == 0 else impls[::-1]:
            yield r, impl


def run_worker(script, args, **extra):
    """Run ``script --worker *args`` in a fresh interpreter; print and return its last JSON line.

    Args:
        script (str): the benchmark script (its ``__file__``).
        args (list of str): the worker's arguments.
        **extra: fields added to the result (e.g. ``round``).
    Returns:
        dict: the worker's result with ``extra``.
    Raises:
        RuntimeError: the worker failed; the message holds its stderr.
    """
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, script, "--worker", *args], capture_output=True, text=True, env=env)
    if done.returncode:
        raise RuntimeError(f"{Path(script).name} worker {' '.join(args)} failed:\n{done.stderr}")
    result = dict(json.loads(done.stdout.strip().splitlines()[-1]), **extra)
    print(json.dumps(result), flush=True)
    return result


def time_training(step, sync, batches, warmup):
    """Seconds taken by ``step`` on ``batches[warmup:]``, after untimed steps on the first ``warmup``.

    Args:
        step: one training iteration on ``(xs, ts)``; returns the loss.
        sync: waits for a loss (for asynchronous devices) and returns it as a float.
        batches (list of tuple): (xs, ts) pairs.
        warmup (int): untimed iterations.
    """
    for xs, ts in batches[:warmup]:
        sync(step(xs, ts))
    began = time.perf_counter()
    for xs, ts in batches[warmup:]:
        loss = step(xs, ts)
    sync(loss)
    return time.perf_counter() - began


def torch_update(loss, model, optimizer, max_norm):
    """PyTorch's end of a training iteration, as tinygrad_rnn's trainers do it: backward, clip the
    global gradient norm to ``max_norm``, step. Returns the loss, detached (not synchronized)."""
    from torch import nn

    optimizer.zero_grad()
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    optimizer.step()
    return loss.detach()

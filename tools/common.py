"""What the tools share: the common command-line flags and their range checks, the extensions every
training run gets, one summary writer, the command line that reproduces a run, the right/wrong marks,
and the MPI launcher. What only the benchmarks share is in ``benchmark.py``.
"""
import argparse
import json
import math
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

from tinygrad_rnn import as_cupy
from tinygrad_rnn import distributed
from tinygrad_rnn.serialization import json_ready, write_json
from tinygrad_rnn.training import Checkpoint, Extension, History, LogReport, ProgressBar

def _number(kind, low, low_open, high=None, high_open=True):
    """An argparse ``type`` that parses ``kind`` and checks the range before any work starts."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}")
        below = value <= low if low_open else value < low
        above = high is not None and (value >= high if high_open else value > high)
        if not math.isfinite(value) or below or above:
            wanted = f"{'>' if low_open else '>='} {low:g}" + ("" if high is None else
                                                          f" and {'<' if high_open else '<='} {high:g}")
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


positive_int = _number(int, 0, True)
nonnegative_int = _number(int, 0, False)
positive_float = _number(float, 0.0, True)
nonnegative_float = _number(float, 0.0, False)
probability = _number(float, 0.0, False, 1.0)  # a dropout rate: [0, 1)
factor = _number(float, 0.0, True, 1.0, high_open=False)  # a decay factor: (0, 1]


def parser(description, epilog):
    """An ArgumentParser with the flags every training tool has.

    Flags: ``--epochs``, ``--max-iters``, ``--batch-size``, ``--lr``, ``--clip`` (0: none),
    ``--device``, ``--seed``, ``--out``, ``--log-every``, ``--no-progress``, ``--resume``,
    ``--distributed``. Numeric defaults are None where each tool fills its own.

    Args:
        description (str): the tool's one-line description.
        epilog (str): text after the flags (the tool's docstring).
    Returns:
        argparse.ArgumentParser.
    """
    p = argparse.ArgumentParser(description=description, epilog=epilog,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=positive_int)
    p.add_argument("--max-iters", type=positive_int, help="stop after this many iterations in total")
    p.add_argument("--batch-size", type=positive_int)
    p.add_argument("--lr", type=positive_float, help="learning rate")
    p.add_argument("--clip", type=nonnegative_float, help="max global gradient norm (0: no clipping)")
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--out", help="output folder")
    p.add_argument("--log-every", type=positive_int, default=20, help="record the running loss every K iterations")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--resume", help="checkpoint (last.npz) to continue from; give the same settings")
    p.add_argument("--distributed", action="store_true",
                   help="data parallel over the processes of an MPI launch: mpirun -n P python -m mpi4py -m "
                        "tinygrad_rnn.tools.<tool> --distributed ... (--batch-size is the combined batch)")
    return p


def communicator(args):
    """The run's communicator: ``distributed.init(device=...)`` with ``--distributed``, else a serial one.

    With ``--device gpu`` this also makes the rank's GPU current, so build the model after it.
    """
    return distributed.init(device=args.device) if args.distributed else distributed.SerialComm()


def ranks(comm):
    """The run header's note of a data-parallel run (empty for one process)."""
    return f" split over {comm.size} ranks" if comm.size > 1 else ""


def fill_defaults(args, defaults):
    """Set every flag that was not given (None) to its default.

    Args:
        args (argparse.Namespace): parsed flags.
        defaults (dict): flag name -> default value.
    Returns:
        argparse.Namespace: ``args``.
    """
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def device_mover(args):
    """The function that puts a NumPy array on the run's device."""
    return as_cupy if args.device == "gpu" else np.asarray


def extensions(args, out, monitor=None, mode="min", schedule=None, extra=()):
    """The extensions of every training run (the trainer orders them by priority: the schedule first).

    Args:
        args (argparse.Namespace): the flags (``no_progress``).
        out (Path): the output folder.
        monitor (str, optional): the record key deciding ``best.npz``.
        mode (str): ``"min"`` or ``"max"`` for ``monitor``.
        schedule (Schedule, optional): the learning-rate schedule.
        extra (sequence of Extension): run after the log line (e.g. printed examples).
    Returns:
        list of Extension.
    """
    return [ProgressBar(False if args.no_progress else None), *([schedule] if schedule else []),
            Checkpoint(out, monitor, mode), History(out), LogReport(), *extra]


def run_training(trainer, args, header):
    """Resume from ``--resume``, print the run's header on rank 0, and fit: the end of every tool's setup.

    A refused checkpoint is a usage error (exit code 2).

    Args:
        trainer (Trainer): the run.
        args (argparse.Namespace): the flags (``resume``, ``epochs``, ``max_iters``).
        header (callable): returns the line that describes the run, read after the resume (which
            may have changed the learning rate).
    Returns:
        dict: the trainer's history.
    """
    if args.resume:
        try:
            trainer.resume(args.resume)
        except (ValueError, FileNotFoundError) as e:
            print(f"{Path(sys.argv[0]).name}: error: --resume: {e}", file=sys.stderr)
            raise SystemExit(2) from None
    if trainer.comm.is_root:
        print(header())
    return trainer.fit(args.epochs, max_iters=args.max_iters)


class EachEpoch(Extension):
    """Call ``action()`` after every epoch record (e.g. to print decoded examples), on rank 0."""

    root_only = True

    def __init__(self, action):
        self.action = action

    def on_epoch_end(self, trainer, record):
        self.action()


def write_summary(out, result, ranks=1):
    """Write the run's summary to ``out/summary.json`` and print it as the last line (valid JSON).

    The summary starts with the command that made it (``"command"``), so that a results page
    built from summaries says how to reproduce each figure.

    Args:
        out (Path): the output folder.
        result (dict): the numbers; non-finite ones are written as ``"inf"``/``"nan"``.
        ranks (int): the processes of a data-parallel run (its command starts with ``mpirun``).
    """
    result = {"command": command_line(ranks), **result}
    write_json(Path(out) / "summary.json", result)
    print(json.dumps(json_ready(result), allow_nan=False), flush=True)


def command_line(ranks=1):
    """The command that reproduces this process's run, as one shell-quoted string.

    ``python tools/<script>.py <its arguments>`` for a script, the installed command's name
    otherwise; a data-parallel run starts with ``mpirun -n <ranks>``.

    Args:
        ranks (int): the processes of a data-parallel run.
    Returns:
        str: e.g. ``"mpirun -n 2 python -m mpi4py tools/train_lm.py --distributed"``.
    """
    name = Path(sys.argv[0]).name
    script = name.endswith(".py")  # a script, or the installed command
    program = ["python", f"tools/{name}"] if script else [name]
    if ranks > 1:
        program = ["mpirun", "-n", str(ranks), *(["python", "-m", "mpi4py", f"tools/{name}"] if script else [name])]
    return shlex.join([*program, *sys.argv[1:]])


def marks():
    """The (right, wrong) marks printed next to decoded examples, in what the terminal can print."""
    encoding = (sys.stdout.encoding or "").lower().replace("-", "")
    return ("☑", "☒") if encoding.startswith("utf") else ("OK", "X ")


# Open MPI in a container as root, more ranks than cores, one BLAS thread a rank (MPICH ignores these)
MPI_ENV = {
    "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",  # containers and CI run as root
    "OMPI_MCA_rmaps_base_oversubscribe": "1",  # more ranks than cores
    "OMPI_MCA_hwloc_base_binding_policy": "none",  # a shared machine: pinned ranks would fight other work
    "OMPI_MCA_btl_vader_single_copy_mechanism": "none",  # containers forbid cross-memory attach
    "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",  # one core a rank
}


def run_mpi(ranks, arguments, timeout, env=None):
    """Run ``mpirun -n ranks python *arguments`` (with ``MPI_ENV``) in a new session, killed whole on timeout.

    A new session puts mpirun and its ranks in one process group, so that a timeout ends all of
    them and no rank outlives the call.

    Args:
        ranks (int): P.
        arguments (list of str): the arguments of ``python`` (e.g. ``["-m", "mpi4py", "script.py"]``).
        timeout (float): seconds before the job is killed.
        env (dict, optional): more environment variables.
    Returns:
        subprocess.CompletedProcess: ``returncode``, ``stdout`` and ``stderr`` (text).
    Raises:
        TimeoutError: the job did not end in time; the message holds the command and its output.
    """
    command = ["mpirun", "-n", str(ranks), sys.executable, *arguments]
    job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, **MPI_ENV, **(env or {})}, start_new_session=True)
    try:
        out, err = job.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)
        out, err = job.communicate()
        raise TimeoutError(f"{shlex.join(command)} did not end within {timeout} s:\n{out}{err}") from None
    return subprocess.CompletedProcess(command, job.returncode, out, err)

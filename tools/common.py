"""What the tools share: the parser with its one-line usage errors, the common command-line flags and
their checks, the extensions every training run gets, resuming, one summary writer, the command line
that reproduces a run, the right/wrong marks, and the MPI launcher. What only the benchmarks share is
in ``benchmark.py``.
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

from tinygrad_rnn import as_cupy, cuda
from tinygrad_rnn import distributed
from tinygrad_rnn.distributed import Shard
from tinygrad_rnn.serialization import json_ready, write_json
from tinygrad_rnn.training import Checkpoint, Extension, History, LogReport, ProgressBar, checkpoint

# the flags a resumed run may change: how long it goes on, where and how it reports, what it runs on
RESUMABLE = frozenset({"epochs", "max_iters", "resume", "out", "no_progress", "log_every", "device", "distributed",
                       "data_dir", "examples", "beam_width", "attention_question"})


def usage_error(message):
    """End the program with a usage error: ``<program>: error: <message>`` on one line of stderr, exit status 2.

    Args:
        message (str): what is wrong and with which flag, file or device; line breaks become spaces.
    Raises:
        SystemExit: always, with code 2.
    """
    print(f"{Path(sys.argv[0]).name}: error: {' '.join(str(message).split())}", file=sys.stderr)
    raise SystemExit(2)


class _Help(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The epilog as written, and ``(default: ...)`` after every flag that has a default value."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or "default:" in (action.help or ""):
            return action.help  # a switch, or a flag whose help says where its default comes from
        return super()._get_help_string(action)


class ToolParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (``usage_error``) and whose help shows every default.

    Args:
        description (str): the tool's one-line description.
        epilog (str, optional): text after the flags, printed as written.
    """

    def __init__(self, description, epilog=None):
        super().__init__(description=description, epilog=epilog, formatter_class=_Help)

    def error(self, message):
        if distributed.launched_rank():  # every rank parses the same command line: one message, from rank 0
            raise SystemExit(2)
        usage_error(message)


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


def device(text):
    """An argparse ``type`` for ``--device``: ``gpu`` only where the GPU path works (``tinygrad_rnn.cuda.check``).

    Args:
        text (str): the flag's value.
    Returns:
        str: ``text``.
    Raises:
        argparse.ArgumentTypeError: ``gpu`` where CuPy, a GPU, NVRTC or cuBLAS is missing; the
            message says which.
    """
    if text == "gpu":
        try:
            cuda.check()
        except RuntimeError as e:
            raise argparse.ArgumentTypeError(f"gpu is not usable here ({e}); use --device cpu") from None
    return text


def folder(text):
    """An argparse ``type`` for a folder that must exist (``--data-dir``): never a silent fallback elsewhere.

    Args:
        text (str): the flag's value.
    Returns:
        str: ``text``.
    Raises:
        argparse.ArgumentTypeError: ``text`` does not exist or is not a folder.
    """
    if not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} is not a folder" if Path(text).exists() else
                                         f"{text} does not exist")
    return text


def add_device(p):
    """Add ``--device {cpu,gpu}`` (default cpu), checked while parsing (``device``).

    Args:
        p (argparse.ArgumentParser): the tool's parser.
    """
    p.add_argument("--device", type=device, choices=("cpu", "gpu"), default="cpu",
                   help="where the arrays live; gpu needs CuPy and a working GPU")


def out_folder(args, default):
    """Set ``args.out`` to a Path (``default`` when ``--out`` was not given); a usage error when it cannot be a folder.

    Args:
        args (argparse.Namespace): the flags (``out``).
        default (str): the folder when ``--out`` is not given.
    Returns:
        Path: ``args.out``.
    """
    args.out = Path(args.out or default)
    above = args.out
    while not above.exists() and above != above.parent:
        above = above.parent
    if not above.is_dir():
        usage_error(f"--out {args.out}: {above} is a file, not a folder; give another --out")
    return args.out


def parser(description, epilog):
    """An ArgumentParser with the flags every training tool has.

    Flags: ``--epochs``, ``--max-iters``, ``--batch-size``, ``--lr``, ``--clip`` (0: none),
    ``--device``, ``--seed``, ``--out``, ``--log-every``, ``--no-progress``, ``--resume``,
    ``--distributed``. Numeric defaults are None where each tool fills its own (its help says
    "see below": the epilog lists them).

    Args:
        description (str): the tool's one-line description.
        epilog (str): text after the flags (the tool's docstring).
    Returns:
        ToolParser.
    """
    p = ToolParser(description, epilog)
    p.add_argument("--epochs", type=positive_int, help="epochs to train (default: see below)")
    p.add_argument("--max-iters", type=positive_int, help="stop after this many iterations in total (default: none)")
    p.add_argument("--batch-size", type=positive_int, help="N, the combined batch (default: see below)")
    p.add_argument("--lr", type=positive_float, help="initial learning rate; with --resume it must be the run's "
                                                      "(default: see below)")
    p.add_argument("--clip", type=nonnegative_float, help="max global gradient norm, 0: no clipping "
                                                          "(default: see below)")
    add_device(p)
    p.add_argument("--seed", type=nonnegative_int, default=0, help="initial weights, dropout and shuffling")
    p.add_argument("--out", help="output folder (default: see below)")
    p.add_argument("--log-every", type=positive_int, default=20, help="record the running loss every K iterations")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--resume", help="checkpoint (last.npz) to continue from; every setting but --epochs, "
                                    "--max-iters and how the run reports must be the run's (default: a fresh run)")
    p.add_argument("--distributed", action="store_true",
                   help="data parallel over the processes of an MPI launch: mpirun -n P python -m mpi4py -m "
                        "tinygrad_rnn.tools.<tool> --distributed ... (--batch-size is the combined batch)")
    return p


def communicator(args):
    """The run's communicator: ``distributed.init(device=...)`` with ``--distributed``, else a serial one.

    With ``--device gpu`` this also makes the rank's GPU current, so build the model after it.
    """
    return distributed.init(device=args.device) if args.distributed else distributed.SerialComm()


def batch_source(make, comm, model, flags):
    """The run's batch source, split over the ranks of a data-parallel run; a usage error when the batch does not fit.

    Args:
        make (callable): no arguments; builds the batch source (``BPTTBatcher``, ``ShuffledBatcher``).
        comm (SerialComm | MpiComm | NcclComm): the run's communicator.
        model (Layer): the model trained on the batches (``distributed.Shard`` draws its dropout rows).
        flags (str): the flags that set the batch, named in the error (``"--batch-size 20"``).
    Returns:
        the source, or its ``distributed.Shard`` with more than one rank (the trainer takes either).
    """
    try:
        source = make()
        return Shard(source, comm, model) if comm.size > 1 else source
    except ValueError as e:  # too little data for one batch, or a batch the ranks do not divide
        usage_error(f"{flags}{ranks(comm)}: {e}")


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

    A checkpoint that cannot be read, whose run had other settings (any flag outside ``RESUMABLE``,
    ``--lr`` included: the run goes on with the checkpoint's learning rate), that the trainer
    refuses, or that has reached ``--epochs`` or ``--max-iters`` already is a usage error (exit
    code 2). On resume the header ends with the file, epoch and
    iteration the run goes on from, and ``args.resumed`` holds them for the summary.

    Args:
        trainer (Trainer): the run.
        args (argparse.Namespace): the flags (``resume``, ``epochs``, ``max_iters`` and the settings).
        header (callable): returns the line that describes the run, read after the resume (which
            may have changed the learning rate).
    Returns:
        dict: the trainer's history.
    """
    args.resumed = None
    if args.resume:
        try:
            run = trainer.comm.from_root(lambda: checkpoint.read(args.resume)[1].get("run") or {})
        except (OSError, ValueError) as e:
            usage_error(f"--resume: {e}")
        changed = _changed_settings(run.get("args", {}), vars(args))
        if changed:
            usage_error(f"--resume {args.resume}: this run's settings differ from the checkpoint's: "
                        f"{'; '.join(changed)}; give the run's settings (only --epochs, --max-iters and how the run "
                        "reports may change)")
        try:
            trainer.resume(args.resume)
        except (OSError, ValueError) as e:
            usage_error(f"--resume: {e}")
        args.resumed = {"file": str(args.resume), "epoch": trainer.epoch, "iteration": trainer.iteration}
        if trainer.epoch >= args.epochs or (args.max_iters or math.inf) <= trainer.total_iterations:
            usage_error(f"--resume {args.resume}: the run has done {trainer.epoch} epochs and "
                        f"{trainer.total_iterations} iterations already: raise --epochs {args.epochs}"
                        + (f" or --max-iters {args.max_iters}" if args.max_iters else "") + " to go on")
    if trainer.comm.is_root:
        resumed = f"; resumed from {args.resume} at epoch {trainer.epoch} iteration {trainer.iteration}"
        print(header() + (resumed if args.resume else ""), flush=True)
    return trainer.fit(args.epochs, max_iters=args.max_iters)


def _changed_settings(theirs, mine):
    """``--flag VALUE (the checkpoint's: VALUE)`` for every setting outside ``RESUMABLE`` that differs."""
    compared = {k: mine[k] for k in theirs if k not in RESUMABLE and k in mine}
    compared = json.loads(json.dumps(json_ready(compared)))  # tuples as lists, as the checkpoint stored them
    return [f"--{k.replace('_', '-')} {v} (the checkpoint's: {theirs[k]})" for k, v in sorted(compared.items())
            if v != theirs[k]]


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

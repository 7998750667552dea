"""Communicators: who the ranks are, and the collectives the data-parallel step needs, on MPI and NCCL.

``init()`` returns a :class:`SerialComm` unless the process was launched by ``mpirun``,
``mpiexec`` or ``srun`` with more than one process; then it imports mpi4py (the ``distributed``
extra) and returns an :class:`MpiComm` for NumPy arrays, or, with ``device="gpu"``, an
:class:`NcclComm` that first picks the rank's GPU (its ``local_rank``, or the only one it sees)
and moves CuPy arrays with NCCL, never through host memory. Single-process code therefore
imports nothing more and runs exactly as without this module.

Every communicator has ``rank``, ``size``, ``local_rank``, ``is_root``, the collectives
``allreduce`` (in-place sum of an array), ``bcast`` (in place, from rank 0), ``allreduce_numbers``,
``bcast_obj``, ``allgather_obj``, ``gather_obj`` and ``barrier``, and ``abort`` and ``leave`` (a
rank that leaves the training loop early ends the job). Every rank must call
the same collectives in the same order.

An MPI job must fail as a whole, never hang (a rank that raises would otherwise leave the others
waiting in a collective forever):

- ``init`` installs an excepthook that prints the traceback and calls ``MPI_Abort``, which ends
  every rank (launching with ``python -m mpi4py script.py`` does the same for the main thread);
- ``Trainer.fit`` calls ``leave`` when anything, ``sys.exit`` included, ends it early on one rank:
  the traceback is printed and the job aborted at once;
- a watchdog (``timeout`` seconds, default ``TINYGRAD_RNN_DIST_TIMEOUT`` or 300; 0 turns it off)
  is armed around every collective: a rank that waits longer than that for the others (one of
  them is stuck or dead) prints every thread's stack and exits, and the launcher ends the job.
"""
import faulthandler
import os
import sys
import traceback

import numpy as np

from tinygrad_rnn import backend
from tinygrad_rnn.checks import number

# launcher variables that give the number of processes: Open MPI, MPICH/Hydra and Intel MPI, Slurm's srun
_SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MPI_LOCALNRANKS", "SLURM_STEP_NUM_TASKS")
# and those that give this process's rank, in the same order
_RANK_VARIABLES = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "MPI_LOCALRANKID", "SLURM_PROCID")
DEFAULT_TIMEOUT = 300.0


def launched_size():
    """The number of processes the launcher started (1 when not launched by MPI), read from its environment.

    Returns:
        int: e.g. 2 under ``mpirun -n 2``.
    """
    for name in _SIZE_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 1


def launched_rank():
    """This process's rank among those the launcher started (0 when not launched by MPI), read from
    its environment before any communicator exists.

    Returns:
        int: 0 to ``launched_size() - 1``.
    """
    for name in _RANK_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


class SerialComm:
    """The communicator of a single process: every collective returns its input unchanged.

    Attributes:
        rank (int): 0.
        size (int): 1.
        local_rank (int): 0.
        is_root (bool): True.
    """

    rank, size, local_rank, is_root = 0, 1, 0, True
    name = "serial"

    def allreduce(self, array):
        """Sum ``array`` over the ranks, in place (here: nothing to do).

        Args:
            array (ndarray): contiguous, on the communicator's device.
        """

    def bcast(self, array):
        """Overwrite ``array`` with rank 0's, in place (here: nothing to do)."""

    def allreduce_numbers(self, values):
        """The sums over the ranks of a few host numbers.

        Args:
            values (sequence of float): the same count on every rank.
        Returns:
            list of float: one sum per value.
        """
        return [float(v) for v in values]

    def bcast_obj(self, obj):
        """Rank 0's ``obj`` on every rank (a picklable Python object, in memory)."""
        return obj

    def allgather_obj(self, obj):
        """Every rank's ``obj``, in rank order, on every rank."""
        return [obj]

    def gather_obj(self, obj):
        """Every rank's ``obj``, in rank order, on rank 0 (None elsewhere)."""
        return [obj]

    def barrier(self):
        """Wait until every rank is here."""

    def from_root(self, read, errors=(OSError, ValueError)):
        """``read()`` on rank 0, its result on every rank (e.g. a file only rank 0 needs to see).

        Args:
            read (callable): no arguments; returns a picklable object.
            errors (tuple): the exception types that are sent to every rank and raised there
                (others end rank 0 alone, and the job through the excepthook).
        Returns:
            object: rank 0's ``read()``.
        Raises:
            Exception: rank 0's error of one of ``errors``, on every rank.
        """
        try:
            result = read() if self.is_root else None
        except errors as e:
            result = e
        result = self.bcast_obj(result)
        if isinstance(result, errors):
            raise result
        return result

    def abort(self, code=1):
        """End the whole job now with exit status ``code``."""
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    def leave(self, error):
        """This rank is leaving the ranks' sequence of collectives because of ``error``.

        One process has nobody waiting for it: nothing happens, and the caller re-raises.

        Args:
            error (BaseException): what ends this rank's part (``SystemExit`` included).
        """


class MpiComm(SerialComm):
    """Collectives over MPI (``mpi4py.MPI.COMM_WORLD``) on NumPy arrays.

    Args:
        timeout (float, optional): watchdog seconds for one collective (0: off); default
            ``TINYGRAD_RNN_DIST_TIMEOUT`` or 300.
    Attributes:
        rank (int), size (int): of ``COMM_WORLD``.
        local_rank (int): the rank among the processes of this host (the GPU to use).
        is_root (bool): ``rank == 0``.
        timeout (float): the watchdog's seconds (0: off).
    """

    name = "mpi"

    def __init__(self, timeout=None):
        from mpi4py import MPI  # the distributed extra; imported only for a multi-process launch

        self._mpi = MPI
        self._comm = MPI.COMM_WORLD
        self.rank, self.size = self._comm.Get_rank(), self._comm.Get_size()
        self.local_rank = self._comm.Split_type(MPI.COMM_TYPE_SHARED).Get_rank()
        self.is_root = self.rank == 0
        if timeout is None:
            text = os.environ.get("TINYGRAD_RNN_DIST_TIMEOUT", str(DEFAULT_TIMEOUT))
            try:
                timeout = float(text)
            except ValueError:
                raise ValueError(f"distributed.init: TINYGRAD_RNN_DIST_TIMEOUT must be seconds, got {text!r}") from None
        self.timeout = number("distributed.init", "timeout", timeout, 0.0)
        _abort_on_exception(self._comm)

    def _collective(self, call, *args, **kwargs):
        # a rank waiting here longer than the timeout means another one is stuck or dead
        if self.timeout:
            faulthandler.dump_traceback_later(self.timeout, exit=True)
        try:
            return call(*args, **kwargs)
        finally:
            if self.timeout:
                faulthandler.cancel_dump_traceback_later()

    def _host(self, where, array):
        if not isinstance(array, np.ndarray):
            raise TypeError(f"{where}: the MPI communicator takes NumPy arrays, got {type(array).__name__} "
                            "(a model on the GPU needs distributed.init(device='gpu'), which uses NCCL)")
        if not array.flags.c_contiguous:
            raise ValueError(f"{where}: the array of shape {array.shape} must be C-contiguous")
        return array

    def allreduce(self, array):
        self._collective(self._comm.Allreduce, self._mpi.IN_PLACE, self._host("MpiComm.allreduce", array),
                         op=self._mpi.SUM)

    def bcast(self, array):
        self._collective(self._comm.Bcast, self._host("MpiComm.bcast", array), root=0)

    def allreduce_numbers(self, values):
        buffer = np.array([float(v) for v in values], dtype=np.float64)
        self._collective(self._comm.Allreduce, self._mpi.IN_PLACE, buffer, op=self._mpi.SUM)
        return buffer.tolist()

    def bcast_obj(self, obj):
        return self._collective(self._comm.bcast, obj, root=0)

    def allgather_obj(self, obj):
        return self._collective(self._comm.allgather, obj)

    def gather_obj(self, obj):
        return self._collective(self._comm.gather, obj, root=0)

    def barrier(self):
        self._collective(self._comm.Barrier)

    def abort(self, code=1):
        sys.stdout.flush()
        sys.stderr.flush()
        self._comm.Abort(code)

    def leave(self, error):
        """Print ``error``'s traceback and end the whole job: the other ranks would wait for this one.

        A ``sys.exit`` reaches no excepthook and would leave the others waiting until their
        watchdog fires; its status (1 for a status of 0 or None: the job did not finish) is the
        job's.

        Args:
            error (BaseException): what ends this rank's part.
        """
        code = error.code if isinstance(error, SystemExit) and isinstance(error.code, int) and error.code else 1
        traceback.print_exception(error)
        self.abort(code)


def _rank_device(local_rank, count):
    """The GPU a rank uses: its ``local_rank``, or the only one it sees.

    A launcher that gives each rank its own ``CUDA_VISIBLE_DEVICES`` (Slurm's
    ``--gpus-per-task=1``) leaves every rank one visible device, numbered 0.

    Args:
        local_rank (int): the rank's index among the ranks on its host.
        count (int): the GPUs this process sees.
    Returns:
        int: the device id to make current.
    Raises:
        RuntimeError: several GPUs are visible but fewer than ``local_rank + 1``.
    """
    if count == 1:
        return 0
    if local_rank >= count:
        raise RuntimeError(f"distributed.init: local rank {local_rank} has no GPU of its own "
                           f"(this host has {count}); start at most {count} ranks per host")
    return local_rank


def _load_nccl(cupy):
    """CuPy's NCCL binding, or a clear error where NCCL is missing.

    Without libnccl CuPy still imports ``cupy.cuda.nccl``, with ``available = False``; every rank
    checks before the first NCCL call, so no rank is left waiting for another's error.

    Args:
        cupy (module): CuPy.
    Returns:
        module: ``cupy.cuda.nccl``.
    Raises:
        RuntimeError: NCCL is not installed; the message names the pip package for CuPy's CUDA.
    """
    from cupy.cuda import nccl

    if not getattr(nccl, "available", False):
        major = cupy.cuda.runtime.runtimeGetVersion() // 1000
        raise RuntimeError(f"distributed.init(device='gpu'): NCCL is not installed; install it with "
                           f"`pip install nvidia-nccl-cu{major}` (CuPy runs on CUDA {major})")
    return nccl


class NcclComm(MpiComm):
    """MPI for control and host numbers, NCCL (``cupy.cuda.nccl``) for CuPy arrays.

    The rank's GPU (its ``local_rank``, or the only one it sees where the launcher gives each rank
    its own ``CUDA_VISIBLE_DEVICES``) is made current first: NCCL binds a communicator to the
    device current when it is created. Rank 0's NCCL unique id reaches the others over MPI. Array
    collectives run on CuPy's current stream, so they are ordered with the step's kernels and
    nothing waits on the host.

    Args:
        timeout (float, optional): as for :class:`MpiComm` (it covers the MPI calls; NCCL's run
            on the stream and surface at the next synchronization).
    Attributes:
        device_id (int): the GPU this rank uses.
    Raises:
        RuntimeError: no GPU, no GPU for this rank, or NCCL not installed.
    """

    name = "nccl"

    def __init__(self, timeout=None):
        super().__init__(timeout)
        cupy = backend.cupy()
        if cupy is None:
            raise RuntimeError("distributed.init(device='gpu'): CuPy with a GPU is needed for NCCL")
        nccl = _load_nccl(cupy)
        self.device_id = _rank_device(self.local_rank, cupy.cuda.runtime.getDeviceCount())
        cupy.cuda.Device(self.device_id).use()
        self._cupy, self._nccl_module = cupy, nccl
        uid = self.bcast_obj(nccl.get_unique_id() if self.is_root else None)
        self._nccl = nccl.NcclCommunicator(self.size, uid, self.rank)
        self._types = {np.dtype(np.float16): nccl.NCCL_FLOAT16, np.dtype(np.float32): nccl.NCCL_FLOAT32,
                       np.dtype(np.float64): nccl.NCCL_FLOAT64, np.dtype(np.int32): nccl.NCCL_INT32,
                       np.dtype(np.int64): nccl.NCCL_INT64}

    def _device(self, where, array):
        if array.dtype not in self._types:
            raise TypeError(f"{where}: NCCL does not reduce dtype {array.dtype}")
        if not array.flags.c_contiguous:
            raise ValueError(f"{where}: the array of shape {array.shape} must be C-contiguous")
        if array.device.id != self.device_id:
            raise ValueError(f"{where}: the array is on GPU {array.device.id}, this rank uses GPU {self.device_id}")
        return self._types[array.dtype], self._cupy.cuda.get_current_stream().ptr

    def allreduce(self, array):
        if isinstance(array, np.ndarray):
            return super().allreduce(array)
        kind, stream = self._device("NcclComm.allreduce", array)
        self._nccl.allReduce(array.data.ptr, array.data.ptr, array.size, kind, self._nccl_module.NCCL_SUM, stream)

    def bcast(self, array):
        if isinstance(array, np.ndarray):
            return super().bcast(array)
        kind, stream = self._device("NcclComm.bcast", array)
        self._nccl.bcast(array.data.ptr, array.size, kind, 0, stream)

    def abort(self, code=1):
        self._nccl.abort()
        super().abort(code)


_hooked = []


def _abort_on_exception(comm):
    """Make an uncaught exception end the whole job (mpi4py's exit hook would otherwise wait forever)."""
    if _hooked:
        return
    previous = sys.excepthook

    def hook(kind, value, trace):
        previous(kind, value, trace)
        sys.stderr.flush()
        comm.Abort(1)

    sys.excepthook = hook
    _hooked.append(hook)


def init(device="cpu", timeout=None):
    """The communicator of this process: MPI or NCCL under a multi-process launch, else serial.

    Args:
        device (str): ``"cpu"`` (MPI moves NumPy arrays) or ``"gpu"`` (the rank's GPU is made
            current and NCCL moves CuPy arrays; MPI carries control and host numbers).
        timeout (float, optional): the watchdog's seconds for one collective (0: off);
            default ``TINYGRAD_RNN_DIST_TIMEOUT`` or 300.
    Returns:
        SerialComm | MpiComm | NcclComm: a :class:`SerialComm` (nothing imported) when the
        launcher started one process or none.
    Raises:
        ValueError: an unknown device or a bad timeout.
        ModuleNotFoundError: a multi-process launch without mpi4py (``pip install tinygrad_rnn[distributed]``).
    """
    if device not in ("cpu", "gpu"):
        raise ValueError(f"distributed.init: device must be 'cpu' or 'gpu', got {device!r}")
    if launched_size() == 1:
        if device == "gpu" and backend.cupy() is not None:
            backend.cupy().cuda.Device(0).use()
        return SerialComm()
    try:
        return NcclComm(timeout) if device == "gpu" else MpiComm(timeout)
    except ModuleNotFoundError as e:
        if e.name != "mpi4py":
            raise
        raise ModuleNotFoundError(f"distributed.init: a launch of {launched_size()} processes needs mpi4py "
                                  "(pip install 'tinygrad_rnn[distributed]')") from e

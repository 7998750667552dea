"""Where the optional CPU extras run instead of NumPy: the ``cpu`` extra's compiled kernels (Numba)
and the ``onednn`` extra's products.

Each module of kernels (``functions/_cpu_kernels.py``: the fused recurrent layers' steps and the
scatter-add of rows behind the gradients of embed_id and getitem; ``_cpu_updates.py``: the
optimizers' steps on their flat buffers) is imported at its first use, never with the package:
Numba takes a second to load, and the default install has none. Its kernels serve float32 and
float64 NumPy arrays. oneDNN's products serve float32 ones: the fused recurrent layers' per-step
products (``functions/rnn.py``) and those of Linear and MatMul of the shapes where oneDNN wins
(``functions/linalg.py``), where NumPy's BLAS runs on one thread (``blas_threads``). Neither runs
where the current context says ``using_config("compiled_kernels", False)``: the NumPy path runs
then, the fallback the tests compare them with.
"""
import functools
import importlib
import importlib.util
import os

import numpy as np

from tinygrad_rnn.core import Config


@functools.cache
def _module(name):
    if importlib.util.find_spec("numba") is None:
        return None
    return importlib.import_module(name)


def kernels(name, x):
    """The module of compiled kernels ``name`` for arrays of ``x``'s kind, or None: the NumPy path runs.

    Args:
        name (str): the module, such as ``"tinygrad_rnn.functions._cpu_kernels"``.
        x (ndarray): an array the kernels would take.
    Returns:
        module | None: None where Numba is not installed, ``x`` is not a float32 or float64 NumPy
        array, or the current context says ``using_config("compiled_kernels", False)``.
    """
    if not Config.compiled_kernels or not isinstance(x, np.ndarray) or x.dtype not in (np.float32, np.float64):
        return None
    return _module(name)


@functools.cache
def _onednn_module():
    onednn = importlib.import_module("tinygrad_rnn.onednn")
    return onednn if onednn.available() else None


@functools.cache
def blas_threads():
    """The threads NumPy's OpenBLAS runs on, as it decides when it loads: ``OPENBLAS_NUM_THREADS``,
    ``GOTO_NUM_THREADS`` or ``OMP_NUM_THREADS``, the first one set, else the cores this process may
    use (read once; a later change of the variables, or threadpoolctl's, is not seen).

    Returns:
        int: at least 1.
    """
    for name in ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def onednn(*arrays):
    """The ``onednn`` module for a product of these operands, or None: NumPy's BLAS runs.

    oneDNN runs only beside a BLAS on one thread: with several, oneDNN's OpenMP threads and
    OpenBLAS's take turns on the cores, and what oneDNN's kernels gain is lost waking and waiting.

    Args:
        *arrays (ndarray): the operands.
    Returns:
        module | None: None where the extra is not installed, an operand is not a float32 NumPy array, the
        current context says ``using_config("compiled_kernels", False)``, NumPy's BLAS runs on several
        threads (``blas_threads``), or this process was forked after oneDNN loaded (``onednn.usable``).
    """
    if (not Config.compiled_kernels or blas_threads() != 1
            or not all(isinstance(x, np.ndarray) and x.dtype == np.float32 for x in arrays)):
        return None
    module = _onednn_module()
    return module if module is not None and module.usable() else None

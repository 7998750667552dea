"""Where the optional CPU extras run instead of NumPy: the ``cpu`` extra's compiled kernels (Numba)
and the ``onednn`` extra's products.

Each module of kernels (``functions/_cpu_kernels.py``: the fused recurrent layers' steps and the
scatter-add of rows behind the gradients of embed_id and getitem; ``_cpu_updates.py``: the
optimizers' steps on their flat buffers) is imported at its first use, never with the package:
Numba takes a second to load, and the default install has none. Its kernels serve float32 and
float64 NumPy arrays. oneDNN's products serve float32 ones: the fused recurrent layers' per-step
products (``functions/rnn.py``) and those of Linear and MatMul of the shapes where oneDNN wins
(``functions/linalg.py``). Neither runs where the current context says
``using_config("compiled_kernels", False)``: the NumPy path runs then, the fallback the tests
compare them with.
"""
import functools
import importlib
import importlib.util

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


def onednn(x):
    """The ``onednn`` module for products of arrays like ``x``, or None: NumPy's BLAS runs.

    Args:
        x (ndarray): an operand.
    Returns:
        module | None: None where the extra is not installed, ``x`` is not a float32 NumPy array, the
        current context says ``using_config("compiled_kernels", False)``, or this process was forked
        after oneDNN loaded (``onednn.usable``).
    """
    if not Config.compiled_kernels or not isinstance(x, np.ndarray) or x.dtype != np.float32:
        return None
    module = _onednn_module()
    return module if module is not None and module.usable() else None

"""Where the ``cpu`` extra's compiled kernels (Numba) run instead of NumPy's passes.

Each module of kernels (``functions/_cpu_kernels.py``: the fused recurrent layers' steps and the
scatter-add of rows behind the gradients of embed_id and getitem) is imported at its first use,
never with the package: Numba takes a second to load, and the default install has none. Its
kernels serve float32 and float64 NumPy arrays, unless the current context says
``using_config("compiled_kernels", False)``; otherwise the NumPy path runs, the exact fallback the
tests compare them with.
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

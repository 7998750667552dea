"""NumPy/CuPy backend: the only module that imports CuPy.

Arrays decide the device: an op asks ``get_array_module`` for the module of its inputs,
so the same code runs on both backends. Other modules reach CuPy through ``cupy()``. CuPy is
imported only when it is asked for (by ``cupy()``, ``cuda.available``, ``as_cupy`` or
``to_gpu``), never when ``tinygrad_rnn`` is imported, and importing changes nothing in the
process (``keep_freed_memory`` is an explicit call).
"""
import collections
import ctypes
import importlib.util
import os
import sys

import numpy as np

_cupy_state = {}


def cupy():
    """The cupy module, or None where CuPy or a GPU is absent; the one way other modules reach CuPy.

    Returns:
        module | None: ``cupy`` when it imports and sees at least one GPU (the answer is cached).
    """
    if "module" not in _cupy_state:
        module, absent = None, f"CuPy is not installed: {_INSTALL}"
        if importlib.util.find_spec("cupy") is not None:
            try:
                import cupy as imported

                if imported.cuda.runtime.getDeviceCount() > 0:
                    module, absent = imported, None
                else:
                    absent = "CuPy sees no GPU (check CUDA_VISIBLE_DEVICES and nvidia-smi)"
            except Exception as e:  # CuPy's own error types for a missing driver or library
                absent = f"CuPy finds no usable NVIDIA driver or GPU ({type(e).__name__}: {e})"
        _cupy_state.update(module=module, absent=absent)  # gpu_problem says why it is absent
    return _cupy_state["module"]


_INSTALL = "pip install 'tinygrad_rnn[cuda12]' (or [cuda13], matching the driver's CUDA)"


def gpu_problem():
    """What keeps the GPU path from working here, or None: CuPy, a device, NVRTC and headers, cuBLAS.

    CuPy imports and counts devices without the CUDA headers and NVRTC it compiles every kernel
    with (CuPy 14 no longer bundles them), and finds cuBLAS only at the first product; so this
    compiles and runs one tiny kernel and one product, and compares their results. The answer
    is cached.

    Returns:
        str | None: a sentence saying what is missing and how to install it; None when it works.
    """
    if "problem" not in _cupy_state:
        _cupy_state["problem"] = _find_gpu_problem()
    return _cupy_state["problem"]


def _find_gpu_problem():
    cupy_module = cupy()
    if cupy_module is None:
        return _cupy_state["absent"]
    try:
        y = elementwise_kernel(_CHECK_KERNEL)(cupy_module.arange(4, dtype=cupy_module.float32))
        matmul = cupy_module.ones((2, 3), cupy_module.float32) @ cupy_module.ones((3, 2), cupy_module.float32)
        results = y.get().tolist(), matmul.get().tolist()
    except Exception as e:  # NVRTC, header and library errors share no type
        return (f"CuPy cannot compile or run a kernel ({type(e).__name__}: {e}); it needs CUDA's NVRTC, "
                f"headers and cuBLAS: {_INSTALL} installs CuPy with them (cupy-cuda12x[ctk])")
    if results != ([1.0, 2.0, 3.0, 4.0], [[3.0, 3.0], [3.0, 3.0]]):
        return f"the GPU computed wrong results for a test kernel and product: {results}"
    return None


def gpu_available():
    """True when CuPy sees a GPU and compiles and runs kernels on it (``gpu_problem()`` is None)."""
    return gpu_problem() is None


def is_cupy_array(x):
    """True for a ``cupy.ndarray``; never imports CuPy."""
    module = sys.modules.get("cupy")
    return module is not None and isinstance(x, module.ndarray)


def _unwrap(x):
    """The array inside a Variable (arrays have a ``data`` attribute of their own: keep them)."""
    if isinstance(x, np.ndarray) or is_cupy_array(x):
        return x
    return getattr(x, "data", x)


def get_array_module(*xs):
    """The array module (``numpy`` or ``cupy``) of the given arrays or Variables.

    Args:
        *xs (ndarray | Variable | scalar): arrays, Variables or scalars; the first array decides
            (ops check separately that all their inputs share one device).
    Returns:
        module: ``cupy`` for a CuPy array, else ``numpy``.
    """
    for x in xs:
        if type(x) is np.ndarray:
            return np
        x = _unwrap(x)
        if isinstance(x, np.ndarray):
            return np
        if is_cupy_array(x):
            return sys.modules["cupy"]
    return np


def device_of(x):
    """A short device name for error messages: ``cpu`` or ``gpu:<id>``."""
    x = _unwrap(x)
    if is_cupy_array(x):
        return f"gpu:{x.device.id}"
    return "cpu"


def as_numpy(x):
    """Return ``x`` (array or Variable data) as a NumPy array, copying from the GPU if needed."""
    x = _unwrap(x)
    if is_cupy_array(x):
        return x.get()
    return np.asarray(x)


def as_cupy(x):
    """Return ``x`` (array or Variable data) as a CuPy array.

    Raises:
        RuntimeError: where CuPy or a GPU is absent.
    """
    module = cupy()
    if module is None:
        raise RuntimeError(
            "as_cupy: no GPU available (install CuPy with `pip install tinygrad_rnn[cuda12]` "
            "or `[cuda13]` on a machine with an NVIDIA GPU)"
        )
    return module.asarray(_unwrap(x))


KernelSource = collections.namedtuple("KernelSource", "name in_params out_params body preamble")
KernelSource.__doc__ = """The CUDA source of one CuPy ``ElementwiseKernel``, declared by :func:`kernel_source`."""

_sources = {}
_kernels = {}


def kernel_source(name, in_params, out_params, body, preamble=""):
    """Declare the CUDA source of an ``ElementwiseKernel``; every kernel the package runs is declared so.

    Declaring it where its module is imported, not compiling it, lets the tests build every
    kernel with NVRTC on a machine without a GPU (``kernel_sources``).

    Args:
        name (str): the kernel's name, unique in the package (also the cache key).
        in_params (str): CuPy's input parameter list, e.g. ``"T x, T y"``.
        out_params (str): CuPy's output parameter list, e.g. ``"T z"``.
        body (str): the CUDA C++ loop body.
        preamble (str): CUDA C++ placed before the kernel, e.g. the ``__device__`` functions
            that ``body`` calls.
    Returns:
        KernelSource: pass it to :func:`elementwise_kernel`.
    Raises:
        ValueError: another source was declared under ``name``.
    """
    source = KernelSource(name, in_params, out_params, body, preamble)
    if _sources.setdefault(name, source) != source:
        raise ValueError(f"kernel_source: another kernel is already declared as {name!r}")
    return source


def kernel_sources():
    """Every kernel source declared by the modules imported so far.

    Returns:
        tuple of KernelSource: in the order of declaration.
    """
    return tuple(_sources.values())


def elementwise_kernel(source):
    """The CuPy ``ElementwiseKernel`` of a declared source, compiled on first use and cached by name.

    Args:
        source (KernelSource): from :func:`kernel_source`.
    Returns:
        cupy.ElementwiseKernel: call it with CuPy arrays (views with any strides are fine) of one
        dtype per type letter (``T``).
    """
    if source.name not in _kernels:
        _kernels[source.name] = cupy().ElementwiseKernel(source.in_params, source.out_params, source.body,
                                                          source.name, preamble=source.preamble)
    return _kernels[source.name]


# the kernel gpu_problem compiles and runs
_CHECK_KERNEL = kernel_source("tinygrad_rnn_check", "T x", "T y", "y = x + (T)1;")


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


_malloc = {"tuned": False}


def keep_freed_memory(mmap_threshold=32 << 20, trim_threshold=256 << 20):
    """Let glibc's malloc keep freed memory for reuse instead of returning it to the kernel.

    Each training iteration allocates its activations and frees them in backward. With glibc's
    defaults, arrays above 128 KiB to a few MiB (an (N, 4H) gate array of a batch of 128) are
    mapped and unmapped, or the freed top of the heap is trimmed, so the next iteration faults
    the same pages in again. Arrays up to ``mmap_threshold`` then come from the heap, which
    keeps up to ``trim_threshold`` bytes free; the cost is a higher resident size.

    Importing tinygrad_rnn never calls this: ``training.Trainer`` does, once, when it is built.
    It does nothing where the C library has no ``mallopt`` (macOS, Windows) or where the user
    set glibc's ``MALLOC_MMAP_THRESHOLD_`` or ``MALLOC_TRIM_THRESHOLD_`` environment variables
    (the switch to keep glibc's own choice).

    Args:
        mmap_threshold (int): bytes; larger allocations are still mapped (and unmapped when freed).
        trim_threshold (int): bytes of free heap top kept before any is returned to the kernel.
    Returns:
        bool: whether malloc is tuned (now or by an earlier call).
    """
    if not sys.platform.startswith("linux") or any(k in os.environ for k in
                                                   ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    if not _malloc["tuned"]:
        _malloc["tuned"] = bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(
            mallopt(_M_TRIM_THRESHOLD, trim_threshold))
    return _malloc["tuned"]


"""oneDNN's matmul primitive through its stable C API (ctypes): the ``onednn`` extra.

NumPy's OpenBLAS is slow on the skinny products of a recurrent layer, ``(N, H) @ (H, 4H)`` with N
about 20, which stream the same weights at every step; oneDNN's brgemm kernels are faster there
(tools/bench_gemm.py measures both). ``functions/rnn.py`` runs the per-step products of the fused
sequence ops through ``MatMul`` on float32 CPU arrays with large weights, where the extra is installed;
``functions/linalg.py`` runs there the products of Linear and MatMul of the shapes where oneDNN wins
(``product``), such as those with a narrow inner size, where OpenBLAS is slow too.

The extra is the ``onednn-cpu-gomp`` wheel: ``libdnnl.so.3`` built on GNU OpenMP, which it finds on the
system. Its threads are OpenMP's: ``OMP_NUM_THREADS`` (read when the library loads) sets them, as it
does OpenBLAS's. Unless ``OMP_WAIT_POLICY`` is set, loading sets it to ``PASSIVE`` (see ``library``).
Nothing here runs when ``tinygrad_rnn`` is imported: the library loads at the first
``library()`` call, and a missing wheel is then an ImportError that says how to install it.

Thread safety: the CPU engine is shared (oneDNN's engines are); each ``MatMul`` has its own stream,
memory objects and scratchpad (user-managed, so that two ``MatMul`` of one shape, which share one
cached primitive, never share a buffer): use one ``MatMul`` from one thread at a time, as ``acquire``'s
pools, one per thread, do.

Processes: GNU OpenMP's threads do not survive ``fork``, and a forked child that runs an OpenMP
region its parent had run with several threads hangs. So a child forked after the library loaded
does not use it: ``usable()`` is False there (the sequence ops run on BLAS) and ``MatMul`` raises.
"""
import contextlib
import ctypes
import functools
import importlib.metadata
import os
import threading
import weakref

import numpy as np

from tinygrad_rnn.optional import missing

DISTRIBUTION = "onednn-cpu-gomp"
_P = ctypes.c_void_p
_PP = ctypes.POINTER(ctypes.c_void_p)
_Dims = ctypes.c_int64 * 12  # dnnl_dims_t: DNNL_MAX_NDIMS

# the C API's enumerations and argument indices (oneapi/dnnl/dnnl_types.h, stable across 3.x)
_CPU, _IN_ORDER, _F32, _TAG_ANY, _SCRATCHPAD_USER = 1, 1, 3, 1, 1
_QUERY_IMPL, _QUERY_WEIGHTS, _QUERY_SCRATCHPAD = 8, 131, 136
_SRC, _DST, _WEIGHTS, _BIAS, _SCRATCHPAD = 1, 17, 33, 41, 80
ALLOCATE = ctypes.c_void_p(-1).value  # DNNL_MEMORY_ALLOCATE: the library owns the buffer
_RUNTIMES = {0: "none", 1: "sequential", 2: "OpenMP", 4: "TBB", 8: "threadpool"}
_STATUS = {1: "out of memory", 2: "invalid arguments", 3: "unimplemented", 5: "runtime error"}


class _Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_int), ("minor", ctypes.c_int), ("patch", ctypes.c_int), ("hash", ctypes.c_char_p),
                ("cpu_runtime", ctypes.c_uint), ("gpu_runtime", ctypes.c_uint)]


class ExecArg(ctypes.Structure):
    """``dnnl_exec_arg_t``: one argument of a primitive's execution, its index (``DNNL_ARG_*``) and memory."""
    _fields_ = [("arg", ctypes.c_int), ("memory", _P)]


# name: argument types; every function returns a dnnl_status_t unless _RESULTS says otherwise
_PROTOTYPES = {
    "dnnl_version": [],
    "dnnl_engine_create": [_PP, ctypes.c_int, ctypes.c_size_t],
    "dnnl_stream_create": [_PP, _P, ctypes.c_uint],
    "dnnl_stream_destroy": [_P],
    "dnnl_memory_desc_create_with_strides": [_PP, ctypes.c_int, _Dims, ctypes.c_int, _Dims],
    "dnnl_memory_desc_create_with_tag": [_PP, ctypes.c_int, _Dims, ctypes.c_int, ctypes.c_int],
    "dnnl_memory_desc_destroy": [_P],
    "dnnl_primitive_attr_create": [_PP],
    "dnnl_primitive_attr_set_scratchpad_mode": [_P, ctypes.c_int],
    "dnnl_primitive_attr_destroy": [_P],
    "dnnl_matmul_primitive_desc_create": [_PP, _P, _P, _P, _P, _P, _P],
    "dnnl_reorder_primitive_desc_create": [_PP, _P, _P, _P, _P, _P],
    "dnnl_primitive_desc_query": [_P, ctypes.c_int, ctypes.c_int, _P],
    "dnnl_primitive_desc_query_md": [_P, ctypes.c_int, ctypes.c_int],
    "dnnl_primitive_desc_destroy": [_P],
    "dnnl_primitive_create": [_PP, _P],
    "dnnl_primitive_execute": [_P, _P, ctypes.c_int, _P],
    "dnnl_primitive_destroy": [_P],
    "dnnl_memory_create": [_PP, _P, _P, _P],
    "dnnl_memory_set_data_handle": [_P, _P],
    "dnnl_memory_destroy": [_P],
    "dnnl_stream_wait": [_P],
}
_RESULTS = {"dnnl_version": ctypes.POINTER(_Version), "dnnl_primitive_desc_query_md": _P}
_lock = threading.Lock()
_state = {}


def library_path():
    """The path of the extra's ``libdnnl.so.3``, or None where the wheel is not installed."""
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None
    return next((dist.locate_file(f) for f in dist.files or [] if f.name == "libdnnl.so.3"), None)


@functools.cache
def library():
    """The loaded ``libdnnl`` with the prototypes this module calls.

    Returns:
        ctypes.CDLL: the library (loaded once).
    Raises:
        ImportError: the ``onednn-cpu-gomp`` wheel is not installed; the message says how to install it.
    """
    path = library_path()
    if path is None:
        raise missing(DISTRIBUTION, "onednn", "oneDNN's matmul")
    # GNU OpenMP reads this when the library below pulls it in. Its default, threads spinning after
    # every region, fights OpenBLAS's own spinning threads between the per-step products: with 2
    # threads each on 2 cores an H 650 layer took 72 ms instead of BLAS's 54 (57 when passive).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    lib = ctypes.CDLL(str(path))
    os.register_at_fork(after_in_child=lambda: _state.update(forked=True))
    for name, argtypes in _PROTOTYPES.items():
        function = getattr(lib, name)
        function.argtypes, function.restype = argtypes, _RESULTS.get(name, ctypes.c_int)
    return lib


def available():
    """Whether the ``onednn`` extra is installed (without loading it)."""
    return library_path() is not None


def usable():
    """Whether ``MatMul`` can run in this process: False in a child forked after the library loaded."""
    return "forked" not in _state


def version():
    """oneDNN's version and CPU threading runtime, such as ``"3.2.0 (OpenMP)"``.

    Raises:
        ImportError: the extra is not installed.
    """
    v = library().dnnl_version().contents
    return f"{v.major}.{v.minor}.{v.patch} ({_RUNTIMES.get(v.cpu_runtime, v.cpu_runtime)})"


def check(status, what):
    """Raise for a ``dnnl_status_t`` other than success.

    Args:
        status (int): what a C API function returned.
        what (str): the call, for the message (``"matmul"``).
    Raises:
        RuntimeError: ``status`` is not 0; the message names ``what`` and the status.
    """
    if status:
        raise RuntimeError(f"oneDNN {what} failed: {_STATUS.get(status, f'status {status}')}")


def create(function, what, *args):
    """Call a ``dnnl_*_create`` function, whose first argument receives the new handle, and return the handle.

    Args:
        function (ctypes function): the C function (``library().dnnl_stream_create``).
        what (str): the call, for an error message.
        *args (object): its other arguments.
    Returns:
        ctypes.c_void_p: the handle; the caller destroys it.
    Raises:
        RuntimeError: the call failed.
    """
    handle = _P()
    check(function(ctypes.byref(handle), *args), what)
    return handle


def engine():
    """The CPU engine every user of the library here shares (created once; oneDNN's engines are thread-safe)."""
    with _lock:
        if "engine" not in _state:
            _state["engine"] = create(library().dnnl_engine_create, "engine creation", _CPU, 0)
        return _state["engine"]


def descriptor(array, any_layout=False):
    """A float32 memory descriptor of ``array``'s shape and strides, or of its shape in any layout.

    Args:
        array (ndarray): float32, up to 12 dimensions.
        any_layout (bool): leave the layout to the primitive (its weights, to be packed).
    Returns:
        ctypes.c_void_p: the descriptor; the caller destroys it (``dnnl_memory_desc_destroy``).
    """
    lib, dims = library(), _Dims(*array.shape)
    if any_layout:
        return create(lib.dnnl_memory_desc_create_with_tag, "memory descriptor", array.ndim, dims, _F32, _TAG_ANY)
    strides = _Dims(*(s // array.itemsize for s in array.strides))
    return create(lib.dnnl_memory_desc_create_with_strides, "memory descriptor", array.ndim, dims, _F32, strides)


def _release(lib, handles):
    for kind, handle in reversed(handles):
        getattr(lib, f"dnnl_{kind}_destroy")(handle)


class MatMul:
    """``out = x @ w (+ bias)`` in float32 by oneDNN's matmul primitive, for one layout of its operands.

    Building one costs tens of microseconds (descriptors, the primitive, a stream: a dozen C calls);
    ``load`` then swaps in other weights and another result array of the same layouts at the cost
    of a repacking, and ``acquire`` keeps built ones for reuse.

    Args:
        x (ndarray): an example of the left operand, (M, K) float32: every call's ``x`` has its shape and
            strides (only its data may differ).
        w (ndarray): (K, N) float32, any strides, loaded as by ``load``.
        out (ndarray): (M, N) float32, any strides, loaded as by ``load``.
        packed (bool): reorder ``w`` into the primitive's own layout.
        bias (ndarray, optional): (N,) float32, added to every row of the product as it is written
            (in the same float32 addition as a separate pass); loaded as by ``load``.
    Attributes:
        impl (str): the implementation oneDNN chose, such as ``"brg:avx512_core"``.
    Raises:
        ImportError: the ``onednn`` extra is not installed.
        TypeError: an operand is not a 2-D float32 array.
        ValueError: the shapes do not fit.
        RuntimeError: oneDNN refused the product.
    """

    def __init__(self, x, w, out, packed=True, bias=None):
        operands = (("x", x, 2), ("w", w, 2), ("out", out, 2)) + ((("bias", bias, 1),) if bias is not None else ())
        for name, array, ndim in operands:
            if array.dtype != np.float32 or array.ndim != ndim:
                raise TypeError(f"onednn.MatMul: {name} must be a {ndim}-D float32 array, got {array.shape} "
                                f"{array.dtype}")
        if (x.shape[1] != w.shape[0] or out.shape != (x.shape[0], w.shape[1])
                or (bias is not None and bias.shape != (w.shape[1],))):
            raise ValueError(f"onednn.MatMul: shapes {x.shape} @ {w.shape} + bias "
                             f"{None if bias is None else bias.shape} -> {out.shape} do not fit")
        if not usable():
            raise RuntimeError("onednn.MatMul: this process was forked after oneDNN loaded, and its GNU OpenMP "
                               "threads do not survive fork; start processes with the 'spawn' or 'forkserver' "
                               "method of multiprocessing")
        lib, cpu = library(), engine()
        handles = []  # (kind, handle), released in reverse when this object goes, or when building it fails
        self._finalizer = weakref.finalize(self, _release, lib, handles)

        def keep(kind, handle):
            handles.append((kind, handle))
            return handle

        def make(kind, function, *args):
            return keep(kind, create(function, kind.replace("_", " "), *args))

        def memory(md, data):
            return make("memory", lib.dnnl_memory_create, md, cpu, data)

        self.layout = layout(x, w, out, packed, bias)
        x_md, out_md, w_md = (keep("memory_desc", descriptor(a)) for a in (x, out, w))
        wanted_md = keep("memory_desc", descriptor(w, any_layout=True)) if packed else w_md
        bias_md = None if bias is None else keep("memory_desc", descriptor(bias.reshape(1, -1)))  # a (1, N) row
        attr = make("primitive_attr", lib.dnnl_primitive_attr_create)
        check(lib.dnnl_primitive_attr_set_scratchpad_mode(attr, _SCRATCHPAD_USER), "scratchpad mode")
        pd = make("primitive_desc", lib.dnnl_matmul_primitive_desc_create, cpu, x_md, wanted_md, bias_md, out_md,
                  attr)
        impl = ctypes.c_char_p()
        check(lib.dnnl_primitive_desc_query(pd, _QUERY_IMPL, 0, ctypes.byref(impl)), "query")
        self.impl = impl.value.decode()
        self._primitive = make("primitive", lib.dnnl_primitive_create, pd)
        self._stream = make("stream", lib.dnnl_stream_create, cpu, _IN_ORDER)
        scratchpad = memory(lib.dnnl_primitive_desc_query_md(pd, _QUERY_SCRATCHPAD, 0), ALLOCATE)
        self._w_user = memory(w_md, None)  # the caller's weights: read in place, or the reorder's source
        self._reorder = None
        weights = self._w_user
        if packed:
            packed_md = lib.dnnl_primitive_desc_query_md(pd, _QUERY_WEIGHTS, 0)  # lives as long as pd
            weights = memory(packed_md, ALLOCATE)
            reorder_pd = make("primitive_desc", lib.dnnl_reorder_primitive_desc_create, w_md, cpu, packed_md,
                              cpu, None)
            self._reorder = make("primitive", lib.dnnl_primitive_create, reorder_pd)
            self._reorder_args = (ExecArg * 2)(ExecArg(_SRC, self._w_user), ExecArg(_DST, weights))
        self._x, self._out = memory(x_md, None), memory(out_md, None)
        args = [ExecArg(_SRC, self._x), ExecArg(_WEIGHTS, weights), ExecArg(_DST, self._out),
                ExecArg(_SCRATCHPAD, scratchpad)]
        self._bias = None if bias is None else memory(bias_md, None)
        if bias is not None:
            args.append(ExecArg(_BIAS, self._bias))
        self._args = (ExecArg * len(args))(*args)
        self._set, self._execute = lib.dnnl_memory_set_data_handle, lib.dnnl_primitive_execute
        self.load(w, out, bias)

    def load(self, w, out, bias=None):
        """Take other weights, result array and bias, of the layouts given at construction.

        Packed, ``w`` is copied into the primitive's layout now and may change afterwards; read in
        place, it must stay alive and is kept, as ``out`` and ``bias`` are.

        Args:
            w (ndarray): (K, N) float32.
            out (ndarray): (M, N) float32: every call writes its result there.
            bias (ndarray, optional): (N,) float32, where it was built with one.
        Raises:
            ValueError: a layout differs from the construction's.
        """
        if layout(self.layout[0], w, out, self.layout[-2], bias)[1:] != self.layout[1:]:
            raise ValueError(f"onednn.MatMul.load: w {w.shape} {w.dtype}, out {out.shape} {out.dtype} and bias "
                             f"{None if bias is None else (bias.shape, bias.dtype)} (strides {w.strides}, "
                             f"{out.strides}) are not the layouts it was built for")
        self._set(self._w_user, w.ctypes.data)
        if self._reorder is not None:
            check(self._execute(self._reorder, self._stream, 2, self._reorder_args), "reorder")
            check(library().dnnl_stream_wait(self._stream), "stream wait")
        self._w = None if self._reorder is not None else w
        if bias is not None:
            self._set(self._bias, bias.ctypes.data)
        self._set(self._out, out.ctypes.data)
        self.out, self.bias = out, bias

    def __call__(self, x):
        """Write ``x @ w (+ bias)`` into ``out``; ``x`` has the shape and strides of the construction's example."""
        self._set(self._x, x.ctypes.data)
        check(self._execute(self._primitive, self._stream, len(self._args), self._args), "matmul")


def layout(x, w, out, packed, bias=None):
    """What a ``MatMul`` is built for (the key of ``acquire``'s pool): ``x``'s shape and strides (or that
    pair itself), ``w``'s and ``out``'s dtype, shape and strides, ``packed``, and the bias's, if any."""
    bias = None if bias is None else (bias.dtype, bias.shape, bias.strides)
    x = x if isinstance(x, tuple) else (x.shape, x.strides)
    return (x, w.dtype, w.shape, w.strides, out.dtype, out.shape, out.strides, packed, bias)


_POOL_LAYOUTS = 64  # layouts a thread's pool keeps (a packed one holds a copy of its weights)
_pools = threading.local()  # per thread: layout -> idle MatMul objects (each used by one thread at a time)


@contextlib.contextmanager
def acquire(x, w, out, packed=True, bias=None):
    """A ``MatMul`` for these layouts, loaded with ``w``, ``out`` and ``bias``, for the ``with`` block.

    It comes from this thread's pool when one of the same layouts is idle there, else it is built;
    it goes back to the pool after the block. A recurrent layer builds one for each call, for a
    few steps: reusing them leaves only the repacking of the weights.

    Args:
        x (ndarray): an example of the left operand, (M, K) float32.
        w (ndarray): (K, N) float32.
        out (ndarray): (M, N) float32.
        packed (bool): as for ``MatMul``.
        bias (ndarray, optional): (N,) float32.
    Yields:
        MatMul: loaded with ``w``, ``out`` and ``bias``.
    Raises:
        ImportError, TypeError, ValueError, RuntimeError: as ``MatMul``.
    """
    key = layout(x, w, out, packed, bias)
    pool = getattr(_pools, "by_layout", None)
    if pool is None:
        pool = _pools.by_layout = {}
    if key not in pool and len(pool) == _POOL_LAYOUTS:
        del pool[next(iter(pool))]  # the layout seen first: batch shapes of a run repeat, others pass
    idle = pool.setdefault(key, [])
    if idle:
        matmul = idle.pop()
        matmul.load(w, out, bias)
    else:
        matmul = MatMul(x, w, out, packed, bias)
    try:
        yield matmul
    finally:
        matmul._w = matmul.out = matmul.bias = None  # the pool keeps no caller's array alive
        idle.append(matmul)


def product(a, b, bias=None):
    """``a @ b (+ bias)`` by a ``MatMul`` from this thread's pool that reads ``b`` in place (``acquire``).

    Args:
        a (ndarray): (M, K) float32, any positive strides.
        b (ndarray): (K, N) float32, any positive strides.
        bias (ndarray, optional): (N,) float32.
    Returns:
        ndarray: (M, N) float32, a new C-ordered array.
    Raises:
        ImportError, TypeError, ValueError, RuntimeError: as ``MatMul``.
    """
    out = np.empty((a.shape[0], b.shape[1]), np.float32)
    with acquire(a, b, out, packed=False, bias=bias) as matmul:
        matmul(a)
    return out

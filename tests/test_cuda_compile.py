"""Every CUDA kernel the package runs, built with NVRTC for sm_90 by CuPy's own code generator: no GPU needed.

CuPy compiles an ``ElementwiseKernel`` at its first call, on the device, so a kernel that does not
compile, or that NVRTC warns about, would otherwise show only there. Here each kernel declared with
``backend.kernel_source`` goes through the steps of CuPy's ``ElementwiseKernel.__call__`` that need
no device: the type map CuPy decides for the argument dtypes, the source its code generator writes
for the arguments' layouts, CuPy's headers and compiler options, and NVRTC with ``-arch=sm_90`` (the
H100 and H200). Any error or warning fails. These are CuPy internals (``_ArgInfo``, the generator):
the ``nvrtc`` extra pins the CuPy they are read from.

The tests skip where CuPy, NVRTC or the CUDA headers are missing, except in CI (``CI`` set), where
that fails: ``make test`` installs them (the ``nvrtc`` extra, in the ``dev`` extra on Linux).
"""
import ast
import importlib
import io
import pkgutil
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import in_ci

import tinygrad_rnn
from tinygrad_rnn import backend

ROOT = Path(__file__).resolve().parent.parent
ARCH = "-arch=sm_90"
DTYPES = (np.float32, np.float64)
# (ndim, C-contiguous, 32-bit indexing) of a call's arrays after CuPy merges their axes: a whole
# array is 1-D and contiguous, a gate block of an (N, 4H) array 2-D and strided
LAYOUTS = [(1, True, True), (2, True, True), (2, False, True), (2, False, False)]
# CuPy's argument kinds (cupy/_core/_kernel.pxd)
NDARRAY, INDEXER, SCALAR = 1, 2, 3


def _declare_all():
    """Import every module of the package, so that every kernel source is declared."""
    for module in pkgutil.walk_packages(tinygrad_rnn.__path__, "tinygrad_rnn."):
        importlib.import_module(module.name)
    return backend.kernel_sources()


def _raw_kernels():
    """``(path, name, code)`` of every ``RawKernel`` in the package, models and tools, read from their source."""
    found = []
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "RawKernel":
                code, name = (ast.literal_eval(arg) for arg in node.args[:2])  # a literal, or this fails
                found.append((str(path.relative_to(ROOT)), name, code))
    return found


def _python_files():
    return sorted(path for folder in ("tinygrad_rnn", "models", "tools") for path in (ROOT / folder).rglob("*.py"))


SOURCES = _declare_all()
RAW_KERNELS = _raw_kernels()


@pytest.fixture(scope="module")
def nvrtc():
    """CuPy's code generator, compiler options and NVRTC: skips without them, except in CI, where that fails."""
    try:
        import cupy
        from cupy._core import _carray, _kernel, _scalar, core
        from cupy.cuda import compiler

        options = core.assemble_cupy_compiler_options(())  # finds CuPy's and CUDA's headers
        compiler._get_nvrtc_version()  # loads libnvrtc
    except Exception as e:  # ImportError, a missing library or header directory: nothing to compile with
        missing = (f"cannot compile CUDA without a GPU here ({type(e).__name__}: {e}); "
                   "pip install -e '.[nvrtc]' installs CuPy, NVRTC and the CUDA headers")
        if in_ci():
            pytest.fail(f"CI must build the CUDA kernels, but {missing}")
        pytest.skip(missing)
    header = "".join(f"#include <{name}>\n" for name in core._cupy_header_list)
    # as CuPy's compile_with_cache and compile_using_nvrtc add them
    options += ("-ftz=true", ARCH, "--device-as-default-execution-space")

    def compile_log(code, name):
        """NVRTC's log of compiling ``code``: empty when it compiled without a warning."""
        log = io.StringIO()
        try:
            compiler._NVRTCProgram(code, f"{name}.cu", method="cubin").compile(options, log)
        except compiler.CompileException as e:
            return str(e)
        return log.getvalue()

    def build(source, dtype, layout):
        """Compile ``source`` for arrays of ``dtype`` in ``layout``; return NVRTC's log."""
        ndim, contiguous, index_32_bits = layout
        kernel = cupy.ElementwiseKernel(source.in_params, source.out_params, source.body, source.name,
                                        preamble=source.preamble)
        # a type letter (T) is an array of dtype, a named type a scalar, as the package calls its kernels
        in_arrays = [p.dtype is None for p in kernel.in_params]
        in_types, out_types, type_map = kernel._decide_params_type(
            tuple(np.dtype(dtype) if array else None for array in in_arrays),
            tuple(np.dtype(dtype) for _ in kernel.out_params))
        infos = [_kernel._ArgInfo(NDARRAY, cupy.ndarray, t, ndim, contiguous, index_32_bits) if array
                 else _kernel._ArgInfo(SCALAR, _scalar.CScalar, t, 0, True, True)
                 for array, t in zip(in_arrays, in_types)]
        infos += [_kernel._ArgInfo(NDARRAY, cupy.ndarray, t, ndim, contiguous, index_32_bits) for t in out_types]
        infos.append(_kernel._ArgInfo(INDEXER, _carray.Indexer, None, ndim, True, index_32_bits))
        code = _kernel._get_elementwise_kernel_code(tuple(infos), type_map, kernel.params, kernel.operation,
                                                    kernel.name, kernel.preamble)
        return compile_log(header + code, source.name)

    build.raw = compile_log  # a RawKernel is its code as written, without CuPy's headers
    return build


def test_every_kernel_is_declared_in_one_place_or_is_a_literal_raw_kernel():
    # another way of building a kernel would escape the builds below
    pattern = re.compile(r"\b(ElementwiseKernel|ReductionKernel|RawModule|fuse)\b")
    found = {str(path.relative_to(ROOT)) for path in _python_files() if pattern.search(path.read_text())}
    assert found == {"tinygrad_rnn/backend.py"}
    assert [path for path, _, _ in RAW_KERNELS] == ["tools/bench_phases.py"]
    names = {source.name for source in SOURCES}
    assert {"tinygrad_rnn_lstm_forward", "tinygrad_rnn_lstm_backward", "tinygrad_rnn_gru_forward",
            "tinygrad_rnn_gru_backward", "tgr_philox_uniform", "tgr_philox_keep_mask", "tinygrad_rnn_check"} <= names


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("source", SOURCES, ids=lambda s: s.name)
def test_kernel_builds_for_sm_90_without_errors_or_warnings(nvrtc, source, dtype):
    logs = {layout: nvrtc(source, dtype, layout) for layout in LAYOUTS}
    assert {layout: log for layout, log in logs.items() if log} == {}


@pytest.mark.parametrize("path, name, code", RAW_KERNELS, ids=[name for _, name, _ in RAW_KERNELS])
def test_raw_kernel_builds_for_sm_90_without_errors_or_warnings(nvrtc, path, name, code):
    assert nvrtc.raw(code, name) == ""


def test_a_kernel_nvrtc_warns_about_fails_the_build(nvrtc):
    broken = backend.KernelSource("tinygrad_rnn_test_warning", "T x", "T y", "int unused; y = x;", "")
    assert "warning" in nvrtc(broken, np.float32, LAYOUTS[0])
    broken = broken._replace(body="y = x + undeclared;")
    assert 'identifier "undeclared" is undefined' in nvrtc(broken, np.float32, LAYOUTS[0])


def test_a_kernel_name_declares_one_source():
    source = SOURCES[0]
    assert backend.kernel_source(*source) is not source and backend.kernel_sources() == SOURCES  # the same again
    with pytest.raises(ValueError, match=f"kernel_source: another kernel is already declared as '{source.name}'"):
        backend.kernel_source(source.name, "T x", "T y", "y = x;")

"""``tinygrad_rnn.cuda``: ``available`` and ``check()`` say whether the GPU path works, and what is missing."""
import importlib.machinery
import sys
import types

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import backend


@pytest.fixture
def fresh(monkeypatch):
    """No cached answer or compiled kernel: each test asks again (and leaves the real cache alone)."""
    monkeypatch.setattr(backend, "_cupy_state", {})
    monkeypatch.setattr(backend, "_kernels", {})


def fake_cupy(monkeypatch, devices=1, kernel_error=None, wrong=False):
    """A cupy module whose device count, kernels and products behave as asked (no GPU needed)."""
    class Array:
        def __init__(self, values):
            self.values = np.asarray(values)

        def __matmul__(self, other):
            return Array(self.values @ other.values + (1 if wrong else 0))

        def get(self):
            return self.values

    def kernel(in_params, out_params, body, name, preamble=""):
        if kernel_error is not None:
            raise kernel_error
        return lambda x: Array(x.values + 1)

    cupy = types.ModuleType("cupy")
    cupy.__spec__ = importlib.machinery.ModuleSpec("cupy", None)
    cupy.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: devices))
    cupy.float32 = np.float32
    cupy.ElementwiseKernel = kernel
    cupy.arange = lambda n, dtype: Array(np.arange(n, dtype=dtype))
    cupy.ones = lambda shape, dtype: Array(np.ones(shape, dtype))
    monkeypatch.setitem(sys.modules, "cupy", cupy)


def test_without_cupy_check_says_which_extra_to_install(fresh, monkeypatch):
    monkeypatch.setattr(backend.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(RuntimeError, match=r"CuPy is not installed: pip install 'tinygrad_rnn\[cuda12\]'"):
        tg.cuda.check()
    assert tg.cuda.available is False


def test_a_gpu_that_cannot_compile_is_not_available(fresh, monkeypatch):
    fake_cupy(monkeypatch, kernel_error=RuntimeError("Failed to find CUDA headers"))
    assert backend.cupy() is not None  # CuPy sees a device: the old answer was True
    assert tg.cuda.available is False
    message = r"cannot compile or run a kernel .RuntimeError: Failed to find CUDA headers.; it needs CUDA's NVRTC"
    with pytest.raises(RuntimeError, match=message + r", headers and cuBLAS: .*cupy-cuda12x\[ctk\]"):
        tg.cuda.check()


@pytest.mark.parametrize("devices, wrong, problem", [
    (0, False, "CuPy sees no GPU"),
    (1, True, r"wrong results for a test kernel and product: \(\[1.0, 2.0, 3.0, 4.0\], \[\[4.0, 4.0\]"),
    (1, False, None),
])
def test_check_runs_a_kernel_and_a_product(fresh, monkeypatch, devices, wrong, problem):
    fake_cupy(monkeypatch, devices=devices, wrong=wrong)
    assert tg.cuda.available is (problem is None)
    if problem is None:
        tg.cuda.check()
    else:
        with pytest.raises(RuntimeError, match=problem):
            tg.cuda.check()


def test_check_names_a_missing_driver():
    if tg.cuda.available:
        pytest.skip("a working GPU is present")
    with pytest.raises(RuntimeError, match="tinygrad_rnn.cuda.check: "):
        tg.cuda.check()

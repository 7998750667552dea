"""Shared test setup: a deterministic hypothesis profile, the backend fixture, and what CI must not skip."""
import importlib.util
import os
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import tinygrad_rnn

# CI must be reproducible: derandomized examples, no example database carried between runs.
settings.register_profile("ci", deadline=None, max_examples=25, derandomize=True, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("thorough", deadline=None, max_examples=500, database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _gpu_param():
    return pytest.param("cupy", marks=pytest.mark.gpu)


def _cupy_or_skip():
    if not tinygrad_rnn.cuda.available:
        pytest.skip("CuPy or a GPU is not available")
    import cupy

    return cupy


@pytest.fixture(scope="session", params=["numpy", _gpu_param()])
def xp(request):
    """The array module under test; the CuPy case skips where CuPy or a GPU is absent."""
    return np if request.param == "numpy" else _cupy_or_skip()


@pytest.fixture(scope="session")
def cupy():
    """CuPy, for the tests that compare the GPU with the CPU (mark them gpu); skips without it."""
    return _cupy_or_skip()


def in_ci():
    """Whether the suite runs in CI (``CI`` set), where a missing tool fails its tests instead of skipping them."""
    return os.environ.get("CI", "").lower() not in ("", "0", "false")


def compiled_or_skip(name):
    """The ``cpu`` extra's module of compiled kernels ``name`` (``importlib`` style); skips without
    Numba, and fails in CI, where the dev extra installs it."""
    if importlib.util.find_spec("numba") is None:
        if in_ci():
            pytest.fail(f"CI must test {name}, but Numba is missing (pip install -e '.[dev]')")
        pytest.skip("Numba is not installed (pip install 'tinygrad_rnn[cpu]')")
    return importlib.import_module(name)


@pytest.fixture(scope="session")
def kernels():
    """The compiled kernels of the functions (``functions/_cpu_kernels.py``), as ``compiled_or_skip`` gives them."""
    return compiled_or_skip("tinygrad_rnn.functions._cpu_kernels")


def ptb_or_skip():
    """The folder holding PTB's three files on this disk (``TINYGRAD_RNN_DATA`` or the cache); the
    suite never downloads them: without them a test skips, and fails in CI (``../shared`` has them)."""
    from tinygrad_rnn.data import ptb

    files = [ptb.locate(split, download=False) for split in ("train", "valid", "test")]
    if None in files:
        message = "PTB not found: set TINYGRAD_RNN_DATA to a folder holding ptb/ptb.{train,valid,test}.txt"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return files[0].parent


def _mpi_missing():
    if shutil.which("mpirun") is None:
        return "no mpirun (Debian: apt-get install openmpi-bin; make test installs it as root)"
    if importlib.util.find_spec("mpi4py") is None:
        return "no mpi4py (pip install 'tinygrad_rnn[distributed]')"
    return None


@pytest.fixture(scope="session")
def mpi():
    """For the tests that launch mpirun: skips without MPI and mpi4py, except in CI, where that fails."""
    missing = _mpi_missing()
    if missing:
        if in_ci():
            pytest.fail(f"CI must run the MPI tests, but {missing}")
        pytest.skip(missing)


def untimed(records):
    """The complete epoch records without their timings (which differ from run to run)."""
    return [{k: v for k, v in r.items() if "second" not in k} for r in records if r["complete"]]

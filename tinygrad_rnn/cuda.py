"""GPU availability: ``tinygrad_rnn.cuda.available`` is False (never an ImportError) without a working GPU path.

``available`` and :func:`check` compile and run one tiny kernel and one matrix product, so they
are True or silent only where CuPy finds a GPU, NVRTC, the CUDA headers and cuBLAS; CuPy alone
counts devices without them, and the first op would then fail inside the compiler. The answer
is computed on first access, so importing ``tinygrad_rnn`` never imports CuPy.
"""
from tinygrad_rnn import backend


def check():
    """Make sure the GPU path works here: CuPy, a GPU, NVRTC and the CUDA headers, cuBLAS.

    Raises:
        RuntimeError: what is missing, and the pip command that installs it.
    """
    problem = backend.gpu_problem()
    if problem is not None:
        raise RuntimeError(f"tinygrad_rnn.cuda.check: {problem}")


def __getattr__(name):
    if name == "available":
        return backend.gpu_available()
    raise AttributeError(f"module 'tinygrad_rnn.cuda' has no attribute {name!r}")

"""GPU availability: ``tinygrad_rnn.cuda.available`` is False (never an ImportError) without CuPy or a GPU.

The answer is computed on first access, so importing ``tinygrad_rnn`` never imports CuPy.
"""
from tinygrad_rnn import backend


def __getattr__(name):
    if name == "available":
        return backend.gpu_available()
    raise AttributeError(f"module 'tinygrad_rnn.cuda' has no attribute {name!r}")

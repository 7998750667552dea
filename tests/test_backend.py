"""backend: the one way to reach CuPy."""
import pathlib
import re

from tinygrad_rnn import backend

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_cupy_is_the_module_where_a_gpu_is_available_and_none_otherwise():
    module = backend.cupy()
    assert (module is not None) is backend.gpu_available()
    assert module is None or module.__name__ == "cupy"
    assert backend.cupy() is module  # cached


def test_only_the_backend_imports_the_cupy_module_and_no_module_reaches_a_private_helper():
    offenders = []
    for folder in ("tinygrad_rnn", "models", "tools"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.name == "backend.py" and path.parent.name == "tinygrad_rnn":
                continue
            text = path.read_text()
            # (NCCL's bindings, cupy.cuda.nccl, are imported by the communicator that uses them)
            if re.search(r"^\s*import cupy\b", text, re.M) or "backend._cupy" in text:
                offenders.append(str(path.relative_to(ROOT)))
    assert not offenders

"""tools/bench_rnn.py runs at toy size and prints one JSON object a line (its figures are not checked here)."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import tinygrad_rnn.onednn

TOOL = Path(__file__).resolve().parent.parent / "tools" / "bench_rnn.py"


def _lines(*args):
    done = subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_bench_rnn_prints_the_kernels_then_every_side_of_every_layer_and_the_products():
    header, *results = _lines("--shapes", "3x2x4,2x3x5", "--rounds", "2")
    assert header["command"] == "python tools/bench_rnn.py --shapes 3x2x4,2x3x5 --rounds 2"
    assert header["threads"] == 1 and header["blas"]  # the benchmarks' one header
    torch_there = importlib.util.find_spec("torch") is not None
    numba = header["versions"]["numba"]
    assert (numba is not None) == (importlib.util.find_spec("numba") is not None)
    assert (header["versions"]["torch"] is not None) == torch_there == ("torch" in header["kernels"])
    onednn = header["versions"]["onednn"]
    assert (onednn is not None) == tinygrad_rnn.onednn.available() == ("oneDNN" in header["kernels"]["tinygrad_rnn"])
    impls = ["numpy"] + (["compiled"] if numba or onednn else []) + ["gemms"]
    impls += ["torch_onednn", "torch_no_onednn"] if torch_there else []
    layers = [r for r in results if r["kind"] == "layer"]
    assert [(r["cell"], r["shape"], r["impl"]) for r in layers] == [
        (cell, shape, impl) for cell in ("lstm", "gru") for shape in ([3, 2, 4], [2, 3, 5]) for impl in impls]
    for r in layers:
        assert r["ms"] > 0 and r["to_gemms"] > 0 and ("to_torch_onednn" in r) == torch_there
    products = [r for r in results if r["kind"] == "products"]
    assert [r["product"] for r in products] == ["h @ Wh", "da @ Wh.T", "dWh"]
    assert products[0]["shape"] == [[3, 5], [5, 20]]  # (N, H) @ (H, 4H) of the largest H, 2x3x5
    assert all(r["numpy_ms"] > 0 and ("torch_mm_ms" in r) == torch_there for r in products)


def test_bench_rnn_rejects_a_bad_shape_or_cell():
    for args, message in [(("--shapes", "3x2"), "a shape is TxNxH, such as 35x20x100, got '3x2'"),
                          (("--shapes", "3x0x4"), "a shape's sizes must be at least 1, got '3x0x4'"),
                          (("--cells", "lstm,rnn"), "--cells: unknown cell rnn; cells: lstm, gru")]:
        done = subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and message in done.stderr

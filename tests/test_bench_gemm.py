"""tools/bench_gemm.py runs at toy size and prints one JSON object a line (its figures are not checked here)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tinygrad_rnn import onednn

TOOL = Path(__file__).resolve().parent.parent / "tools" / "bench_gemm.py"


def _run(*args):
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(not onednn.available(), reason="oneDNN is not installed (pip install 'tinygrad_rnn[onednn]')")
def test_bench_gemm_prints_every_product_of_every_shape_for_each_side_the_setup_and_the_layers():
    done = _run("--shapes", "3x2x4,2x3x5", "--layers", "3x2x4", "--linear", "4x3x2,2048x16x64", "--rounds", "2")
    assert done.returncode == 0, done.stderr
    header, *results = [json.loads(line) for line in done.stdout.splitlines()]
    results, layer, linear = results[:8], results[8], results[9:]
    assert header["command"] == ("python tools/bench_gemm.py --shapes 3x2x4,2x3x5 --layers 3x2x4 "
                                 "--linear 4x3x2,2048x16x64 --rounds 2")
    assert header["threads"] == 1 and header["versions"]["onednn"] == onednn.version()
    assert [(r["kind"], r["shape"], r.get("product")) for r in results] == [
        (kind, shape, product) for shape in ([3, 2, 4], [2, 3, 5])
        for kind, product in [("product", "h @ Wh"), ("product", "da @ Wh.T"), ("product", "dWh"), ("setup", None)]]
    assert results[0]["operands"] == [[2, 4], [4, 16]] and results[2]["operands"] == [[4, 6], [6, 16]]
    for r in results:
        sides = ["numpy", "onednn"] + (["onednn_packed"] if r.get("product") != "dWh" else [])
        if r["kind"] == "setup":
            assert r["onednn_ms"] > 0 and r["onednn_packed_ms"] > 0 and r["onednn_packed_load_ms"] > 0
            continue
        assert all(r[f"{side}_ms"] > 0 for side in sides) and r["numpy_to_onednn"] > 0
        assert set(r["impl"]) == set(r["max_rel_diff"]) == set(sides[1:])
        assert all(d < 1e-5 for d in r["max_rel_diff"].values())  # float32 rounding, not a wrong product
    assert layer["kind"] == "layer" and layer["shape"] == [3, 2, 4] and layer["impl"]
    assert layer["ours_ms"] > 0 and layer["onednn_lstm_ms"] > 0 and layer["ours_to_onednn_lstm"] > 0
    assert all(d < 1e-5 for d in layer["max_rel_diff"].values())  # the LSTM primitive's binding is right
    assert [(r["kind"], r["shape"], r["product"]) for r in linear] == [
        ("linear", shape, product) for shape in ([4, 3, 2], [2048, 16, 64]) for product in ("x @ W", "gy @ W.T",
                                                                                             "x.T @ gy")]
    assert all(r["numpy_ms"] > 0 and r["onednn_ms"] > 0 and r["numpy_to_onednn"] > 0 for r in linear)
    assert [r["linear"] for r in linear] == ["numpy"] * 3 + ["onednn"] * 3  # 24 and 2**21 multiply-adds


def test_bench_gemm_without_onednn_says_how_to_install_it():
    if onednn.available():
        code = ("import runpy, sys; import tinygrad_rnn.onednn as o; o.library_path = lambda: None; "
                f"sys.argv = [{str(TOOL)!r}]; runpy.run_path({str(TOOL)!r}, run_name='__main__')")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    else:
        done = _run()
    assert done.returncode == 2
    assert "needs oneDNN, which is not installed: pip install 'tinygrad_rnn[onednn]'" in done.stderr

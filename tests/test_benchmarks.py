"""The benchmark scripts run and print one JSON object a line (their figures are not checked here)."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parent.parent / "tools"


def _lines(script, *args):
    done = subprocess.run([sys.executable, str(TOOLS / script), *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_bench_seq2seq_prints_samples_per_second_for_each_side_and_round():
    header, *results = _lines("bench_seq2seq.py", "--models", "seq2seq", "--iters", "2", "--warmup", "1",
                              "--rounds", "2")
    assert header["command"].startswith("python tools/bench_seq2seq.py --models seq2seq")
    ours = [r for r in results if r["impl"] == "tinygrad_rnn"]
    assert [r["round"] for r in ours] == [0, 1]
    assert all(r["model"] == "Seq2seq" and r["samples_per_second"] > 0 and r["iterations"] == 2 for r in results)


def test_bench_lm_prints_words_per_second_and_the_memory_check():
    header, *results = _lines("bench_lm.py", "--models", "lstm", "--iters", "2", "--warmup", "1", "--rounds", "1",
                     "--memory-iters", "12")
    timed = [r for r in results if "words_per_second" in r]
    assert timed and all(r["model"] == "LSTMLM" and r["words_per_second"] > 0 for r in timed)
    memory = results[-1]
    assert memory["check"] == "memory" and {"rss_mb_at_2", "rss_mb_at_12", "growth_mb"} <= memory.keys()


def test_bench_dist_prints_allreduce_step_phases_scaling_and_predictions(tmp_path, mpi):
    header, *results = _lines("bench_dist.py", "--sizes", "8192,65536", "--reps", "2", "--ar-warmup", "1",
                              "--rounds", "1", "--iters", "2", "--warmup", "1", "--better-iters", "0")
    assert header["command"].startswith("python tools/bench_dist.py --sizes 8192,65536")
    kinds = {}
    for r in results:
        kinds.setdefault(r["kind"], []).append(r)
    impls = ["tinygrad_rnn"] + (["torch-gloo"] if "skipped" not in kinds and importlib.util.find_spec("torch") else [])
    assert [(r["impl"], r["size_bytes"]) for r in kinds["allreduce"]] == [(i, s) for i in impls for s in (8192, 65536)]
    for r in kinds["allreduce"]:
        assert r["ranks"] == 2 and r["seconds"] > 0 and r["busbw_gbps"] == r["algbw_gbps"]  # 2 (P - 1) / P = 1
    assert [(r["ranks"], r["batch_per_rank"]) for r in kinds["step"]] == [(1, 20), (2, 10), (1, 10), (2, 20)]
    for r in kinds["step"]:
        assert r["model"] == "LSTMLM" and r["parameters"] == 2_090_400 and r["step_ms"] > 0
        assert {f"{phase}_ms" for phase in ("forward", "backward", "wait", "reduce", "update", "phases")} <= r.keys()
        assert r["reduce_ms"] == pytest.approx(r["allreduce_ms"] + r["pack_unpack_ms"])
    scaling, = kinds["scaling"]
    assert scaling["strong_efficiency"] == pytest.approx(scaling["t1_n20_ms"] / scaling["t2_10_each_ms"] / 2)
    assert scaling["weak_efficiency"] == pytest.approx(scaling["t1_n20_ms"] / scaling["t2_20_each_ms"])
    assert {r["impl"] for r in kinds["cost_model"]} == set(impls)
    rows = kinds["prediction"]
    assert {(r["model"], r["step"]) for r in rows} == {("LSTMLM", "CPU, measured here"), ("LSTMLM", "GPU, assumed"),
                                                      ("BetterLSTMLM", "GPU, assumed")}
    assert all(list(r["efficiency"]) == [str(2**k) for k in range(1, 11)] for r in rows)
    assert all(0 < e <= 1 for r in rows for e in r["efficiency"].values())

    saved = tmp_path / "bench_dist.jsonl"
    saved.write_text("\n".join(json.dumps(r) for r in [header, *results]) + "\n")
    again = subprocess.run([sys.executable, str(TOOLS / "bench_dist.py"), "--from", str(saved), "--markdown"],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    table = [line for line in again.stdout.splitlines() if line.startswith("|")]
    assert table[0].startswith("| model") and len(table) == 2 + len(rows)


def test_bench_phases_prints_every_phase_of_the_step_and_the_launch_costs():
    header, phases, *launches = _lines("bench_phases.py", "--models", "lstm", "--iters", "2", "--warmup", "1",
                                       "--calls", "5")
    assert header["command"].startswith("python tools/bench_phases.py --models lstm")
    stages = ("embed", "lstm", "projection", "loss")
    wanted = {f"{s}_{way}_ms" for s in stages for way in ("forward", "backward")} | {"clip_ms", "update_ms"}
    assert phases["kind"] == "phases" and phases["model"] == "LSTMLM" and wanted <= phases.keys()
    assert phases["phases_ms"] == pytest.approx(sum(phases[k] for k in wanted)) and phases["step_ms"] > 0
    assert [(r["kind"], r["call"]) for r in launches] == [("launch", "matmul"), ("launch", "lstm_cell")]
    assert all(r["host_us"] > 0 and r["shape"] == [20, 100, 400] for r in launches)

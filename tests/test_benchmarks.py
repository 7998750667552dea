"""The benchmark scripts run and print one JSON object a line (their figures are not checked here), and
what they time is ``Trainer.step`` itself."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tinygrad_rnn.training import Trainer
from tinygrad_rnn.phases import mark
from tinygrad_rnn.tools import bench_lm, bench_phases, benchmark

TOOLS = Path(__file__).resolve().parent.parent / "tools"
HEADER = {"command", "machine", "blas", "threads", "versions", "kernels"}


def _run(script, *args):
    return subprocess.run([sys.executable, str(TOOLS / script), *args], capture_output=True, text=True, timeout=300)


def _lines(script, *args):
    done = _run(script, *args)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def _counting_step(monkeypatch):
    """Replace ``Trainer.step`` by a wrapper that counts its calls and marks one more phase."""
    calls = []
    step = Trainer.step

    def counted(self, batch):
        calls.append(len(batch))
        mark("patched")  # a phase of the patched step: ends at the real step's first mark
        return step(self, batch)

    monkeypatch.setattr(Trainer, "step", counted)
    return calls


def test_bench_seq2seq_prints_samples_per_second_for_each_side_and_round():
    header, *results = _lines("bench_seq2seq.py", "--models", "seq2seq", "--iters", "2", "--warmup", "1",
                              "--rounds", "2")
    assert header["command"].startswith("python tools/bench_seq2seq.py --models seq2seq") and HEADER <= header.keys()
    assert header["kernels"]["tinygrad_rnn"].startswith("NumPy with ")
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
        # the phases Trainer.step marks (reduce only data parallel, with the recorder's wait before it)
        step_phases = ["forward", "backward", *(["wait", "reduce"] if r["ranks"] == 2 else []), "clip", "update"]
        assert [k[:-3] for k in r if k.endswith("_ms") and k[:-3] not in ("allreduce", "pack_unpack", "phases",
                                                                          "step")] == step_phases
        # over 2 steps a median is a mean: the slower rank's whole step is at most the sum of its slowest phases
        assert 0 < r["phases_ms"] <= sum(r[f"{name}_ms"] for name in step_phases) * (1 + 1e-9)
        if r["ranks"] == 2:
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
    assert header["command"].startswith("python tools/bench_phases.py --models lstm") and HEADER <= header.keys()
    wanted = ["forward_ms", "backward_ms", "clip_ms", "update_ms"]  # what Trainer.step marks, in its order
    assert phases["kind"] == "phases" and phases["model"] == "LSTMLM"
    assert [k for k in phases if k.endswith("_ms") and k not in ("phases_ms", "step_ms")] == wanted
    assert phases["phases_ms"] > 0 and phases["step_ms"] > 0
    assert [(r["kind"], r["call"]) for r in launches] == [("launch", "matmul"), ("launch", "lstm_cell")]
    assert all(r["host_us"] > 0 and r["shape"] == [20, 100, 400] for r in launches)


def test_bench_engine_prints_the_header_each_op_for_each_side_and_the_import_time():
    header, *results = _lines("bench_engine.py", "--chain", "50", "--rounds", "1")
    assert header["command"] == "python tools/bench_engine.py --chain 50 --rounds 1" and HEADER <= header.keys()
    ours = [r for r in results if r.get("impl") == "tinygrad_rnn" and "op" in r]
    assert [r["op"] for r in ours] == ["tanh", "mul", "add"] and all(r["us_per_op"] > 0 for r in ours)
    assert results[-1]["import_seconds"] > 0


def test_bench_lm_times_trainer_step_itself(monkeypatch, capsys):
    calls = _counting_step(monkeypatch)
    bench_lm.main(["--worker", "tinygrad_rnn", "--models", "lstm", "--iters", "3", "--warmup", "2",
                   "--memory-iters", "0"])
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert calls == [2] * 5 and result["iterations"] == 3  # every warm-up and timed step went through it


def test_bench_phases_reads_the_phases_the_step_marks(monkeypatch, capsys):
    calls = _counting_step(monkeypatch)
    bench_phases.main(["--models", "lstm", "--iters", "2", "--warmup", "1", "--calls", "2"])
    phases = json.loads(capsys.readouterr().out.splitlines()[1])
    assert len(calls) == 1 + 2 * 2  # warm-up, then recorded and unrecorded steps in turn
    assert [k for k in phases if k.endswith("_ms") and k not in ("phases_ms", "step_ms")] == [
        "patched_ms", "forward_ms", "backward_ms", "clip_ms", "update_ms"]


@pytest.mark.parametrize("script, flags, message", [
    ("bench_lm.py", ["--models", "lstm,gru"], "--models: takes lstm, better (comma-separated), got gru"),
    ("bench_seq2seq.py", ["--iters", "0"], "--iters: must be > 0, got 0"),
    ("bench_phases.py", ["--device", "tpu"], "--device: invalid choice: 'tpu'"),
    ("bench_dist.py", ["--device", "gpu"], "--device: invalid choice: 'gpu'"),
])
def test_bench_flags_are_checked_before_any_work(script, flags, message):
    done = _run(script, *flags)
    assert done.returncode == 2 and message in done.stderr


def test_a_worker_gets_the_shared_flags_and_its_thread_count(tmp_path, capsys):
    script = tmp_path / "echo.py"
    script.write_text("import json, os, sys\n"
                      "print(json.dumps({'argv': sys.argv[1:], 'threads': [os.environ.get(v) for v in "
                      f"{benchmark.THREAD_VARIABLES!r}]}}))\n")
    args = benchmark.parser(bench_lm.__doc__, rounds=1, models=("lstm",), iters=4, warmup=2).parse_args(
        ["--threads", "3", "--seed", "7"])
    result = benchmark.run_worker(str(script), args, "torch", "lstm", "--memory-iters", "0", round=1)
    assert result["argv"] == ["--worker", "torch", "--models", "lstm", "--iters", "4", "--warmup", "2",
                              "--device", "cpu", "--seed", "7", "--memory-iters", "0"]
    assert result["threads"] == ["3"] * 3 and result["round"] == 1
    assert json.loads(capsys.readouterr().out) == result  # printed as well

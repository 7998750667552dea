"""The benchmark scripts run and print one JSON object a line (their figures are not checked here)."""
import json
import subprocess
import sys
from pathlib import Path

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

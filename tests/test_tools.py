"""The command-line tools: installed commands, flags checked before any work, the language-model tool end to end."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tinygrad_rnn.data import ptb

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
COMMANDS = ["demo", "train-lm", "generate", "train-seq2seq", "train-caption", "render-graph"]


def run(*args, cwd=ROOT, timeout=120):
    env = dict(os.environ, PYTHONIOENCODING="utf-8")
    return subprocess.run([*args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_tool_is_an_installed_command(command, tmp_path):
    done = run(str(BIN / f"tinygrad-rnn-{command}"), "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout


def test_the_models_are_installed_inside_the_package_not_as_a_top_level_models(tmp_path):
    code = ("import importlib.util; import tinygrad_rnn.models, tinygrad_rnn.tools; "
            "print(importlib.util.find_spec('models') is None, importlib.util.find_spec('tools') is None)")
    done = run(sys.executable, "-c", code, cwd=tmp_path)  # outside the checkout: only what is installed
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True"]


@pytest.mark.parametrize("tool, flags, message", [
    ("train_lm.py", ["--model", "lstm", "--clip", "-1"], "--clip: must be >= 0, got -1"),
    ("train_lm.py", ["--model", "lstm", "--lr", "0"], "--lr: must be > 0, got 0"),
    ("train_lm.py", ["--model", "lstm", "--lr", "nan"], "--lr: must be > 0, got nan"),
    ("train_lm.py", ["--model", "lstm", "--epochs", "0"], "--epochs: must be > 0, got 0"),
    ("train_lm.py", ["--model", "better", "--dropout", "1"], "--dropout: must be >= 0 and < 1, got 1"),
    ("train_lm.py", ["--model", "better", "--lr-decay", "4"], "--lr-decay: must be > 0 and <= 1, got 4"),
    ("train_lm.py", ["--model", "lstm", "--batch-size", "2.5"], "--batch-size: '2.5' is not an integer"),
    ("train_lm.py", ["--model", "better", "--wordvec", "100"], "--wordvec must equal --hidden"),
    ("train_seq2seq.py", ["--task", "addition", "--model", "peeky", "--clip", "-1"], "--clip: must be >= 0"),
    ("train_seq2seq.py", ["--task", "addition", "--model", "peeky", "--eps", "0"], "--eps: must be > 0"),
    ("train_seq2seq.py", ["--task", "addition", "--model", "peeky", "--bidirectional"], "needs --model attention"),
    ("train_seq2seq.py", ["--task", "addition", "--model", "peeky", "--count", "10", "--test-size", "10"],
     "leaves no training examples"),
    ("train_caption.py", ["--channels", "8,x"], "--channels: must be comma-separated integers"),
    ("train_caption.py", ["--channels", "2,2,2,2,2,2"], "6 2x2 poolings do not fit"),
    ("train_caption.py", ["--test-size", "-5"], "--test-size: must be > 0, got -5"),
    ("generate.py", ["x.npz", "--temperature", "0"], "--temperature: must be > 0, got 0"),
])
def test_flags_out_of_range_are_refused_before_any_work(tmp_path, tool, flags, message):
    out = tmp_path / "out"
    done = run(sys.executable, f"tools/{tool}", *flags, "--out" if tool != "generate.py" else "--length",
               str(out) if tool != "generate.py" else "3")
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert not out.exists()


def ptb_dir():
    data = os.environ.get("TINYGRAD_RNN_DATA") or str(ROOT.parent / "shared" / "data")
    if not (Path(data) / "ptb" / "ptb.train.txt").is_file() and ptb.locate("train", download=False) is None:
        pytest.skip("PTB not found: set TINYGRAD_RNN_DATA to a folder holding ptb/ptb.{train,valid,test}.txt")
    return data


def test_train_lm_prints_a_summary_resumes_and_generate_reads_its_checkpoint(tmp_path):
    data = ptb_dir()
    common = ["tools/train_lm.py", "--model", "lstm", "--wordvec", "8", "--hidden", "8", "--corpus-size", "3000",
              "--batch-size", "4", "--time-size", "5", "--data-dir", data, "--out", str(tmp_path), "--no-progress"]
    first = run(sys.executable, *common, "--max-iters", "3")
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout.strip().splitlines()[-1])
    assert result["iterations"] == 3 and result["train_perplexity"] > 1 and result["words_per_second"] > 0
    assert json.loads((tmp_path / "summary.json").read_text()) == result
    assert {"history.json", "history.png", "last.npz", "summary.json"} <= {p.name for p in tmp_path.iterdir()}
    resumed = run(sys.executable, *common, "--max-iters", "5", "--resume", str(tmp_path / "last.npz"))
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout.strip().splitlines()[-1])["iterations"] == 5  # the whole run, not the rest
    other = run(sys.executable, *[a if a != "4" else "2" for a in common], "--resume", str(tmp_path / "last.npz"))
    assert other.returncode == 2 and "--batch-size 2 (the checkpoint's: 4)" in other.stderr
    assert "Traceback" not in other.stderr
    text = run(sys.executable, "tools/generate.py", str(tmp_path / "last.npz"), "--start", "the", "--length", "5",
               "--seed", "1")
    assert text.returncode == 0, text.stderr
    assert text.stdout.split()[0] == "the" and "<unk>" not in text.stdout

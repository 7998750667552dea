"""docs/results.md is reproducible: the cheapest run on it, SimpleRNNLM on the first 1,000 PTB words, rerun with
its command gives the page's numbers.

The page names what must match for equal numbers (the code, NumPy and its BLAS, the CPU's kernels). The
first ten epochs are rerun in the default suite: on the page's platform they agree bit for bit, elsewhere a
float32 rounding may differ, which ten epochs keep within a relative 1e-6 (late in the run such differences
grow to percents). The whole command runs with ``make test-slow`` and must give the page's table.
"""
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tinygrad_rnn.data import ptb

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "docs" / "results" / "lm-rnn"
PAGE = ROOT / "docs" / "results.md"
TABLE_ROW = re.compile(r"^\| (\d+) \| ([\d,]+\.\d\d) \|$", re.MULTILINE)


def _data_dir():
    data = os.environ.get("TINYGRAD_RNN_DATA") or str(ROOT.parent / "shared" / "data")
    if not (Path(data) / "ptb" / "ptb.train.txt").is_file() and ptb.locate("train", download=False) is None:
        pytest.skip("PTB not found: set TINYGRAD_RNN_DATA to a folder holding ptb/ptb.{train,valid,test}.txt")
    return data


def _rerun(tmp_path, *extra):
    """The page's command for the run (its own --out replaced), with ``extra`` arguments, on one BLAS thread as
    the page's run (the thread count changes its speed, not its numbers); the epoch records."""
    command = json.loads((RUN / "summary.json").read_text())["command"]
    args = shlex.split(command)
    assert args[:2] == ["python", "tools/train_lm.py"], command
    args[0] = sys.executable
    args[args.index("--out") + 1] = str(tmp_path)
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "TINYGRAD_RNN_DATA": _data_dir()}
    done = subprocess.run([*args, *extra], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads((tmp_path / "history.json").read_text())["epochs"]


def _page_table():
    """The page's table of SimpleRNNLM's train perplexity: epoch -> the printed figure."""
    text = PAGE.read_text()
    start = text.index("SimpleRNNLM, train perplexity at the epochs the textbook reports:")
    table = text[start:text.index("\n\n", text.index("| epoch |", start))]
    return {int(epoch): figure for epoch, figure in TABLE_ROW.findall(table)}


def test_the_page_shows_the_runs_history():
    page = _page_table()
    recorded = {r["epoch"]: f"{r['train_perplexity']:,.2f}"
                for r in json.loads((RUN / "history.json").read_text())["epochs"]}
    assert page and {epoch: recorded[epoch] for epoch in page} == page


def test_the_first_ten_epochs_of_the_cheapest_result_rerun_to_the_pages_numbers(tmp_path):
    rerun = _rerun(tmp_path, "--epochs", "10")
    page = json.loads((RUN / "history.json").read_text())["epochs"][:10]
    assert [r["epoch"] for r in rerun] == list(range(1, 11))
    assert [r["train_loss"] for r in rerun] == pytest.approx([r["train_loss"] for r in page], rel=1e-6)
    shown = _page_table()
    assert all(f"{r['train_perplexity']:,.2f}" == shown[r["epoch"]] for r in rerun if r["epoch"] in shown)


@pytest.mark.slow
def test_the_cheapest_result_reruns_to_the_pages_table(tmp_path):
    rerun = {r["epoch"]: f"{r['train_perplexity']:,.2f}" for r in _rerun(tmp_path)}
    shown = _page_table()
    assert {epoch: rerun[epoch] for epoch in shown} == shown

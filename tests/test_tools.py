"""The command-line tools: installed commands, flags checked before any work, the language-model tool end to end."""
import argparse
import importlib
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ptb_or_skip

from tinygrad_rnn import cuda
from tinygrad_rnn.data import ptb
from tinygrad_rnn.models import build_model
from tinygrad_rnn.tools.common import run_mpi
from tinygrad_rnn.training import checkpoint, perplexity

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
    return str(ptb_or_skip())


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
    train_file = Path(result["data_files"]["train"])
    assert f"data {train_file} ({train_file.stat().st_size:,} bytes)" in first.stdout.splitlines()[0]
    assert result["resumed"] is None
    lr = run(sys.executable, *common, "--max-iters", "5", "--lr", "3", "--resume", str(tmp_path / "last.npz"))
    assert lr.returncode == 2 and "--lr 3.0 (the checkpoint's: 20.0)" in lr.stderr and "Traceback" not in lr.stderr
    resumed = run(sys.executable, *common, "--max-iters", "5", "--resume", str(tmp_path / "last.npz"))
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.splitlines()[0].endswith(f"; resumed from {tmp_path / 'last.npz'} at epoch 0 iteration 3")
    summary = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert summary["iterations"] == 5  # the whole run, not the rest
    assert summary["resumed"] == {"file": str(tmp_path / "last.npz"), "epoch": 0, "iteration": 3}
    other = run(sys.executable, *[a if a != "4" else "2" for a in common], "--resume", str(tmp_path / "last.npz"))
    assert other.returncode == 2 and "--batch-size 2 (the checkpoint's: 4)" in other.stderr
    assert "Traceback" not in other.stderr
    text = run(sys.executable, "tools/generate.py", str(tmp_path / "last.npz"), "--start", "the", "--length", "5",
               "--seed", "1")
    assert text.returncode == 0, text.stderr
    assert text.stdout.split()[0] == "the" and "<unk>" not in text.stdout
    empty = run(sys.executable, "tools/generate.py", str(tmp_path / "last.npz"), "--start", "")
    assert empty.returncode == 2 and "--start: the prompt is empty" in empty.stderr


def usage_error(main, argv, capsys):
    """The one-line message of ``main(argv)``'s usage error (exit code 2, no traceback)."""
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def tool(name):
    return importlib.import_module(f"tinygrad_rnn.tools.{name}")


def test_a_data_dir_that_does_not_exist_or_lacks_ptb_is_refused_without_a_fallback(tmp_path, capsys):
    lm = ["--model", "lstm", "--out", str(tmp_path / "out")]
    err = usage_error(tool("train_lm").main, [*lm, "--data-dir", str(tmp_path / "nowhere")], capsys)
    assert f"argument --data-dir: {tmp_path / 'nowhere'} does not exist" in err
    # TINYGRAD_RNN_DATA (set by make test) holds PTB, but --data-dir says where to look
    err = usage_error(tool("train_lm").main, [*lm, "--data-dir", str(tmp_path)], capsys)
    assert f"--data-dir {tmp_path} holds no ptb.train.txt, ptb.valid.txt, ptb.test.txt" in err
    (tmp_path / "ptb.train.txt").write_text("not the treebank\n")
    err = usage_error(tool("train_lm").main, [*lm, "--data-dir", str(tmp_path)], capsys)
    assert "--data-dir: ptb:" in err and "ptb.train.txt has sha256" in err and "damaged" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name, argv, message", [
    ("train_lm", ["--model", "lstm", "--dropout", "0.3"], "--dropout: --model lstm has no dropout"),
    ("train_lm", ["--model", "rnn", "--dropout", "0"], "--dropout: --model rnn has no dropout"),
    ("train_lm", ["--model", "lstm", "--corpus-size", "100", "--lr-decay", "0.5"],
     "--lr-decay follows validation, which --corpus-size skips"),
    ("train_lm", ["--model", "lstm", "--corpus-size", "100", "--eval-words", "50"],
     "--eval-words bounds validation and test, which --corpus-size skips"),
    ("train_lm", ["--model", "lstm", "--eval-words", "1"], "--eval-words: must be >= 2"),
    ("train_seq2seq", ["--task", "addition", "--model", "peeky", "--count", "10", "--data-file", "x.txt"],
     "--count: the examples come from --data-file"),
    ("train_seq2seq", ["--task", "addition", "--model", "peeky", "--count", "300", "--test-size", "50",
                       "--batch-size", "1000"], "--batch-size 1000: ShuffledBatcher: 250 examples are fewer than one"),
    ("train_caption", ["--train-size", "10", "--test-size", "2", "--batch-size", "50"],
     "--batch-size 50: ShuffledBatcher: 10 examples are fewer than one batch of 50"),
])
def test_flags_that_do_not_apply_or_do_not_fit_are_usage_errors(tmp_path, capsys, name, argv, message):
    err = usage_error(tool(name).main, [*argv, "--out", str(tmp_path / "out")], capsys)
    assert message in err


@pytest.mark.parametrize("name, argv", [
    ("train_lm", ["--model", "lstm"]), ("train_seq2seq", ["--task", "date", "--model", "attention"]),
    ("train_caption", []), ("demo", []),
])
def test_an_out_that_is_a_file_is_refused_before_any_work(tmp_path, capsys, name, argv):
    (tmp_path / "file").write_text("")
    for out in (tmp_path / "file", tmp_path / "file" / "sub"):
        err = usage_error(tool(name).main, [*argv, "--out", str(out)], capsys)
        assert f"--out {out}: {tmp_path / 'file'} is a file, not a folder" in err


@pytest.mark.skipif(cuda.available, reason="needs a machine without a usable GPU")
@pytest.mark.parametrize("name, argv", [
    ("train_lm", ["--model", "lstm"]), ("train_seq2seq", ["--task", "date", "--model", "peeky"]),
    ("train_caption", []), ("generate", ["x.npz"]),
])
def test_device_gpu_without_a_gpu_is_a_usage_error(tmp_path, capsys, name, argv):
    err = usage_error(tool(name).main, [*argv, "--device", "gpu"], capsys)
    assert "argument --device: gpu is not usable here (tinygrad_rnn.cuda.check:" in err and "use --device cpu" in err


def test_a_data_file_missing_damaged_or_of_another_task_is_a_usage_error(tmp_path, capsys):
    s2s = ["--model", "peeky", "--out", str(tmp_path / "out")]
    main = tool("train_seq2seq").main
    err = usage_error(main, ["--task", "addition", *s2s, "--data-file", str(tmp_path / "none.txt")], capsys)
    assert f"--data-file {tmp_path / 'none.txt'} (--task addition, --test-size 5000): " in err
    assert "No such file" in err
    (tmp_path / "junk.txt").write_text("no separator here\n")
    err = usage_error(main, ["--task", "addition", *s2s, "--data-file", str(tmp_path / "junk.txt")], capsys)
    assert "line 1: no '_' separates question and answer" in err
    (tmp_path / "addition.txt").write_text("".join(f"{a}+{a}_{2 * a}\n" for a in range(20)))
    err = usage_error(main, ["--task", "date", *s2s, "--test-size", "5", "--data-file", str(tmp_path / "addition.txt")],
                      capsys)
    assert "(--task date, --test-size 5): CharVocabulary.encode: characters not in the vocabulary" in err
    err = usage_error(main, ["--task", "addition", *s2s, "--data-file", str(tmp_path / "addition.txt")], capsys)
    assert "split_pairs: test_size must lie in [0, 20], got 5000" in err
    assert not (tmp_path / "out").exists()


def test_generate_on_a_missing_damaged_or_foreign_checkpoint_is_a_usage_error(tmp_path, capsys):
    main = tool("generate").main
    err = usage_error(main, [str(tmp_path / "none.npz")], capsys)
    assert "error: checkpoint: " in err and "No such file" in err
    (tmp_path / "junk.npz").write_bytes(b"junk")
    err = usage_error(main, [str(tmp_path / "junk.npz")], capsys)
    assert f"error: checkpoint: {tmp_path / 'junk.npz'} is not a tinygrad_rnn checkpoint" in err
    err = usage_error(main, [str(tmp_path)], capsys)
    assert f"error: checkpoint: {tmp_path} is not a tinygrad_rnn checkpoint" in err


@pytest.mark.parametrize("name", ["train_lm", "train_seq2seq", "train_caption", "generate", "demo"])
def test_every_flag_has_help_text_with_its_default(name):
    p = tool(name).build_parser()
    text = " ".join(p.format_help().split())
    for action in p._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, f"{name} {action.dest} has no help text"
        if action.option_strings and action.default is not None and action.default is not False:
            assert f"(default: {action.default})" in text, f"{name} {action.dest} does not show its default"
        elif action.option_strings and not action.required and action.nargs != 0:
            assert "(default:" in action.help, f"{name} {action.dest} does not say where its default comes from"


def test_eval_words_bounds_validation_and_test_and_the_summary_records_it(tmp_path):
    data = ptb_dir()
    done = run(sys.executable, "tools/train_lm.py", "--model", "lstm", "--wordvec", "8", "--hidden", "8",
               "--batch-size", "4", "--time-size", "5", "--max-iters", "2", "--eval-words", "300", "--data-dir", data,
               "--out", str(tmp_path), "--no-progress")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["eval_words"] == 300 and "validation and test cut to 300 words" in done.stdout.splitlines()[0]
    assert set(result["data_files"]) == {"train", "valid", "test"}
    params, meta = checkpoint.read(tmp_path / "best.npz")
    model = build_model(meta["run"]["model"])
    model.load_state_dict(params)
    test, _ = ptb.load("test", data)
    assert result["test_perplexity"] == pytest.approx(perplexity(model, test[:300])["perplexity"], rel=1e-6)
    assert result["test_perplexity"] != pytest.approx(perplexity(model, test[:600])["perplexity"], rel=1e-6)


@pytest.mark.skipif(shutil.which("mpirun") is None, reason="needs an MPI's mpirun")
def test_the_readmes_mpirun_commands_work_as_written_as_root_too(tmp_path):
    data = ptb_dir()
    section = (ROOT / "README.md").read_text().split("## Several processes", 1)[1]
    commands = section.split("```sh\n", 1)[1].split("```", 1)[0]
    assert commands.splitlines()[-1].startswith("mpirun -n 2 python -m mpi4py -m tinygrad_rnn.tools.train_lm")
    smoke = ["--corpus-size", "2000", "--wordvec", "8", "--hidden", "8", "--batch-size", "4", "--time-size", "5",
             "--max-iters", "2", "--no-progress", "--data-dir", data, "--out", str(tmp_path / "out")]
    # nothing from this environment that the README does not set: no MPI settings, `python` from PATH
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMIX_", "PRTE_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    done = subprocess.run(["bash", "-ec", commands.rstrip() + " " + shlex.join(smoke)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["ranks"] == 2


def test_a_resumed_run_goes_on_with_the_checkpoints_learning_rate_and_says_where_it_resumed(tmp_path, capsys):
    main = tool("train_caption").main
    flags = ["--train-size", "20", "--test-size", "4", "--batch-size", "10", "--hidden", "8", "--wordvec", "4",
             "--channels", "2,2", "--examples", "0", "--no-progress", "--out", str(tmp_path)]
    main([*flags, "--epochs", "2"])
    capsys.readouterr()
    main([*flags, "--epochs", "3", "--resume", str(tmp_path / "last.npz")])
    lines = capsys.readouterr().out.splitlines()
    # two epochs halved the rate twice: the run goes on from 0.0005, not from --lr's 0.002
    assert "Adam lr 0.0005 (x0.5 per epoch)" in lines[0]
    assert lines[0].endswith(f"; resumed from {tmp_path / 'last.npz'} at epoch 2 iteration 0")
    assert json.loads(lines[-1])["resumed"] == {"file": str(tmp_path / "last.npz"), "epoch": 2, "iteration": 0}
    err = usage_error(main, [*flags, "--epochs", "3", "--lr", "0.0005", "--resume", str(tmp_path / "last.npz")],
                      capsys)
    assert "--lr 0.0005 (the checkpoint's: 0.002)" in err
    err = usage_error(main, [*flags, "--epochs", "3", "--resume", str(tmp_path / "last.npz")], capsys)
    assert "the run has done 3 epochs and 6 iterations already: raise --epochs 3 to go on" in err
    err = usage_error(main, [*flags, "--epochs", "9", "--max-iters", "6", "--resume", str(tmp_path / "last.npz")],
                      capsys)
    assert "done 3 epochs and 6 iterations already: raise --epochs 9 or --max-iters 6 to go on" in err


@pytest.mark.skipif(shutil.which("mpirun") is None, reason="needs an MPI's mpirun")
def test_a_command_line_mistake_under_mpirun_is_said_once_and_every_rank_exits_2():
    done = run_mpi(2, ["-m", "mpi4py", str(ROOT / "tools" / "train_lm.py"), "--distributed", "--model", "gru"],
                   timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.count("error: argument --model: invalid choice: 'gru'") == 1, done.stderr


@pytest.mark.skipif(shutil.which("mpirun") is None, reason="needs an MPI's mpirun")
def test_a_batch_the_ranks_do_not_divide_is_a_usage_error_on_every_rank(tmp_path):
    data = ptb_dir()
    flags = ["--distributed", "--model", "lstm", "--corpus-size", "2000", "--wordvec", "8", "--hidden", "8",
             "--batch-size", "5", "--time-size", "5", "--data-dir", data, "--out", str(tmp_path / "out")]
    done = run_mpi(2, ["-m", "mpi4py", str(ROOT / "tools" / "train_lm.py"), *flags], timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.count("error: --batch-size 5 --time-size 5 split over 2 ranks: distributed.Shard: the batch of "
                             "5 streams does not split over 2 ranks") == 2

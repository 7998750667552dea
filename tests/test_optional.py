"""Optional packages: none is imported with the package or by a plain training run; a missing one gets
an error naming who needs it and the extra that installs it."""
import configparser
import importlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinygrad_rnn.optional import EXTRAS, require
from tinygrad_rnn.training import History, ProgressBar, plot_history

OPTIONAL = ("graphviz", "tqdm", "matplotlib")

_PLAIN_RUN = """
import sys
import numpy as np
import tinygrad_rnn, tinygrad_rnn.graph, tinygrad_rnn.models, tinygrad_rnn.training
from tinygrad_rnn.data import BPTTBatcher
from tinygrad_rnn.models import LSTMLM
from tinygrad_rnn.optimizers import SGD
from tinygrad_rnn.training import Checkpoint, LogReport, ProgressBar, Trainer
model = LSTMLM(7, 3, 4, seed=0)
trainer = Trainer(model, SGD(lr=0.1).setup(model), BPTTBatcher(np.arange(40) % 7, 2, 3),
                  extensions=[ProgressBar(enabled=False), LogReport(write=lambda line: None),
                              Checkpoint(sys.argv[1])])
trainer.fit(epochs=1)
tinygrad_rnn.graph.to_dot(model.loss(*next(iter(trainer.batches))))
print(" ".join(sorted({name.partition(".")[0] for name in sys.modules} & {"graphviz", "tqdm", "matplotlib"})))
"""


def test_the_package_and_a_plain_training_run_import_no_optional_package(tmp_path):
    result = subprocess.run([sys.executable, "-c", _PLAIN_RUN, str(tmp_path)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"imported: {result.stdout.strip()}"
    assert (tmp_path / "last.npz").exists()  # the run did train


@pytest.fixture
def missing(monkeypatch):
    """Make ``import <name>`` fail for each optional package, as if it were not installed."""
    for name in OPTIONAL:
        monkeypatch.setitem(sys.modules, name, None)
        for module in [m for m in sys.modules if m.startswith(name + ".")]:
            monkeypatch.setitem(sys.modules, module, None)


@pytest.mark.parametrize("module, extra", [("graphviz", "graph"), ("tqdm", "progress"), ("matplotlib", "plot"),
                                           ("matplotlib.figure", "plot")])
def test_require_names_who_needs_the_package_and_its_extra(missing, module, extra):
    package = module.partition(".")[0]
    with pytest.raises(ImportError, match=rf"^f: needs the optional package {package}, which is not installed: "
                                          rf"pip install 'tinygrad_rnn\[{extra}\]'$") as info:
        require(module, "f")
    assert info.value.name == package


def test_require_refuses_a_package_that_is_not_optional():
    with pytest.raises(KeyError, match="numpy"):
        require("numpy", "f")


def test_extensions_without_their_package_fail_when_created_naming_the_extra(missing, tmp_path):
    with pytest.raises(ImportError, match=r"^ProgressBar: .* tqdm, .*\[progress\]'$"):
        ProgressBar(enabled=True)
    assert ProgressBar(enabled=False).tqdm is None  # a hidden bar needs no tqdm
    with pytest.raises(ImportError, match=r"^History: .* matplotlib, .*\[plot\]'$"):
        History(tmp_path)
    history = {"iterations_per_epoch": 1, "iterations": [], "epochs": []}
    with pytest.raises(ImportError, match=r"^plot_history: .* matplotlib, .*\[plot\]'$"):
        plot_history(history, tmp_path / "h.png")
    assert not (tmp_path / "h.png").exists()


@pytest.mark.parametrize("tool, function, args", [
    ("train_caption", "plot_captions", (np.zeros((1, 1, 2, 2)), ["a"], ["a"])),
    ("train_seq2seq", "plot_attention", (np.ones((1, 1)), "a", "b")),
])
def test_tool_figures_without_matplotlib_name_the_extra(missing, tmp_path, tool, function, args):
    draw = getattr(importlib.import_module(f"tinygrad_rnn.tools.{tool}"), function)
    with pytest.raises(ImportError, match=rf"^{function}: .* matplotlib, .*\[plot\]'$"):
        draw(*args, tmp_path / "f.png")


def test_setup_declares_each_optional_package_as_its_extra_and_in_dev_only():
    config = configparser.ConfigParser()
    config.read(Path(__file__).resolve().parents[1] / "setup.cfg")
    requires = config["options"]["install_requires"].split()
    extras = {name: value.split() for name, value in config["options.extras_require"].items()}
    for package, extra in EXTRAS.items():
        assert not any(r.startswith(package) for r in requires), f"{package} must not be a requirement"
        assert [r for r in extras[extra] if r.startswith(package)], f"extra {extra} lacks {package}"
        assert [r for r in extras["dev"] if r.startswith(package)], f"dev lacks {package}: the suite covers it"

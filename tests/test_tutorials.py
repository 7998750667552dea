"""The tutorials (docs/tutorials/*.py, run by mkdocs_tutorials.py): each runs in its fast setting and
renders its page with the figures a student should look at; the runner's format and errors."""
import importlib.util
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("mkdocs_tutorials", ROOT / "mkdocs_tutorials.py")
tutorials = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tutorials)

SOURCES = sorted(tutorials.TUTORIALS.glob("*.py"))
# the figures of each tutorial: overlaid curves, heatmaps, images with their captions
FIGURES = {"language_model": 1, "vanishing_gradients": 3, "lstm_gates": 1, "regularization": 1,
           "seq2seq_addition": 1, "attention_dates": 2, "captioning": 2, "devices": 0}


def test_every_tutorial_is_known_here_and_in_the_site_navigation():
    nav = re.findall(r"^\s+- .+: (tutorials/\w+\.md)$", (ROOT / "mkdocs.yml").read_text(), re.MULTILINE)
    assert sorted(nav) == sorted(f"tutorials/{source.stem}.md" for source in SOURCES)
    assert sorted(FIGURES) == sorted(source.stem for source in SOURCES)


@pytest.mark.parametrize("source", SOURCES, ids=[source.stem for source in SOURCES])
def test_tutorial_runs_in_its_fast_setting_and_renders_its_figures(source, monkeypatch):
    monkeypatch.delenv(tutorials.FAST_ENV, raising=False)
    done = tutorials.execute(source, fast=True)
    assert tutorials.FAST_ENV not in os.environ  # the setting is put back as it was
    assert len(done.figures) == FIGURES[source.stem]
    for name, image in done.figures.items():
        assert image.startswith(b"\x89PNG"), name
        assert f"]({source.stem}/{name})" in done.markdown
    assert done.markdown.startswith("# ")  # the page's title is the first markdown cell's heading
    assert "```text" in done.markdown  # what the code printed is on the page


def test_devices_tutorial_trains_alike_on_one_and_two_processes(mpi):
    done = tutorials.execute(tutorials.TUTORIALS / "devices.py", fast=True)
    losses = dict(re.findall(r"processes: (\d)  train loss: ([-+.\deE]+)", done.markdown))
    assert sorted(losses) == ["1", "2"], done.markdown
    assert float(losses["2"]) == pytest.approx(float(losses["1"]), rel=1e-9, abs=0.0)


def test_cells_split_a_percent_script_into_text_and_code():
    source = "# %% [markdown]\n# # Title\n#\n# Some *text*.\n\n# %%\nx = 1\n\n\n# %%\n\n# %%\nprint(x)\n"
    assert tutorials.cells(source) == [("markdown", "# Title\n\nSome *text*."), ("code", "x = 1"),
                                       ("code", "print(x)")]


@pytest.mark.parametrize("source, message", [
    ("x = 1\n# %%\ny = 2\n", "must start with a '# %%' cell marker"),
    ("", "must start with a '# %%' cell marker"),
    ("# %% [markdown]\n# text\nnot a comment\n", "markdown cell line 'not a comment' is not a '# ' comment"),
])
def test_cells_refuse_what_is_not_a_percent_script(source, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        tutorials.cells(source)


def test_execute_names_the_failing_cell_and_restores_the_process(tmp_path, monkeypatch):
    monkeypatch.setenv(tutorials.FAST_ENV, "0")
    script = tmp_path / "broken.py"
    script.write_text("# %%\nimport os\nprint('fast is', os.environ['TINYGRAD_RNN_TUTORIAL_FAST'])\n\n"
                      "# %%\nraise ValueError('no such word')\n")
    before = os.getcwd()
    with pytest.raises(RuntimeError, match=r"tutorial broken\.py: the cell starting \"raise ValueError\('no such "
                                           r"word'\)\" raised ValueError: no such word"):
        tutorials.execute(script, fast=True)
    assert os.getcwd() == before and os.environ[tutorials.FAST_ENV] == "0"


def test_execute_renders_output_and_the_figures_a_cell_draws_or_writes(tmp_path):
    script = tmp_path / "plots.py"
    script.write_text("# %% [markdown]\n# # Plots\n\n# %%\nfrom matplotlib import pyplot as plt\n"
                      "plt.plot([1, 2])\nprint('drawn')\n\n"
                      "# %%\nfig = plt.figure()\nfig.savefig('kept.png')\nplt.close(fig)\n\n# %%\nx = 1\n")
    done = tutorials.execute(script, fast=False)
    assert list(done.figures) == ["figure1.png", "figure2.png"]
    assert done.markdown == ("# Plots\n\n```python\nfrom matplotlib import pyplot as plt\nplt.plot([1, 2])\n"
                             "print('drawn')\n```\n\n```text\ndrawn\n```\n\n![figure 1 of the tutorial]"
                             "(plots/figure1.png)\n\n```python\nfig = plt.figure()\nfig.savefig('kept.png')\n"
                             "plt.close(fig)\n```\n\n![figure 2 of the tutorial](plots/figure2.png)\n\n"
                             "```python\nx = 1\n```\n")

"""The tutorials: jupytext percent scripts in ``docs/tutorials/``, executed into pages of the site.

A tutorial is a Python file whose cells start with ``# %%`` (code) or ``# %% [markdown]`` (text,
every line commented with ``# ``), the format jupytext reads and writes, so it opens as a notebook
and diffs as code. ``mkdocs.yml`` loads this file as a hook: at every build it runs each tutorial
top to bottom in a fresh namespace and a temporary working directory, and adds the page
``tutorials/<name>.md`` (text, code, what the code printed, its figures) and the figures to the
site. A cell's figures are the matplotlib figures left open when it ends and the PNG files it
wrote into the working directory (the tools' plots). The suite runs the same function on every
tutorial with ``TINYGRAD_RNN_TUTORIAL_FAST=1``, which the tutorials read to shrink their data and
epochs (``tests/test_tutorials.py``), so a tutorial that stops running fails the tests.
"""
import contextlib
import io
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

_ROOT = Path(__file__).resolve().parent
TUTORIALS = _ROOT / "docs" / "tutorials"
FAST_ENV = "TINYGRAD_RNN_TUTORIAL_FAST"
_CELL = re.compile(r"^# %%(.*)$", re.MULTILINE)


@dataclass
class Executed:
    """One executed tutorial.

    Args:
        markdown (str): the page, figures linked as ``<stem>/<figure>.png``.
        figures (dict): file name (str) -> PNG bytes.
    """

    markdown: str
    figures: dict = field(default_factory=dict)


def cells(source):
    """Split a percent script into its cells.

    Args:
        source (str): the text of a tutorial.
    Returns:
        list: (kind, text) pairs, kind ``"markdown"`` or ``"code"``; markdown text without the
        leading ``# ``; a code cell's text stripped of blank lines around it.
    Raises:
        ValueError: text before the first ``# %%``, or a markdown line that is not a comment.
    """
    starts = list(_CELL.finditer(source))
    if not starts or source[:starts[0].start()].strip():
        raise ValueError("tutorial: the text must start with a '# %%' cell marker")
    result = []
    for match, following in zip(starts, starts[1:] + [None]):
        body = source[match.end():following.start() if following else len(source)].strip("\n")
        if "[markdown]" in match.group(1):
            lines = body.splitlines()
            bad = [line for line in lines if line and not line.startswith("#")]
            if bad:
                raise ValueError(f"tutorial: markdown cell line {bad[0]!r} is not a '# ' comment")
            result.append(("markdown", "\n".join(line[2:] if line.startswith("# ") else line[1:] for line in lines)))
        elif body.strip():
            result.append(("code", body))
    return result


def execute(path, fast):
    """Run a tutorial and render it as a markdown page with its output and figures.

    Args:
        path (str | Path): the percent script.
        fast (bool): sets ``TINYGRAD_RNN_TUTORIAL_FAST`` to ``1`` (or ``0``) while it runs.
    Returns:
        Executed: the page and its figures.
    Raises:
        RuntimeError: a cell raised; the message names the tutorial and the cell's first line.
    """
    from matplotlib import pyplot  # the tutorials' own plots; Agg below, so no display is needed

    path = Path(path).resolve()
    stem = path.stem
    namespace = {"__name__": "__main__"}
    page, figures = [], {}
    previous_env, previous_cwd, previous_backend = os.environ.get(FAST_ENV), os.getcwd(), pyplot.get_backend()
    pyplot.switch_backend("Agg")
    os.environ[FAST_ENV] = "1" if fast else "0"
    try:
        with tempfile.TemporaryDirectory() as work:
            os.chdir(work)
            for kind, text in cells(path.read_text()):
                if kind == "markdown":
                    page.append(text)
                    continue
                page.append(f"```python\n{text}\n```")
                before = {p: p.stat().st_mtime_ns for p in Path(work).rglob("*.png")}
                printed = io.StringIO()
                try:
                    with contextlib.redirect_stdout(printed):
                        exec(compile(text, f"{path.name}, cell {text.splitlines()[0]!r}", "exec"), namespace)
                except Exception as e:
                    raise RuntimeError(f"tutorial {path.name}: the cell starting {text.splitlines()[0]!r} "
                                       f"raised {type(e).__name__}: {e}\nit printed:\n{printed.getvalue()}") from e
                if printed.getvalue().strip():
                    page.append(f"```text\n{printed.getvalue().rstrip()}\n```")
                images = []
                for number in pyplot.get_fignums():
                    data = io.BytesIO()
                    pyplot.figure(number).savefig(data, format="png", dpi=90, bbox_inches="tight")
                    images.append(data.getvalue())
                pyplot.close("all")
                images += [p.read_bytes() for p in sorted(Path(work).rglob("*.png"))
                           if before.get(p) != p.stat().st_mtime_ns]
                for image in images:
                    name = f"figure{len(figures) + 1}.png"
                    figures[name] = image
                    page.append(f"![figure {len(figures)} of the tutorial]({stem}/{name})")
    finally:
        os.chdir(previous_cwd)
        pyplot.switch_backend(previous_backend)
        if previous_env is None:
            os.environ.pop(FAST_ENV, None)
        else:
            os.environ[FAST_ENV] = previous_env
    return Executed("\n\n".join(page) + "\n", figures)


def on_files(files, config):
    """mkdocs hook: add every executed tutorial and its figures to the site.

    Runs each tutorial at full size unless ``TINYGRAD_RNN_TUTORIAL_FAST=1`` is set (as the test suite's
    build does).

    Args:
        files (mkdocs.structure.files.Files): the site's files so far.
        config (mkdocs.config.defaults.MkDocsConfig): the site's configuration.
    Returns:
        Files: ``files`` with ``tutorials/<name>.md`` and ``tutorials/<name>/figure<k>.png`` added.
    Raises:
        RuntimeError: a tutorial's cell raised (see ``execute``).
    """
    from mkdocs.structure.files import File

    fast = os.environ.get(FAST_ENV) == "1"
    for path in sorted(TUTORIALS.glob("*.py")):
        done = execute(path, fast)
        files.append(File.generated(config, f"tutorials/{path.stem}.md", content=done.markdown))
        for name, image in done.figures.items():
            files.append(File.generated(config, f"tutorials/{path.stem}/{name}", content=image))
    return files

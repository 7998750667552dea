"""The documentation: the site builds strictly, the API reference covers every public module, the
README and the guides stand alone (their links resolve inside the repository, they cite nothing else)
and every Python block in them runs."""
import ast
import configparser
import importlib
import importlib.metadata
import os
import pkgutil
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import in_ci, ptb_or_skip

import tinygrad_rnn

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
DOCS_TOOLS = ("mkdocs", "mkdocstrings", "mkdocstrings-python")
BUILD_TIMEOUT_S = 300
# a guide that points at a file beside the checkout means nothing to a reader of the repository
OUTSIDE_CITATION = re.compile(r"\.\./shared|/work/shared|REFERENCE\.md")
# inline links and images ](target "title"), reference definitions [x]: target, HTML src/href
LINK_TARGETS = (re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)"),
                re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.MULTILINE),
                re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']"""))
FENCED_CODE = re.compile(r"^[ \t]*(```|~~~).*?^[ \t]*\1", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"(`+).+?\1", re.DOTALL)
DIRECTIVE = re.compile(r"^:::\s+([\w.]+)", re.MULTILINE)
# a ```python block and the HTML comments right above it: <!-- no-run: reason --> skips it,
# <!-- fast: old => new --> replaces `old` (once in the block) by `new` for the suite's fast run
PYTHON_BLOCK = re.compile(r"((?:^<!--[^\n]*-->\n)*)^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
MARK = re.compile(r"<!--\s*(no-run|fast):\s*(.*?)\s*-->")
# the reasons a block may be left out, each with what the block must then contain
NO_RUN_REASONS = {"needs PyTorch": "torch"}
SNIPPET_PAGES = [page for page in PAGES if "```python" in page.read_text()]


def _require_docs_tools():
    """Skip without mkdocs and mkdocstrings, except in CI, where their absence is a failure."""
    missing = []
    for name in DOCS_TOOLS:
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    if missing:
        message = f"{', '.join(missing)} not installed (pip install -e '.[docs]')"
        if in_ci():
            pytest.fail(f"{message}; CI must build the docs")
        pytest.skip(message)


def _public_modules():
    """Every importable module of the installed package whose name has no ``_`` part.

    setup.cfg's ``package_dir`` installs ``models/`` as ``tinygrad_rnn.models``, which an editable
    install keeps outside ``tinygrad_rnn.__path__``: the declared packages are walked as well.
    ``tinygrad_rnn.tools`` holds the command-line scripts, documented by their ``--help``.
    """
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    declared = config["options"]["packages"].split()
    names = {tinygrad_rnn.__name__}
    names.update(info.name for info in pkgutil.walk_packages(tinygrad_rnn.__path__, "tinygrad_rnn."))
    for package in declared:
        names.add(package)
        module = importlib.import_module(package)
        names.update(info.name for info in pkgutil.walk_packages(module.__path__, package + "."))
    return sorted(name for name in names
                  if not any(part.startswith("_") for part in name.split("."))
                  and name != "tinygrad_rnn.tools" and not name.startswith("tinygrad_rnn.tools."))


def _documented_modules():
    return {name for page in sorted((DOCS / "api").glob("*.md")) for name in DIRECTIVE.findall(page.read_text())}


def _blank(match):
    return re.sub(r"[^\n]", " ", match.group())


def _line(text, index):
    return text.count("\n", 0, index) + 1


def python_blocks(page):
    """The Python blocks of a page as the suite runs them.

    Returns:
        list: (line, code, skip reason or None) per block, ``fast`` replacements applied.
    Raises:
        AssertionError: a mark that is unknown, has no reason, or replaces text the block lacks.
    """
    text = page.read_text()
    blocks = []
    for match in PYTHON_BLOCK.finditer(text):
        shown = page.relative_to(ROOT) if page.is_relative_to(ROOT) else page.name
        where = f"{shown}:{_line(text, match.start(2)) - 1}"
        code, reason = match.group(2), None
        comments = match.group(1).splitlines()
        marks = [MARK.fullmatch(comment.strip()) for comment in comments]
        assert all(marks), f"{where}: unknown mark above a python block: {comments}"
        for mark in marks:
            kind, argument = mark.groups()
            if kind == "no-run":
                assert argument in NO_RUN_REASONS, f"{where}: no-run reason {argument!r} is not one of {NO_RUN_REASONS}"
                assert NO_RUN_REASONS[argument] in code, \
                    f"{where}: marked {argument!r}, but the block does not use {NO_RUN_REASONS[argument]}"
                reason = argument
            else:
                old, arrow, new = argument.partition(" => ")
                assert arrow and code.count(old) == 1, f"{where}: fast mark {argument!r} must replace text the " \
                                                       f"block holds once"
                code = code.replace(old, new)
        blocks.append((where, code, reason))
    return blocks


@pytest.mark.parametrize("page", SNIPPET_PAGES, ids=[str(p.relative_to(ROOT)) for p in SNIPPET_PAGES])
def test_every_python_block_of_the_readme_and_guides_runs(page, tmp_path, monkeypatch):
    blocks = python_blocks(page)
    if shutil.which("dot") is None and any("render(" in code for _, code, reason in blocks if reason is None):
        if in_ci():
            pytest.fail(f"{page.name} draws graphs, and CI must have Graphviz's dot")
        pytest.skip(f"{page.name} draws graphs: Graphviz's dot is missing (make dot)")
    if any("ptb." in code for _, code, reason in blocks if reason is None):
        ptb_or_skip()
    monkeypatch.chdir(tmp_path)  # the blocks write their files (graphs, checkpoints) here
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace = {"__name__": "__main__"}
    for where, code, reason in blocks:
        if reason is None:
            try:
                exec(compile(code, where, "exec"), namespace)
            except Exception as e:
                pytest.fail(f"the block at {where} raised {type(e).__name__}: {e}")


@pytest.mark.parametrize("marks, message", [
    ("<!-- no-run: too slow -->", "no-run reason 'too slow' is not one of"),
    ("<!-- no-run: needs PyTorch -->", "marked 'needs PyTorch', but the block does not use torch"),
    ("<!-- fast: y = 2 => y = 3 -->", "fast mark 'y = 2 => y = 3' must replace text the block holds once"),
    ("<!-- fast: x = 1 -->", "fast mark 'x = 1' must replace"),
    ("<!-- run it twice -->", "unknown mark above a python block"),
])
def test_python_block_marks_are_checked(tmp_path, marks, message):
    page = tmp_path / "page.md"
    page.write_text(f"{marks}\n```python\nx = 1\n```\n")
    with pytest.raises(AssertionError, match=re.escape(message)):
        python_blocks(page)


def test_python_block_marks_skip_or_shrink_the_block(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("<!-- no-run: needs PyTorch -->\n```python\nimport torch\n```\n\n"
                    "<!-- fast: fit(epochs=4) => fit(epochs=1) -->\n```python\ntrainer.fit(epochs=4)\n```\n"
                    "```python\nx = 1\n```\n")
    assert python_blocks(page) == [("page.md:2", "import torch\n", "needs PyTorch"),
                                   ("page.md:7", "trainer.fit(epochs=1)\n", None), ("page.md:10", "x = 1\n", None)]


def test_docs_build_strict_without_warnings(tmp_path):
    _require_docs_tools()
    site = tmp_path / "site"
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
               "--site-dir", str(site)]
    try:
        # the tutorials run in their fast setting (tests/test_tutorials.py checks them one by one)
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
                                env={**os.environ, "TINYGRAD_RNN_TUTORIAL_FAST": "1"})
    except subprocess.TimeoutExpired:
        pytest.fail(f"mkdocs build took over {BUILD_TIMEOUT_S} s")
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}{result.stderr}"
    # each ::: directive rendered its module (a module mkdocstrings cannot find fails the build above)
    html = "".join(page.read_text() for page in (site / "api").rglob("*.html"))
    unrendered = [name for name in sorted(_documented_modules()) if f'id="{name}"' not in html]
    assert not unrendered, f"modules without a heading in the built API reference: {unrendered}"


def test_the_docs_build_uses_only_public_names_of_its_tools():
    # a private name of griffe or mkdocstrings can change in any release and break the build silently
    tree = ast.parse((ROOT / "mkdocs_griffe.py").read_text())
    private = sorted({f"{node.lineno}: .{node.attr}" for node in ast.walk(tree) if isinstance(node, ast.Attribute)
                      and node.attr.startswith("_") and not node.attr.endswith("__")})
    assert not private, f"mkdocs_griffe.py uses private attributes: {private}"


def test_every_public_module_is_in_the_api_reference():
    missing = sorted(set(_public_modules()) - _documented_modules())
    assert not missing, f"add a '::: module' directive to a page of docs/api/ for: {missing}"


def test_readme_and_guides_links_resolve_inside_the_repository():
    broken = []
    for page in PAGES:
        text = page.read_text()
        # code is not a link (`x[i](j)` in a sample); blanking it keeps the line numbers
        prose = INLINE_CODE.sub(_blank, FENCED_CODE.sub(_blank, text))
        for pattern in LINK_TARGETS:
            for match in pattern.finditer(prose):
                target = match.group(1)
                if re.match(r"[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("#"):
                    continue  # a URL, mailto: or an anchor on the same page
                path = (page.parent / re.split(r"[#?]", target)[0]).resolve()
                where = f"{page.relative_to(ROOT)}:{_line(prose, match.start())}: {target}"
                if not path.is_relative_to(ROOT):
                    broken.append(f"{where} (outside the repository)")
                elif not path.exists():
                    broken.append(f"{where} (no such file)")
    assert not broken, "broken relative links:\n" + "\n".join(broken)


def test_readme_and_guides_cite_nothing_outside_the_repository():
    citations = [f"{page.relative_to(ROOT)}:{_line(text, match.start())}: {match.group()}"
                 for page in PAGES for text in [page.read_text()] for match in OUTSIDE_CITATION.finditer(text)]
    assert not citations, "the README and the guides must stand alone; they cite:\n" + "\n".join(citations)

"""The documentation: the site builds strictly, the API reference covers every public module, and the
README and the guides stand alone (their links resolve inside the repository, they cite nothing else)."""
import ast
import configparser
import importlib
import importlib.metadata
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import in_ci

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


def test_docs_build_strict_without_warnings(tmp_path):
    _require_docs_tools()
    site = tmp_path / "site"
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
               "--site-dir", str(site)]
    try:
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
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

"""Griffe extensions that let mkdocstrings read this repository as it is laid out and written.

``mkdocs.yml`` loads both classes (``extensions`` of the python handler); they change what the API
reference sees, never the package.
"""
import configparser
import re
from pathlib import Path

import griffe

_ROOT = Path(__file__).resolve().parent
# The Google sections griffe reads; a title is a whole line at the docstring's own indentation.
_SECTION_TITLE = re.compile(
    r"(Args|Arguments|Attributes|Examples?|Keyword Args|Other Parameters|Parameters|Raises|Receives|Returns"
    r"|Warns|Yields):"
)


def _mapped_packages():
    """The subpackages that setup.cfg's ``package_dir`` installs from other folders.

    Returns:
        dict: dotted name (str) -> folder (Path), e.g. ``tinygrad_rnn.models`` -> ``models/``.
    """
    config = configparser.ConfigParser()
    config.read(_ROOT / "setup.cfg")
    pairs = (line.split("=") for line in config["options"]["package_dir"].splitlines() if "=" in line)
    return {name.strip(): _ROOT / folder.strip() for name, folder in pairs}


class PackageDirs(griffe.Extension):
    """Adds ``tinygrad_rnn.models`` (folder ``models/``) and the like to the loaded package.

    Griffe finds submodules by walking the package's folder, so it misses the ones setup.cfg maps
    from elsewhere, and ``::: tinygrad_rnn.models`` would fail with "could not be found".
    """

    def on_package(self, *, pkg, loader, **kwargs):
        """Load each mapped subpackage of ``pkg`` with its submodules, under its installed name.

        Args:
            pkg (griffe.Module): the package griffe has just loaded.
            loader (griffe.GriffeLoader): the loader that loaded it.
            **kwargs: griffe's other hook arguments (unused).
        """
        for name, folder in _mapped_packages().items():
            parent, _, child = name.rpartition(".")
            if parent == pkg.path:
                # load the folder as a package of its own, then hang it under its installed name; its
                # members' paths follow their parent, so it must not stay a top-level package as well
                module = loader.load(folder, submodules=True, try_relative_path=False)
                del loader.modules_collection[module.name]
                module.name = child  # the folder's name need not be the installed one
                pkg.set_member(child, module)


class CompactSections(griffe.Extension):
    """Reads STYLE.md's compact Google sections, where ``Returns:`` directly follows ``Args:``.

    Griffe takes a section title only after a blank line and silently renders a title without one
    as plain text; this puts that blank line in the copy of each docstring that griffe parses.
    """

    def on_instance(self, *, obj, **kwargs):
        """Insert a blank line above each section title that lacks one (outside code fences).

        Args:
            obj (griffe.Object): the module, class, function or attribute just created.
            **kwargs: griffe's other hook arguments (unused).
        """
        if obj.docstring is None:
            return
        lines, fenced = [], False
        for line in obj.docstring.value.split("\n"):
            if line.lstrip().startswith("```"):
                fenced = not fenced
            if not fenced and lines and lines[-1].strip() and _SECTION_TITLE.fullmatch(line.rstrip()):
                lines.append("")
            lines.append(line)
        obj.docstring.value = "\n".join(lines)

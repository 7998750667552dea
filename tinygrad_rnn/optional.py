"""The optional packages: Graphviz's Python binding (``render``), tqdm (``ProgressBar``) and matplotlib
(``History``, ``plot_history`` and the tools' figures).

None of them is imported with the package or by a training run that does not use them. Each is
imported where it is first needed, and a missing one gets an error naming who needs it and the
pip extra that installs it (``dev`` installs all three). ``onednn.py`` raises the same error
(``missing``) for oneDNN's shared library, which it loads rather than imports.
"""
import importlib

EXTRAS = {"graphviz": "graph", "tqdm": "progress", "matplotlib": "plot"}


def require(module, where):
    """Import an optional package (or one of its modules), or say how to install it.

    Args:
        module (str): ``"graphviz"``, ``"tqdm"``, ``"matplotlib"`` or one of their modules
            (``"matplotlib.figure"``).
        where (str): who needs it, for the message (``"render"``).
    Returns:
        module: the imported module.
    Raises:
        KeyError: ``module`` belongs to none of the optional packages.
        ImportError: the package is not installed; the message names ``where`` and the extra,
            e.g. ``pip install 'tinygrad_rnn[plot]'``.
    """
    package = module.partition(".")[0]
    extra = EXTRAS[package]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise missing(package, extra, where) from None


def missing(package, extra, where):
    """The error for an optional package that is not installed (``onednn`` raises it for its shared library).

    Args:
        package (str): the package's name (``"tqdm"``, ``"onednn-cpu-gomp"``).
        extra (str): the pip extra of tinygrad_rnn that installs it.
        where (str): who needs it.
    Returns:
        ImportError: to raise; its message names ``where``, the package and the extra.
    """
    return ImportError(f"{where}: needs the optional package {package}, which is not installed: "
                       f"pip install 'tinygrad_rnn[{extra}]'", name=package)

"""Graph export: ``to_dot`` writes Graphviz DOT text (pure Python), ``render`` draws it with Graphviz.

Nodes are numbered in the order a breadth-first walk back from the outputs meets them
(``v0, v1, ...`` for Variables, ``f0, f1, ...`` for Functions, ``s0, s1, ...`` for collapsed
scopes), so the same graph always gives the same text. Functions created under
``name_scope`` are drawn inside nested ``subgraph cluster_...`` blocks, one per scope.
"""
import collections
import functools
import inspect
import os
import re
import shutil

from tinygrad_rnn.core import Parameter, Variable
from tinygrad_rnn.optional import require
from tinygrad_rnn.serialization import atomic_write

_FORMATS = ("svg", "png", "pdf")
_INSTALL_HINT = ("render: the Graphviz `dot` program was not found; install Graphviz: `apt-get install graphviz` "
                 "(Debian/Ubuntu), `brew install graphviz` (macOS), or `conda install graphviz`")
_MAX_VALUE_CHARS = 40


def to_dot(*outputs, verbose=True, collapse_scopes=False):
    """Describe the graph behind ``outputs`` in the Graphviz DOT language.

    Functions are boxes labelled with their class name (and, if ``verbose``, the arguments they
    were constructed with, e.g. ``axis=1``); Variables are ellipses labelled with their name and,
    if ``verbose``, shape and dtype; Parameters are shaded. Edges run input -> Function -> output;
    two nodes are joined by at most one edge, so ``x * x`` shows a single edge into ``Mul``.
    A Variable is drawn in the cluster of the scope its creator ran in; leaves stay outside.

    Args:
        *outputs (Variable): the graph ends; everything they depend on is drawn.
        verbose (bool): add shapes, dtypes and Function arguments to the labels.
        collapse_scopes (bool | int): ``False`` or ``0`` draws every node; an int ``d >= 1``
            draws each scope at nesting depth ``d`` (with everything inside it) as one node
            labelled with the scope name and its number of ops; ``True`` means ``1``. E.g. with
            steps built under ``name_scope('rnn')`` then ``name_scope('t3')``, ``2`` gives one
            node per time step inside the ``rnn`` cluster. The ``outputs`` are always drawn.
    Returns:
        str: a DOT ``digraph``.
    Raises:
        TypeError: an output is not a Variable, or ``collapse_scopes`` is not a bool or int.
        ValueError: no outputs, a negative ``collapse_scopes``, or a graph that ``backward``
            has freed.
    """
    if not outputs:
        raise ValueError("to_dot: give at least one output Variable")
    for y in outputs:
        if not isinstance(y, Variable):
            raise TypeError(f"to_dot: outputs must be Variables, got {type(y).__name__}")
    if not isinstance(collapse_scopes, int):
        raise TypeError(f"to_dot: collapse_scopes must be a bool or an int, got {type(collapse_scopes).__name__}")
    if collapse_scopes < 0:
        raise ValueError(f"to_dot: collapse_scopes must be >= 0, got {collapse_scopes}")
    return _DotWriter(verbose, int(collapse_scopes)).write(outputs)


class Rendered:
    """What ``render`` returns: the file written and its DOT source; notebooks show it inline.

    Attributes:
        path (str): the file written.
        source (str): the DOT text it was drawn from.
    """

    def __init__(self, path, source):
        self.path = path
        self.source = source

    def __repr__(self):
        return f"Rendered(path={self.path!r})"

    def _repr_svg_(self):
        return _pipe(self.source, "svg").decode("utf-8")


def render(*outputs, path, format="svg", **to_dot_kwargs):
    """Draw the graph behind ``outputs`` to a file with Graphviz.

    ``path`` is the exact file name written: no extension is added or checked, so
    ``render(y, path="loss.svg")`` writes ``loss.svg``. The file is written to a temporary
    name in the same directory and then renamed, so a reader never sees a partial file.

    Args:
        *outputs (Variable): the graph ends, as for ``to_dot``.
        path (str | os.PathLike): output file; its directory must exist.
        format (str): ``'svg'``, ``'png'`` or ``'pdf'``.
        **to_dot_kwargs (bool): ``verbose``, ``collapse_scopes`` (see ``to_dot``).
    Returns:
        Rendered: holds ``path`` and the DOT ``source``; has ``_repr_svg_`` for notebooks.
    Raises:
        ValueError: an unsupported ``format``.
        RuntimeError: Graphviz's ``dot`` program is missing (the message says how to install it).
        ImportError: the ``graphviz`` Python package is missing (``pip install 'tinygrad_rnn[graph]'``).
    """
    if format not in _FORMATS:
        raise ValueError(f"render: format must be one of {', '.join(_FORMATS)}, got {format!r}")
    source = to_dot(*outputs, **to_dot_kwargs)
    data = _pipe(source, format)
    path = os.fspath(path)
    with atomic_write(path) as f:
        f.write(data)
    return Rendered(path, source)


def _pipe(source, format):
    """Run ``dot -T<format>`` on ``source`` and return the bytes it prints."""
    if shutil.which("dot") is None:
        raise RuntimeError(_INSTALL_HINT)
    graphviz = require("graphviz", "render")  # imported here: to_dot and the rest of the package work without it
    try:
        return graphviz.Source(source).pipe(format=format)
    except graphviz.ExecutableNotFound:
        raise RuntimeError(_INSTALL_HINT) from None


def _walk(outputs):
    """Breadth-first walk back from ``outputs``.

    Returns:
        nodes: Variables and Functions in the order first met.
        edges: ``(source, target)`` pairs, input -> Function and Function -> output, in order.
    """
    nodes, edges, seen = [], [], set()
    queue = collections.deque()

    def meet(var):
        # nodes holds every visited object, so id() keys stay unique for the whole walk
        if id(var) in seen:
            return
        seen.add(id(var))
        nodes.append(var)
        f = var.creator
        if f is not None and id(f) not in seen:
            seen.add(id(f))
            nodes.append(f)
            queue.append(f)

    for y in outputs:
        meet(y)
    while queue:
        f = queue.popleft()
        if f.freed:
            raise ValueError(f"to_dot: the graph was freed by backward at {f.op}; draw it before backward, "
                             "or call backward(retain_graph=True)")
        for ref in f.outputs:
            y = ref()
            if y is not None:  # outputs nobody kept alive are gone and not drawn
                meet(y)
                edges.append((f, y))
        for x in f.inputs:
            meet(x)
            edges.append((x, f))
    return nodes, edges


class _DotWriter:
    """One ``to_dot`` call: assigns node ids and clusters, then prints the DOT text."""

    def __init__(self, verbose, collapse_depth):
        self.verbose = verbose
        self.depth = collapse_depth
        self.ids = {}  # id(node object) or collapsed scope path -> DOT node id
        self.counts = collections.Counter()

    def write(self, outputs):
        nodes, edges = _walk(outputs)
        roots = {id(y) for y in outputs}
        ops_in = collections.Counter(self._collapsed(f.scope) for f in nodes if not isinstance(f, Variable))
        members = collections.defaultdict(list)  # cluster path -> node lines, in walk order
        for node in nodes:
            if isinstance(node, Variable):
                scope = node.creator.scope if node.creator is not None else ()
                if self._collapsed(scope) and id(node) not in roots:
                    continue  # absorbed by its scope's node
            else:
                scope = node.scope
            cut = self._collapsed(scope)
            if cut:
                if cut not in self.ids:
                    n = ops_in[cut]
                    label = f"{cut[-1]}\n{n} op{'s' if n != 1 else ''}"
                    members[cut[:-1]].append(f'{self._new_id(cut, "s")} [label={_quote(label)}, '
                                             'shape=box3d, style=filled, fillcolor="#fdf3d0"]')
                if not isinstance(node, Variable):
                    continue
                scope = cut[:-1]
            members[scope].append(self._node_line(node))
        lines = ["digraph tinygrad_rnn {", '  graph [fontname="Helvetica"]',
                 '  node [fontname="Helvetica", fontsize=10]']
        lines += self._clusters(members)
        pairs = dict.fromkeys((self._end(a), self._end(b)) for a, b in edges)
        lines += [f"  {a} -> {b}" for a, b in pairs if a != b]
        lines.append("}")
        return "\n".join(lines) + "\n"

    def _collapsed(self, scope):
        """The prefix of ``scope`` that is drawn as one node, or ``()`` if none is."""
        return scope[:self.depth] if self.depth and len(scope) >= self.depth else ()

    def _new_id(self, key, kind):
        self.ids[key] = f"{kind}{self.counts[kind]}"
        self.counts[kind] += 1
        return self.ids[key]

    def _end(self, node):
        """DOT id of the drawn node that stands for ``node`` (itself or its collapsed scope)."""
        drawn = self.ids.get(id(node))
        if drawn is not None:
            return drawn
        scope = node.creator.scope if isinstance(node, Variable) else node.scope
        return self.ids[self._collapsed(scope)]

    def _node_line(self, node):
        if isinstance(node, Variable):
            parts = [node.name] if node.name is not None else []
            if self.verbose:
                parts.append(f"{node.shape} {node.dtype}")
            label = "\n".join(parts)
            style = ', style=filled, fillcolor="#d9d9d9"' if isinstance(node, Parameter) else ""
            return f"{self._new_id(id(node), 'v')} [label={_quote(label)}, shape=ellipse{style}]"
        parts = [type(node).__name__]
        if self.verbose:
            parts += [f"{k}={_format_value(getattr(node, k))}" for k in _hyper_names(type(node)) if hasattr(node, k)]
        label = "\n".join(parts)
        return f"{self._new_id(id(node), 'f')} [label={_quote(label)}, shape=box]"

    def _clusters(self, members):
        """Node lines nested in one ``subgraph cluster_...`` per scope, parents before children."""
        children = collections.defaultdict(list)
        for path in list(members):
            # register every missing ancestor, so a scope holding only sub-scopes still nests them
            while path and path not in children[path[:-1]]:
                children[path[:-1]].append(path)
                path = path[:-1]
        names, lines = set(), []
        stack = [((), 1, False)]
        while stack:
            path, indent, closing = stack.pop()
            pad = "  " * indent
            if closing:
                lines.append(pad[2:] + "}")
                continue
            if path:
                name = _cluster_id(path, names)
                lines += [f"{pad[2:]}subgraph {name} {{", f"{pad}label={_quote(path[-1])}",
                          f'{pad}style=rounded; color="#808080"']
                stack.append((path, indent, True))
            lines += [pad + line for line in members.get(path, ())]
            stack += [(child, indent + 1, False) for child in reversed(children.get(path, ()))]
        return lines


def _cluster_id(path, taken):
    """``cluster_`` plus the scope path with anything outside ``[A-Za-z0-9_]`` replaced by ``_``;
    a numeric suffix keeps two paths that sanitize alike (``a/b``, ``a_b``) apart."""
    base = "cluster_" + re.sub(r"\W", "_", "_".join(path), flags=re.ASCII)
    name, k = base, 2
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    taken.add(name)
    return name


@functools.cache
def _hyper_names(cls):
    """Names of a Function class's constructor arguments (its hyper-parameters)."""
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return tuple(p.name for p in inspect.signature(cls).parameters.values() if p.kind in kinds)


def _quote(text):
    """A DOT double-quoted string that shows ``text`` literally, one label line per text line."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + "\\n".join(escaped.splitlines()) + '"'


def _format_slice(s):
    text = ("" if s.start is None else str(s.start)) + ":" + ("" if s.stop is None else str(s.stop))
    return text if s.step is None else f"{text}:{s.step}"


def _format_index_part(p):
    if isinstance(p, slice):
        return _format_slice(p)
    if p is Ellipsis:
        return "..."
    return _format_value(p)


def _format_value(value):
    """Short text for a hyper-parameter; arrays show shape and dtype, not their (maybe huge) contents."""
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        if value.shape:
            return f"array{value.shape} {value.dtype}"
        value = value.item()  # NumPy scalars and 0-d arrays read as the number they hold
    if isinstance(value, slice) or value is Ellipsis:
        return _format_index_part(value)
    if isinstance(value, tuple) and any(isinstance(p, slice) or p is Ellipsis for p in value):
        text = "[" + ", ".join(_format_index_part(p) for p in value) + "]"
    elif isinstance(value, float):
        text = f"{value:g}"
    else:
        text = repr(value)
    return text if len(text) <= _MAX_VALUE_CHARS else text[:_MAX_VALUE_CHARS - 3] + "..."

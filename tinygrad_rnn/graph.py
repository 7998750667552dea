"""Graph export: ``to_dot`` writes Graphviz DOT text (pure Python), ``render`` draws it with Graphviz.

Nodes are numbered in the order a breadth-first walk back from the outputs meets them
(``v0, v1, ...`` for Variables, ``f0, f1, ...`` for Functions, ``s0, s1, ...`` for boxes of
repeated scopes, ``l0`` for the gradient legend), so the same graph always gives the
same text. Functions created under ``name_scope`` are drawn inside nested
``subgraph cluster_...`` blocks, one per scope. Sibling scopes named ``<stem><number>`` that
hold the same ops, each fed by the one before (the time steps ``t0, t1, ...`` of a sequence
layer), are repeats: the first is drawn in full, the rest as one box.
"""
import collections
import functools
import inspect
import math
import os
import re
import shutil

import numpy as np

from tinygrad_rnn import backend
from tinygrad_rnn.core import Parameter, Variable
from tinygrad_rnn.optional import require
from tinygrad_rnn.serialization import atomic_write

_FORMATS = ("svg", "png", "pdf")
_INSTALL_HINT = ("render: the Graphviz `dot` program was not found; install Graphviz: `apt-get install graphviz` "
                 "(Debian/Ubuntu), `brew install graphviz` (macOS), or `conda install graphviz`")
_MAX_VALUE_CHARS = 40
_NUMBERED = re.compile(r"(.*?)(\d+)")  # a scope name such as t12 -> stem t, number 12
# ColorBrewer "Oranges": pale for small gradients, dark for large ones, readable in grey print
_PALETTE = ("#fff5eb", "#fee6ce", "#fdd0a2", "#fdae6b", "#fd8d3c", "#f16913", "#d94801", "#a63603", "#7f2704")
_NOT_FINITE = "#1f78b4"  # outside the palette, so a NaN or inf gradient cannot pass for a large one
_LEGEND_STEPS = 5
_RETAIN_HINT = "call backward(retain_grad=True, retain_graph=True) before drawing"


def to_dot(*outputs, verbose=True, expand_all=False, grads=False):
    """Describe the graph behind ``outputs`` in the Graphviz DOT language.

    Functions are boxes labelled with their class name (and, if ``verbose``, the arguments they
    were constructed with, e.g. ``axis=1``); Variables are ellipses labelled with their name and,
    if ``verbose``, shape and dtype; Parameters are shaded. Edges run input -> Function -> output;
    two nodes are joined by at most one edge, so ``x * x`` shows a single edge into ``Mul``.
    A Variable is drawn in the cluster of the scope its creator ran in; leaves stay outside.

    Repeats: sibling scopes named by one stem and a number (``t0, t1, ...``, ``cell0, cell1``)
    that hold the same ops (same classes, same counts, same sub-scopes), each taking an input
    from the one before (as step t+1 takes the state of step t), form a run. Unless
    ``expand_all``, the first scope of a run is drawn in full and the others as one box labelled
    e.g. ``t1 … t34`` / ``34 repeats of t0`` / ``12 ops each``, with one edge per neighbour in
    and out. The ``outputs`` are always drawn.

    Gradient view (``grads=True``): every Variable that holds a ``.grad`` is filled by the RMS of
    that gradient on a log colour scale (pale = small, dark = large) and its label ends with the
    value; Parameters get a double outline; Variables without a gradient are drawn white with a
    dashed outline. A box of repeats shows a strip with one cell per collapsed scope, coloured by
    the largest gradient RMS among the Variables created in it, so vanishing gradients show as
    a fading strip. A legend node gives the scale's colours and values. The graph must still
    exist and intermediate gradients must be kept: run ``loss.backward(retain_grad=True,
    retain_graph=True)`` and then draw.

    Args:
        *outputs (Variable): the graph ends; everything they depend on is drawn.
        verbose (bool): add shapes, dtypes and Function arguments to the labels.
        expand_all (bool): draw every repeat in full instead of boxing all but the first.
        grads (bool): shade the Variables by the gradients a backward left in them.
    Returns:
        str: a DOT ``digraph``.
    Raises:
        TypeError: an output is not a Variable, or ``expand_all`` or ``grads`` is not a bool.
        ValueError: no outputs, a graph that ``backward`` has freed, or ``grads=True`` while an
            output holds no gradient (``backward`` ran without ``retain_grad=True``, or not yet).
    """
    if not outputs:
        raise ValueError("to_dot: give at least one output Variable")
    for y in outputs:
        if not isinstance(y, Variable):
            raise TypeError(f"to_dot: outputs must be Variables, got {type(y).__name__}")
    for flag, value in (("expand_all", expand_all), ("grads", grads)):
        if not isinstance(value, bool):
            raise TypeError(f"to_dot: {flag} must be a bool, got {type(value).__name__}")
    if grads:
        for k, y in enumerate(outputs):
            if y.grad is None:
                what = y.name if y.name is not None else f"{y.shape} {y.dtype}"
                raise ValueError(f"to_dot: grads=True, but output {k} ({what}) holds no gradient; {_RETAIN_HINT}")
    return _DotWriter(verbose, expand_all, grads).write(outputs)
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
        **to_dot_kwargs (bool): ``verbose``, ``expand_all``, ``grads`` (see ``to_dot``).
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


def _walk(outputs, grads):
    """Breadth-first walk back from ``outputs``; ``grads`` only words the error for a freed graph.

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
            hint = _RETAIN_HINT if grads else "draw it before backward, or call backward(retain_graph=True)"
            raise ValueError(f"to_dot: the graph was freed by backward at {f.op}; {hint}")
        for ref in f.outputs:
            y = ref()
            if y is not None:  # outputs nobody kept alive are gone and not drawn
                meet(y)
                edges.append((f, y))
        for x in f.inputs:
            meet(x)
            edges.append((x, f))
    return nodes, edges


class _Repeats:
    """A run of repeated sibling scopes drawn as one box: ``parent + (name,)`` for each name."""

    def __init__(self, parent, first, names, ops):
        self.parent = parent  # the cluster the box sits in
        self.first = first  # the name of the run's first scope, drawn in full
        self.names = names  # the boxed scope names, in number order
        self.index = {name: k for k, name in enumerate(names)}
        self.ops = ops  # Functions in each scope
        self.peaks = [None] * len(names)  # per scope: the largest gradient RMS of its Variables

    def label(self):
        """The lines of the box's label: span, count, size."""
        span = self.names[0] if len(self.names) == 1 else f"{self.names[0]} … {self.names[-1]}"
        count = len(self.names)
        return [span, f"{count} repeat{'s' if count != 1 else ''} of {self.first}",
                f"{self.ops} op{'s' if self.ops != 1 else ''} each"]


def _repeats(functions):
    """Find the runs of repeated sibling scopes among the scopes of ``functions``.

    Two scopes are repeats when they share a parent, their names are one stem plus a number
    (``t3``), they hold the same multiset of (sub-scope path, Function class), and the one with
    the next number takes an input made in the other, as step t+1 takes the state of step t.
    A run is a maximal chain of repeats in number order; only runs of two or more are boxed.
    Siblings that merely look alike (two dropouts around a layer, parallel branches) stay apart,
    since boxing them together would draw edges that go back and forth.

    Returns:
        dict: boxed scope path -> its ``_Repeats`` (one object per run).
    """
    contents = collections.defaultdict(collections.Counter)  # scope path -> (sub-path, class) -> count
    feeds = set()  # (sibling scope path, sibling scope path it sends an input to)
    for f in functions:
        name = type(f).__name__
        for k in range(1, len(f.scope) + 1):
            contents[f.scope[:k]][(f.scope[k:], name)] += 1
        for x in f.inputs:
            if x.creator is None:
                continue
            src, dst = x.creator.scope, f.scope
            k = next((k for k, (a, b) in enumerate(zip(src, dst)) if a != b), None)
            if k is not None:  # first level where the two scopes part: there they are siblings
                feeds.add((src[:k + 1], dst[:k + 1]))
    families = collections.defaultdict(list)  # (parent, stem) -> [(number, name)], in walk order
    for path in contents:
        m = _NUMBERED.fullmatch(path[-1])
        if m:
            families[path[:-1], m.group(1)].append((int(m.group(2)), path[-1]))
    boxed = {}
    for (parent, _), members in families.items():
        paths = [parent + (name,) for _, name in sorted(members)]
        start = 0
        for j in range(1, len(paths) + 1):
            if j < len(paths) and contents[paths[j]] == contents[paths[start]] and (paths[j - 1], paths[j]) in feeds:
                continue
            if j - start >= 2:
                run = _Repeats(parent, paths[start][-1], [p[-1] for p in paths[start + 1:j]],
                               sum(contents[paths[start]].values()))
                boxed.update((path, run) for path in paths[start + 1:j])
            start = j
    return boxed


class _Scale:
    """The log colour scale of the gradient view, spanning the positive finite RMS values given."""

    def __init__(self, values):
        positive = [v for v in values if v > 0 and math.isfinite(v)]
        self.lo, self.hi = (min(positive), max(positive)) if positive else (0.0, 0.0)

    def position(self, value):
        """Where ``value`` sits on the scale: 0 (palest) to 1 (darkest)."""
        if value <= 0:
            return 0.0
        if self.hi == self.lo:
            return 1.0
        return (math.log10(value) - math.log10(self.lo)) / (math.log10(self.hi) - math.log10(self.lo))

    def color(self, value):
        """``#rrggbb`` for a gradient RMS ``value``."""
        if not math.isfinite(value):
            return _NOT_FINITE
        x = self.position(value) * (len(_PALETTE) - 1)
        k = min(int(x), len(_PALETTE) - 2)
        a, b = _PALETTE[k], _PALETTE[k + 1]
        mix = [round(int(a[i:i + 2], 16) * (k + 1 - x) + int(b[i:i + 2], 16) * (x - k)) for i in (1, 3, 5)]
        return "#" + "".join(f"{c:02x}" for c in mix)

    def style(self, value):
        """DOT attributes that fill a node by ``value``, with a font that stays legible on it."""
        return f'style=filled, fillcolor="{self.color(value)}"' + (', fontcolor="white"' if self.dark(value) else "")

    def dark(self, value):
        """Whether the colour of ``value`` needs white text."""
        return not math.isfinite(value) or self.position(value) > 0.6

    def legend(self):
        """The values the legend shows: evenly spaced on the log scale, smallest first."""
        if self.hi == self.lo:
            return [self.hi]
        step = (math.log10(self.hi) - math.log10(self.lo)) / (_LEGEND_STEPS - 1)
        return [10 ** (math.log10(self.lo) + k * step) for k in range(_LEGEND_STEPS)]


def _rms(grad):
    """Root mean square of a gradient Variable, read to the host in float64 (0 for an empty one)."""
    g = backend.as_numpy(grad.data).astype(np.float64)
    return float(np.sqrt(np.mean(g * g))) if g.size else 0.0


class _DotWriter:
    """One ``to_dot`` call: assigns node ids and clusters, then prints the DOT text."""

    def __init__(self, verbose, expand_all, grads):
        self.verbose = verbose
        self.expand_all = expand_all
        self.grads = grads
        self.ids = {}  # id(node object) or id(_Repeats) -> DOT node id
        self.counts = collections.Counter()
        self.rms = {}  # id(Variable) -> RMS of its gradient, in the gradient view
        self.boxed, self.absorbed = {}, {}

    def write(self, outputs):
        nodes, edges = _walk(outputs, self.grads)
        functions = [f for f in nodes if not isinstance(f, Variable)]
        self.boxed = {} if self.expand_all else _repeats(functions)
        if self.grads:
            self.rms = {id(v): _rms(v.grad) for v in nodes if isinstance(v, Variable) and v.grad is not None}
            self.scale = _Scale(self.rms.values())
        roots = {id(y) for y in outputs}
        self.absorbed = self._absorbed(edges, roots)
        members = collections.defaultdict(list)  # cluster path -> node lines or boxes, in walk order
        for node in nodes:
            is_var = isinstance(node, Variable)
            scope = (node.creator.scope if node.creator is not None else ()) if is_var else node.scope
            run, k = self._box_of(scope)
            if run is None:
                if is_var and id(node) in self.absorbed:
                    continue
                members[scope].append(self._node_line(node))
                continue
            if id(run) not in self.ids:
                self._new_id(id(run), "s")
                members[run.parent].append(run)
            if is_var and id(node) in self.rms:
                rms, peak = self.rms[id(node)], run.peaks[k]
                if peak is None or not math.isfinite(rms) or rms > peak:  # a NaN or inf stays the peak
                    run.peaks[k] = rms
            if is_var and id(node) in roots:
                members[run.parent].append(self._node_line(node))
        lines = ["digraph tinygrad_rnn {", '  graph [fontname="Helvetica"]',
                 '  node [fontname="Helvetica", fontsize=10]']
        lines += self._clusters(members)
        if self.grads:
            lines += self._legend()
        pairs = dict.fromkeys((self._end(a), self._end(b)) for a, b in edges)
        lines += [f"  {a} -> {b}" for a, b in pairs if a != b]
        lines.append("}")
        return "\n".join(lines) + "\n"

    def _absorbed(self, edges, roots):
        """Variables made outside a run that only its boxed scopes use (the per-step slices of
        an input, the inputs of a hand-written unroll): drawn inside the box, so that its size
        does not grow with the number of repeats. Parameters and ``outputs`` stay visible.

        Returns:
            dict: id(Variable) -> the ``_Repeats`` whose box stands for it.
        """
        users = collections.defaultdict(list)  # id(Variable) -> (Variable, run or None) per use
        for a, b in edges:
            if isinstance(a, Variable):
                users[id(a)].append((a, self._box_of(b.scope)[0]))
        absorbed = {}
        for key, uses in users.items():
            var, run = uses[0]
            if run is None or key in roots or isinstance(var, Parameter) or any(r is not run for _, r in uses):
                continue
            made_in = var.creator.scope if var.creator is not None else ()
            if run.parent[:len(made_in)] == made_in:  # from around the run, not from its expanded first scope
                absorbed[key] = run
        return absorbed

    def _box_of(self, scope):
        """The run whose box holds ``scope`` and the index of the boxed scope in it, or (None, None)."""
        for k in range(1, len(scope) + 1):
            run = self.boxed.get(scope[:k])
            if run is not None:
                return run, run.index[scope[k - 1]]
        return None, None

    def _new_id(self, key, kind):
        self.ids[key] = f"{kind}{self.counts[kind]}"
        self.counts[kind] += 1
        return self.ids[key]

    def _end(self, node):
        """DOT id of the drawn node that stands for ``node`` (itself or the box of its scope)."""
        drawn = self.ids.get(id(node))
        if drawn is not None:
            return drawn
        if id(node) in self.absorbed:
            return self.ids[id(self.absorbed[id(node)])]
        scope = node.creator.scope if isinstance(node, Variable) else node.scope
        return self.ids[id(self._box_of(scope)[0])]

    def _node_line(self, node):
        if isinstance(node, Variable):
            parts = [node.name] if node.name is not None else []
            if self.verbose:
                parts.append(f"{node.shape} {node.dtype}")
            style = ', style=filled, fillcolor="#d9d9d9"' if isinstance(node, Parameter) else ""
            if self.grads:
                rms = self.rms.get(id(node))
                if rms is None:
                    style = ', style=dashed'
                else:
                    parts.append(f"grad RMS {rms:.2g}")
                    style = ", " + self.scale.style(rms)
                if isinstance(node, Parameter):
                    style += ", peripheries=2"
            label = "\n".join(parts)
            return f"{self._new_id(id(node), 'v')} [label={_quote(label)}, shape=ellipse{style}]"
        parts = [type(node).__name__]
        if self.verbose:
            parts += [f"{k}={_format_value(getattr(node, k))}" for k in _hyper_names(type(node)) if hasattr(node, k)]
        label = "\n".join(parts)
        return f"{self._new_id(id(node), 'f')} [label={_quote(label)}, shape=box]"

    def _box_line(self, run):
        """The box of a run; in the gradient view an HTML label adds one coloured cell per scope."""
        node = f"{self.ids[id(run)]} [shape=box3d, style=filled, fillcolor=\"#fdf3d0\""
        if not self.grads:
            label = "\n".join(run.label())
            return f"{node}, label={_quote(label)}]"
        width = len(run.names)
        rows = [f'<tr><td colspan="{width}">{_html(text)}</td></tr>' for text in run.label()]
        cells = "".join(f'<td width="8" height="14" border="1" color="#bdbdbd" '
                        f'bgcolor="{"white" if peak is None else self.scale.color(peak)}"></td>'
                        for peak in run.peaks)
        rows.append(f"<tr>{cells}</tr>")
        known = [p for p in run.peaks if p is not None and math.isfinite(p)]
        if known:
            text = f"grad RMS {min(known):.2g} … {max(known):.2g}"
            rows.append(f'<tr><td colspan="{width}">{_html(text)}</td></tr>')
        return f'{node}, label=<<table border="0" cellspacing="1" cellpadding="1">{"".join(rows)}</table>>]'

    def _legend(self):
        """One node: a row of swatches, the scale's colours with the gradient RMS each stands for."""
        values = self.scale.legend()
        if any(not math.isfinite(v) for v in self.rms.values()):
            values.append(math.nan)
        cells = []
        for v in values:
            ink = "white" if self.scale.dark(v) else "black"
            text = f"{v:.2g}" if math.isfinite(v) else "not finite"
            cells.append(f'<td bgcolor="{self.scale.color(v)}"><font color="{ink}">{text}</font></td>')
        title = f'<tr><td colspan="{len(values)}" border="0">gradient RMS (log scale)</td></tr>'
        return [f'  {self._new_id("legend", "l")} [shape=plaintext, label=<<table border="0" cellborder="1" '
                f'cellspacing="0" cellpadding="4">{title}<tr>{"".join(cells)}</tr></table>>]']

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
            lines += [pad + (line if isinstance(line, str) else self._box_line(line)) for line in members.get(path, ())]
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


def _html(text):
    """``text`` escaped for a Graphviz HTML-like label."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")

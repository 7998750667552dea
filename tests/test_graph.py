import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tinygrad_rnn import Parameter, Variable, graph, name_scope
from tinygrad_rnn import random as tg_random
from tinygrad_rnn import functions as F
from tinygrad_rnn import layers as L
from tinygrad_rnn.graph import render, to_dot

needs_dot = pytest.mark.skipif(shutil.which("dot") is None,
                               reason="Graphviz `dot` program not installed (apt-get install graphviz)")

N, D, H = 2, 3, 4


def _zeros(*shape):
    return np.zeros(shape, dtype=np.float32)


def _rnn(steps=3, scoped=True):
    """A tanh RNN unrolled ``steps`` times, step t under name_scope('rnn'), name_scope('t<t>')."""
    Wx, Wh = Parameter(_zeros(D, H), name="rnn/Wx"), Parameter(_zeros(H, H), name="rnn/Wh")
    b = Parameter(_zeros(H), name="rnn/b")
    h = Variable(_zeros(N, H), name="h0")
    for t in range(steps):
        x = Variable(_zeros(N, D), name=f"x{t}")
        if scoped:
            with name_scope("rnn"), name_scope(f"t{t}"):
                h = F.tanh(F.matmul(x, Wx) + F.matmul(h, Wh) + b)
        else:
            h = F.tanh(F.matmul(x, Wx) + F.matmul(h, Wh) + b)
    h.name = "h_last"
    return h


def _parse(dot):
    """Nodes (id -> (attributes, cluster path)), edges and cluster labels of ``to_dot`` output."""
    nodes, edges, labels, path = {}, [], {}, []
    for line in dot.splitlines()[1:-1]:
        line = line.strip()
        if m := re.fullmatch(r"subgraph (cluster_\w+) \{", line):
            path.append(m.group(1))
        elif line == "}":
            path.pop()
        elif m := re.fullmatch(r'label="(.*)"', line):
            labels[path[-1]] = m.group(1)
        elif m := re.fullmatch(r"(\w+) -> (\w+)", line):
            edges.append(m.groups())
        elif m := re.fullmatch(r"([vfsl]\d+) \[(.*)\]", line):
            assert m.group(1) not in nodes, f"node {m.group(1)} declared twice"
            nodes[m.group(1)] = (m.group(2), tuple(path))
    assert not path, "unbalanced braces"
    return nodes, edges, labels


def _label(attrs):
    """The text of a plain label, or the texts of an HTML label's cells joined by ``\\n``."""
    if m := re.search(r'label="((?:[^"\\]|\\.)*)"', attrs):
        return m.group(1)
    return "\\n".join(re.findall(r"<td[^>]*>([^<]+)</td>", attrs))


def _by_label(nodes, text):
    return [k for k, (attrs, _) in nodes.items() if _label(attrs) == text]


def test_function_labels_name_the_op_class_and_its_hyper_parameters():
    x = Variable(_zeros(N, 2 * H))
    a, b = F.split(x, 2, axis=1)
    y = F.concat([F.sigmoid(a), F.tanh(b)], axis=1)[:, 1:3] @ Variable(_zeros(2, H))
    labels = {_label(attrs) for attrs, _ in _parse(to_dot(y))[0].values()}
    assert {"Split\\ncuts=[4]\\naxis=1", "Concat\\naxis=1", "Sigmoid", "Tanh", "GetItem\\nindex=[:, 1:3]",
            "MatMul"} <= labels


def test_array_hyper_parameters_show_shape_and_dtype_not_contents():
    y = F.dropout(Variable(np.ones((N, H), np.float32)), p=0.5, generator=tg_random.Generator(0))
    assert "Dropout\\nscale=array(2, 4) float32" in to_dot(y)


def test_variable_labels_show_name_shape_and_dtype():
    x = Variable(_zeros(N, H), name="x")
    nodes, _, _ = _parse(to_dot(F.tanh(x)))
    assert _by_label(nodes, "x\\n(2, 4) float32") and _by_label(nodes, "(2, 4) float32")


def test_terse_labels_omit_shapes_and_hyper_parameters():
    x = Variable(_zeros(N, H), name="x")
    dot = to_dot(F.concat([x, x], axis=1), verbose=False)
    assert 'label="x"' in dot and 'label="Concat"' in dot and "float32" not in dot and "axis" not in dot


def test_parameters_are_shaded_and_plain_variables_are_not():
    W, x = Parameter(_zeros(D, H), name="W"), Variable(_zeros(N, D), name="x")
    nodes, _, _ = _parse(to_dot(x @ W))
    (w_node,), (x_node,) = _by_label(nodes, "W\\n(3, 4) float32"), _by_label(nodes, "x\\n(2, 3) float32")
    assert "fillcolor" in nodes[w_node][0] and "fillcolor" not in nodes[x_node][0]


def test_edges_run_from_inputs_through_the_function_to_its_output():
    x, y = Variable(_zeros(N, H), name="x"), Variable(_zeros(N, H), name="y")
    nodes, edges, _ = _parse(to_dot(x + y))
    (f,) = _by_label(nodes, "Add")
    (out,) = _by_label(nodes, "(2, 4) float32")
    assert sorted(edges) == sorted([(_by_label(nodes, "x\\n(2, 4) float32")[0], f),
                                    (_by_label(nodes, "y\\n(2, 4) float32")[0], f), (f, out)])


def test_outputs_nobody_kept_are_not_drawn():
    first = F.split(Variable(_zeros(N, 2 * H)), 2, axis=1)[0]  # the second piece is freed at once
    nodes, edges, _ = _parse(to_dot(first))
    assert len(nodes) == 3 and len(edges) == 2


def test_scoped_nodes_sit_in_nested_clusters_and_leaves_outside():
    nodes, _, labels = _parse(to_dot(_rnn(steps=2), expand_all=True))
    assert labels == {"cluster_rnn": "rnn", "cluster_rnn_t0": "t0", "cluster_rnn_t1": "t1"}
    (out,) = _by_label(nodes, "h_last\\n(2, 4) float32")
    assert nodes[out][1] == ("cluster_rnn", "cluster_rnn_t1")
    for leaf in ("rnn/Wx\\n(3, 4) float32", "h0\\n(2, 4) float32", "x0\\n(2, 3) float32"):
        assert nodes[_by_label(nodes, leaf)[0]][1] == ()
    assert all(path[:1] == ("cluster_rnn",) for attrs, path in nodes.values() if "shape=box" in attrs)


def test_cluster_ids_are_sanitized_and_never_merge_distinct_scopes():
    x = Variable(_zeros(N, H))
    with name_scope('layer 1/"odd"'):
        y = F.tanh(x)
    with name_scope("a/b"):
        y = F.tanh(y)
    with name_scope("a_b"):
        y = F.tanh(y)
    _, _, labels = _parse(to_dot(y))
    assert labels == {"cluster_a_b": "a_b", "cluster_a_b_2": "a/b", "cluster_layer_1__odd_": 'layer 1/\\"odd\\"'}


def _lstm_graph(steps, num_layers=1):
    """An ``L.LSTM`` layer over ``steps`` steps, composed from primitives, summed to a scalar."""
    lstm = L.LSTM(D, H, num_layers=num_layers, seed=0, fused=False)
    return F.sum(lstm(np.ones((N, steps, D), np.float32)))


def _walked(y):
    """Every Variable and Function behind ``y``."""
    return graph._walk([y], False)[0]


@pytest.mark.parametrize("steps", [3, 8, 35])
def test_time_steps_of_a_recurrent_layer_draw_the_first_in_full_and_the_rest_as_one_box(steps):
    y = _lstm_graph(steps)
    nodes, edges, labels = _parse(to_dot(y))
    full, _, full_labels = _parse(to_dot(y, expand_all=True))
    (box,) = [k for k in nodes if k.startswith("s")]
    assert _label(nodes[box][0]) == f"t1 … t{steps - 1}\\n{steps - 1} repeats of t0\\n12 ops each"
    assert nodes[box][1] == ("cluster_lstm",)
    assert labels == {"cluster_lstm": "lstm", "cluster_lstm_t0": "t0"}
    in_t0 = sorted(_label(attrs) for attrs, path in nodes.values() if path[-1:] == ("cluster_lstm_t0",))
    assert in_t0 == sorted(_label(attrs) for attrs, path in full.values() if path[-1:] == ("cluster_lstm_t0",))
    assert len(in_t0) == 27, "t0 keeps its 12 ops and their 15 outputs (Split makes 4)"
    assert len(full) == len(_walked(y)) and len(full_labels) == steps + 1, "expand_all draws every node"
    # the step inputs, h and c of t0, and the recurrent weight go in; the hidden states go to Stack
    (wh,) = _by_label(nodes, "cell0/Wh\\n(4, 16) float32")
    (stack,) = _by_label(nodes, "Stack\\naxis=1")
    assert wh in {a for a, b in edges if b == box} and (box, stack) in edges
    assert len(edges) == len(set(edges))


def test_the_box_keeps_the_drawing_the_same_size_for_any_number_of_steps():
    sizes = {steps: _parse(to_dot(_lstm_graph(steps))) for steps in (3, 10, 35)}
    assert len({(len(nodes), len(edges)) for nodes, edges, _ in sizes.values()}) == 1


def test_repeated_layers_are_boxed_as_a_whole_and_their_steps_inside_the_first():
    nodes, _, labels = _parse(to_dot(_lstm_graph(4, num_layers=2)))
    boxes = sorted(_label(nodes[k][0]) for k in nodes if k.startswith("s"))
    assert boxes == ["cell1\\n1 repeat of cell0\\n52 ops each", "t1 … t3\\n3 repeats of t0\\n12 ops each"]
    assert set(labels.values()) == {"lstm", "cell0", "t0"}


def _steps(*kinds):
    """A chain of one-op steps under name_scope('t<k>'), kind 't' a tanh and 's' a sigmoid."""
    h = Variable(_zeros(N, H), name="h0")
    for k, kind in enumerate(kinds):
        with name_scope(f"t{k}"):
            h = F.tanh(h) if kind == "t" else F.sigmoid(h)
    return h


def test_only_neighbours_with_the_same_ops_are_repeats():
    nodes, _, labels = _parse(to_dot(_steps("t", "t", "t", "s", "s", "t")))
    boxes = sorted(_label(nodes[k][0]) for k in nodes if k.startswith("s"))
    assert boxes == ["t1 … t2\\n2 repeats of t0\\n1 op each", "t4\\n1 repeat of t3\\n1 op each"]
    assert set(labels.values()) == {"t0", "t3", "t5"}
    assert to_dot(_steps("t", "s", "t", "s")) == to_dot(_steps("t", "s", "t", "s"), expand_all=True)


def test_look_alike_siblings_that_do_not_feed_each_other_are_not_repeats():
    x = Variable(_zeros(N, H), name="x")
    with name_scope("b0"):
        y0 = F.tanh(x)
    with name_scope("b1"):
        y1 = F.tanh(x)  # parallel to b0
    with name_scope("drop0"):
        z = F.tanh(y0 + y1)
    with name_scope("layer"):
        z = F.sigmoid(z)
    with name_scope("drop1"):
        z = F.tanh(z)  # like drop0, but fed by layer
    assert to_dot(z) == to_dot(z, expand_all=True)


def test_stacked_layers_separated_by_dropout_are_drawn_apart():
    from tinygrad_rnn.models import BetterLSTMLM
    model = BetterLSTMLM(7, 4, 4, seed=0, fused=False)
    ids = np.arange(2 * 6).reshape(2, 6) % 7
    nodes, _, labels = _parse(to_dot(model.loss(ids[:, :5], ids[:, 1:])))
    boxes = sorted(_label(nodes[k][0]).split("\\n")[0] for k in nodes if k.startswith("s"))
    assert boxes == ["t1 … t4", "t1 … t4"]
    assert {"lstm1", "lstm2", "drop0", "drop1", "drop2"} <= set(labels.values())


def test_scopes_without_a_number_are_never_repeats():
    h = Variable(_zeros(N, H))
    for name in ("a", "b", "step"):
        with name_scope(name):
            h = F.tanh(h)
    assert to_dot(h) == to_dot(h, expand_all=True)


def test_a_requested_output_inside_a_box_stays_visible():
    h = _steps("t", "t", "t")
    h.name = "h3"
    nodes, edges, _ = _parse(to_dot(h))
    (out,) = _by_label(nodes, "h3\\n(2, 4) float32")
    (box,) = [k for k in nodes if k.startswith("s")]
    assert nodes[out][1] == () and (box, out) in edges


def test_same_graph_gives_identical_text():
    assert to_dot(_rnn()) == to_dot(_rnn())
    h = _rnn()
    assert to_dot(h, expand_all=True) == to_dot(h, expand_all=True)
    assert to_dot(_lstm_graph(5)) == to_dot(_lstm_graph(5))
    loss = _known_grads()
    assert to_dot(loss, grads=True) == to_dot(loss, grads=True)


def _known_grads():
    """``loss = sum(a) + 10 sum(b) + 1000 sum(c)``: gradient RMS 1, 10 and 1000 for a, b and c."""
    a, b, c = (Parameter(np.ones((N, H), np.float32), name=name) for name in "abc")
    loss = F.sum(a) + F.sum(b) * 10.0 + F.sum(c) * 1000.0
    loss.backward(retain_grad=True, retain_graph=True)
    return loss


def _luminance(attrs):
    color = re.search(r'fillcolor="#(\w{6})"', attrs).group(1)
    r, g, b = (int(color[i:i + 2], 16) for i in (0, 2, 4))
    return 0.299 * r + 0.587 * g + 0.114 * b


def test_gradient_view_darkens_nodes_with_the_magnitude_of_their_gradient():
    nodes, _, _ = _parse(to_dot(_known_grads(), grads=True))
    a, b, c = (_by_label(nodes, f"{name}\\n(2, 4) float32\\ngrad RMS {rms}")[0]
               for name, rms in (("a", "1"), ("b", "10"), ("c", "1e+03")))
    assert _luminance(nodes[a][0]) > _luminance(nodes[b][0]) > _luminance(nodes[c][0])
    assert 'fillcolor="#fff5eb"' in nodes[a][0] and 'fillcolor="#7f2704"' in nodes[c][0], "the scale spans them"
    assert all("peripheries=2" in nodes[k][0] for k in (a, b, c)), "Parameters keep a mark of their own"
    (legend,) = [attrs for k, (attrs, _) in nodes.items() if k.startswith("l")]
    values = re.findall(r"<font[^>]*>([^<]+)</font>", legend)
    assert values == ["1", "5.6", "32", "1.8e+02", "1e+03"] and "gradient RMS (log scale)" in legend


def test_gradient_view_shows_a_box_fading_towards_the_first_steps():
    x = Variable(np.ones((N, H), np.float32), name="x")
    h = x
    for t in range(6):  # the gradient reaching step t is 0.1 ** (5 - t), exactly
        with name_scope(f"t{t}"):
            h = h * 0.1
    loss = F.sum(h)
    loss.backward(retain_grad=True, retain_graph=True)
    nodes, _, _ = _parse(to_dot(loss, grads=True))
    (box,) = [attrs for k, (attrs, _) in nodes.items() if k.startswith("s")]
    cells = re.findall(r'bgcolor="#(\w{6})"', box)
    lums = [_luminance(f'fillcolor="#{c}"') for c in cells]
    assert len(cells) == 5 and lums == sorted(lums, reverse=True) and len(set(lums)) == 5
    assert "grad RMS 0.0001 … 1" in box
    (first,) = [attrs for attrs, path in nodes.values() if path == ("cluster_t0",) and "ellipse" in attrs]
    assert _luminance(first) > max(lums), "the expanded first step is paler than every boxed one"


def test_gradient_view_draws_variables_without_a_gradient_neutral():
    logits = Parameter(np.zeros((N, 3), np.float32), name="logits")
    loss = F.softmax_cross_entropy(logits, np.array([0, 2], np.int32))
    loss.backward(retain_grad=True, retain_graph=True)
    nodes, _, _ = _parse(to_dot(loss, grads=True))
    (k,) = _by_label(nodes, "(2,) int32")  # the labels get no gradient
    assert "style=dashed" in nodes[k][0] and "fillcolor" not in nodes[k][0]


def test_gradient_view_marks_gradients_that_are_not_finite():
    x = Variable(np.zeros((N, H), np.float32), name="x")
    with np.errstate(divide="ignore"):
        loss = F.sum(F.log(x))
        loss.backward(retain_grad=True, retain_graph=True)
    nodes, _, _ = _parse(to_dot(loss, grads=True))
    (k,) = _by_label(nodes, "x\\n(2, 4) float32\\ngrad RMS inf")
    assert f'fillcolor="{graph._NOT_FINITE}"' in nodes[k][0]
    assert "not finite" in [attrs for key, (attrs, _) in nodes.items() if key.startswith("l")][0]


def test_gradient_view_without_gradients_says_how_to_keep_them():
    x = Parameter(np.ones((N, H), np.float32), name="x")
    loss = F.sum(F.tanh(x))
    with pytest.raises(ValueError, match=r"output 0 \(\(\) float32\) holds no gradient; "
                                         r"call backward\(retain_grad=True, retain_graph=True\)"):
        to_dot(loss, grads=True)
    loss.backward(retain_graph=True)  # the Parameter gets its gradient, the intermediates do not
    with pytest.raises(ValueError, match="holds no gradient"):
        to_dot(loss, grads=True)
    loss = F.sum(F.tanh(x))
    loss.backward(retain_grad=True)  # gradients kept, graph freed
    with pytest.raises(ValueError, match=r"freed by backward at sum; call backward\(retain_grad=True, "
                                         r"retain_graph=True\) before drawing"):
        to_dot(loss, grads=True)


def test_node_ids_count_up_per_kind_in_traversal_order():
    nodes, _, _ = _parse(to_dot(_rnn(steps=2, scoped=False)))
    for kind in "vf":
        ids = [k for k in nodes if k[0] == kind]
        assert sorted(ids, key=lambda k: int(k[1:])) == [f"{kind}{i}" for i in range(len(ids))]
    assert _by_label(nodes, "h_last\\n(2, 4) float32") == ["v0"] and _by_label(nodes, "Tanh")[0] == "f0"


def test_long_chain_does_not_hit_the_recursion_limit():
    y = Variable(_zeros(1))
    for _ in range(50_000):  # 50,000 ops and 50,001 Variables
        y = -y
    dot = to_dot(y, verbose=False)
    assert "v50000 [" in dot and "f49999 [" in dot and "v50001" not in dot


def test_every_edge_joins_declared_nodes_once():
    for options in ({}, {"verbose": False}, {"expand_all": True}):
        nodes, edges, _ = _parse(to_dot(_rnn(), **options))
        assert {end for edge in edges for end in edge} == set(nodes)
        assert len(edges) == len(set(edges))
    nodes, edges, _ = _parse(to_dot(_known_grads(), grads=True))
    assert {end for edge in edges for end in edge} == {k for k in nodes if not k.startswith("l")}


@needs_dot
@pytest.mark.parametrize("options", [{}, {"verbose": False}, {"expand_all": True}, {"grads": True}])
def test_dot_program_accepts_the_output(options):
    x = Variable(_zeros(N, H), name='back\\slash "quoted"\nname')
    with name_scope("é scope"):
        y = F.sum(F.tanh(x) + _rnn())
    y.backward(retain_grad=True, retain_graph=True)
    result = subprocess.run(["dot", "-Tsvg"], input=to_dot(y, **options), capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 0 and not result.stderr, result.stderr
    assert "<svg" in result.stdout


def test_to_dot_rejects_bad_arguments():
    x = Variable(_zeros(N))
    with pytest.raises(ValueError, match="at least one output"):
        to_dot()
    with pytest.raises(TypeError, match="must be Variables, got ndarray"):
        to_dot(x.data)
    with pytest.raises(TypeError, match="expand_all must be a bool, got int"):
        to_dot(x, expand_all=1)
    with pytest.raises(TypeError, match="grads must be a bool, got str"):
        to_dot(x, grads="yes")
    with pytest.raises(TypeError, match="collapse_scopes"):
        to_dot(x, collapse_scopes=2)  # replaced by the boxes of repeats and expand_all


@needs_dot
@pytest.mark.parametrize("fmt, magic", [("svg", b"<?xml"), ("png", b"\x89PNG"), ("pdf", b"%PDF")])
def test_render_writes_the_exact_path_in_each_format(tmp_path, fmt, magic):
    pytest.importorskip("graphviz")
    path = tmp_path / "graph.out"
    path.write_bytes(b"old")
    result = render(_rnn(steps=1), path=path, format=fmt)
    assert path.read_bytes().startswith(magic)
    assert os.listdir(tmp_path) == ["graph.out"], "no temporary file is left behind"
    assert result.path == str(path) and result.source == to_dot(_rnn(steps=1))


@needs_dot
def test_rendered_graph_shows_inline_as_svg(tmp_path):
    pytest.importorskip("graphviz")
    result = render(_rnn(steps=1), path=tmp_path / "g.png", format="png")
    assert "<svg" in result._repr_svg_()


def test_render_rejects_unknown_format(tmp_path):
    with pytest.raises(ValueError, match="svg, png, pdf.*'jpg'"):
        render(_rnn(steps=1), path=tmp_path / "g.jpg", format="jpg")


def test_render_without_dot_explains_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no dot in an empty directory
    with pytest.raises(RuntimeError, match="apt-get install graphviz.*brew install graphviz.*conda install graphviz"):
        render(_rnn(steps=1), path=tmp_path / "g.svg")
    assert not (tmp_path / "g.svg").exists()


def test_render_explains_how_to_install_when_dot_cannot_be_run(tmp_path, monkeypatch):
    pytest.importorskip("graphviz")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(graph.shutil, "which", lambda name: "/usr/bin/dot")  # found, yet not runnable
    with pytest.raises(RuntimeError, match="apt-get install graphviz"):
        render(_rnn(steps=1), path=tmp_path / "g.svg")


def test_render_without_graphviz_package_says_to_pip_install_its_extra(tmp_path, monkeypatch):
    monkeypatch.setattr(graph.shutil, "which", lambda name: "/usr/bin/dot")
    monkeypatch.setitem(sys.modules, "graphviz", None)  # makes `import graphviz` fail
    with pytest.raises(ImportError, match=r"^render: needs the optional package graphviz, .*"
                                          r"pip install 'tinygrad_rnn\[graph\]'$"):
        render(_rnn(steps=1), path=tmp_path / "g.svg")
    assert not (tmp_path / "g.svg").exists()


@needs_dot
def test_render_graph_tool_writes_the_documented_images(tmp_path, capsys):
    pytest.importorskip("graphviz")
    from tinygrad_rnn.tools import render_graph
    render_graph.main(["--out", str(tmp_path)])
    names = ["rnn_step.svg", "lstm_step.svg", "rnn_unrolled.svg", "rnn_unrolled_collapsed.svg", "lstm_layer.svg",
             "rnn_gradients.svg"]
    assert capsys.readouterr().out.split() == [str(tmp_path / name) for name in names]
    assert all((tmp_path / name).read_text().lstrip().startswith("<?xml") for name in names)


@pytest.mark.parametrize("layer, gates", [(L.LSTM, ["i", "f", "g", "o", "c", "h"]), (L.GRU, ["r", "z", "n", "h"]),
                                          (L.RNN, ["h"])])
def test_composed_steps_name_their_gates_the_books_way(layer, gates):
    kw = {} if layer is L.RNN else {"fused": False}
    hs = layer(D, H, seed=0, **kw)(np.ones((N, 2, D), np.float32))
    nodes, _, _ = _parse(to_dot(hs, expand_all=True))
    names = [_label(attrs).split("\\n")[0] for key, (attrs, _) in nodes.items() if key.startswith("v")]
    assert all(names.count(g) == 2 for g in gates), names  # one of each per step

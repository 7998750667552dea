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
        elif m := re.fullmatch(r"([vfs]\d+) \[(.*)\]", line):
            assert m.group(1) not in nodes, f"node {m.group(1)} declared twice"
            nodes[m.group(1)] = (m.group(2), tuple(path))
    assert not path, "unbalanced braces"
    return nodes, edges, labels


def _label(attrs):
    return re.match(r'label="((?:[^"\\]|\\.)*)"', attrs).group(1)


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
    nodes, _, labels = _parse(to_dot(_rnn(steps=2)))
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


def test_collapsing_depth_two_draws_one_node_per_time_step():
    h = _rnn(steps=3)
    full, _, _ = _parse(to_dot(h))
    nodes, edges, labels = _parse(to_dot(h, collapse_scopes=2))
    steps = sorted(_label(attrs) for k, (attrs, _) in nodes.items() if k.startswith("s"))
    assert steps == ["t0\\n5 ops", "t1\\n5 ops", "t2\\n5 ops"]
    assert labels == {"cluster_rnn": "rnn"} and len(nodes) < len(full)
    assert _by_label(nodes, "h_last\\n(2, 4) float32"), "the requested output stays visible"
    assert len(edges) == len(set(edges))


def test_collapse_true_draws_each_top_level_scope_as_one_node():
    nodes, edges, labels = _parse(to_dot(_rnn(steps=3), collapse_scopes=True))
    assert labels == {}
    assert [_label(attrs) for k, (attrs, _) in nodes.items() if k.startswith("s")] == ["rnn\\n15 ops"]
    # the 3 weights, 3 inputs and h0 each feed the step node once, however many steps use them
    assert len(edges) == len(set(edges)) == 8


def test_collapse_depth_beyond_every_scope_changes_nothing():
    h = _rnn(steps=2)
    assert to_dot(h, collapse_scopes=3) == to_dot(h)


def test_same_graph_gives_identical_text():
    assert to_dot(_rnn()) == to_dot(_rnn())
    h = _rnn()
    assert to_dot(h, collapse_scopes=2) == to_dot(h, collapse_scopes=2)


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
    for options in ({}, {"verbose": False}, {"collapse_scopes": 1}, {"collapse_scopes": 2}):
        nodes, edges, _ = _parse(to_dot(_rnn(), **options))
        assert {end for edge in edges for end in edge} == set(nodes)
        assert len(edges) == len(set(edges))


@needs_dot
@pytest.mark.parametrize("options", [{}, {"verbose": False}, {"collapse_scopes": True}, {"collapse_scopes": 2}])
def test_dot_program_accepts_the_output(options):
    x = Variable(_zeros(N, H), name='back\\slash "quoted"\nname')
    with name_scope("é scope"):
        y = F.tanh(x) + _rnn()
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
    with pytest.raises(ValueError, match=">= 0"):
        to_dot(x, collapse_scopes=-1)
    with pytest.raises(TypeError, match="bool or an int"):
        to_dot(x, collapse_scopes="t")


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
    names = ["rnn_step.svg", "lstm_step.svg", "rnn_unrolled.svg", "rnn_unrolled_collapsed.svg"]
    assert capsys.readouterr().out.split() == [str(tmp_path / name) for name in names]
    assert all((tmp_path / name).read_text().lstrip().startswith("<?xml") for name in names)

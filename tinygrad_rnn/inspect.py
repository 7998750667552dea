"""Seeing inside recurrent layers: the gradient norm through time and the gates of every step.

``gradient_flow`` runs one forward and one backward of a model's loss and returns, for every
recurrent layer (``RNN``, ``LSTM``, ``GRU``, or a cell run over a sequence with ``sequence``),
the norm of dL/dh_t at every step t of every stacked layer. ``gates`` runs a forward only and
returns the gate activations of every step. Both read what the graph holds anyway: a composed
layer (``fused=False``, and always the RNN) names its per-step Variables ``i, f, g, o, c, h`` /
``r, z, n, h`` / ``h``; a fused layer's op saves its activations for its backward, and the
gradient of its input projection gives each step's dL/dh_t. Nothing is recorded or computed
when these functions are not called.

Both leave the model as they found it: parameter gradients, carried states and dropout
generators are restored afterwards. A stateful layer starts from the state it carries, cut from
the graph that produced it, as truncated BPTT does. Dropout and ``test_mode`` follow the
caller's configuration.

A layer or cell run one ``step`` at a time in a Python loop (a decoder, say) is seen too: its
steps are ordered by the graph (each step's output comes after the one it was computed from).
Every ``step`` of one cell within one name scope counts as one run.
"""
import contextlib
import re
import typing

import numpy as np

from tinygrad_rnn.backend import as_numpy, get_array_module
from tinygrad_rnn.core import Function, Variable
from tinygrad_rnn.functions.linalg import MatMul
from tinygrad_rnn.functions.rnn import GRU, LSTM, GRUSequence, LSTMSequence
from tinygrad_rnn.graph import _walk
from tinygrad_rnn.layers.base import Layer
from tinygrad_rnn.layers.recurrent import _Cell, _Recurrent
from tinygrad_rnn.optional import require

_STEP_SCOPE = re.compile(r"t(\d+)")  # the scope of step t of a composed sequence (layers/recurrent.py)
_WH_INPUT = {LSTMSequence: 3, GRUSequence: 2}  # the position of Wh among the fused op's inputs
_NAMES = "i f g o r z n c h".split()  # the order of ``gates``' names, as the fused ops give them


class _Fused(typing.NamedTuple):
    """One run of a fused sequence op, taken before backward frees the op: its input projection
    ``xw`` and outputs ``hs``, ``h`` (Variables, None for an output nobody kept), ``Wh`` and the
    activations it saved (arrays)."""

    gru: bool
    xw: Variable
    Wh: object
    hs: Variable
    h: Variable
    activations: dict


def gradient_flow(model, *batch, loss=None):
    """The norm of dL/dh_t for every step t of every recurrent layer, from one forward and backward.

    The norm at step t is that of the whole (N, H) gradient (Frobenius: the batch together, not a
    mean per example); h_t is the hidden state a step outputs, all paths to the loss included
    (the next step, the layer above, the final state). Exact: a fused layer gives the same
    numbers as the composed graph with ``retain_grad`` within float64 rounding.

    Args:
        model (Layer): a model, or a recurrent layer itself.
        *batch (object): the arguments of the loss (arrays, usually).
        loss (callable, optional): ``loss(*batch) -> scalar Variable``; default ``model.loss``.
    Returns:
        dict: layer path (``"encoder/lstm"``; ``"."`` for ``model`` itself) -> float64 ndarray
        (num_layers, T) on the host, row k the k-th stacked layer (bottom first), column t step t.
    Raises:
        TypeError: ``model`` is not a Layer, it has no ``loss`` and none is given, or the loss
            is not a Variable.
        ValueError: the model holds no recurrent layer, the loss is not a scalar, it has no graph
            (``no_grad``), it does not depend on one of the layers, or a layer ran more than once in it.
    """
    where = "gradient_flow"
    layers = _recurrent_layers(where, model)
    run = _loss_function(where, model, loss)
    with _untouched(model):
        y = run(*batch)
        if not isinstance(y, Variable):
            raise TypeError(f"{where}: the loss must be a scalar Variable, got {type(y).__name__}")
        if y.size != 1:
            raise ValueError(f"{where}: the loss must be a scalar, got shape {y.shape}")
        runs = _runs(where, y, layers)
        y.backward(retain_grad=True)
        return {path: np.stack([_norms(_step_grads(runs[path, k])) for k in range(len(cells))])
                for path, cells in layers.items()}


def gates(model, *inputs, run=None):
    """The activations of every step of every recurrent layer, from one forward pass.

    Args:
        model (Layer): a model, or a recurrent layer itself.
        *inputs (object): the arguments of ``run``.
        run (callable, optional): ``run(*inputs) -> Variable``; default ``model.loss`` when the
            model has one, else the model itself (``gates(lstm, xs)``).
    Returns:
        dict: layer path (``"."`` for ``model`` itself) -> list, one dict per stacked layer
        (bottom first), name -> ndarray (T, N, H) on the host: ``i, f, g, o, c, h`` for an LSTM
        (gates after their sigmoid or tanh, cell state, hidden state), ``r, z, n, h`` for a GRU,
        ``h`` for an RNN.
    Raises:
        TypeError: ``model`` is not a Layer, or ``run`` does not return a Variable.
        ValueError: the model holds no recurrent layer, the result has no graph (``no_grad``), it
            does not depend on one of the layers, or a layer ran more than once in it.
    """
    where = "gates"
    layers = _recurrent_layers(where, model)
    if run is None:
        run = getattr(model, "loss", model)
    with _untouched(model):
        y = run(*inputs)
        if not isinstance(y, Variable):
            raise TypeError(f"{where}: run must return a Variable, got {type(y).__name__}")
        runs = _runs(where, y, layers)
        return {path: [_activations(runs[path, k]) for k in range(len(cells))] for path, cells in layers.items()}


def plot_gradient_flow(flows, path, title=None):
    """Draw gradient norms through time, one curve per entry, overlaid on a log scale.

    Args:
        flows (dict): label -> (T,) or (num_layers, T) array (``gradient_flow``'s values, or
            rows of them); a 2-D entry draws one curve per row, labelled ``label [k]``.
        path (str | os.PathLike): the file to write; its suffix (.png, .svg) chooses the format.
        title (str, optional): the figure's title.
    Raises:
        ValueError: ``flows`` is empty, or an entry is not 1-D or 2-D.
        ImportError: matplotlib is not installed.
    """
    if not flows:
        raise ValueError("plot_gradient_flow: flows is empty")
    curves = []
    for label, values in flows.items():
        values = np.asarray(values, dtype=np.float64)
        if values.ndim not in (1, 2):
            raise ValueError(f"plot_gradient_flow: {label!r} has shape {values.shape}; expected (T,) or "
                             "(num_layers, T)")
        rows = [values] if values.ndim == 1 else list(values)
        curves += [(label if len(rows) == 1 else f"{label} [{k}]", row) for k, row in enumerate(rows)]
    figure = require("matplotlib.figure", "plot_gradient_flow").Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = figure.subplots()
    for label, row in curves:
        ax.semilogy(np.arange(len(row)), row, label=label)
    ax.set_xlabel("time step t")
    ax.set_ylabel("||dL/dh_t||")
    if title:
        ax.set_title(title)
    ax.legend()
    ax.grid(True, which="major", alpha=0.3)
    figure.savefig(path)


def plot_gates(activations, path, example=0, title=None):
    """Draw each gate of one example as a heatmap: time across, hidden units down.

    Args:
        activations (dict): name -> (T, N, H) array, one stacked layer of ``gates``.
        path (str | os.PathLike): the file to write; its suffix (.png, .svg) chooses the format.
        example (int): the row n of the batch to draw.
        title (str, optional): the figure's title.
    Raises:
        ValueError: ``activations`` is empty, an entry is not (T, N, H) or the shapes differ.
        IndexError: ``example`` is outside the batch.
        ImportError: matplotlib is not installed.
    """
    if not activations:
        raise ValueError("plot_gates: activations is empty")
    shapes = {name: np.shape(a) for name, a in activations.items()}
    if len(set(shapes.values())) != 1 or len(next(iter(shapes.values()))) != 3:
        raise ValueError(f"plot_gates: expected arrays of one shape (T, N, H), got {shapes}")
    steps, n, hidden = next(iter(shapes.values()))
    if not -n <= example < n:
        raise IndexError(f"plot_gates: example {example} is outside a batch of N={n}")
    figure = require("matplotlib.figure", "plot_gates").Figure(
        figsize=(len(activations) * (1.8 + 0.06 * steps), 2.2 + 0.12 * hidden), layout="constrained")
    axes = figure.subplots(1, len(activations), squeeze=False)[0]
    for ax, (name, a) in zip(axes, activations.items()):
        values = np.asarray(as_numpy(a))[:, example].T  # (H, T): time runs left to right
        # sigmoid gates lie in [0, 1]; tanh values, c and h may be negative
        low = 0.0 if values.min() >= 0 else -max(1.0, float(np.abs(values).max()))
        high = 1.0 if low == 0.0 else -low
        image = ax.imshow(values, aspect="auto", cmap="viridis" if low == 0.0 else "RdBu_r", vmin=low, vmax=high,
                          interpolation="nearest")
        ax.set_title(name)
        ax.set_xlabel("t")
        figure.colorbar(image, ax=ax, fraction=0.08)
    axes[0].set_ylabel("hidden unit")
    if title:
        figure.suptitle(title)
    figure.savefig(path)


def _recurrent_layers(where, model):
    """Layer path -> cells, bottom first, of every sequence layer and every cell outside one."""
    if not isinstance(model, Layer):
        raise TypeError(f"{where}: model must be a Layer, got {type(model).__name__}")
    layers, inside = {}, set()
    for path, layer in model._named_layers():  # a layer comes before its sub-layers
        if isinstance(layer, _Recurrent):
            layers[path] = layer.cells
            inside.update(id(cell) for cell in layer.cells)
        elif isinstance(layer, _Cell) and id(layer) not in inside:
            layers[path] = [layer]
    if not layers:
        raise ValueError(f"{where}: {type(model).__name__} holds no recurrent layer (RNN, LSTM, GRU or a cell)")
    return layers


def _loss_function(where, model, loss):
    if loss is not None:
        return loss
    if not hasattr(model, "loss"):
        raise TypeError(f"{where}: {type(model).__name__} has no loss method; pass loss=callable(*batch) "
                        "returning a scalar Variable")
    return model.loss


@contextlib.contextmanager
def _untouched(model):
    """Run with the model's gradients cleared and carried states cut from their graphs; put back
    the gradients, the carried states and the dropout generators afterwards."""
    params = list(model.params())
    grads = [p.grad for p in params]
    carried = [(layer, layer.state) for layer in model.layers() if layer.state is not None]
    generators = {path: g.state_dict() for path, g in model.generators().items()}
    model.cleargrads()
    for layer, state in carried:
        layer.state = tuple(Variable(s.data) for s in state)
    try:
        yield
    finally:
        for p, g in zip(params, grads):
            p.grad = g
        for layer in model.layers():
            layer.state = None
        for layer, state in carried:
            layer.state = state
        for path, g in model.generators().items():
            g.load_state_dict(generators[path])


def _runs(where, output, layers):
    """(layer path, k) -> the run of the k-th cell in ``output``'s graph: the fused op, or
    {t: {name: Variable or array}} for steps (composed, or one step op a step)."""
    cell_of = {id(cell.Wh): (path, k) for path, cells in layers.items() for k, cell in enumerate(cells)}
    if output.creator is None:
        raise ValueError(f"{where}: the result has no graph (computed under no_grad, or from no parameter)")
    found = {}  # (path, k) -> list of runs
    steps, owner = {}, {}  # the scope of one composed call -> its steps, and its (path, k)
    loops = {}  # the scope of step-by-step calls -> {"owners": {(path, k)}, name: [Variable or step op]}
    nodes, _ = _walk([output], grads=False)
    for f in nodes:
        if not isinstance(f, Function):
            continue
        if type(f) in _WH_INPUT:
            Wh = f.inputs[_WH_INPUT[type(f)]]
            if id(Wh) in cell_of:
                hs, h = (ref() for ref in f.outputs[:2])
                found.setdefault(cell_of[id(Wh)], []).append(
                    _Fused(isinstance(f, GRUSequence), f.inputs[0], Wh.data, hs, h, f.activations()))
            continue
        match = _STEP_SCOPE.fullmatch(f.scope[-1]) if f.scope else None
        if match is None:  # outside a sequence's steps: a step of a Python loop, or no step at all
            loop = loops.setdefault(f.scope, {"owners": set()})
            if isinstance(f, MatMul) and id(f.inputs[1]) in cell_of:
                loop["owners"].add(cell_of[id(f.inputs[1])])
            if type(f) in (LSTM, GRU):
                loop.setdefault("ops", []).append(f)
            for ref in f.outputs:
                y = ref()
                if y is not None and y.name:
                    loop.setdefault(y.name, []).append(y)
            continue
        call, t = f.scope[:-1], int(match.group(1))
        if isinstance(f, MatMul) and id(f.inputs[1]) in cell_of:
            owner[call] = cell_of[id(f.inputs[1])]
        for ref in f.outputs:
            y = ref()
            if y is not None and y.name:
                steps.setdefault(call, {}).setdefault(t, {}).setdefault(y.name, []).append(y)
    for call, key in owner.items():
        run = {t: {name: v[0] for name, v in step.items()} for t, step in sorted(steps[call].items())}
        # a layer run twice in one scope names every step's Variables twice: each is a run
        runs = max(len(v) for step in steps[call].values() for v in step.values())
        found.setdefault(key, []).extend([run] * runs)
    for scope, loop in loops.items():
        if loop["owners"]:
            key, run = _loop_run(where, layers, scope, loop)
            found.setdefault(key, []).append(run)
    for path, cells in layers.items():
        for k in range(len(cells)):
            count = len(found.get((path, k), ()))
            if count == 0:
                raise ValueError(f"{where}: the result does not depend on the recurrent layer "
                                 f"{_cell_name(layers, path, k)!r}")
            if count > 1:
                raise ValueError(f"{where}: the recurrent layer {_cell_name(layers, path, k)!r} ran {count} times "
                                 "in the graph; inspect one run at a time")
    return {key: runs[0] for key, runs in found.items()}


def _cell_name(layers, path, k):
    return path if len(layers[path]) == 1 else f"{path} (cell{k})"


def _loop_run(where, layers, scope, loop):
    """((path, k), {t: {name: Variable or array}}) of the steps one cell ran one at a time in
    ``scope``; a step's values come after the previous step's in the graph (higher generation).
    A step op gives every step's activations; its ``h`` Variables (for their gradients) are the
    named outputs, of which the last may be missing: a final h nobody used got no gradient."""
    owners = sorted(loop.pop("owners"))
    name = _cell_name(layers, *owners[0])
    if len(owners) > 1:
        names = " and ".join(repr(_cell_name(layers, *key)) for key in owners)
        raise ValueError(f"{where}: the recurrent layers {names} ran step by step in one name scope "
                         f"({'/'.join(scope) or 'the top level'}); call each as cell(x, state) or layer.step, "
                         "which give each its own scope")
    ops = sorted(loop.pop("ops", ()), key=lambda op: op.generation)
    named = {n: sorted(vs, key=lambda v: v.generation) for n, vs in loop.items() if n in _NAMES}
    if ops:
        steps = [op.activations() for op in ops]
        hs = named.get("h", [])
        if len(hs) not in (len(steps), len(steps) - 1):
            raise ValueError(f"{where}: {name!r} ran {len(steps)} steps but {len(hs)} of its outputs h were found")
        for step, h in zip(steps, hs):
            step["h"] = h
        return owners[0], dict(enumerate(steps))
    lengths = {n: len(vs) for n, vs in named.items()}
    if "h" not in named or len(set(lengths.values())) != 1:
        raise ValueError(f"{where}: the steps of {name!r} do not all reach the result "
                         f"({', '.join(f'{n}: {c}' for n, c in lengths.items()) or 'no h'} of its steps)")
    return owners[0], {t: {n: vs[t] for n, vs in named.items()} for t in range(lengths["h"])}


def _activations(run):
    """name -> (T, N, H) host array of one run."""
    if isinstance(run, _Fused):
        return {name: as_numpy(a) for name, a in run.activations.items()}
    names = sorted(run[0], key=_NAMES.index)
    return {name: np.stack([as_numpy(getattr(step[name], "data", step[name])) for step in run.values()])
            for name in names}


def _grad(v):
    """The gradient a Variable kept (``retain_grad``), zeros when none reached it (or for an
    array: a step's output that nothing used)."""
    if not isinstance(v, Variable):
        return get_array_module(v).zeros_like(v)
    return get_array_module(v.data).zeros_like(v.data) if v.grad is None else v.grad.data


def _step_grads(run):
    """dL/dh_t (T, N, H) of one run after ``backward(retain_grad=True)``.

    A composed run kept each h_t's gradient. A fused op kept the gradients of its outputs (hs and
    the final h) and of its input projection xw; the recurrence its backward walks gives the rest.
    """
    if not isinstance(run, _Fused):
        return np.stack([as_numpy(_grad(step["h"])) for step in run.values()])
    dxw, Wh, saved = run.xw.grad.data, run.Wh, run.activations
    xp = get_array_module(dxw)
    size = Wh.shape[0]
    ghs = xp.zeros(dxw.shape[:2] + (size,), dtype=dxw.dtype) if run.hs is None else _grad(run.hs)
    total = xp.empty_like(ghs)
    total[-1] = ghs[-1] if run.h is None or run.h.grad is None else ghs[-1] + run.h.grad.data
    for t in reversed(range(len(total) - 1)):
        if not run.gru:
            total[t] = dxw[t + 1] @ Wh.T + ghs[t]
        else:
            # the GRU's step t+1 reaches h_t directly (through z) and through h_t @ Wh, whose
            # gradient equals xw's except in the n block, scaled there by the reset gate
            dhw = dxw[t + 1].copy()
            dhw[:, 2 * size:] *= saved["r"][t + 1]
            total[t] = total[t + 1] * saved["z"][t + 1] + dhw @ Wh.T + ghs[t]
    return as_numpy(total)


def _norms(grads):
    """(T,) float64 Frobenius norms of the (N, H) slices of a (T, N, H) array."""
    return np.linalg.norm(grads.reshape(len(grads), -1).astype(np.float64), axis=1)

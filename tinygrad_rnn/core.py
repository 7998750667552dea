"""Variable, Parameter, Function, the backward engine and the configuration contexts.

A call of a Function on Variables runs its ``forward`` on raw arrays and, while gradients
are enabled, records itself as the creator of its outputs. ``Variable.backward`` walks the
recorded graph in decreasing generation order with a heap (no recursion), calling each
Function's ``backward`` once.

Plain backward passes hand raw arrays to ``Function.backward``. With ``create_graph=True``
the same ``backward`` code receives Variables instead: the formulas are written with
operators and methods that arrays and Variables share (``*``, ``@``, ``.T``, ``.reshape``,
``.sum``) plus ``Function.arg``/``Function.out`` and ``dual``, so one implementation both
computes gradients fast and records them for higher-order derivatives.
"""
import contextlib
import contextvars
import heapq
import itertools
import re
import typing
import weakref

import numpy as np

from tinygrad_rnn import backend


class _Settings(typing.NamedTuple):
    enable_backprop: bool = True
    train: bool = True
    anomaly: bool = False
    debug: bool = False
    scope: tuple = ()
    compiled_kernels: bool = True


# One value per thread and per asyncio task (contextvars), as in Chainer and PyTorch: a thread
# evaluating under no_grad() leaves a training thread recording its graph.
_settings = contextvars.ContextVar("tinygrad_rnn_settings", default=_Settings())


class _ConfigView:
    """Read-only view of the settings of the current thread or context (``Config.train``, ...).

    Settings change only through ``using_config`` and the context managers built on it; each
    thread (and each asyncio task) starts from the defaults and sees only its own changes.
    """

    __slots__ = ()

    def __getattr__(self, name):
        try:
            return getattr(_settings.get(), name)
        except AttributeError:
            raise AttributeError(f"Config has no setting {name!r}; settings: {', '.join(_Settings._fields)}") from None

    def __setattr__(self, name, value):
        raise AttributeError(f"Config is read-only: use `with using_config({name!r}, value):`")


Config = _ConfigView()


@contextlib.contextmanager
def _setting(name, value):
    """``using_config`` without the checks, for the context managers below that pass known values."""
    token = _settings.set(_settings.get()._replace(**{name: value}))
    try:
        yield
    finally:
        _settings.reset(token)


def using_config(name, value):
    """Context manager: one setting for the current thread or context inside the block.

    Args:
        name (str): one of ``enable_backprop``, ``train`` (False: dropout is the identity, as
            under ``test_mode()``), ``anomaly``, ``debug``, ``scope``, ``compiled_kernels`` (False:
            NumPy runs what the ``cpu`` and ``onednn`` extras would, where installed (the list is
            ``tinygrad_rnn.compiled``'s): the same bits in float64, float32 rounding apart for the
            layers' steps and products, the same bits always for the optimizers and the scatter-add
            of embed_id's and getitem's gradients).
        value (object): the value inside the block.
    Raises:
        AttributeError: an unknown setting.
        TypeError: a value of the wrong type (a bool, or for ``scope`` a tuple of names).
    """
    if name not in _Settings._fields:
        raise AttributeError(f"using_config: unknown setting {name!r}; settings: {', '.join(_Settings._fields)}")
    if name == "scope" and not (isinstance(value, tuple) and all(isinstance(part, str) for part in value)):
        raise TypeError(f"using_config: scope must be a tuple of names, got {value!r}")
    if name != "scope" and not isinstance(value, bool):
        raise TypeError(f"using_config: {name} must be True or False, got {value!r}")
    return _setting(name, value)


def no_grad():
    """Context manager: ops run without recording a graph (evaluation, generation)."""
    return _setting("enable_backprop", False)


def test_mode():
    """Context manager: layers and functions behave as at test time (dropout is the identity).

    The one train/test switch (``Config.train``), per thread and context: layers have no mode
    of their own.
    """
    return _setting("train", False)


def detect_anomaly():
    """Context manager: raise ``FloatingPointError`` at the first Function whose forward or
    backward produces NaN or Inf, naming the Function (reads every result back: slow)."""
    return _setting("anomaly", True)


def debug_mode():
    """Context manager: ops also check what costs a host read, such as label and id ranges.

    Outside it, ids and labels are validated where data enters (the batch sources, the data
    sets), so a training step never reads device values back; NumPy still refuses an id out of
    range in ``embed_id`` and ``softmax_cross_entropy``, while CuPy's indexing would wrap it.
    """
    return _setting("debug", True)


def name_scope(name):
    """Context manager: Functions created inside are tagged with this scope (nested scopes
    form a path such as ``('lstm1', 't3')``); ``graph.to_dot`` draws each scope as a cluster."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name_scope: name must be a non-empty string, got {name!r}")
    return _setting("scope", _settings.get().scope + (name,))


def _to_array(data, where="Variable"):
    """Validate ``data`` and return it as an array; Python numbers and lists become float32.

    NumPy's own subclasses whose operators mean something else are refused: ``np.matrix``, whose
    ``*`` is a matrix product, and masked arrays, whose mask the ops would drop. Any other
    subclass (``np.memmap``, the tests' read guards) is kept as it is: its operators must keep
    NumPy's elementwise meaning.
    """
    if isinstance(data, np.matrix):
        raise TypeError(f"{where}: np.matrix {data.shape} is not accepted (its * is a matrix product); "
                        "pass np.asarray(m), whose ops are elementwise, and F.matmul for the product")
    elif isinstance(data, np.ma.MaskedArray):
        raise TypeError(f"{where}: a masked array {data.shape} is not accepted (the mask would be dropped); "
                        "pass m.filled(value) or the unmasked entries")
    elif isinstance(data, np.ndarray) or backend.is_cupy_array(data):
        array = data
    elif isinstance(data, np.generic):
        array = np.asarray(data)
    elif isinstance(data, (bool, int, float, list, tuple)):
        try:
            array = np.asarray(data, dtype=np.float32)
        except (ValueError, TypeError) as e:
            raise TypeError(f"{where}: data must be a numeric array, got a ragged or non-numeric "
                            f"{type(data).__name__} ({e})") from None
    else:
        raise TypeError(f"{where}: data must be a NumPy/CuPy array or a Python number, "
                        f"got {type(data).__name__}")
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{where}: data must be numeric (bool, int or float), got dtype {array.dtype}")
    return array


class Variable:
    """A node of the graph: an array, its gradient and the Function that created it.

    Args:
        data (ndarray | number | list): NumPy or CuPy array of any shape; Python numbers and
            lists become float32 arrays.
        name (str, optional): shown by ``repr`` and in graphs.
    Raises:
        TypeError: ``data`` is not numeric (strings, objects, ragged lists), or is an ``np.matrix``
            or a masked array (see ``as_variable``).
    """

    __slots__ = ("data", "name", "grad", "creator", "generation", "__weakref__")
    __array_priority__ = 200  # so that ndarray <op> Variable defers to Variable's reflected operator

    def __init__(self, data, name=None):
        if type(data) is not np.ndarray or data.dtype.kind not in "biuf":
            data = _to_array(data, type(self).__name__)
        self.data = data
        self.name = name
        self.grad = None
        self.creator = None
        self.generation = 0

    shape = property(lambda self: self.data.shape, doc="Tuple of array dimensions.")
    ndim = property(lambda self: self.data.ndim, doc="Number of dimensions.")
    size = property(lambda self: self.data.size, doc="Number of elements.")
    dtype = property(lambda self: self.data.dtype, doc="Array dtype.")

    def __len__(self):
        if self.data.ndim == 0:
            raise TypeError("len() of a 0-d Variable")
        return len(self.data)

    def __iter__(self):
        # without it, iteration falls back to indexing 0, 1, ... until an IndexError, and
        # list() of a 0-d Variable would be [] where NumPy refuses to iterate a 0-d array
        if self.data.ndim == 0:
            raise TypeError("iteration over a 0-d Variable")
        return (self[i] for i in range(len(self.data)))

    def __repr__(self):
        head = type(self).__name__.lower()
        body = str(self.data).replace("\n", "\n" + " " * (len(head) + 1))
        tail = f", name={self.name!r}" if self.name else ""
        return f"{head}({body}, shape={self.shape}, dtype={self.dtype}, device={backend.device_of(self.data)}{tail})"

    def cleargrad(self):
        """Forget the accumulated gradient."""
        self.grad = None

    def unchain(self):
        """Cut the link to the creator: this Variable becomes a leaf."""
        self.creator = None

    def unchain_backward(self):
        """Cut every link of the graph behind this Variable, so that the graph is freed once
        nothing else refers to it (what truncated BPTT needs after each backward).

        The other outputs of every op behind it become leaves too: a sequence op's final
        state, carried into the next window, must not lead back into this one. Works on a
        graph that ``backward`` has already freed."""
        stack = [self.creator] if self.creator is not None else []
        seen = set(stack)
        self.creator = None
        while stack:
            f = stack.pop()
            for ref in f.outputs:
                y = ref()
                if y is not None:
                    y.creator = None
            for parent in f.parents():
                if parent not in seen:
                    seen.add(parent)
                    stack.append(parent)
            if not f.freed:
                for x in f.inputs:
                    x.creator = None

    def to_cpu(self):
        """Move data (and gradient) to the CPU in place; returns self."""
        self.data = backend.as_numpy(self.data)
        if self.grad is not None:
            self.grad.to_cpu()
        return self

    def to_gpu(self):
        """Move data (and gradient) to the GPU in place; returns self.

        Raises:
            RuntimeError: no GPU available.
        """
        self.data = backend.as_cupy(self.data)
        if self.grad is not None:
            self.grad.to_gpu()
        return self

    def backward(self, retain_grad=False, create_graph=False, grad=None, retain_graph=None):
        """Accumulate d(self)/d(x) into ``x.grad`` for every Variable ``x`` behind self.

        Afterwards the graph is freed (every Function drops what it saved for backward), as in
        PyTorch, unless ``retain_graph``: a second backward through it raises an error, and a
        truncated-BPTT loop must call ``unchain_backward()`` so that the carried state does not
        lead back into the freed window.

        Args:
            retain_grad (bool): also keep gradients of intermediate Variables.
            create_graph (bool): record the backward pass, so that gradients are Variables
                with a graph of their own (for higher-order derivatives).
            grad (ndarray | Variable, optional): upstream gradient, same shape and device as self;
                required unless self has exactly one element. It is cast to self's dtype.
            retain_graph (bool, optional): keep the graph for another backward; defaults to
                ``create_graph``.
        Raises:
            ValueError: self has more than one element and no ``grad`` is given, or ``grad``
                has the wrong shape.
            TypeError: ``grad`` lies on another device than self.
            RuntimeError: the walk reaches a graph an earlier backward freed (nothing is
                accumulated or freed then; an op that already wrote over what it saved, see
                ``Function.final``, refuses another backward with an error of its own).
        """
        xp = backend.get_array_module(self.data)
        if grad is None:
            if self.data.size != 1:
                raise ValueError(f"backward: output has shape {self.shape}; give grad= of that shape "
                                 "(only a one-element output has an implicit gradient of 1)")
            seed = xp.ones_like(self.data)
        else:
            seed = grad.data if isinstance(grad, Variable) else _to_array(grad, "backward")
            if seed.shape != self.shape:
                raise ValueError(f"backward: grad has shape {seed.shape}, output has shape {self.shape}")
            if backend.device_of(seed) != backend.device_of(self.data):
                raise TypeError(f"backward: grad on {backend.device_of(seed)}, output on "
                                f"{backend.device_of(self.data)}; move grad to the output's device")
            # every gradient keeps its input's dtype: the fused GPU kernels take one dtype
            seed = seed.astype(self.dtype, copy=False)
        keep = create_graph if retain_graph is None else retain_graph
        with _setting("enable_backprop", bool(create_graph)):
            _run_backward(self, Variable(seed) if create_graph else seed, retain_grad, create_graph, keep)

    # Methods shared with ndarray, so backward formulas work on both (see the module docstring).
    @property
    def T(self):
        """Reversed axes (``transpose()``)."""
        return _fn.transpose(self)

    def reshape(self, *shape):
        """``F.reshape``; accepts ``reshape(2, 3)`` or ``reshape((2, 3))``."""
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = shape[0]
        return _fn.reshape(self, tuple(shape))

    def transpose(self, *axes):
        """``F.transpose``; accepts ``transpose(1, 0)`` or ``transpose((1, 0))``; no axes reverses."""
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = axes[0]
        return _fn.transpose(self, tuple(axes) if axes else None)

    def sum(self, axis=None, keepdims=False):
        """``F.sum``."""
        return _fn.sum(self, axis, keepdims)

    def __neg__(self):
        return _fn.neg(self)

    def __add__(self, other):
        return _fn.add(self, other)

    def __radd__(self, other):
        return _fn.add(other, self)

    def __sub__(self, other):
        return _fn.sub(self, other)

    def __rsub__(self, other):
        return _fn.sub(other, self)

    def __mul__(self, other):
        return _fn.mul(self, other)

    def __rmul__(self, other):
        return _fn.mul(other, self)

    def __truediv__(self, other):
        return _fn.div(self, other)

    def __rtruediv__(self, other):
        return _fn.div(other, self)

    def __pow__(self, exponent):
        return _fn.pow(self, exponent)

    def __matmul__(self, other):
        return _fn.matmul(self, other)

    def __rmatmul__(self, other):
        return _fn.matmul(other, self)

    def __getitem__(self, index):
        return _fn.getitem(self, index)


class Parameter(Variable):
    """A Variable that an optimizer updates (weights, biases); drawn shaded in graphs."""

    __slots__ = ()


def as_variable(x):
    """Return ``x`` if it is a Variable, else wrap it.

    Args:
        x (Variable | ndarray | number | list): ``np.matrix`` (whose ``*`` is a matrix product)
            and masked arrays (whose mask the ops would drop) are refused; any other ndarray
            subclass is kept as it is, so its operators must keep NumPy's elementwise meaning.
    Returns:
        Variable: ``x`` itself, or a new leaf holding its data.
    Raises:
        TypeError: ``x`` is not numeric, or is an ``np.matrix`` or a masked array.
    """
    return x if isinstance(x, Variable) else Variable(x)


def _snake(name):
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


class Function:
    """Base class of differentiable ops.

    Subclasses implement ``forward(*arrays)`` (return one array or a tuple) and
    ``backward(*grads)`` (one gradient per output; return one per input, ``None`` where an
    input takes no gradient). Inside ``backward`` read inputs and outputs with ``arg(i)`` and
    ``out(i)``: they are arrays in a plain backward pass and Variables under
    ``create_graph=True``, so a backward written with shared operators is itself differentiable.

    Class attributes:
        op (str): name used in error messages (default: the class name in snake_case).
        int_inputs (tuple): positions that may hold integer arrays (labels, ids).
        twice_differentiable (bool): whether ``backward`` may run under ``create_graph``.
        fresh_grads (bool): every gradient array ``backward`` returns is new and its own (no view
            of ``gy``, of a saved array or of another returned gradient), so the engine may add
            another gradient of the same input into it in place.

    Attributes:
        final (bool): set by the engine before each ``backward``: True when the walk frees the
            graph afterwards (no ``retain_graph``), so ``backward`` may write over arrays that
            ``forward`` saved; an op that does must refuse to run ``backward`` again (a walk
            refused after it ran leaves those arrays used).
    """

    int_inputs = ()
    twice_differentiable = True
    fresh_grads = False
    final = False
    generation = 0
    scope = ()
    freed = False  # set by a backward without retain_graph, which drops what the op saved
    _called = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "op" not in cls.__dict__:
            cls.op = _snake(cls.__name__)

    def __call__(self, *inputs):
        if self._called:
            raise RuntimeError(f"{self.op}: this {type(self).__name__} instance was already called; create a new "
                               "instance for every call (an op keeps what its backward needs on itself)")
        self._called = True
        inputs = [x if isinstance(x, Variable) else Variable(_to_array(x, self.op)) for x in inputs]
        xs = [x.data for x in inputs]
        on_cpu = isinstance(xs[0], np.ndarray)
        for i, x in enumerate(xs):
            if isinstance(x, np.ndarray) is not on_cpu or (not on_cpu and x.device != xs[0].device):
                devices = ", ".join(sorted({backend.device_of(a) for a in xs}))
                raise TypeError(f"{self.op}: inputs on different devices ({devices})")
            if x.dtype.kind != "f" and i not in self.int_inputs:
                raise TypeError(f"{self.op}: input {i} has dtype {x.dtype}; expected a float array")
        try:
            ys = self.forward(*xs)
        except (ValueError, IndexError) as e:  # NumPy's words, prefixed with the op and its input shapes
            shapes = ", ".join(str(x.shape) for x in xs)
            kind = ValueError if isinstance(e, ValueError) else IndexError
            raise kind(f"{self.op}: {e} (input shapes {shapes})") from None
        if type(ys) is not tuple:
            ys = (ys,)
        outputs = [Variable(y) for y in ys]
        settings = _settings.get()
        if settings.anomaly:
            _check_finite(self, ys, "forward")
        if settings.enable_backprop:
            generation = inputs[0].generation if len(inputs) == 1 else max([x.generation for x in inputs])
            self.generation = generation
            generation += 1
            for y in outputs:
                y.creator = self
                y.generation = generation
            self.inputs = inputs
            self.outputs = [weakref.ref(y) for y in outputs]
            self.scope = settings.scope
            if len(outputs) > 1:  # a dead output's zero gradient needs its shape and dtype
                self.output_specs = [(y.shape, y.dtype) for y in ys]
        return outputs if len(outputs) > 1 else outputs[0]

    def parents(self):
        """The Functions that created this one's inputs (also after ``backward`` freed it).

        Returns:
            list[Function]: in the order of the inputs.
        """
        if self.freed:
            return self._parents
        return [x.creator for x in self.inputs if x.creator is not None]

    def _free(self):
        """Drop everything forward saved and the inputs; keep the links ``unchain_backward`` walks."""
        # one new dict: the old one, with the saved arrays and the inputs, goes at once
        parents = [x.creator for x in self.inputs if x.creator is not None]
        self.__dict__ = {"freed": True, "_called": True, "_parents": parents, "outputs": self.outputs,
                         "generation": self.generation, "scope": self.scope}

    def arg(self, i):
        """Input ``i`` for use in ``backward``: an array, or a Variable under ``create_graph``."""
        x = self.inputs[i]
        return x if _settings.get().enable_backprop else x.data

    def out(self, i=0):
        """Output ``i`` for use in ``backward``: an array, or a Variable under ``create_graph``."""
        y = self.outputs[i]()
        return y if _settings.get().enable_backprop else y.data

    def forward(self, *xs):
        raise NotImplementedError

    def backward(self, *gys):
        raise NotImplementedError


def dual(func, *xs):
    """Apply ``func`` inside a backward formula: recorded on Variables, plain on arrays.

    Args:
        func (Function): a fresh op instance.
        *xs (ndarray | Variable): arrays (plain backward) or Variables (``create_graph=True``).
    Returns:
        ndarray | tuple | Variable: what ``func.forward`` returns for arrays, what ``func(*xs)``
        returns for Variables.
    """
    if isinstance(xs[0], Variable):
        return func(*xs)
    return func.forward(*xs)


def _check_finite(func, arrays, where):
    for i, a in enumerate(arrays):
        if a is not None:
            a = a.data if isinstance(a, Variable) else a
            xp = backend.get_array_module(a)
            if a.dtype.kind == "f" and not bool(xp.isfinite(a).all()):
                raise FloatingPointError(f"{func.op}: {where} produced NaN or Inf "
                                         f"({'output' if where == 'forward' else 'gradient'} {i}, shape {a.shape})")


def _accumulate(var, g, create_graph):
    if create_graph:
        var.grad = g if var.grad is None else var.grad + g
    else:
        var.grad = Variable(g if var.grad is None else var.grad.data + g)


def _zeros_for(func, i, y, create_graph):
    if y is not None:
        g = backend.get_array_module(y.data).zeros_like(y.data)
    else:
        shape, dtype = func.output_specs[i]
        g = backend.get_array_module(func.inputs[0].data).zeros(shape, dtype)
    return Variable(g) if create_graph else g


def _freed_error(f):
    return RuntimeError(
        f"{f.op}: backward reached a graph that an earlier backward freed (what {f.op} saved for backward "
        "is gone). In truncated BPTT call loss.unchain_backward() after each backward, so that the carried "
        "state does not lead back into the old window; to backpropagate through one graph twice, pass "
        "retain_graph=True to the earlier backward")


def _add_grad(entry, gx, fresh):
    """Add ``gx`` to a pending entry's gradient, in place where one of the two arrays is the engine's own.

    An entry's array is its own (``entry[2]``) when the engine made it (a sum) or a Function
    with ``fresh_grads`` returned it: no one else holds it until its creator runs, so adding into
    it cannot change a gradient seen elsewhere (a retained ``.grad``, a view passed on). The sum
    is the same either way (addition commutes); recorded sums (``create_graph``) never go in place.
    """
    g = entry[1]
    if isinstance(g, Variable) or g.dtype != gx.dtype:  # recorded, or a promoting sum: as before
        g = g + gx
    elif entry[2]:
        g += gx  # a NumPy scalar (a 0-d sum) is rebound, not changed: hence the assignment below
    elif fresh:
        gx += g
        g = gx
    else:
        g = g + gx
    entry[1], entry[2] = g, not isinstance(g, Variable)


def _run_backward(root, seed, retain_grad, create_graph, retain_graph):
    # pending: id(Variable) -> [Variable, gradient summed so far, whether that array is the engine's
    # own]; an entry is consumed when its creator runs, so intermediate gradients are freed as the
    # walk goes on.
    pending = {id(root): [root, seed, False]}
    heap, seen, order, done = [], set(), itertools.count(), []
    push, pop, anomaly = heapq.heappush, heapq.heappop, _settings.get().anomaly
    if root.creator is not None:
        heap.append((-root.creator.generation, next(order), root.creator))
        seen.add(root.creator)
    while heap:
        f = pop(heap)[2]
        if f.freed:
            raise _freed_error(f)
        if create_graph and not f.twice_differentiable:
            raise NotImplementedError(f"{f.op}: backward with create_graph=True is not supported")
        gys = []
        for i, ref in enumerate(f.outputs):
            y = ref()
            entry = None if y is None else pending.pop(id(y), None)
            if entry is None:
                gys.append(_zeros_for(f, i, y, create_graph))
            else:
                gys.append(entry[1])
                if retain_grad:
                    _accumulate(y, entry[1], create_graph)
        f.final = not retain_graph
        gxs = f.backward(*gys)
        if not isinstance(gxs, (tuple, list)):
            gxs = (gxs,)
        inputs = f.inputs
        if len(gxs) != len(inputs):
            raise RuntimeError(f"{f.op}: backward returned {len(gxs)} gradients for {len(inputs)} inputs")
        if anomaly:
            _check_finite(f, gxs, "backward")
        fresh = f.fresh_grads and not create_graph
        for x, gx in zip(inputs, gxs):
            if gx is None:
                continue
            if gx.shape != x.data.shape:
                raise RuntimeError(f"{f.op}: backward returned a gradient of shape {gx.shape} "
                                   f"for an input of shape {x.data.shape}")
            key = id(x)
            entry = pending.get(key)
            if entry is None:
                pending[key] = [x, gx, fresh]
                creator = x.creator
                if creator is not None and creator not in seen:
                    seen.add(creator)
                    push(heap, (-creator.generation, next(order), creator))
            else:
                _add_grad(entry, gx, fresh)
        done.append(f)
    for var, g, _ in pending.values():
        _accumulate(var, g, create_graph)
    if not retain_graph:  # only after a complete walk: a refused backward leaves the graph as it was
        for f in done:
            f._free()


from tinygrad_rnn import functions as _fn  # noqa: E402  (the ops need Variable and Function defined above)

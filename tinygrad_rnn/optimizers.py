"""Optimizers (SGD, MomentumSGD, AdaGrad, RMSprop, Adam) and their pre-update hooks (gradient clipping).

Usage::

    opt = Adam(lr=1e-3).setup(model)      # model: a Layer (anything with ``namedparams()``)
    opt.add_hook(GradientClipping(0.25))  # optional: runs at the start of every update
    loss.backward()
    opt.update()                          # hooks, then every parameter that has a gradient, in place
    model.cleargrads()

Parameter arrays (``p.data``) are owned and updated in place. Once set up, the optimizer keeps the
parameters of each dtype and device in one flat buffer (``tinygrad_rnn.packing``): every ``p.data``
becomes a view of it, of the same shape and values, so that an update is a dozen whole-buffer
operations instead of a dozen per parameter (or, with the ``cpu`` extra, one compiled pass over a
group's CPU buffers: ``tinygrad_rnn._cpu_updates``, the same operations, so the same bits); the
state arrays follow at the first update. A ``p.data`` replaced later (``load_state_dict``,
``to_gpu``, an assignment) is noticed at the next update, which packs the parameters again. A group
in which some parameter has no gradient in a step is updated parameter by parameter, and so are
parameters whose data share memory (packing would part them): by the same formulas on arrays of
their own, so both ways give the same bits.

Gradient arrays (``p.grad.data``) are read only: the engine may hand the same array to several
parameters or give a broadcast view. The update copies them into a buffer of its own, in the
parameter's dtype, times the clipping scale when the last hook is a ``GradientClipping`` (one
pass for both), and computes there, in place, each operation rounding as in the formula it
spells out. Nothing here reads a device value back to the host. Learning-rate schedules live in
``tinygrad_rnn.training.schedules``.
"""
import numpy as np

from tinygrad_rnn import compiled, packing
from tinygrad_rnn.backend import as_cupy, as_numpy, device_of, get_array_module
from tinygrad_rnn.checks import number
from tinygrad_rnn.core import Variable
from tinygrad_rnn.phases import mark

_NORM_EPS = 1e-6  # clip_grads' default: keeps the clipping scale finite for a zero norm
_KERNELS = "tinygrad_rnn._cpu_updates"


class _Group:
    """Parameters of one dtype and device whose data are views of one flat buffer (packed on creation).

    The gradient buffer, the work buffer and the state buffers of the same layout come with the
    first update that takes the group whole.
    """

    def __init__(self, members):
        self.names = [name for name, _ in members]
        self.params = [p for _, p in members]
        self.shapes = [p.shape for p in self.params]
        self.data, parts = packing.pack(self.params[0].data, self.shapes, [p.data for p in self.params])
        for p, part in zip(self.params, parts):
            p.data = part
        self.grad = self.grads = self.work = None
        self.state = {}  # slot name -> (flat buffer, its views), the views also in Optimizer.state

    def gather(self, factor):
        """Copy the members' gradients (times ``factor``) into the gradient buffer and return it."""
        if self.grad is None:
            self.grad = packing.buffer(self.data, self.shapes)
            self.grads = packing.views(self.grad, self.shapes)
        packing.fill(self.grads, [p.grad.data for p in self.params], factor)
        return self.grad


def _aliased(pairs):
    """The ids of the parameters whose data shares memory with another parameter's (packing would part them)."""
    out = set()
    for members in packing.groups(pairs).values():
        xp = get_array_module(members[0][1].data)
        for i, (_, p) in enumerate(members):
            for _, q in members[i + 1:]:
                if xp.may_share_memory(p.data, q.data):
                    out.update((id(p), id(q)))
    return out


class Optimizer:
    """Base class: walks the target's parameters and keeps per-parameter state arrays.

    Subclasses name their state arrays in ``slots``, their hyper-parameters in ``hyper`` (checkpoints
    compare them), and implement ``_coefficients`` (the scalars of a step) and ``_update_one`` (the
    step on NumPy or CuPy arrays); ``_kernel`` names the same step in ``tinygrad_rnn._cpu_updates``,
    one compiled pass over a group's CPU buffers where the ``cpu`` extra is installed (a subclass
    that changes the step sets it to None). Hooks (``add_hook``) run in the order they were added at
    the start of every ``update``, on the gradients it is about to apply (Chainer's pre-update
    hooks): a wrapper that changes the gradients first, such as
    ``distributed.DistributedOptimizer``, has them run on its result. The last hook may instead hand
    the update a factor for every gradient (``GradientClipping.gradient_scale``), which the update
    applies as it copies the gradients.

    Args:
        lr (float): learning rate > 0; schedules change ``self.lr`` between updates.
        weight_decay (float): L2 penalty coefficient >= 0; ``weight_decay * p`` is added to
            each gradient before the update (the coupled form, as in classic SGD).
    Raises:
        TypeError, ValueError: a hyper-parameter that is not a finite number in its range.
    """

    slots = ()
    hyper = ("weight_decay",)
    _counters = ()  # integer attributes that belong to the state (Adam's step count)
    _needs_work = True  # whether _update_one uses its work array (weight decay always does)
    _kernel = None  # the name of the compiled step in _cpu_updates, if there is one

    def __init__(self, lr, weight_decay=0.0):
        self._lr = number(type(self).__name__, "lr", lr, 0.0, low_open=True)
        self.weight_decay = number(type(self).__name__, "weight_decay", weight_decay, 0.0)
        self.target = None
        self.state = {}  # parameter name -> {slot name -> array on the parameter's device}
        self.hooks = []
        self._groups = []  # the packed parameters, one _Group per dtype and device
        self._layout = []  # (name, parameter, its data) as packed: what an update checks is unchanged

    @property
    def lr(self):
        """float: the learning rate; may be set (a schedule), to a finite number >= 0."""
        return self._lr

    @lr.setter
    def lr(self, value):
        self._lr = number(type(self).__name__, "lr", value, 0.0)

    def hyperparameters(self):
        """The constant hyper-parameters (not ``lr``, which schedules change).

        Returns:
            dict: name -> float, JSON-ready.
        """
        return {name: getattr(self, name) for name in self.hyper}

    def spec(self):
        """What a checkpoint compares: the class and its constant hyper-parameters.

        Returns:
            dict: ``{"class": name, "hyperparameters": hyperparameters()}``, JSON-ready.
        """
        return {"class": type(self).__name__, "hyperparameters": self.hyperparameters()}

    def setup(self, target):
        """Attach the optimizer to a model, pack its parameters and forget any previous state.

        Afterwards every parameter's ``data`` is a view of the flat buffer of its dtype and
        device (same shape and values), except where two parameters share memory.

        Args:
            target (Layer): anything with ``namedparams()`` yielding ``(name, Parameter)`` pairs.
        Returns:
            Optimizer: self, so that ``opt = SGD(0.1).setup(model)`` reads in one line.
        """
        self.target = target
        self.state = {}
        for name in self._counters:
            setattr(self, name, 0)
        self._pack(list(target.namedparams()))
        return self

    def add_hook(self, hook):
        """Run ``hook(optimizer)`` at the start of every ``update``, after the hooks added before.

        Args:
            hook (callable): e.g. ``GradientClipping(0.25)``; it may replace gradients, never
                parameters.
        Returns:
            Optimizer: self.
        Raises:
            TypeError: ``hook`` is not callable.
            ValueError: a hook of the same class is already added (clipping twice is a mistake).
        """
        name = type(self).__name__
        if not callable(hook):
            raise TypeError(f"{name}.add_hook: a hook must be callable, got {type(hook).__name__}")
        if any(type(h) is type(hook) for h in self.hooks):
            raise ValueError(f"{name}.add_hook: the optimizer already has a {type(hook).__name__} hook")
        self.hooks.append(hook)
        return self

    def update(self, weight=None):
        """Run the hooks, then apply one step to every parameter of the target that has a gradient.

        Parameters added, removed or given new data since the last update are packed again
        first (a copy); each group whose parameters all have a gradient steps as a whole, the
        rest parameter by parameter.

        Args:
            weight (float, optional): the weight of this process's loss in a data-parallel step
                (``distributed.DistributedOptimizer.update``); one process holds the whole loss,
                so it does not change anything here.
        Returns:
            float: this process's share of the step's loss: 1.0.
        Raises:
            RuntimeError: ``setup`` was not called.
        """
        if self.target is None:
            raise RuntimeError(f"{type(self).__name__}.update: call setup(model) first")
        scale = self._run_hooks()
        mark("update")
        self._begin_step()
        pairs = list(self.target.namedparams())
        if not self._packed(pairs):
            self._pack(pairs)
        whole = set()
        for group in self._groups:
            if all(p.grad is not None for p in group.params):
                self._step_group(group, group.gather(self._factor(scale, group.data.dtype)))
                whole.update(map(id, group.params))
        for name, p in pairs:
            if p.grad is not None and id(p) not in whole:
                self._update_alone(name, p, scale)
        return 1.0

    def _run_hooks(self):
        """Run the hooks in order; return the factor the last one hands over instead (None: none)."""
        for hook in self.hooks[:-1]:
            hook(self)
        if not self.hooks:
            return None
        last = self.hooks[-1]
        handover = getattr(last, "gradient_scale", None)
        if callable(handover):  # nothing after it reads the gradients: the copy for the update scales them
            return handover(self)
        last(self)
        return None

    def _packed(self, pairs):
        """Whether the target holds the parameters it held when packed, each with the data packed then."""
        return len(pairs) == len(self._layout) and all(
            p is q and p.data is data and name == known for (name, p), (known, q, data) in zip(pairs, self._layout))

    def _pack(self, pairs):
        """One _Group per dtype and device of the parameters, leaving out those that share memory."""
        aliased = _aliased(pairs)
        packable = [(name, p) for name, p in pairs if id(p) not in aliased]
        self._groups = [_Group(members) for members in packing.groups(packable).values()]
        self._layout = [(name, p, p.data) for name, p in pairs]

    def _group_state(self, group):
        """The group's state buffers ({slot: flat}); its members' state arrays become views of them
        (values copied in) unless they already are."""
        packed = all(self.state.get(name, {}).get(slot) is part
                     for slot, (_, parts) in group.state.items() for name, part in zip(group.names, parts))
        if len(group.state) != len(self.slots) or not packed:
            states = [self._slots_of(name, p.data) for name, p in zip(group.names, group.params)]
            group.state = {}
            for slot in self.slots:
                flat, parts = packing.pack(group.data, group.shapes, [state[slot] for state in states])
                for state, part in zip(states, parts):
                    state[slot] = part
                group.state[slot] = (flat, parts)
        return {slot: flat for slot, (flat, _) in group.state.items()}

    def _step_group(self, group, grad):
        """A whole group's step from its gradient buffer: one compiled pass where the ``cpu`` extra has
        this optimizer's kernel (``_kernel``) for the buffers, else NumPy's passes (``_apply``)."""
        state = self._group_state(group)
        kernels = compiled.kernels(_KERNELS, group.data) if self._kernel else None
        if kernels is not None:
            getattr(kernels, self._kernel)(group.data, grad, *(state[slot] for slot in self.slots),
                                           self.weight_decay, *self._coefficients())
            return
        if group.work is None and (self._needs_work or self.weight_decay):
            group.work = get_array_module(grad).empty_like(grad)
        self._apply(group.data, grad, state, group.work)

    def _update_alone(self, name, p, scale):
        """One parameter's step, by the formulas of the packed step on arrays of its own."""
        xp = get_array_module(p.data)
        grad = xp.empty_like(p.data)
        packing.fill([grad], [p.grad.data], self._factor(scale, p.data.dtype))
        work = xp.empty_like(grad) if self._needs_work or self.weight_decay else None
        self._apply(p.data, grad, self._slots_of(name, p.data), work)

    def _factor(self, scale, dtype):
        """What the gradients are multiplied by as they are copied for the update (None: copied as they are).

        Args:
            scale (ndarray | None): () the clipping scale handed over by the last hook, or None.
            dtype (numpy.dtype): the parameters' dtype.
        """
        return None if scale is None else scale.astype(dtype)

    def _apply(self, param, grad, state, work):
        """Add the weight decay to ``grad`` (the optimizer's own copy), then step."""
        if self.weight_decay:
            get_array_module(param).multiply(param, self.weight_decay, out=work)
            grad += work  # g + wd * p
        self._update_one(param, grad, state, work)

    def _begin_step(self):
        """Hook for state shared by all parameters (Adam's step count)."""

    def _coefficients(self):
        """The scalars of this step (learning rate, decays, ...) as Python floats, in the order that
        ``_update_one`` reads them and its compiled kernel takes them after the weight decay."""
        return (self.lr,)

    def _update_one(self, param, grad, state, work):
        """Step ``param`` in place.

        Args:
            param (ndarray): the parameter (or a group's flat buffer).
            grad (ndarray): its gradient, of its shape and dtype, the optimizer's own: may be overwritten.
            state (dict): slot name -> array of ``param``'s shape.
            work (ndarray | None): scratch of ``param``'s shape and dtype (None when ``_needs_work``
                is False and there is no weight decay).
        """
        raise NotImplementedError

    def _slots_of(self, name, param):
        """The state arrays of one parameter, created as zeros on first use and moved to the
        parameter's device when the model moved since the last step."""
        state = self.state.get(name)
        if state is None:
            xp = get_array_module(param)
            state = self.state[name] = {slot: xp.zeros_like(param) for slot in self.slots}
        elif self.slots and device_of(state[self.slots[0]]) != device_of(param):
            move = as_numpy if device_of(param) == "cpu" else as_cupy
            state.update({slot: move(a) for slot, a in state.items()})
        return state

    def state_dict(self):
        """The optimizer's state, ready for ``serialization.save_npz``.

        Returns:
            dict[str, numpy.ndarray]: ``"lr"`` and counters as 0-d arrays, and one
            ``"<slot>/<parameter name>"`` entry per state array (copied to the CPU).
        """
        out = {"lr": np.asarray(self.lr, dtype=np.float64)}
        out.update({name: np.asarray(getattr(self, name), dtype=np.int64) for name in self._counters})
        for pname, state in self.state.items():
            out.update({f"{slot}/{pname}": as_numpy(a).copy() for slot, a in state.items()})
        return out

    def load_state_dict(self, arrays):
        """Restore what ``state_dict`` returned; state arrays go to each parameter's device.

        Everything is checked before anything changes: on an error the optimizer is as before.

        Args:
            arrays (dict[str, ndarray]): as returned by ``state_dict``.
        Raises:
            RuntimeError: ``setup`` was not called.
            ValueError: ``"lr"`` or a counter is missing, an entry names a slot or parameter
                this optimizer does not have (state of another optimizer), or a state array's
                shape differs from its parameter's; one message lists every problem.
        """
        name = type(self).__name__
        if self.target is None:
            raise RuntimeError(f"{name}.load_state_dict: call setup(model) first")
        params = dict(self.target.namedparams())
        problems = [f"missing {key!r}" for key in ("lr",) + self._counters if key not in arrays]
        state = {}
        for key, a in arrays.items():
            if key == "lr" or key in self._counters:
                continue
            slot, _, pname = key.partition("/")
            if slot not in self.slots or pname not in params:
                problems.append(f"unexpected entry {key!r}")
                continue
            p = params[pname].data
            if a.shape != p.shape:
                problems.append(f"{key!r} has shape {a.shape}, the parameter {p.shape}")
                continue
            move = as_numpy if device_of(p) == "cpu" else as_cupy
            state.setdefault(pname, {})[slot] = move(a).astype(p.dtype, copy=True)
        if problems:
            raise ValueError(f"{name}.load_state_dict: {'; '.join(problems)} (slots of {name}: "
                             f"{', '.join(self.slots) or 'none'})")
        lr = number(f"{name}.load_state_dict", "lr", float(arrays["lr"]), 0.0)
        counters = {key: int(arrays[key]) for key in self._counters}
        self._lr = lr
        for key, value in counters.items():
            setattr(self, key, value)
        self.state = state


class SGD(Optimizer):
    """Plain stochastic gradient descent: ``p -= lr * g``.

    Without weight decay the learning rate is folded into the copy of the gradients (times the
    clipping scale, when clipping hands it over): ``p -= g * (lr * scale)``, one pass less than
    ``p -= lr * (g * scale)``, whose product it rounds once less; unclipped (scale 1) the two are
    the same bits.

    Args:
        lr (float): learning rate.
        weight_decay (float): L2 penalty coefficient.
    """

    _needs_work = False
    _kernel = "sgd"

    def _factor(self, scale, dtype):
        if self.weight_decay:  # the penalty joins the gradient before the learning rate scales it
            return super()._factor(scale, dtype)
        lr = dtype.type(self.lr)
        return lr if scale is None else scale.astype(dtype) * lr

    def _update_one(self, param, grad, state, work):
        (lr,) = self._coefficients()
        if self.weight_decay:
            grad *= lr
        param -= grad


class MomentumSGD(Optimizer):
    """SGD with momentum: ``v = momentum * v - lr * g; p += v``.

    Args:
        lr (float): learning rate.
        momentum (float): decay of the velocity ``v``, in [0, 1).
        weight_decay (float): L2 penalty coefficient.
    """

    slots = ("v",)
    hyper = ("momentum", "weight_decay")
    _needs_work = False
    _kernel = "momentum_sgd"

    def __init__(self, lr=0.01, momentum=0.9, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        self.momentum = number("MomentumSGD", "momentum", momentum, 0.0, 1.0)

    def _coefficients(self):
        return self.momentum, self.lr

    def _update_one(self, param, grad, state, work):
        momentum, lr = self._coefficients()
        v = state["v"]
        v *= momentum
        grad *= lr
        v -= grad
        param += v


def _divided_step(param, grad, h, work, lr, eps):
    """``param -= lr * grad / (sqrt(h) + eps)`` in place, rounding as that expression does;
    overwrites ``grad`` and ``work`` (``h`` may be ``work``)."""
    xp = get_array_module(param)
    xp.sqrt(h, out=work)
    work += eps
    grad *= lr
    grad /= work
    param -= grad


class AdaGrad(Optimizer):
    """AdaGrad: ``h += g * g; p -= lr * g / (sqrt(h) + eps)``.

    Args:
        lr (float): learning rate.
        eps (float): > 0, keeps the step finite while ``h`` is zero.
        weight_decay (float): L2 penalty coefficient.
    """

    slots = ("h",)
    hyper = ("eps", "weight_decay")
    _kernel = "ada_grad"

    def __init__(self, lr=0.01, eps=1e-8, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        self.eps = number("AdaGrad", "eps", eps, 0.0, low_open=True)

    def _coefficients(self):
        return self.lr, self.eps

    def _update_one(self, param, grad, state, work):
        lr, eps = self._coefficients()
        h = state["h"]
        get_array_module(h).multiply(grad, grad, out=work)
        h += work
        _divided_step(param, grad, h, work, lr, eps)


class RMSprop(Optimizer):
    """RMSprop: ``h = decay * h + (1 - decay) * g * g; p -= lr * g / (sqrt(h) + eps)``.

    Args:
        lr (float): learning rate.
        decay (float): decay of the running mean of squared gradients, in [0, 1).
        eps (float): > 0, keeps the step finite while ``h`` is zero.
        weight_decay (float): L2 penalty coefficient.
    """

    slots = ("h",)
    hyper = ("decay", "eps", "weight_decay")
    _kernel = "rms_prop"

    def __init__(self, lr=0.01, decay=0.99, eps=1e-8, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        self.decay = number("RMSprop", "decay", decay, 0.0, 1.0)
        self.eps = number("RMSprop", "eps", eps, 0.0, low_open=True)

    def _coefficients(self):
        return self.decay, 1 - self.decay, self.lr, self.eps

    def _update_one(self, param, grad, state, work):
        decay, keep, lr, eps = self._coefficients()
        h = state["h"]
        h *= decay
        get_array_module(h).multiply(grad, keep, out=work)
        work *= grad  # (1 - decay) * g * g
        h += work
        _divided_step(param, grad, h, work, lr, eps)


class Adam(Optimizer):
    """Adam with bias correction (Kingma & Ba, 2015).

    With ``t`` the number of ``update`` calls so far (one step count for all parameters)::

        m = b1 * m + (1 - b1) * g;   v = b2 * v + (1 - b2) * g * g
        p -= lr * (m / (1 - b1**t)) / (sqrt(v / (1 - b2**t)) + eps)

    Args:
        lr (float): learning rate.
        beta1 (float): decay of the first moment ``m``, in [0, 1).
        beta2 (float): decay of the second moment ``v``, in [0, 1).
        eps (float): > 0, keeps the step finite while ``v`` is zero.
        weight_decay (float): L2 penalty coefficient.
    """

    slots = ("m", "v")
    _counters = ("t",)
    hyper = ("beta1", "beta2", "eps", "weight_decay")
    _kernel = "adam"

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        self.beta1 = number("Adam", "beta1", beta1, 0.0, 1.0)
        self.beta2 = number("Adam", "beta2", beta2, 0.0, 1.0)
        self.eps = number("Adam", "eps", eps, 0.0, low_open=True)
        self.t = 0

    def _begin_step(self):
        self.t += 1

    def _coefficients(self):
        return (self.beta1, 1 - self.beta1, self.beta2, 1 - self.beta2, 1 - self.beta1 ** self.t,
                1 - self.beta2 ** self.t, self.lr, self.eps)

    def _update_one(self, param, grad, state, work):
        b1, c1, b2, c2, correction1, correction2, lr, eps = self._coefficients()
        xp = get_array_module(param)
        m, v = state["m"], state["v"]
        m *= b1
        xp.multiply(grad, c1, out=work)
        m += work
        v *= b2
        xp.multiply(grad, c2, out=work)
        work *= grad  # (1 - b2) * g * g
        v += work
        xp.divide(m, correction1, out=grad)  # m_hat: the gradient is spent
        xp.divide(v, correction2, out=work)  # v_hat
        _divided_step(param, grad, work, work, lr, eps)


def _clipping(params, max_norm, eps):
    """The parameters with a gradient, their global gradient norm and the clipping scale (both
    () on the gradients' device; None when no parameter has a gradient)."""
    with_grad = [p for p in params if p.grad is not None]
    if not with_grad:
        return with_grad, np.zeros((), dtype=np.float32), None
    first = with_grad[0].grad.data
    xp = get_array_module(first)
    dtype = np.result_type(np.float32, *{p.grad.data.dtype for p in with_grad})
    norm = xp.zeros_like(first, dtype=dtype, shape=())  # 0-d, on the gradients' device, summed into in place
    for p in with_grad:
        g = p.grad.data.astype(dtype, copy=False)  # a copy for float16 only
        norm += xp.vdot(g, g)  # one pass, no temporary of the gradient's size
    xp.sqrt(norm, out=norm)
    return with_grad, norm, xp.minimum(max_norm / (norm + eps), 1.0).astype(dtype)


def clip_grads(params, max_norm, eps=_NORM_EPS):
    """Scale all gradients together so that their global L2 norm is at most ``max_norm``.

    The scale ``min(1, max_norm / (norm + eps))`` is computed and multiplied in on the device,
    with no branch in Python: nothing is read back to the host. The squared norm is summed in
    float32 at least (float64 for float64 gradients), one parameter after another: in float16
    it overflows once the norm passes 256, and the scale would zero every gradient. Gradients
    are replaced by new Variables of their own dtype, never scaled in place: two parameters may
    hold the same gradient array, which in-place scaling would shrink twice.

    Args:
        params (iterable of Parameter): e.g. ``model.params()``; those without a gradient are skipped.
        max_norm (float): the largest allowed norm, finite and > 0.
        eps (float): keeps the scale finite for a zero norm, finite and >= 0 (1e-6 by default).
    Returns:
        ndarray: () the global norm before clipping, float32 or float64, on the gradients' device
        (0 when no parameter has a gradient).
    Raises:
        TypeError, ValueError: ``max_norm`` or ``eps`` is not a finite number in its range.
    """
    max_norm = number("clip_grads", "max_norm", max_norm, 0.0, low_open=True)
    eps = number("clip_grads", "eps", eps, 0.0)
    with_grad, norm, scale = _clipping(params, max_norm, eps)
    scales = {}  # one cast of the scale per gradient dtype, so that no gradient changes dtype
    for p in with_grad:
        g = p.grad.data
        if g.dtype not in scales:
            scales[g.dtype] = scale.astype(g.dtype)
        p.grad = Variable(g * scales[g.dtype])
    return norm


class GradientClipping:
    """Optimizer hook: clip the global gradient norm to ``max_norm`` (``clip_grads``) before every update.

    ``optimizer.add_hook(GradientClipping(0.25))``; ``Trainer(clip=0.25)`` adds it. As the
    optimizer's last hook it hands the scale to the update (``gradient_scale``), which multiplies
    each gradient by it as it copies them: the same products as ``clip_grads``, without a pass of
    their own, and ``p.grad`` keeps the gradient from before clipping. The norm before clipping
    and whether it exceeded ``max_norm`` stay on the device as ``norm`` and ``clipped`` (never
    read in the step), for whoever records them (the trainer sums both).

    Args:
        max_norm (float): the largest allowed norm, finite and > 0.
    Attributes:
        max_norm (float): as given.
        norm (ndarray | None): () the global norm before the last clipping, on the gradients'
            device; None before the first update.
        clipped (ndarray | None): () 1 when ``norm`` exceeded ``max_norm`` (the gradients were
            scaled down), else 0, of ``norm``'s dtype and device; None before the first update.
    Raises:
        TypeError, ValueError: ``max_norm`` is not a finite number > 0.
    """

    def __init__(self, max_norm):
        self.max_norm = number("GradientClipping", "max_norm", max_norm, 0.0, low_open=True)
        self.norm = None
        self.clipped = None

    def __call__(self, optimizer):
        """Clip the gradients of ``optimizer.target``'s parameters (``clip_grads``): ``p.grad`` is replaced.

        Args:
            optimizer (Optimizer): the optimizer about to update.
        """
        mark("clip")
        self.norm = clip_grads(optimizer.target.params(), self.max_norm)
        self._count()

    def gradient_scale(self, optimizer):
        """The clipping scale of ``optimizer.target``'s gradients, left unscaled (the update applies it).

        Args:
            optimizer (Optimizer): the optimizer about to update; this hook is its last.
        Returns:
            ndarray | None: () ``min(1, max_norm / (norm + 1e-6))`` of the norm's dtype, on the
            gradients' device; None when no parameter has a gradient.
        """
        mark("clip")
        _, self.norm, scale = _clipping(optimizer.target.params(), self.max_norm, _NORM_EPS)
        self._count()
        return scale

    def _count(self):
        self.clipped = (self.norm > self.max_norm).astype(self.norm.dtype)  # on the device: no read

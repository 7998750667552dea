"""Optimizers (SGD, MomentumSGD, AdaGrad, RMSprop, Adam) and their pre-update hooks (gradient clipping).

Usage::

    opt = Adam(lr=1e-3).setup(model)      # model: a Layer (anything with ``namedparams()``)
    opt.add_hook(GradientClipping(0.25))  # optional: runs at the start of every update
    loss.backward()
    opt.update()                          # hooks, then every parameter that has a gradient, in place
    model.cleargrads()

Parameter arrays (``p.data``) are owned and updated in place. Gradient arrays (``p.grad.data``)
are read only: the engine may hand the same array to several parameters or give a broadcast
view, so every formula here builds new arrays from them and never writes into them. Nothing
here reads a device value back to the host. Learning-rate schedules live in
``tinygrad_rnn.training.schedules``.
"""
import numpy as np

from tinygrad_rnn.backend import as_cupy, as_numpy, device_of, get_array_module
from tinygrad_rnn.checks import number
from tinygrad_rnn.core import Variable
from tinygrad_rnn.phases import mark


class Optimizer:
    """Base class: walks the target's parameters and keeps per-parameter state arrays.

    Subclasses name their state arrays in ``slots``, their hyper-parameters in ``hyper``
    (checkpoints compare them), and implement ``_update_one``. Hooks (``add_hook``) run in the
    order they were added at the start of every ``update``, on the gradients it is about to apply
    (Chainer's pre-update hooks): a wrapper that changes the gradients first, such as
    ``distributed.DistributedOptimizer``, has them run on its result.

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

    def __init__(self, lr, weight_decay=0.0):
        self._lr = number(type(self).__name__, "lr", lr, 0.0, low_open=True)
        self.weight_decay = number(type(self).__name__, "weight_decay", weight_decay, 0.0)
        self.target = None
        self.state = {}  # parameter name -> {slot name -> array on the parameter's device}
        self.hooks = []

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
        """Attach the optimizer to a model and forget any previous state.

        Args:
            target (Layer): anything with ``namedparams()`` yielding ``(name, Parameter)`` pairs.
        Returns:
            Optimizer: self, so that ``opt = SGD(0.1).setup(model)`` reads in one line.
        """
        self.target = target
        self.state = {}
        for name in self._counters:
            setattr(self, name, 0)
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
        for hook in self.hooks:
            hook(self)
        mark("update")
        self._begin_step()
        for name, p in self.target.namedparams():
            if p.grad is None:
                continue
            g = p.grad.data
            if self.weight_decay:
                g = g + self.weight_decay * p.data
            self._update_one(p.data, g, self._slots_of(name, p.data))
        return 1.0

    def _begin_step(self):
        """Hook for state shared by all parameters (Adam's step count)."""

    def _update_one(self, param, grad, state):
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

    Args:
        lr (float): learning rate.
        weight_decay (float): L2 penalty coefficient.
    """

    def _update_one(self, param, grad, state):
        param -= self.lr * grad


class MomentumSGD(Optimizer):
    """SGD with momentum: ``v = momentum * v - lr * g; p += v``.

    Args:
        lr (float): learning rate.
        momentum (float): decay of the velocity ``v``, in [0, 1).
        weight_decay (float): L2 penalty coefficient.
    """

    slots = ("v",)
    hyper = ("momentum", "weight_decay")

    def __init__(self, lr=0.01, momentum=0.9, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        self.momentum = number("MomentumSGD", "momentum", momentum, 0.0, 1.0)

    def _update_one(self, param, grad, state):
        v = state["v"]
        v *= self.momentum
        v -= self.lr * grad
        param += v


class AdaGrad(Optimizer):
    """AdaGrad: ``h += g * g; p -= lr * g / (sqrt(h) + eps)``.

    Args:
        lr (float): learning rate.
        eps (float): > 0, keeps the step finite while ``h`` is zero.
        weight_decay (float): L2 penalty coefficient.
    """

    slots = ("h",)
    hyper = ("eps", "weight_decay")

    def __init__(self, lr=0.01, eps=1e-8, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        self.eps = number("AdaGrad", "eps", eps, 0.0, low_open=True)

    def _update_one(self, param, grad, state):
        h = state["h"]
        h += grad * grad
        param -= self.lr * grad / (get_array_module(h).sqrt(h) + self.eps)


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

    def __init__(self, lr=0.01, decay=0.99, eps=1e-8, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        self.decay = number("RMSprop", "decay", decay, 0.0, 1.0)
        self.eps = number("RMSprop", "eps", eps, 0.0, low_open=True)

    def _update_one(self, param, grad, state):
        h = state["h"]
        h *= self.decay
        h += (1 - self.decay) * grad * grad
        param -= self.lr * grad / (get_array_module(h).sqrt(h) + self.eps)


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

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        self.beta1 = number("Adam", "beta1", beta1, 0.0, 1.0)
        self.beta2 = number("Adam", "beta2", beta2, 0.0, 1.0)
        self.eps = number("Adam", "eps", eps, 0.0, low_open=True)
        self.t = 0

    def _begin_step(self):
        self.t += 1

    def _update_one(self, param, grad, state):
        m, v = state["m"], state["v"]
        m *= self.beta1
        m += (1 - self.beta1) * grad
        v *= self.beta2
        v += (1 - self.beta2) * grad * grad
        m_hat = m / (1 - self.beta1 ** self.t)
        v_hat = v / (1 - self.beta2 ** self.t)
        param -= self.lr * m_hat / (get_array_module(v).sqrt(v_hat) + self.eps)


def clip_grads(params, max_norm, eps=1e-6):
    """Scale all gradients together so that their global L2 norm is at most ``max_norm``.

    The scale ``min(1, max_norm / (norm + eps))`` is computed and multiplied in on the device,
    with no branch in Python: nothing is read back to the host. The squared norm is summed in
    float32 at least (float64 for float64 gradients): in float16 it overflows once the norm
    passes 256, and the scale would zero every gradient. Gradients are replaced by new
    Variables of their own dtype, never scaled in place: two parameters may hold the same
    gradient array, which in-place scaling would shrink twice.

    Args:
        params (iterable of Parameter): e.g. ``model.params()``; those without a gradient are skipped.
        max_norm (float): the largest allowed norm, finite and > 0.
        eps (float): keeps the scale finite for a zero norm, finite and >= 0.
    Returns:
        ndarray: () the global norm before clipping, float32 or float64, on the gradients' device
        (0 when no parameter has a gradient).
    Raises:
        TypeError, ValueError: ``max_norm`` or ``eps`` is not a finite number in its range.
    """
    max_norm = number("clip_grads", "max_norm", max_norm, 0.0, low_open=True)
    eps = number("clip_grads", "eps", eps, 0.0)
    with_grad = [p for p in params if p.grad is not None]
    if not with_grad:
        return np.zeros((), dtype=np.float32)
    first = with_grad[0].grad.data
    xp = get_array_module(first)
    dtype = np.result_type(np.float32, *{p.grad.data.dtype for p in with_grad})
    norm = xp.zeros_like(first, dtype=dtype, shape=())  # 0-d, on the gradients' device, summed into in place
    for p in with_grad:
        g = p.grad.data.astype(dtype, copy=False)  # a copy for float16 only
        norm += xp.vdot(g, g)  # one pass, no temporary of the gradient's size
    xp.sqrt(norm, out=norm)
    scale = xp.minimum(max_norm / (norm + eps), 1.0).astype(dtype)
    scales = {}  # one cast of the scale per gradient dtype, so that no gradient changes dtype
    for p in with_grad:
        g = p.grad.data
        if g.dtype not in scales:
            scales[g.dtype] = scale.astype(g.dtype)
        p.grad = Variable(g * scales[g.dtype])
    return norm


class GradientClipping:
    """Optimizer hook: clip the global gradient norm to ``max_norm`` (``clip_grads``) before every update.

    ``optimizer.add_hook(GradientClipping(0.25))``; ``Trainer(clip=0.25)`` adds it. The norm
    before clipping and whether it exceeded ``max_norm`` stay on the device as ``norm`` and
    ``clipped`` (never read in the step), for whoever records them (the trainer sums both).

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
        """Clip the gradients of ``optimizer.target``'s parameters.

        Args:
            optimizer (Optimizer): the optimizer about to update.
        """
        mark("clip")
        self.norm = clip_grads(optimizer.target.params(), self.max_norm)
        self.clipped = (self.norm > self.max_norm).astype(self.norm.dtype)  # on the device: no read

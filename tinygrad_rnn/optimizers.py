"""Optimizers (SGD, MomentumSGD, AdaGrad, RMSprop, Adam), gradient clipping and a plateau LR schedule.

Usage::

    opt = Adam(lr=1e-3).setup(model)      # model: a Layer (anything with ``namedparams()``)
    loss.backward()
    clip_grads(model.params(), 0.25)      # optional
    opt.update()                          # updates every parameter that has a gradient, in place
    model.cleargrads()

Parameter arrays (``p.data``) are owned and updated in place. Gradient arrays (``p.grad.data``)
are read only: the engine may hand the same array to several parameters or give a broadcast
view, so every formula here builds new arrays from them and never writes into them.
"""
import math

import numpy as np

from tinygrad_rnn.backend import as_cupy, as_numpy, device_of, get_array_module
from tinygrad_rnn.core import Variable


class Optimizer:
    """Base class: walks the target's parameters and keeps per-parameter state arrays.

    Subclasses name their state arrays in ``slots`` and implement ``_update_one``.

    Args:
        lr (float): learning rate; schedules change ``self.lr`` between updates.
        weight_decay (float): L2 penalty coefficient; ``weight_decay * p`` is added to each
            gradient before the update (the coupled form, as in classic SGD).
    """

    slots = ()
    _counters = ()  # integer attributes that belong to the state (Adam's step count)

    def __init__(self, lr, weight_decay=0.0):
        if lr <= 0:
            raise ValueError(f"{type(self).__name__}: lr must be positive, got {lr}")
        if weight_decay < 0:
            raise ValueError(f"{type(self).__name__}: weight_decay must be >= 0, got {weight_decay}")
        self.lr = lr
        self.weight_decay = weight_decay
        self.target = None
        self.state = {}  # parameter name -> {slot name -> array on the parameter's device}

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

    def update(self):
        """Apply one step to every parameter of the target that has a gradient.

        Raises:
            RuntimeError: ``setup`` was not called.
        """
        if self.target is None:
            raise RuntimeError(f"{type(self).__name__}.update: call setup(model) first")
        self._begin_step()
        for name, p in self.target.namedparams():
            if p.grad is None:
                continue
            g = p.grad.data
            if self.weight_decay:
                g = g + self.weight_decay * p.data
            self._update_one(p.data, g, self._slots_of(name, p.data))

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

        Args:
            arrays (dict[str, ndarray]): as returned by ``state_dict``.
        Raises:
            RuntimeError: ``setup`` was not called.
            KeyError: an entry names a slot or parameter this optimizer does not have, or
                ``"lr"`` or a counter is missing.
            ValueError: a state array's shape differs from its parameter's.
        """
        if self.target is None:
            raise RuntimeError(f"{type(self).__name__}.load_state_dict: call setup(model) first")
        params = dict(self.target.namedparams())
        state = {}
        for key, a in arrays.items():
            if key == "lr" or key in self._counters:
                continue
            slot, _, pname = key.partition("/")
            if slot not in self.slots or pname not in params:
                raise KeyError(f"{type(self).__name__}.load_state_dict: unexpected entry {key!r}")
            p = params[pname].data
            if a.shape != p.shape:
                raise ValueError(f"{type(self).__name__}.load_state_dict: {key!r} has shape {a.shape}, "
                                 f"parameter has shape {p.shape}")
            move = as_numpy if device_of(p) == "cpu" else as_cupy
            state.setdefault(pname, {})[slot] = move(a).astype(p.dtype, copy=True)
        self.lr = float(arrays["lr"])
        for name in self._counters:
            setattr(self, name, int(arrays[name]))
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
        momentum (float): decay of the velocity ``v``.
        weight_decay (float): L2 penalty coefficient.
    """

    slots = ("v",)

    def __init__(self, lr=0.01, momentum=0.9, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        self.momentum = momentum

    def _update_one(self, param, grad, state):
        v = state["v"]
        v *= self.momentum
        v -= self.lr * grad
        param += v


class AdaGrad(Optimizer):
    """AdaGrad: ``h += g * g; p -= lr * g / (sqrt(h) + eps)``.

    Args:
        lr (float): learning rate.
        eps (float): keeps the step finite while ``h`` is zero.
        weight_decay (float): L2 penalty coefficient.
    """

    slots = ("h",)

    def __init__(self, lr=0.01, eps=1e-8, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        self.eps = eps

    def _update_one(self, param, grad, state):
        h = state["h"]
        h += grad * grad
        param -= self.lr * grad / (get_array_module(h).sqrt(h) + self.eps)


class RMSprop(Optimizer):
    """RMSprop: ``h = decay * h + (1 - decay) * g * g; p -= lr * g / (sqrt(h) + eps)``.

    Args:
        lr (float): learning rate.
        decay (float): decay of the running mean of squared gradients.
        eps (float): keeps the step finite while ``h`` is zero.
        weight_decay (float): L2 penalty coefficient.
    """

    slots = ("h",)

    def __init__(self, lr=0.01, decay=0.99, eps=1e-8, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        self.decay = decay
        self.eps = eps

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
        beta1 (float): decay of the first moment ``m``.
        beta2 (float): decay of the second moment ``v``.
        eps (float): keeps the step finite while ``v`` is zero.
        weight_decay (float): L2 penalty coefficient.
    """

    slots = ("m", "v")
    _counters = ("t",)

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        self.beta1 = beta1
        self.beta2 = beta2
        self.eps = eps
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


def clip_grads(params, max_norm):
    """Scale all gradients together so that their global L2 norm is at most ``max_norm``.

    Gradients are replaced by new Variables, never scaled in place: two parameters may hold
    the same gradient array, which in-place scaling would shrink twice.

    Args:
        params (iterable of Parameter): e.g. ``model.params()``; those without a gradient are skipped.
        max_norm (float): the largest allowed norm.
    Returns:
        float: the global norm before clipping (0.0 when no parameter has a gradient).
    """
    with_grad = [p for p in params if p.grad is not None]
    if not with_grad:
        return 0.0
    xp = get_array_module(with_grad[0].grad.data)
    norm = float(xp.sqrt(sum((p.grad.data * p.grad.data).sum() for p in with_grad)))
    rate = max_norm / (norm + 1e-6)  # the small term keeps the rate finite for a zero norm
    if rate < 1:
        for p in with_grad:
            p.grad = Variable(p.grad.data * rate)
    return norm


class ReduceOnPlateau:
    """Multiply the optimizer's learning rate by ``factor`` when a metric stops improving.

    With the defaults this is the classic language-model rule: divide the learning rate by 4
    after every epoch whose validation perplexity is not below the best so far.

    Args:
        optimizer (Optimizer): whose ``lr`` is changed.
        factor (float): multiplier in (0, 1).
        patience (int): epochs without improvement tolerated before a reduction.
    """

    def __init__(self, optimizer, factor=0.25, patience=0):
        if not 0 < factor < 1:
            raise ValueError(f"ReduceOnPlateau: factor must lie in (0, 1), got {factor}")
        self.optimizer = optimizer
        self.factor = factor
        self.patience = patience
        self.best = math.inf
        self.bad_steps = 0

    def step(self, metric):
        """Record one evaluation (lower is better).

        Args:
            metric (float): e.g. validation perplexity.
        Returns:
            bool: whether the learning rate was reduced.
        """
        if metric < self.best:
            self.best = metric
            self.bad_steps = 0
            return False
        self.bad_steps += 1
        if self.bad_steps <= self.patience:
            return False
        self.optimizer.lr *= self.factor
        self.bad_steps = 0
        return True

    def state_dict(self):
        """Returns:
            dict: JSON-ready ``{"best": float | None, "bad_steps": int}`` (None while no metric was seen).
        """
        return {"best": None if math.isinf(self.best) else self.best, "bad_steps": self.bad_steps}

    def load_state_dict(self, state):
        """Restore what ``state_dict`` returned.

        Args:
            state (dict): ``{"best": float | None, "bad_steps": int}``.
        """
        self.best = math.inf if state["best"] is None else float(state["best"])
        self.bad_steps = int(state["bad_steps"])

"""``DistributedOptimizer``: an optimizer whose update first averages the gradients over the ranks.

``update(weight)`` is reduce, then the wrapped optimizer's ``update``: its hooks (gradient
clipping) run on the averaged gradients, the same on every rank. A hand-written loop takes two
changes, the optimizer and the batches::

    comm = distributed.init()
    opt = distributed.DistributedOptimizer(SGD(lr=20.0), comm).setup(model)  # was: SGD(lr=20.0).setup(model)
    opt.add_hook(GradientClipping(0.25))
    for part in distributed.Shard(batches, comm, model):  # dropout draws this part's rows of the masks
        loss = model.loss(*part)
        loss.backward()
        opt.update(part.weight)             # reduce, clip the global gradient, update
        model.cleargrads()

``Trainer(..., comm=comm)`` composes the same two for the trainer's step.
"""
from tinygrad_rnn.distributed.collectives import (allreduce_grads, broadcast_optimizer_state, broadcast_parameters,
                                                  check_layout)
from tinygrad_rnn.phases import mark


class DistributedOptimizer:
    """Wrap an optimizer so that every rank applies the same update from the averaged gradients.

    When the optimizer is set up (here, or already before wrapping), the ranks check that they
    hold the same parameters, then take rank 0's parameters and optimizer state, so that every
    rank starts from the same point.

    Args:
        optimizer (Optimizer): the optimizer that updates this rank's model.
        comm (SerialComm | MpiComm | NcclComm): the communicator (``distributed.init()``).
    Attributes:
        optimizer (Optimizer): the wrapped optimizer (its ``lr``, state and checkpoints).
        comm (SerialComm | MpiComm | NcclComm): the communicator.
    """

    def __init__(self, optimizer, comm):
        self.optimizer, self.comm = optimizer, comm
        if optimizer.target is not None:
            self.synchronize()

    @property
    def target(self):
        """Layer: the model being optimized."""
        return self.optimizer.target

    @property
    def lr(self):
        """float: the wrapped optimizer's learning rate (schedules set it on every rank alike)."""
        return self.optimizer.lr

    @lr.setter
    def lr(self, value):
        self.optimizer.lr = value

    def setup(self, target):
        """Set the wrapped optimizer up on ``target`` and synchronize the ranks (``synchronize``).

        Args:
            target (Layer): this rank's model.
        Returns:
            DistributedOptimizer: self.
        Raises:
            ValueError: the ranks hold different models (raised on every rank).
        """
        self.optimizer.setup(target)
        self.synchronize()
        return self

    def synchronize(self):
        """Check the layout on every rank, then broadcast rank 0's parameters and optimizer state.

        Call it after anything that may leave ranks apart (setup, a resume from a checkpoint).

        Raises:
            ValueError: the ranks hold different models (raised on every rank).
        """
        check_layout(self.target, self.comm)
        broadcast_parameters(self.target, self.comm)
        broadcast_optimizer_state(self.optimizer, self.comm)

    @property
    def hooks(self):
        """list: the wrapped optimizer's hooks, which run on the averaged gradients."""
        return self.optimizer.hooks

    def add_hook(self, hook):
        """Add a hook to the wrapped optimizer (``Optimizer.add_hook``).

        Returns:
            DistributedOptimizer: self.
        """
        self.optimizer.add_hook(hook)
        return self

    def spec(self):
        """The wrapped optimizer's ``spec()`` (a checkpoint fits a run at any process count)."""
        return self.optimizer.spec()

    def update(self, weight=None):
        """Average the gradients over the ranks (``collectives.allreduce_grads``), then update (hooks first).

        Args:
            weight (float, optional): the weight of this rank's loss in the combined one: the
                number of terms its mean covers (tokens, examples); None on every rank: equal
                shares.
        Returns:
            float: this rank's share of the combined loss (``weight / sum of the weights``).
        Raises:
            ValueError: a weight on some ranks only, a negative weight, or weights summing to 0.
        """
        mark("reduce")
        share = allreduce_grads(self.target, self.comm, weight)
        self.optimizer.update()
        return share

    def state_dict(self):
        """The wrapped optimizer's ``state_dict`` (the same on every rank)."""
        return self.optimizer.state_dict()

    def load_state_dict(self, arrays):
        """The wrapped optimizer's ``load_state_dict``, then ``synchronize`` (collective: every rank calls it)."""
        self.optimizer.load_state_dict(arrays)
        self.synchronize()

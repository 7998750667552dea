"""``DistributedOptimizer``: an optimizer whose update first averages the gradients over the ranks.

A hand-written loop takes three changes: the optimizer, the batches and the reduction before clipping::

    comm = distributed.init()
    opt = distributed.DistributedOptimizer(SGD(lr=20.0), comm).setup(model)  # was: SGD(lr=20.0).setup(model)
    for batch in distributed.Shard(batches, comm):
        with functions.batch_rows(batch.rows):   # dropout: this part's rows of the full-batch masks
            loss = model.loss(*batch)
        loss.backward()
        opt.reduce_grads(batch[1].size)     # before clipping: clip the global gradient, the same on every rank
        clip_grads(model.params(), 0.25)
        opt.update()                        # reduces first if reduce_grads was not called
        model.cleargrads()

``Trainer(..., comm=comm)`` does the same for the trainer's step.
"""
from tinygrad_rnn.distributed.collectives import (allreduce_grads, broadcast_optimizer_state, broadcast_parameters,
                                                  check_layout)


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
        self.share = 1.0  # this rank's share of the last reduced loss
        self._reduced = False
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

    def reduce_grads(self, weight=None):
        """Average the gradients over the ranks (``collectives.allreduce_grads``), once per step.

        Args:
            weight (float, optional): the number of terms this rank's loss averages (tokens,
                examples), for shards of different sizes; None on every rank: equal shares.
        Returns:
            float: this rank's share of the combined loss.
        """
        if not self._reduced:
            self.share = allreduce_grads(self.target, self.comm, weight)
            self._reduced = True
        return self.share

    def update(self):
        """Reduce the gradients (unless ``reduce_grads`` already did, this step), then update."""
        self.reduce_grads()
        self.optimizer.update()
        self._reduced = False

    def state_dict(self):
        """The wrapped optimizer's ``state_dict`` (the same on every rank)."""
        return self.optimizer.state_dict()

    def load_state_dict(self, arrays):
        """The wrapped optimizer's ``load_state_dict``; call ``synchronize`` after loading on every rank."""
        self.optimizer.load_state_dict(arrays)

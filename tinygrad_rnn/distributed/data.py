"""Sharding: each rank trains on its rows of every batch and evaluates its part of the data.

Every rank builds the same batch source (same corpus, same seed), so every rank knows every
batch; rank ``r`` of ``P`` takes rows ``r * n // P`` to ``(r + 1) * n // P`` of a batch of ``n``
rows. For a language model those rows are BPTT streams, so each rank carries only its rows of
the recurrent state; for seq2seq and captioning they are examples of the epoch's permutation.
Each part knows where it lies in the combined batch (``Part.rows`` of ``Part.total``) and its
weight in the combined loss (``Part.weight``); while a part is being trained on, the model's
random generators draw its rows of the combined batch's draws (``random.Generator.set_part``),
so dropout masks are exactly those of one process.
"""
from tinygrad_rnn.backend import get_array_module


def shard_rows(n, comm):
    """This rank's rows of ``n``: ``(start, stop)`` with ``start = rank * n // size``.

    Args:
        n (int): rows of the combined batch.
        comm (SerialComm | MpiComm | NcclComm): the communicator.
    Returns:
        tuple: (start, stop).
    """
    return comm.rank * n // comm.size, (comm.rank + 1) * n // comm.size


class Part(tuple):
    """One rank's part of a batch: a tuple of arrays, plus where it lies in the combined batch and its weight.

    Attributes:
        rows (tuple): ``(start, stop)``: rows ``start:stop`` of the combined batch.
        total (int): the rows of the combined batch.
        weight (float): the weight of this part's loss in the combined loss (the terms its mean
            covers).
    """

    def __new__(cls, arrays, rows, total, weight):
        part = super().__new__(cls, arrays)
        part.rows, part.total, part.weight = rows, total, weight
        return part


class Shard:
    """A batch source that yields this rank's rows of every batch of ``source``.

    It follows the batch-source protocol (``tinygrad_rnn.data.batching``): the same number of
    iterations as ``source`` on every rank, and ``spec()`` and ``state_dict()`` are ``source``'s,
    so a checkpoint fits a run at any process count. ``count`` is this rank's count.

    Each part's ``weight`` is ``model.loss_weight(*part)`` where the model defines it (a loss
    that leaves targets out counts the ones it keeps), else ``source.count(part)`` (the tokens
    of a BPTT window, the examples of fixed-length answers). While the consumer holds a part,
    the model's generators draw its rows of the combined batch (``Generator.set_part``).

    Args:
        source (BPTTBatcher | ShuffledBatcher): a batch source with ``batch_size`` and ``carries_state``.
        comm (SerialComm | MpiComm | NcclComm): the communicator.
        model (Layer, optional): the model trained on the parts (its ``generators()`` and
            ``loss_weight``); None: weights from ``source.count``, generators untouched.
    Raises:
        ValueError: a source whose rows carry state (``BPTTBatcher``'s streams) with a batch
            size the ranks do not divide, a batch (the last one too) with fewer rows than ranks,
            or ranks whose sources differ in length or settings (raised on every rank).
    """

    def __init__(self, source, comm, model=None):
        self.source, self.comm = source, comm
        n, size = source.batch_size, comm.size
        if source.carries_state and n % size:
            raise ValueError(f"distributed.Shard: the batch of {n} streams does not split over {size} ranks "
                             "(each rank carries its streams' state): choose a batch size divisible by it")
        smallest = n
        examples = getattr(source, "examples", None)
        if examples is not None and not source.drop_last and examples % n:
            smallest = examples % n
        if smallest < size:
            raise ValueError(f"distributed.Shard: a batch of {smallest} rows cannot give each of {size} ranks a row "
                             "(use drop_last, or a larger batch)")
        theirs = comm.allgather_obj((len(source), source.spec()))  # ranks that disagree would wait forever
        other = [f"rank {r}: {length} batches of {spec}" for r, (length, spec) in enumerate(theirs)
                 if (length, spec) != theirs[0]]
        if other:
            raise ValueError(f"distributed.Shard: the ranks build different batch sources (rank 0: {theirs[0][0]} "
                             f"batches of {theirs[0][1]}; {'; '.join(other)}): build the same one on every rank")
        self.batch_size = n
        self.unit, self.device, self.reset_each_epoch = source.unit, source.device, source.reset_each_epoch
        self.carries_state = source.carries_state
        self._generators = [] if model is None else list(model.generators().values())
        self._weight = getattr(model, "loss_weight", None)

    def __len__(self):
        """Iterations per epoch (the same on every rank)."""
        return len(self.source)

    def spec(self):
        """Returns:
            dict: the source's settings (of the combined batch)."""
        return self.source.spec()

    def count(self, batch):
        """Items in this rank's part (for throughput)."""
        return self.source.count(batch)

    def batches(self, epoch=0, start=0):
        """This rank's parts of the batches of ``source.batches(epoch, start)``.

        Yields:
            Part: the rows of each array of the batch, contiguous copies, with ``rows``, ``total``
            and ``weight``; the model's generators draw its rows until the next part is asked for.
        """
        try:
            for batch in self.source.batches(epoch, start):
                n = len(batch[0])
                rows = shard_rows(n, self.comm)
                xp = get_array_module(batch[0])
                arrays = tuple(xp.ascontiguousarray(a[rows[0]:rows[1]]) for a in batch)
                weight = self.source.count(arrays) if self._weight is None else self._weight(*arrays)
                for g in self._generators:
                    g.set_part(rows, n)
                yield Part(arrays, rows, n, weight)
        finally:  # also when the consumer stops early: later draws are whole again
            for g in self._generators:
                g.set_part()

    def __iter__(self):
        return self.batches()

"""Sharding: each rank trains on its rows of every batch and evaluates its part of the data.

Every rank builds the same batch source (same corpus, same seed), so every rank knows every
batch; rank ``r`` of ``P`` takes rows ``r * n // P`` to ``(r + 1) * n // P`` of a batch of ``n``
rows. For a language model those rows are BPTT streams, so each rank carries only its rows of
the recurrent state; for seq2seq and captioning they are examples of the epoch's permutation.
Each part knows where it lies in the combined batch (``Part.rows``), which lets dropout draw
exactly the rows of the full-batch mask (``functions.batch_rows``).
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
    """One rank's part of a batch: a tuple of arrays, plus ``rows``, where it lies in the combined batch.

    Attributes:
        rows (tuple): ``(start, stop, total)``: rows ``start:stop`` of a combined batch of ``total``.
    """

    def __new__(cls, arrays, rows):
        part = super().__new__(cls, arrays)
        part.rows = rows
        return part


class Shard:
    """A batch source that yields this rank's rows of every batch of ``source``.

    It follows the batch-source protocol (``tinygrad_rnn.data.batching``): the same number of
    iterations as ``source`` on every rank, and ``spec()`` is ``source``'s, so a checkpoint
    fits a run at any process count. ``count`` is this rank's count.

    Args:
        source (BPTTBatcher | ShuffledBatcher): a batch source with ``batch_size`` and ``carries_state``.
        comm (SerialComm | MpiComm | NcclComm): the communicator.
    Raises:
        ValueError: a source whose rows carry state (``BPTTBatcher``'s streams) with a batch
            size the ranks do not divide, or a batch (the last one too) with fewer rows than ranks.
    """

    def __init__(self, source, comm):
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
        self.batch_size = n
        self.unit, self.device, self.reset_each_epoch = source.unit, source.device, source.reset_each_epoch
        self.carries_state = source.carries_state

    def __len__(self):
        """Iterations per epoch (the same on every rank)."""
        return len(self.source)

    def spec(self):
        """Returns:
            dict: the source's settings (of the combined batch)."""
        return self.source.spec()

    def count(self, batch):
        """Items in this rank's part (the weight of its loss)."""
        return self.source.count(batch)

    def rows(self):
        """This rank's rows of a full batch, ``(start, stop)``: the rows of the carried state."""
        return shard_rows(self.batch_size, self.comm)

    def batches(self, epoch=0, start=0):
        """This rank's parts of the batches of ``source.batches(epoch, start)``.

        Yields:
            Part: the rows of each array of the batch, contiguous copies, with ``rows``.
        """
        for batch in self.source.batches(epoch, start):
            n = len(batch[0])
            begin, end = shard_rows(n, self.comm)
            xp = get_array_module(batch[0])
            yield Part(tuple(xp.ascontiguousarray(a[begin:end]) for a in batch), (begin, end, n))

    def __iter__(self):
        return self.batches()

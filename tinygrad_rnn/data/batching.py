"""Truncated-BPTT batches of a token stream for language models."""
import numpy as np

from tinygrad_rnn.backend import as_cupy


class BPTTBatcher:
    """Cut a token stream into ``N`` parallel streams read ``T`` steps at a time.

    Stream ``i`` starts at offset ``i * ((L - 1) // N)``; iteration ``k`` of epoch ``e`` gives
    each stream its next window, ``xs[i] = corpus[p : p + T]`` with
    ``p = offset_i + (e * iterations + k) * T`` (positions wrap around the stream), and ``ts``
    the same window one token later. Consecutive iterations, and consecutive epochs, continue
    each stream, as the classic textbook trainer does: a stateful model carries its hidden
    state from one batch to the next, and each epoch cuts the text at other places.

    Args:
        corpus (ndarray): (L,) integer token ids.
        batch_size (int): N, the number of parallel streams.
        time_size (int): T, the number of steps of one window.
        device (str): ``"cpu"`` or ``"gpu"``, where the batches live (the model's device).
    Raises:
        ValueError: the corpus is too short for one iteration, or a size is not positive.
    """

    def __init__(self, corpus, batch_size, time_size, device="cpu"):
        if batch_size < 1 or time_size < 1:
            raise ValueError(f"BPTTBatcher: batch_size and time_size must be positive, got {batch_size}, {time_size}")
        if device not in ("cpu", "gpu"):
            raise ValueError(f"BPTTBatcher: device must be 'cpu' or 'gpu', got {device!r}")
        self.corpus = np.asarray(corpus)
        self.batch_size, self.time_size, self.device = batch_size, time_size, device
        self.iterations = (len(self.corpus) - 1) // (batch_size * time_size)
        if self.iterations == 0:
            raise ValueError(f"BPTTBatcher: a corpus of {len(self.corpus)} tokens is too short for one batch of "
                             f"{batch_size} x {time_size} (needs at least {batch_size * time_size + 1})")

    def __len__(self):
        """Iterations per epoch: ``(L - 1) // (N * T)``."""
        return self.iterations

    def __iter__(self):
        return self.iterate()

    def iterate(self, epoch=0, start=0):
        """The batches of one epoch, from iteration ``start`` on (to resume mid-epoch).

        Args:
            epoch (int): the epoch (0 for the first), which decides where the windows lie.
            start (int): index of the first iteration, in [0, len(self)].
        Yields:
            tuple: ``(xs, ts)``, each (N, T) int32 on the batcher's device, ``ts`` the next tokens.
        Raises:
            ValueError: ``start`` out of range.
        """
        if not 0 <= start <= self.iterations:
            raise ValueError(f"BPTTBatcher.iterate: start must lie in [0, {self.iterations}], got {start}")
        n, T = self.batch_size, self.time_size
        length = len(self.corpus) - 1
        offsets = np.arange(n) * (length // n) + epoch * self.iterations * T
        # the whole epoch is gathered at once, as (N, iterations * T) blocks: a batch is then a slice
        index = (offsets[:, None] + np.arange(self.iterations * T)) % length
        xs, ts = self.corpus[index].astype(np.int32), self.corpus[index + 1].astype(np.int32)
        if self.device == "gpu":
            xs, ts = as_cupy(xs), as_cupy(ts)
        for k in range(start, self.iterations):
            # copies: the caller may keep or modify a batch without touching the epoch's blocks
            yield xs[:, k * T:(k + 1) * T].copy(), ts[:, k * T:(k + 1) * T].copy()

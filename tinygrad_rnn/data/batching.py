"""Truncated-BPTT batches of a token stream for language models."""
import numpy as np

from tinygrad_rnn.backend import as_cupy


class BPTTBatcher:
    """Cut a token stream into ``N`` parallel streams read ``T`` steps at a time.

    Stream ``i`` starts at offset ``i * ((L - 1) // N)``; iteration ``k`` of an epoch gives each
    stream its next window, ``xs[i] = corpus[offset_i + k*T : offset_i + (k+1)*T]`` and ``ts`` the
    same window one token later. Consecutive iterations continue each stream, so a stateful
    model carries its hidden state from one batch to the next.

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
        corpus = np.asarray(corpus)
        self.batch_size, self.time_size = batch_size, time_size
        self.iterations = (len(corpus) - 1) // (batch_size * time_size)
        if self.iterations == 0:
            raise ValueError(f"BPTTBatcher: a corpus of {len(corpus)} tokens is too short for one batch of "
                             f"{batch_size} x {time_size} (needs at least {batch_size * time_size + 1})")
        offsets = np.arange(batch_size) * ((len(corpus) - 1) // batch_size)
        index = offsets[:, None] + np.arange(self.iterations * time_size)
        # all windows are gathered once, as (N, iterations * T) blocks: a batch is then a slice
        xs, ts = corpus[index].astype(np.int32), corpus[index + 1].astype(np.int32)
        self._xs, self._ts = (as_cupy(xs), as_cupy(ts)) if device == "gpu" else (xs, ts)

    def __len__(self):
        """Iterations per epoch: ``(L - 1) // (N * T)``."""
        return self.iterations

    def __iter__(self):
        return self.iterate()

    def iterate(self, start=0):
        """The batches of one epoch, from iteration ``start`` on (to resume mid-epoch).

        Args:
            start (int): index of the first iteration, in [0, len(self)].
        Yields:
            tuple: ``(xs, ts)``, each (N, T) int32 on the batcher's device, ``ts`` the next tokens.
        Raises:
            ValueError: ``start`` out of range.
        """
        if not 0 <= start <= self.iterations:
            raise ValueError(f"BPTTBatcher.iterate: start must lie in [0, {self.iterations}], got {start}")
        T = self.time_size
        for k in range(start, self.iterations):
            # copies: the caller may keep or modify a batch without touching the stored streams
            yield self._xs[:, k * T:(k + 1) * T].copy(), self._ts[:, k * T:(k + 1) * T].copy()

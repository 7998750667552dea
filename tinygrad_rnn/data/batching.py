"""Batch sources for ``training.Trainer``: truncated-BPTT windows of a token stream, and shuffled minibatches.

A batch source is what the trainer loops over. Both here share one small protocol:

- ``len(source)``: iterations per epoch;
- ``source.batches(epoch, start=0)``: the batches (tuples of arrays on the source's device) of
  epoch ``epoch`` (0 for the first) from iteration ``start`` on, a pure function of the two, so
  a run resumes mid-epoch exactly;
- ``source.reset_each_epoch``: whether a stateful model starts each epoch from a zero state;
- ``source.carries_state``: whether row ``i`` of a batch continues row ``i`` of the last one (BPTT
  streams), so that a stateful model carries its state from batch to batch;
- ``source.count(batch)`` and ``source.unit``: how many items a batch holds, for throughput
  (``"words"`` or ``"samples"``), and, data parallel, the weight of a part's loss unless the
  model counts its terms itself (``model.loss_weight``; see ``distributed.Shard``);
- ``source.spec()``: the settings, JSON-ready, which checkpoints keep so that a resume with
  another batch or window size is refused with a clear error.

A source has no other state: a batch is a pure function of its epoch and iteration, which the
trainer's own state holds. ``Trainer`` refuses, when it is built, a source that lacks part of
this protocol.

Data is validated once, here, where it enters: ids are integers, non-negative and, when the
vocabulary size is given, below it. The training step then needs no check of its own (a
check in the ops would read device values back to the host in every step).
"""
import math

import numpy as np

from tinygrad_rnn.backend import as_cupy, as_numpy
from tinygrad_rnn.checks import integer

CONVENTIONS = ("textbook", "pytorch")


def _check_device(where, device):
    if device not in ("cpu", "gpu"):
        raise ValueError(f"{where}: device must be 'cpu' or 'gpu', got {device!r}")
    return device


def _check_start(source, start):
    """Whether an epoch read from iteration ``start`` is empty; a ValueError when ``start`` is out of range."""
    if not 0 <= start <= source.iterations:
        raise ValueError(f"{type(source).__name__}.batches: start must lie in [0, {source.iterations}], got {start}")
    return start == source.iterations


def check_ids(where, name, ids, vocab_size=None, ignore_label=None):
    """Check once, where data enters, that ``ids`` are integers in [0, vocab_size).

    Args:
        where (str): who checks, for the message.
        name (str): what the ids are (``"corpus"``, ``"array 1"``).
        ids (ndarray): integer ids of any shape.
        vocab_size (int, optional): the number of valid ids; without it only negatives are refused.
        ignore_label (int, optional): a value allowed besides the range (padding targets).
    Raises:
        TypeError: not an integer array.
        ValueError: an id out of range; the message gives the range found.
    """
    ids = as_numpy(ids)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"{where}: {name} must hold integer ids, got dtype {ids.dtype}")
    counted = ids if ignore_label is None else ids[ids != ignore_label]
    if not counted.size:
        return
    lo, hi = int(counted.min()), int(counted.max())
    if lo < 0 or (vocab_size is not None and hi >= vocab_size):
        allowed = f"[0, {vocab_size})" if vocab_size is not None else "non-negative"
        extra = "" if ignore_label is None else f" (or {ignore_label})"
        raise ValueError(f"{where}: {name} ids must be {allowed}{extra}, got range [{lo}, {hi}]")


class BPTTBatcher:
    """Windows of ``T`` steps over ``N`` parallel streams of a token stream (truncated BPTT).

    Two conventions, chosen by ``convention``:

    - ``"textbook"`` (the classic textbook's trainer): stream ``i`` starts at token
      ``i * J`` with ``J = (L - 1) // N``; window ``k`` of epoch ``e`` reads each stream at
      ``e * E + k * T`` past its start (``E`` the tokens an epoch takes from a stream;
      positions wrap around the corpus), and ``ts`` is the same window one token later. Each
      epoch continues the streams where the last one stopped, so the model carries its state
      across epochs (``reset_each_epoch`` is False) and, with ``drop_last``, the text is cut
      at other places every epoch.
    - ``"pytorch"`` (PyTorch's ``word_language_model`` and Zaremba et al.): the corpus is cut
      into ``N`` streams of ``S = L // N`` tokens (the rest is dropped), window ``k`` is
      ``stream[k*T : k*T + T]`` with targets one token later inside the stream, every epoch the
      same windows from a zero state (``reset_each_epoch`` is True).

    ``drop_last=False`` keeps the last, shorter window of an epoch (PyTorch's main.py does);
    with the textbook convention an epoch then takes all ``J`` tokens of every stream, so the
    cuts repeat from epoch to epoch while the state is still carried.

    Args:
        corpus (ndarray): (L,) integer token ids.
        batch_size (int): N, the number of parallel streams.
        time_size (int): T, the steps of one window.
        convention (str): ``"textbook"`` or ``"pytorch"`` (see above).
        drop_last (bool): leave out the last window when it is shorter than T.
        vocab_size (int, optional): validate that every id lies in [0, vocab_size).
        device (str): ``"cpu"`` or ``"gpu"``, where the batches live (the model's device).
    Raises:
        ValueError: a size is not a positive integer, an unknown convention or device, ids out
            of range, or a corpus too short for one window.
        TypeError: the corpus does not hold integers.
    """

    unit = "words"
    carries_state = True

    def __init__(self, corpus, batch_size, time_size, convention="textbook", drop_last=True, vocab_size=None,
                 device="cpu"):
        name = type(self).__name__
        self.batch_size = integer(name, "batch_size", batch_size)
        self.time_size = integer(name, "time_size", time_size)
        if convention not in CONVENTIONS:
            raise ValueError(f"{name}: convention must be one of {', '.join(CONVENTIONS)}, got {convention!r}")
        self.convention, self.drop_last = convention, bool(drop_last)
        self.device = _check_device(name, device)
        corpus = as_numpy(corpus)
        if corpus.ndim != 1:
            raise ValueError(f"{name}: corpus must be a 1-D array of ids, got shape {corpus.shape}")
        if not corpus.size:
            raise ValueError(f"{name}: corpus is empty (0 tokens, dtype {corpus.dtype})")
        check_ids(name, "corpus", corpus, vocab_size)
        self.corpus = corpus.astype(np.int32)
        n, steps = self.batch_size, self.time_size
        if convention == "textbook":
            self.stream_tokens = (len(corpus) - 1) // n  # J: targets per stream
        else:
            self.stream_tokens = len(corpus) // n - 1  # S - 1: targets inside each stream
        per_epoch = self.stream_tokens // steps * steps if self.drop_last else self.stream_tokens
        self.iterations = math.ceil(per_epoch / steps)
        self.epoch_tokens = per_epoch  # E
        if self.iterations <= 0:  # negative when a stream gets no token at all
            need = n * steps + 1 if convention == "textbook" else n * (steps + 1)
            raise ValueError(f"{name}: a corpus of {len(corpus)} tokens is too short for one batch of {n} x "
                             f"{steps} (needs at least {need})")
        self.reset_each_epoch = convention == "pytorch"
        self._fixed = None  # the pytorch convention's (N, S) streams, gathered once

    def __len__(self):
        """Iterations per epoch."""
        return self.iterations

    def spec(self):
        """Returns:
            dict: the settings (JSON-ready), compared when a checkpoint is resumed."""
        return {"source": "bptt", "tokens": len(self.corpus), "batch_size": self.batch_size,
                "time_size": self.time_size, "convention": self.convention, "drop_last": self.drop_last}

    def count(self, batch):
        """Target tokens in a batch (N x its window length)."""
        return batch[1].size

    def _move(self, a):
        return as_cupy(a) if self.device == "gpu" else a

    def _epoch_blocks(self, epoch):
        """The (N, E) inputs and targets of one epoch, on the device: a window is then a slice."""
        n = self.batch_size
        if self.convention == "pytorch":
            if self._fixed is None:
                streams = self.corpus[:n * (self.stream_tokens + 1)].reshape(n, -1)
                self._fixed = (self._move(streams[:, :self.epoch_tokens]),
                               self._move(streams[:, 1:self.epoch_tokens + 1]))
            return self._fixed
        length = len(self.corpus) - 1
        offsets = np.arange(n) * self.stream_tokens + epoch * self.epoch_tokens
        index = (offsets[:, None] + np.arange(self.epoch_tokens)) % length
        # targets at index + 1, not at the next wrapped position: the last token is a target too
        return self._move(self.corpus[index]), self._move(self.corpus[index + 1])

    def batches(self, epoch=0, start=0):
        """The batches of one epoch, from iteration ``start`` on (to resume mid-epoch).

        Args:
            epoch (int): the epoch, 0 for the first (the textbook convention's windows move with it).
            start (int): index of the first iteration, in [0, len(self)].
        Yields:
            tuple: ``(xs, ts)``, each (N, T') int32 on the batcher's device (T' = T but for a
            last shorter window), ``ts`` the next tokens; copies, free to keep or modify.
        Raises:
            ValueError: ``start`` out of range.
        """
        if _check_start(self, start):
            return
        xs, ts = self._epoch_blocks(epoch)
        steps = self.time_size
        for k in range(start, self.iterations):
            window = slice(k * steps, min((k + 1) * steps, self.epoch_tokens))
            yield xs[:, window].copy(), ts[:, window].copy()

    def __iter__(self):
        return self.batches()


class ShuffledBatcher:
    """Minibatches of examples in a seeded random order, a new permutation every epoch.

    Epoch ``e`` visits the examples in ``numpy.random.default_rng([seed, e]).permutation(n)``
    order, so every epoch's order follows from the seed alone (a resumed run, or another
    process, draws the same one). ``drop_last`` leaves out the last partial batch (as the classic
    textbook's trainer does).

    Args:
        arrays (sequence of ndarray): the parts of each example, each (n, ...): e.g.
            ``(questions, answers)`` or ``(images, captions)``.
        batch_size (int): examples per batch.
        seed (int): the randomness of the order.
        drop_last (bool): leave out a last batch smaller than ``batch_size``.
        vocab_size (int, optional): validate that the ids of every integer array lie in
            [0, vocab_size) (besides ``ignore_label``).
        ignore_label (int, optional): an id allowed besides the range (padding targets).
        device (str): ``"cpu"`` or ``"gpu"``; the arrays are copied there once.
    Raises:
        ValueError: no arrays, arrays of different lengths, fewer examples than one batch,
            a bad size or seed, ids out of range.
    """

    unit = "samples"
    reset_each_epoch = True  # each batch holds other examples: nothing carries over
    carries_state = False

    def __init__(self, arrays, batch_size, seed=0, drop_last=True, vocab_size=None, ignore_label=None,
                 device="cpu"):
        name = type(self).__name__
        self.batch_size = integer(name, "batch_size", batch_size)
        self.seed, self.drop_last = integer(name, "seed", seed, low=0), bool(drop_last)
        self.device = _check_device(name, device)
        arrays = [as_numpy(a) for a in arrays]
        if not arrays:
            raise ValueError(f"{name}: needs at least one array")
        lengths = {len(a) for a in arrays}
        if len(lengths) > 1:
            raise ValueError(f"{name}: arrays of different lengths {[len(a) for a in arrays]}")
        for i, a in enumerate(arrays):
            if a.dtype.kind in "iu":
                check_ids(name, f"array {i}", a, vocab_size, ignore_label)
        self.examples = lengths.pop()
        rounded = math.floor if self.drop_last else math.ceil
        self.iterations = rounded(self.examples / self.batch_size)
        if self.iterations <= 0:  # negative when a stream gets no token at all
            raise ValueError(f"{name}: {self.examples} examples are fewer than one batch of {self.batch_size}")
        move = as_cupy if device == "gpu" else np.asarray
        self.arrays = [move(a) for a in arrays]

    def __len__(self):
        """Iterations per epoch."""
        return self.iterations

    def spec(self):
        """Returns:
            dict: the settings (JSON-ready), compared when a checkpoint is resumed."""
        return {"source": "shuffled", "examples": self.examples, "batch_size": self.batch_size, "seed": self.seed,
                "drop_last": self.drop_last}

    def count(self, batch):
        """Examples in a batch."""
        return len(batch[0])

    def batches(self, epoch=0, start=0):
        """The batches of one epoch, from iteration ``start`` on.

        Args:
            epoch (int): the epoch, 0 for the first (it decides the permutation).
            start (int): index of the first iteration, in [0, len(self)].
        Yields:
            tuple: one array per part, each (batch_size, ...) (the last batch may be smaller
            when ``drop_last`` is False), on the batcher's device.
        Raises:
            ValueError: ``start`` out of range.
        """
        if _check_start(self, start):
            return
        order = np.random.default_rng([self.seed, epoch]).permutation(self.examples)
        order = as_cupy(order) if self.device == "gpu" else order
        size = self.batch_size
        for k in range(start, self.iterations):
            index = order[k * size:(k + 1) * size]
            yield tuple(a[index] for a in self.arrays)

    def __iter__(self):
        return self.batches()

"""Evaluators: the perplexity of a language model on a token stream, and the exact match of decoded answers.

An evaluator is called as ``evaluator(model, comm)`` after an epoch and returns a dict of numbers,
one for each of its ``keys``; the trainer stores them in the epoch's record as ``<name>_<key>``
(``valid_perplexity``, ``test_exact_match``). ``main`` names the number that logs and plots show. Evaluation runs
under ``no_grad()`` and ``test_mode()``, from a fresh state; the state the model carried
before is put back afterwards, so training continues its streams undisturbed.

Given a communicator, each rank scores its part (its rows of the streams, its slice of the
examples) and the sums (of losses and token counts, of correct answers) are reduced, so every
rank returns the same numbers, those of the whole set.
"""
import math

import numpy as np

from tinygrad_rnn import backend
from tinygrad_rnn.core import no_grad, test_mode
from tinygrad_rnn.data.batching import check_ids
from tinygrad_rnn.distributed import SerialComm, shard_rows

_PAD = -1  # target of the padding after the end of the text: ignored by the loss
CONVENTIONS = ("all", "pytorch")  # how perplexity cuts the stream (see perplexity)


def exp(value):
    """``math.exp`` that gives ``inf`` instead of raising for a diverged loss (and NaN for NaN)."""
    try:
        return math.exp(value)
    except OverflowError:
        return math.inf


def _on_device_of(model, a):
    p = next(model.params(), None)
    return backend.as_cupy(a) if p is not None and backend.is_cupy_array(p.data) else backend.as_numpy(a)


def perplexity(model, corpus, batch_size=10, time_size=35, comm=None, convention="all"):
    """Perplexity of a language model on a token stream, read in N streams T steps at a time.

    Two cuts of the stream, chosen by ``convention``:

    - ``"all"`` (every target token): the L - 1 targets are cut into N streams of
      ``ceil((L - 1) / N)`` tokens; the end of the last stream is padded with ignored targets,
      so every token counts exactly once (cutting the remainder off, as fixed-size batches
      do, would drop up to N*T - 1).
    - ``"pytorch"`` (PyTorch's word_language_model: ``batchify(data, eval_batch_size)`` and
      ``evaluate``): the corpus is cut into N streams of ``S = L // N`` tokens (the last
      ``L % N`` are dropped), each read in windows of T steps with its targets one token later
      inside the stream (the last window is shorter), so the N * (S - 1) targets count and no
      stream predicts the next one's first token. The mean over them is what ``evaluate``
      returns, and its exp the perplexity main.py prints.

    Args:
        model (Layer): has ``loss(xs, ts, ignore_label=...)``, the mean cross-entropy of (N, T)
            int ids against (N, T) targets, as the trainer calls it; stateful models carry their
            state from window to window.
        corpus (ndarray): (L,) int ids, L >= 2.
        batch_size (int): N parallel streams.
        time_size (int): T steps per window.
        comm (optional): a communicator: each rank scores its rows of the N streams.
        convention (str): ``"all"`` or ``"pytorch"`` (see above).
    Returns:
        dict: ``loss`` (mean cross-entropy, nats), ``tokens`` (the targets counted: L - 1, or
        N * (S - 1) with ``"pytorch"``) and ``perplexity`` (exp of the loss; ``inf`` for a
        diverged model).
    Raises:
        TypeError: the model has no ``loss``.
        ValueError: an unknown convention, fewer than two tokens (with ``"pytorch"``: fewer
            than two a stream), sizes below 1, ids that are negative.
    """
    if not callable(getattr(model, "loss", None)):
        raise TypeError(f"perplexity: the {type(model).__name__} has no loss(xs, ts, ignore_label), "
                        "the mean cross-entropy it is trained and evaluated with")
    corpus = backend.as_numpy(corpus)
    check_ids("perplexity", "corpus", corpus)
    if corpus.ndim != 1 or len(corpus) < 2:
        raise ValueError(f"perplexity: needs a 1-D corpus of at least 2 tokens, got shape {corpus.shape}")
    if batch_size < 1 or time_size < 1:
        raise ValueError(f"perplexity: batch_size and time_size must be >= 1, got {batch_size}, {time_size}")
    if convention not in CONVENTIONS:
        raise ValueError(f"perplexity: convention must be one of {', '.join(CONVENTIONS)}, got {convention!r}")
    if convention == "pytorch":
        xs, ts = _pytorch_streams(corpus, batch_size)
    else:
        xs, ts = _padded_streams(corpus, batch_size)
    targets = int((ts != _PAD).sum())
    comm = SerialComm() if comm is None else comm
    start, stop = shard_rows(len(xs), comm)
    xs, ts = xs[start:stop], ts[start:stop]
    length = xs.shape[1]
    carried = model.carried_state()
    model.reset_state()
    total = 0.0
    with no_grad(), test_mode():
        for k in range(0, length if stop > start else 0, time_size):
            window = slice(k, k + time_size)
            counted = int((ts[:, window] != _PAD).sum())  # known on the host: no device read
            loss = model.loss(_on_device_of(model, xs[:, window]), _on_device_of(model, ts[:, window]),
                              ignore_label=_PAD)
            total = total + loss.data * counted
    model.load_carried_state(carried)
    mean = comm.allreduce_numbers([total])[0] / targets
    return {"loss": mean, "tokens": targets, "perplexity": exp(mean)}


def _padded_streams(corpus, batch_size):
    """(N, ceil((L - 1) / N)) inputs and targets holding every target once, the end padded (``"all"``)."""
    targets = len(corpus) - 1
    n = min(batch_size, targets)
    length = -(-targets // n)
    xs = np.zeros(n * length, dtype=np.int32)  # any valid id: the padding's targets are ignored
    ts = np.full(n * length, _PAD, dtype=np.int32)
    xs[:targets], ts[:targets] = corpus[:-1], corpus[1:]
    return xs.reshape(n, length), ts.reshape(n, length)


def _pytorch_streams(corpus, batch_size):
    """(N, S - 1) inputs and targets of N streams of S = L // N tokens, the rest dropped (``"pytorch"``)."""
    length = len(corpus) // batch_size
    if length < 2:
        raise ValueError(f"perplexity: convention 'pytorch' cuts {len(corpus)} tokens into {batch_size} streams of "
                         f"{length}; each needs at least 2 (an input and its target)")
    streams = corpus[:batch_size * length].astype(np.int32).reshape(batch_size, length)
    return streams[:, :-1], streams[:, 1:]


def exact_match(model, xs, ts, batch_size=1000, ignore_id=None, beam_width=1, comm=None):
    """How many examples have their whole decoded answer right.

    Each batch is decoded with ``model.generate(xs, start_id, Ta - 1, beam_width=...)`` and
    compared with ``ts[:, 1:]`` position by position.

    Args:
        model (Layer): has ``generate(xs, start_id, length, beam_width=...)`` -> (N, length) ids.
        xs (ndarray): (N, ...) inputs.
        ts (ndarray): (N, Ta) int answers; ``ts[:, 0]`` is the start token (the same in every row).
        batch_size (int): examples decoded at once.
        ignore_id (int, optional): target positions holding it are not compared (padding
            after an end token).
        beam_width (int): 1 for greedy decoding.
        comm (optional): a communicator: each rank decodes its slice of the examples.
    Returns:
        dict: ``correct``, ``total`` and ``exact_match`` (their ratio, in [0, 1]).
    Raises:
        ValueError: no examples, ``len(xs) != len(ts)``, or ``ts[:, 0]`` is not constant.
    """
    ts = backend.as_numpy(ts)
    if len(xs) != len(ts) or not len(ts):
        raise ValueError(f"exact_match: needs as many answers as inputs (at least one), got {len(xs)} and {len(ts)}")
    first = ts[:, 0]
    if (first != first[0]).any():
        raise ValueError(f"exact_match: ts[:, 0] must hold one start token, got {sorted(set(first.tolist()))}")
    comm = SerialComm() if comm is None else comm
    start, stop = shard_rows(len(ts), comm)
    hits = 0
    for i in range(start, stop, batch_size):
        end = min(i + batch_size, stop)
        target = ts[i:end, 1:]
        ids = model.generate(_on_device_of(model, xs[i:end]), int(first[0]), target.shape[1], beam_width=beam_width)
        right = backend.as_numpy(ids) == target
        if ignore_id is not None:
            right |= target == ignore_id
        hits += int(right.all(axis=1).sum())
    hits = round(comm.allreduce_numbers([hits])[0])
    return {"correct": hits, "total": len(ts), "exact_match": hits / len(ts)}


class Perplexity:
    """Evaluator: ``perplexity`` of a language model on a token stream.

    Args:
        corpus (ndarray): (L,) int ids (validation or test text).
        batch_size (int): N.
        time_size (int): T.
        name (str): prefix of the record keys (``valid_perplexity``, ``valid_loss``, ``valid_tokens``).
        convention (str): how the stream is cut: ``"all"`` (every target token) or ``"pytorch"``
            (word_language_model's ``batchify`` and ``evaluate``); see ``perplexity``.
    Raises:
        ValueError: an unknown convention.
    """

    main = "perplexity"
    keys = ("loss", "tokens", "perplexity")
    higher_is_better = False

    def __init__(self, corpus, batch_size=10, time_size=35, name="valid", convention="all"):
        if convention not in CONVENTIONS:  # now, not after the first epoch
            raise ValueError(f"Perplexity: convention must be one of {', '.join(CONVENTIONS)}, got {convention!r}")
        self.corpus, self.batch_size, self.time_size, self.name = corpus, batch_size, time_size, name
        self.convention = convention

    def __call__(self, model, comm=None):
        """Returns:
            dict: see ``perplexity`` (reduced over the ranks of ``comm``)."""
        return perplexity(model, self.corpus, self.batch_size, self.time_size, comm, self.convention)


class ExactMatch:
    """Evaluator: ``exact_match`` of decoded answers on a held-out set.

    Args:
        xs (ndarray): (N, ...) inputs.
        ts (ndarray): (N, Ta) int answers, ``ts[:, 0]`` the start token.
        batch_size (int): examples decoded at once.
        ignore_id (int, optional): target positions not compared.
        beam_width (int): 1 for greedy decoding.
        name (str): prefix of the record keys (``test_exact_match``, ``test_correct``, ``test_total``).
    """

    main = "exact_match"
    keys = ("correct", "total", "exact_match")
    higher_is_better = True

    def __init__(self, xs, ts, batch_size=1000, ignore_id=None, beam_width=1, name="test"):
        self.xs, self.ts, self.name = xs, ts, name
        self.batch_size, self.ignore_id, self.beam_width = batch_size, ignore_id, beam_width

    def __call__(self, model, comm=None):
        """Returns:
            dict: see ``exact_match`` (reduced over the ranks of ``comm``)."""
        return exact_match(model, self.xs, self.ts, self.batch_size, self.ignore_id, self.beam_width, comm)

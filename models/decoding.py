"""Decoding for encoder-decoder models: greedy search and beam search, shared by every decoder.

A model that decodes implements two methods (``DecodingMixin`` gives ``decode_step`` to models
with a ``decoder``, and adds ``loss``, ``generate`` and ``beam_search``)::

    state = model.init_decoder(xs)                # encode the inputs (an array on the model's device)
    scores, state = model.decode_step(state, ids)  # ids (N,) -> next-token scores (N, V), Variable or array

``state`` is an array, a Variable or a (nested) tuple or list of them, each with the batch
on axis 0; the search reorders and repeats those rows (beam search keeps ``N * K`` of them),
so anything per example, such as an attention model's encoder outputs, can ride along.

Searches run under ``no_grad()`` and ``test_mode()`` on the model's device. Greedy search
picks the argmax there; beam search brings the (N * K, V) scores of each step to the CPU and
ranks in float64. Results are NumPy arrays on the CPU.
"""
import numpy as np

from tinygrad_rnn import Variable, as_numpy, get_array_module, no_grad, test_mode
from tinygrad_rnn import functions as F


def _take(state, index):
    """Rows ``index`` of every array of a state (Variables become arrays: no graph is kept)."""
    if isinstance(state, (tuple, list)):
        return type(state)(_take(s, index) for s in state)
    return _array(state)[index]


def _array(x):
    return x.data if isinstance(x, Variable) else x


def _log_softmax(scores):
    """(M, V) float64 log-probabilities of a step's scores, on the CPU."""
    z = as_numpy(_array(scores)).astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _check(xs, length, where):
    if length < 0:
        raise ValueError(f"{where}: length must be >= 0, got {length}")
    if len(xs) == 0:
        raise ValueError(f"{where}: needs at least one input sequence")


def greedy_search(model, xs, start_id, length):
    """Decode by feeding back the most likely token at every step.

    Args:
        model (Layer): has ``init_decoder(xs)`` and ``decode_step(state, ids)`` (see the module).
        xs (ndarray): (N, ...) model inputs (token ids, images), on the model's device.
        start_id (int): the first decoder input of every row.
        length (int): tokens to generate.
    Returns:
        ndarray: (N, length) int32 on the CPU (the start token not included).
    Raises:
        ValueError: negative ``length`` or an empty batch.
    """
    _check(xs, length, "greedy_search")
    xp = get_array_module(xs)
    out = []
    with no_grad(), test_mode():
        state = model.init_decoder(xs)
        ids = xp.full((len(xs),), start_id, dtype=xp.int32)
        for _ in range(length):
            scores, state = model.decode_step(state, ids)
            ids = _array(scores).argmax(axis=1).astype(xp.int32)
            out.append(ids)
    if not out:
        return np.zeros((len(xs), 0), dtype=np.int32)
    return as_numpy(xp.stack(out, axis=1))


def beam_search(model, xs, start_id, length, beam_width, end_id=None):
    """Decode by keeping the ``beam_width`` best partial sequences of each input at every step.

    A sequence's score is the sum of its tokens' log-probabilities. At each step every kept
    sequence is extended by every token and the ``K`` best extensions (per input) are kept;
    ties go to the earlier beam and then the lower token id, so ``K = 1`` is exactly greedy
    search. With ``end_id``, a sequence that produced it is finished: it is extended only by
    ``end_id`` again, at no cost, and keeps competing with its final score.

    Args:
        model (Layer): has ``init_decoder(xs)`` and ``decode_step(state, ids)`` (see the module).
        xs (ndarray): (N, ...) model inputs, on the model's device.
        start_id (int): the first decoder input of every row.
        length (int): tokens to generate.
        beam_width (int): K >= 1.
        end_id (int, optional): the end token, if sequences can end early.
    Returns:
        tuple: ``(ids, scores)``: the best sequence of each input, (N, length) int32, and its
        log-probability, (N,) float64, both on the CPU.
    Raises:
        ValueError: ``beam_width < 1``, negative ``length`` or an empty batch.
    """
    _check(xs, length, "beam_search")
    if beam_width < 1:
        raise ValueError(f"beam_search: beam_width must be >= 1, got {beam_width}")
    xp = get_array_module(xs)
    n, k = len(xs), beam_width
    rows = np.arange(n)[:, None]
    seqs = np.zeros((n, k, 0), dtype=np.int32)
    # only beam 0 is alive at first: K copies of the same start would fill the beam with duplicates
    beam_scores = np.full((n, k), -np.inf)
    beam_scores[:, 0] = 0.0
    finished = np.zeros((n, k), dtype=bool)
    with no_grad(), test_mode():
        state = _take(model.init_decoder(xs), xp.asarray(np.repeat(np.arange(n), k)))
        ids = xp.full((n * k,), start_id, dtype=xp.int32)
        for _ in range(length):
            scores, state = model.decode_step(state, ids)
            logp = _log_softmax(scores).reshape(n, k, -1)
            vocab = logp.shape[2]
            if end_id is not None:
                logp[finished] = -np.inf
                logp[finished, end_id] = 0.0
            total = (beam_scores[:, :, None] + logp).reshape(n, k * vocab)
            best = np.argsort(-total, axis=1, kind="stable")[:, :k]  # stable: ties to the lower index
            parent, token = best // vocab, (best % vocab).astype(np.int32)
            beam_scores = total[rows, best]
            seqs = np.concatenate([seqs[rows, parent], token[:, :, None]], axis=2)
            finished = finished[rows, parent] | (token == end_id if end_id is not None else False)
            state = _take(state, xp.asarray((rows * k + parent).ravel()))
            ids = xp.asarray(token.ravel())
    return seqs[:, 0].copy(), beam_scores[:, 0].copy()


def sequence_log_prob(model, xs, start_id, ids):
    """Log-probability the model gives to given output sequences (teacher forcing, step by step).

    Args:
        model (Layer): has ``init_decoder(xs)`` and ``decode_step(state, ids)``.
        xs (ndarray): (N, ...) model inputs, on the model's device.
        start_id (int): the first decoder input of every row.
        ids (array-like): (N, L) int output sequences.
    Returns:
        ndarray: (N,) float64, the sum over the L steps of log p(ids[:, t] | previous).
    """
    ids = np.asarray(as_numpy(ids), dtype=np.int32)
    xp = get_array_module(xs)
    total = np.zeros(len(ids))
    with no_grad(), test_mode():
        state = model.init_decoder(xs)
        inputs = xp.full((len(ids),), start_id, dtype=xp.int32)
        for t in range(ids.shape[1]):
            scores, state = model.decode_step(state, inputs)
            total += _log_softmax(scores)[np.arange(len(ids)), ids[:, t]]
            inputs = xp.asarray(ids[:, t])
    return total


class DecodingMixin:
    """What every encoder-decoder Layer shares: the teacher-forced ``loss``, ``decode_step``,
    ``generate`` and ``beam_search``.

    The Layer holds ``encoder`` and ``decoder`` (whose ``step(state, ids)`` is one decoding
    step) and defines ``forward(xs, inputs)`` (teacher-forced scores) and ``init_decoder(xs)``.
    """

    def loss(self, xs, ts):
        """Mean cross-entropy of teacher-forced decoding: the model reads ``ts[:, :-1]`` and predicts ``ts[:, 1:]``.

        Equals the mean, over the N * (Ta - 1) predicted tokens, of the negative
        log-probabilities that ``sequence_log_prob`` (and beam search) sum step by step.

        Args:
            xs (Variable | ndarray): (N, ...) inputs: (N, Tq) int question ids, or images.
            ts (ndarray): (N, Ta) int answer ids; ``ts[:, 0]`` is the start token.
        Returns:
            Variable: () float.
        """
        return F.softmax_cross_entropy(self(xs, ts[:, :-1]), ts[:, 1:])

    def decode_step(self, state, ids):
        """One step for ``tinygrad_rnn.models.decoding``: (N,) ids -> (N, V) scores and the next state."""
        return self.decoder.step(state, ids)

    def generate(self, xs, start_id, length, beam_width=1):
        """Decode output sequences.

        Args:
            xs (ndarray): (N, ...) inputs, on the model's device.
            start_id (int): the first decoder input.
            length (int): tokens to generate.
            beam_width (int): 1 for greedy search, more for beam search.
        Returns:
            ndarray: (N, length) int32 ids on the CPU.
        Raises:
            ValueError: see ``greedy_search`` and ``beam_search``.
        """
        if beam_width == 1:
            return greedy_search(self, xs, start_id, length)
        return beam_search(self, xs, start_id, length, beam_width)[0]

    def beam_search(self, xs, start_id, length, beam_width=3, end_id=None):
        """Beam search (see ``tinygrad_rnn.models.decoding.beam_search``).

        Args:
            xs (ndarray): (N, ...) inputs, on the model's device.
            start_id (int): the first decoder input.
            length (int): tokens to generate.
            beam_width (int): K.
            end_id (int, optional): the end token.
        Returns:
            tuple: (ids (N, length) int32, scores (N,) float64), on the CPU.
        """
        return beam_search(self, xs, start_id, length, beam_width, end_id)

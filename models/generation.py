"""Text generation with a stateful language model: sampling (``generate``) and ``greedy`` decoding.

Both reset the model's state, feed the start ids through the model in one call, then predict
one token at a time, feeding each prediction back. They run under ``no_grad()`` and
``test_mode()`` (no graph, no dropout) on whichever device holds the model; the next-token
scores are brought to the CPU to choose from, so the choices are the same on both backends.
"""
import numpy as np

from tinygrad_rnn import as_numpy, get_array_module, no_grad, test_mode


def _decode(model, start_ids, length, choose):
    start_ids = [int(i) for i in start_ids]
    if not start_ids:
        raise ValueError("generate: start_ids must hold at least one id")
    if length < 0:
        raise ValueError(f"generate: length must be >= 0, got {length}")
    xp = get_array_module(next(model.params()))
    ids = list(start_ids)
    x = start_ids
    model.reset_state()
    with no_grad(), test_mode():
        for _ in range(length):
            scores = model(xp.asarray([x], dtype=xp.int32))  # (1, len(x), V)
            x = [choose(as_numpy(scores.data[0, -1]).astype(np.float64))]
            ids += x
    return ids


def _masked(scores, skip_ids):
    """Scores with the skipped ids at -inf, so they are never chosen."""
    scores = scores.copy()
    scores[list(skip_ids)] = -np.inf
    if np.isneginf(scores).all():
        raise ValueError(f"generate: skip_ids {sorted(skip_ids)} leave no word to choose")
    return scores


def generate(model, start_ids, length, temperature=1.0, top_k=None, skip_ids=(), seed=None):
    """Sample a continuation from a language model.

    Each next id is drawn from ``softmax(scores / temperature)`` restricted to the ``top_k``
    best-scored ids, with the ``skip_ids`` never drawn.

    Args:
        model (Layer): maps (1, T) int32 ids to (1, T, V) scores; stateful, with ``reset_state()``.
        start_ids (sequence of int): the prompt, at least one id.
        length (int): how many ids to generate after the prompt.
        temperature (float): > 0; below 1 sharpens, above 1 flattens the distribution.
        top_k (int, optional): sample only among the k most likely ids.
        skip_ids (iterable of int): ids never generated (e.g. ``<unk>``).
        seed (int | numpy.random.Generator, optional): randomness; the same seed gives the
            same text.
    Returns:
        list[int]: the start ids followed by ``length`` generated ids.
    Raises:
        ValueError: empty prompt, negative length, ``temperature <= 0``, ``top_k < 1``, or
            skip ids that exclude every word.
    """
    if temperature <= 0:
        raise ValueError(f"generate: temperature must be > 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"generate: top_k must be >= 1, got {top_k}")
    rng = np.random.default_rng(seed)

    def sample(scores):
        scores = _masked(scores, skip_ids) / temperature
        if top_k is not None and top_k < len(scores):
            scores[np.argsort(scores)[:-top_k]] = -np.inf
        p = np.exp(scores - scores.max())
        return int(rng.choice(len(p), p=p / p.sum()))

    return _decode(model, start_ids, length, sample)


def greedy(model, start_ids, length, skip_ids=()):
    """Continue a prompt with the most likely id at every step.

    Args:
        model (Layer): as for ``generate``.
        start_ids (sequence of int): the prompt, at least one id.
        length (int): how many ids to generate after the prompt.
        skip_ids (iterable of int): ids never generated.
    Returns:
        list[int]: the start ids followed by ``length`` generated ids.
    Raises:
        ValueError: empty prompt, negative length, or skip ids that exclude every word.
    """
    return _decode(model, start_ids, length, lambda scores: int(np.argmax(_masked(scores, skip_ids))))

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn.models import LSTMLM, BetterLSTMLM, generate, greedy

V = 7


@pytest.fixture
def model():
    return LSTMLM(V, 3, 4, seed=0)


def test_generate_returns_start_ids_then_length_new_ids(model):
    ids = generate(model, [1, 2], 10, seed=0)
    assert ids[:2] == [1, 2] and len(ids) == 12 and all(isinstance(i, int) and 0 <= i < V for i in ids)


def test_generate_is_reproducible_with_a_seed(model):
    a = generate(model, [3], 30, seed=5)
    assert generate(model, [3], 30, seed=5) == a
    assert generate(model, [3], 30, seed=6) != a


def test_generate_never_emits_skip_ids(model):
    ids = generate(model, [0], 200, skip_ids={0, 1, 2}, temperature=3.0, seed=0)
    assert not {0, 1, 2} & set(ids[1:])
    assert set(ids[1:]) == {3, 4, 5, 6}  # a flat distribution reaches every other id


def test_generate_top_k_limits_choices_and_top_1_is_greedy(model):
    assert generate(model, [1], 20, top_k=1, seed=0) == greedy(model, [1], 20)
    ids = generate(model, [1], 100, top_k=2, temperature=5.0, seed=0)
    # every sampled id is among the two best-scored ids at its step
    model.reset_state()
    with tg.no_grad(), tg.test_mode():
        scores = model(np.array([ids[:-1]], dtype=np.int32)).data[0]
    for t, chosen in enumerate(ids[1:]):
        assert chosen in np.argsort(scores[t])[-2:]


def test_greedy_picks_the_argmax_given_the_whole_prefix(model):
    ids = greedy(model, [4, 2], 15)
    model.reset_state()
    with tg.no_grad(), tg.test_mode():
        scores = model(np.array([ids[:-1]], dtype=np.int32)).data[0]  # one pass over the whole sequence
    np.testing.assert_array_equal(scores.argmax(axis=1)[1:], ids[2:])


def test_greedy_respects_skip_ids(model):
    banned = greedy(model, [4], 12)[1]
    assert banned not in greedy(model, [4], 12, skip_ids=[banned])[1:]


def test_generation_starts_from_a_fresh_state(model):
    before = greedy(model, [4], 12)
    model(np.array([[1, 2, 3]], dtype=np.int32))  # leaves a carried state behind
    assert greedy(model, [4], 12) == before


def test_generate_with_dropout_model_is_deterministic():
    model = BetterLSTMLM(V, 4, 4, dropout=0.5, seed=0)
    assert greedy(model, [1], 10) == greedy(model, [1], 10)  # dropout is off while generating


def test_generate_rejects_bad_arguments(model):
    with pytest.raises(ValueError, match="start_ids"):
        generate(model, [], 3)
    with pytest.raises(ValueError, match="temperature"):
        generate(model, [1], 3, temperature=0)
    with pytest.raises(ValueError, match="top_k"):
        generate(model, [1], 3, top_k=0)
    with pytest.raises(ValueError, match="no word"):
        greedy(model, [1], 3, skip_ids=range(V))


@pytest.mark.gpu
def test_greedy_gives_the_same_ids_on_gpu(model, cupy):
    cpu = greedy(model, [1, 2], 20)
    sampled = generate(model, [1], 20, seed=3)
    model.to_gpu()
    assert greedy(model, [1, 2], 20) == cpu
    assert generate(model, [1], 20, seed=3) == sampled

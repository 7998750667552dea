"""Captioning: the generated digit data set and CaptionModel (gradients, decoding, a short run)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_layers import check_layer_grads

import tinygrad_rnn as tg
from tinygrad_rnn.models import CaptionModel
from tinygrad_rnn.models.decoding import sequence_log_prob
from tinygrad_rnn.data import captions
from tinygrad_rnn.optimizers import Adam

ROOT = Path(__file__).resolve().parents[1]
V, D, H = 13, 3, 4
TINY_IMAGE = (1, 6, 8)


def test_same_seed_generates_the_same_set_and_another_seed_another():
    a, b, c = (captions.load_captions(20, 5, seed=s) for s in (3, 3, 4))
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.t_test, b.t_test)
    assert not np.array_equal(a.x_train, c.x_train)


def test_held_out_set_does_not_depend_on_the_training_size():
    np.testing.assert_array_equal(captions.load_captions(5, 7, seed=1).x_test,
                                  captions.load_captions(30, 7, seed=1).x_test)


def test_images_are_grayscale_in_the_unit_range_with_ink_on_a_darker_background():
    data = captions.load_captions(50, 1, seed=0)
    x = data.x_train
    assert x.shape == (50, 1) + captions.IMAGE_SHAPE and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert all((img > 0.55).any() and np.median(img) < 0.45 for img in x)


def test_caption_rows_start_end_and_pad_and_round_trip():
    vocab = captions.vocabulary()
    ts = captions.encode_captions(["seven zero two", "one", "nine nine nine nine"], vocab)
    assert ts.shape == (3, 6) and ts.dtype == np.int32
    assert vocab.decode(ts[1]) == "<bos> one <eos> <pad> <pad> <pad>"
    assert vocab.decode(ts[2]) == "<bos> nine nine nine nine <eos>"
    assert [captions.decode_caption(row, vocab) for row in ts] == ["seven zero two", "one", "nine nine nine nine"]
    assert captions.decode_caption(ts[0, 1:], vocab) == "seven zero two"  # without the start token too


def test_generated_captions_have_one_to_four_digit_words():
    data = captions.load_captions(200, 1, seed=0)
    lengths = [len(data.caption(t).split()) for t in data.t_train]
    assert set(lengths) == {1, 2, 3, 4}
    assert (data.t_train[:, 0] == data.start_id).all()


def test_rendered_ink_matches_the_font():
    # no noise and a uniform scale: the image, thresholded, is the glyph scaled up
    rng = np.random.default_rng(0)
    image = captions.render([8], rng, noise=0.0)
    ink = image > image.min() + 1e-6
    rows, cols = np.nonzero(ink.any(axis=1))[0], np.nonzero(ink.any(axis=0))[0]
    box = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    gh, gw = box.shape
    np.testing.assert_array_equal(box, captions.FONT[8][(np.arange(gh) * 7) // gh][:, (np.arange(gw) * 5) // gw])


def test_errors_for_too_many_digits_and_too_long_captions():
    with pytest.raises(ValueError, match="render: need 1 to 4 digits"):
        captions.render([1, 2, 3, 4, 5], np.random.default_rng(0))
    with pytest.raises(ValueError, match="encode_captions: .* more than length 4"):
        captions.encode_captions(["one two three"], captions.vocabulary(), length=4)


def _tiny_model(**kw):
    return CaptionModel(V, D, H, image_shape=TINY_IMAGE, channels=(2, 3), seed=0, **kw)


def _tiny_batch(n=2, length=4, seed=0):
    rng = np.random.default_rng(seed)
    ts = rng.integers(3, V, (n, length)).astype(np.int32)
    ts[:, 0] = 1
    return rng.random((n,) + TINY_IMAGE), ts


def test_caption_model_loss_backward_matches_numerical_end_to_end():
    model = _tiny_model(dtype=np.float64)
    xs, ts = _tiny_batch()
    check_layer_grads(model, lambda xs: model.loss(xs, ts), xs)


def test_caption_model_is_float32_by_default_and_decodes_ids_of_the_right_shape():
    model = _tiny_model()
    xs, ts = _tiny_batch(n=3)
    loss = model.loss(xs.astype(np.float32), ts)
    assert loss.shape == () and loss.dtype == np.float32
    ids = model.generate(xs.astype(np.float32), 1, 5)
    assert ids.shape == (3, 5) and ids.dtype == np.int32 and ((0 <= ids) & (ids < V)).all()


def test_beam_width_one_is_greedy_decoding():
    model = _tiny_model(dtype=np.float64)
    xs, _ = _tiny_batch(n=4)
    np.testing.assert_array_equal(model.generate(xs, 1, 5, beam_width=1), model.beam_search(xs, 1, 5, beam_width=1)[0])


def test_beam_search_finds_a_caption_at_least_as_likely_as_greedy():
    model = _tiny_model(dtype=np.float64)
    xs, _ = _tiny_batch(n=4)
    greedy = sequence_log_prob(model, xs, 1, model.generate(xs, 1, 4))
    _, beam = model.beam_search(xs, 1, 4, beam_width=4)
    assert (beam >= greedy - 1e-9).all()


def test_short_training_run_on_generated_images_lowers_the_loss():
    data = captions.load_captions(64, 1, seed=0)
    model = CaptionModel(V, 8, 32, channels=(4, 8), seed=0)
    optimizer = Adam(lr=0.005).setup(model)
    losses = []
    for step in range(30):
        batch = slice((step % 4) * 16, (step % 4 + 1) * 16)
        loss = model.loss(data.x_train[batch], data.t_train[batch])
        model.cleargrads()
        loss.backward()
        optimizer.update()
        losses.append(float(loss.data))
    assert np.mean(losses[-4:]) < 0.7 * np.mean(losses[:4])


def test_train_tool_prints_captions_a_grid_and_a_json_summary(tmp_path):
    env = dict(os.environ, PYTHONIOENCODING="utf-8")
    done = subprocess.run([sys.executable, "tools/train_caption.py", "--no-progress", "--epochs", "2", "--train-size",
                           "100", "--test-size", "20", "--hidden", "16", "--channels", "2,4", "--out", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    result = json.loads(lines[-1])
    assert {"test_exact_match", "train_seconds", "test_exact_match_per_epoch", "samples_per_second"} <= result.keys()
    assert len(result["test_exact_match_per_epoch"]) == 2 and result["epochs"] == 2
    assert any("☑" in line or "☒" in line for line in lines)
    assert (tmp_path / "captions.png").stat().st_size > 0 and (tmp_path / "history.json").exists()


@pytest.mark.gpu
def test_caption_model_on_the_gpu_matches_the_cpu(cupy):
    xs, ts = _tiny_batch(n=3)
    xs = xs.astype(np.float32)
    cpu, gpu = _tiny_model(), _tiny_model().to_gpu()
    np.testing.assert_allclose(tg.as_numpy(gpu.loss(cupy.asarray(xs), cupy.asarray(ts)).data), cpu.loss(xs, ts).data,
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(gpu.generate(cupy.asarray(xs), 1, 5), cpu.generate(xs, 1, 5))


def test_the_teacher_forced_loss_is_the_mean_of_the_step_by_step_negative_log_probabilities():
    model = _tiny_model(dtype=np.float64)
    xs, ts = _tiny_batch(n=3, length=5)
    loss = float(model.loss(xs, ts).data)
    per_token = -sequence_log_prob(model, xs, int(ts[0, 0]), ts[:, 1:]).sum() / ts[:, 1:].size
    assert loss == pytest.approx(per_token, rel=1e-12)

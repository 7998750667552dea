import hashlib
import io
import os
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tinygrad_rnn.data import BPTTBatcher, ShuffledBatcher, Vocabulary, ptb

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"  # the workplace copy beside the repo


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No data anywhere: an empty cache and no TINYGRAD_RNN_DATA; the hash memo starts empty."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("TINYGRAD_RNN_DATA", raising=False)
    monkeypatch.setattr(ptb, "_verified", set())
    return tmp_path


def ptb_folder():
    """A folder holding the real PTB files, without downloading; skips the test when there is none."""
    for base in (os.environ.get("TINYGRAD_RNN_DATA"), SHARED_DATA):
        if base and (Path(base) / "ptb" / "ptb.train.txt").is_file():
            return Path(base) / "ptb"
    found = ptb.locate("train", download=False)
    if found is None:
        pytest.skip("PTB not found: set TINYGRAD_RNN_DATA to a folder holding ptb/ptb.{train,valid,test}.txt")
    return found.parent


def fake_urlopen(payloads, calls):
    def urlopen(url, timeout=None):
        calls.append(url)
        return io.BytesIO(payloads[url.rsplit("/", 1)[1]])
    return urlopen


# --- vocabulary -----------------------------------------------------------------------------------

def test_vocabulary_ids_follow_first_appearance_and_lines_end_with_eos():
    vocab = Vocabulary(["b", "a", "b", "c"])
    assert vocab.id_to_word == ["b", "a", "c"] and vocab.word_to_id == {"b": 0, "a": 1, "c": 2} and len(vocab) == 3
    vocab = Vocabulary(ptb._tokens("a b\nb c\n"))
    ids = vocab.encode("c a\n")
    assert ids.dtype == np.int32 and vocab.decode(ids) == "c a <eos>"


def test_vocabulary_encode_names_unknown_words():
    with pytest.raises(ValueError, match="zebra"):
        Vocabulary(["a"]).encode("a zebra")


# --- PTB ------------------------------------------------------------------------------------------

def test_ptb_train_has_929589_tokens_and_10000_words():
    folder = ptb_folder()
    corpus, vocab = ptb.load("train", path=folder)
    assert corpus.dtype == np.int32 and corpus.shape == (929589,) and len(vocab) == 10000
    assert vocab.id_to_word[:3] == ["aer", "banknote", "berlitz"] and corpus.max() == 9999
    assert vocab.decode(corpus[:3]) == "aer banknote berlitz"
    for split in ("valid", "test"):
        other, other_vocab = ptb.load(split, path=folder.parent)  # the parent of ptb/ works too
        assert other_vocab is vocab and other.dtype == np.int32 and 0 < len(other) < len(corpus)


def test_ptb_finds_files_through_environment_variable(isolated, monkeypatch):
    folder = ptb_folder()
    monkeypatch.setenv("TINYGRAD_RNN_DATA", str(folder.parent))
    assert ptb.locate("valid") == folder / "ptb.valid.txt"


def test_ptb_local_file_with_wrong_hash_is_refused(isolated):
    (isolated / "ptb.valid.txt").write_text("not ptb\n")
    with pytest.raises(ValueError, match="sha256"):
        ptb.locate("valid", path=isolated)


def test_ptb_download_checks_sha256_and_saves_into_cache(isolated, monkeypatch):
    folder = ptb_folder()
    payloads = {f"ptb.{s}.txt": (folder / f"ptb.{s}.txt").read_bytes() for s in ptb.SHA256}
    calls = []
    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen(payloads, calls))
    _, vocab = ptb.load("valid")
    cache = isolated / "cache" / "tinygrad_rnn" / "ptb"
    assert sorted(p.name for p in cache.iterdir()) == ["ptb.train.txt", "ptb.valid.txt"]
    assert calls == [ptb.URL.format(split="train"), ptb.URL.format(split="valid")]
    assert len(vocab) == 10000
    ptb.load("valid")
    assert len(calls) == 2  # the second load reads the cache


def test_ptb_download_with_wrong_bytes_raises_and_leaves_no_file(isolated, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen({"ptb.test.txt": b"tampered\n"}, []))
    with pytest.raises(ValueError, match="sha256"):
        ptb.locate("test")
    assert list((isolated / "cache" / "tinygrad_rnn" / "ptb").iterdir()) == []


def test_ptb_download_accepts_bytes_matching_the_hash(isolated, monkeypatch):
    payload = b"a b c\n"
    monkeypatch.setitem(ptb.SHA256, "test", hashlib.sha256(payload).hexdigest())
    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen({"ptb.test.txt": payload}, []))
    assert ptb.locate("test").read_bytes() == payload


def test_ptb_offline_error_says_where_to_put_the_files(isolated, monkeypatch):
    def offline(url, timeout=None):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(FileNotFoundError) as info:
        ptb.load("train", path=isolated / "mine")
    message = str(info.value)
    for folder in (isolated / "mine", isolated / "mine" / "ptb", isolated / "cache" / "tinygrad_rnn" / "ptb"):
        assert str(folder) in message
    assert "ptb.train.txt" in message and "TINYGRAD_RNN_DATA" in message
    assert list((isolated / "cache" / "tinygrad_rnn" / "ptb").iterdir()) == []


def test_ptb_rejects_unknown_split():
    with pytest.raises(ValueError, match="split"):
        ptb.locate("dev")


# --- BPTT batching --------------------------------------------------------------------------------

def test_batcher_streams_start_at_even_offsets_and_targets_are_shifted():
    corpus = np.arange(103)
    batcher = BPTTBatcher(corpus, batch_size=4, time_size=5)
    assert len(batcher) == (103 - 1) // (4 * 5) == 5
    batches = list(batcher)
    assert len(batches) == 5
    jump = (103 - 1) // 4
    for k, (xs, ts) in enumerate(batches):
        assert xs.dtype == ts.dtype == np.int32 and xs.shape == ts.shape == (4, 5)
        expected = np.arange(4)[:, None] * jump + k * 5 + np.arange(5)
        np.testing.assert_array_equal(xs, expected)
        np.testing.assert_array_equal(ts, expected + 1)


def test_batcher_streams_continue_across_iterations():
    xs = np.concatenate([x for x, _ in BPTTBatcher(np.arange(61), batch_size=3, time_size=4)], axis=1)
    np.testing.assert_array_equal(xs, np.arange(3)[:, None] * 20 + np.arange(20))


def test_batcher_epochs_continue_the_streams_and_wrap_around():
    corpus = np.arange(103)
    batcher = BPTTBatcher(corpus, batch_size=4, time_size=5)
    length, jump = 102, 102 // 4
    for epoch in (1, 3):
        for k, (xs, ts) in enumerate(batcher.batches(epoch)):
            position = (np.arange(4)[:, None] * jump + (epoch * len(batcher) + k) * 5 + np.arange(5)) % length
            np.testing.assert_array_equal(xs, corpus[position])
            np.testing.assert_array_equal(ts, corpus[position + 1])


def test_batcher_can_start_at_a_given_iteration():
    batcher = BPTTBatcher(np.arange(200) % 17, batch_size=2, time_size=3)
    full = list(batcher)
    resumed = list(batcher.batches(start=7))
    assert len(resumed) == len(full) - 7
    for (x0, t0), (x1, t1) in zip(full[7:], resumed):
        np.testing.assert_array_equal(x0, x1)
        np.testing.assert_array_equal(t0, t1)
    assert list(batcher.batches(start=len(batcher))) == []
    with pytest.raises(ValueError, match="start"):
        next(batcher.batches(start=len(batcher) + 1))


def test_batcher_batches_are_copies():
    corpus = np.arange(50)
    batcher = BPTTBatcher(corpus, batch_size=2, time_size=4)
    xs, _ = next(iter(batcher))
    xs[:] = -1
    np.testing.assert_array_equal(next(iter(batcher))[0], [[0, 1, 2, 3], [24, 25, 26, 27]])


def test_batcher_rejects_a_corpus_too_short_for_one_batch():
    with pytest.raises(ValueError, match="too short"):
        BPTTBatcher(np.arange(20), batch_size=4, time_size=5)


@pytest.mark.parametrize("convention", ["textbook", "pytorch"])
@pytest.mark.parametrize("corpus", [np.array([], dtype=np.int32), []], ids=["int32", "list"])
def test_batcher_rejects_an_empty_corpus_naming_it(corpus, convention):
    with pytest.raises(ValueError, match=r"BPTTBatcher: corpus is empty \(0 tokens"):
        BPTTBatcher(corpus, batch_size=2, time_size=3, convention=convention)


@pytest.mark.parametrize("convention, need", [("textbook", 16), ("pytorch", 20)])
def test_batcher_rejects_a_corpus_shorter_than_its_streams(convention, need):
    # 3 tokens for 5 streams: a stream gets no token at all (the count of windows would be negative)
    with pytest.raises(ValueError, match=f"3 tokens is too short for one batch of 5 x 3 \\(needs at least {need}\\)"):
        BPTTBatcher(np.arange(3), batch_size=5, time_size=3, convention=convention)


@pytest.mark.gpu
def test_batcher_yields_gpu_arrays(cupy):
    from tinygrad_rnn.backend import as_numpy, get_array_module
    xs, ts = next(iter(BPTTBatcher(np.arange(50), batch_size=2, time_size=4, device="gpu")))
    assert get_array_module(xs).__name__ == "cupy"
    np.testing.assert_array_equal(as_numpy(ts), [[1, 2, 3, 4], [25, 26, 27, 28]])


def test_pytorch_convention_cuts_streams_and_windows_as_word_language_model_does():
    corpus = np.arange(103)
    n, steps = 4, 5
    # PyTorch's batchify and get_batch, written out
    streams = corpus[:(len(corpus) // n) * n].reshape(n, -1)
    expected = [(streams[:, i:i + min(steps, streams.shape[1] - 1 - i)],
                 streams[:, i + 1:i + 1 + min(steps, streams.shape[1] - 1 - i)])
                for i in range(0, streams.shape[1] - 1, steps)]
    batcher = BPTTBatcher(corpus, n, steps, convention="pytorch", drop_last=False)
    assert batcher.reset_each_epoch and len(batcher) == len(expected) == 5
    for epoch in (0, 3):  # fixed cuts: every epoch the same windows
        got = list(batcher.batches(epoch))
        assert len(got) == len(expected)
        for (x, t), (ex, et) in zip(got, expected):
            np.testing.assert_array_equal(x, ex)
            np.testing.assert_array_equal(t, et)
    dropped = list(BPTTBatcher(corpus, n, steps, convention="pytorch").batches())
    assert len(dropped) == 4 and all(x.shape == (4, 5) for x, _ in dropped)


def test_textbook_convention_with_the_last_window_covers_every_stream_each_epoch():
    corpus = np.arange(103)
    batcher = BPTTBatcher(corpus, 4, 7, drop_last=False)
    assert not batcher.reset_each_epoch and len(batcher) == 4  # 25 tokens a stream: 7, 7, 7 and 4
    for epoch in (0, 1):
        windows = list(batcher.batches(epoch))
        assert [x.shape[1] for x, _ in windows] == [7, 7, 7, 4]
        xs = np.concatenate([x for x, _ in windows], axis=1)
        ts = np.concatenate([t for _, t in windows], axis=1)
        position = (np.arange(4)[:, None] * 25 + epoch * 25 + np.arange(25)) % 102  # the streams continue
        np.testing.assert_array_equal(xs, corpus[position])
        np.testing.assert_array_equal(ts, corpus[position + 1])
    assert len(BPTTBatcher(corpus, 4, 7)) == 3  # without the short window


def test_batchers_validate_the_data_where_it_enters():
    with pytest.raises(ValueError, match=r"BPTTBatcher: corpus ids must be \[0, 10\), got range \[0, 12\]"):
        BPTTBatcher(np.arange(13), 2, 2, vocab_size=10)
    with pytest.raises(ValueError, match="corpus ids must be non-negative, got range"):
        BPTTBatcher(np.arange(-1, 40), 2, 2)
    with pytest.raises(TypeError, match="corpus must hold integer ids"):
        BPTTBatcher(np.linspace(0, 1, 40), 2, 2)
    with pytest.raises(ValueError, match="convention must be one of textbook, pytorch"):
        BPTTBatcher(np.arange(40), 2, 2, convention="chainer")
    for bad in (0, -3, 2.5, True):
        with pytest.raises((TypeError, ValueError), match="batch_size must be a positive integer"):
            BPTTBatcher(np.arange(40), bad, 2)
    xs, ts = np.zeros((10, 3), np.int32), np.zeros((10, 2), np.int32)
    ts[3, 1] = 13
    with pytest.raises(ValueError, match=r"ShuffledBatcher: array 1 ids must be \[0, 13\) \(or -1\), got range"):
        ShuffledBatcher((xs, ts), 2, vocab_size=13, ignore_label=-1)
    with pytest.raises(ValueError, match="arrays of different lengths"):
        ShuffledBatcher((xs, ts[:5]), 2)
    with pytest.raises(ValueError, match="10 examples are fewer than one batch of 11"):
        ShuffledBatcher((xs, ts), 11)


def test_shuffled_batches_follow_a_seeded_permutation_per_epoch_and_resume_mid_epoch():
    xs = np.arange(50)[:, None].astype(np.int32)
    ys = np.arange(50).astype(np.float32)
    batcher = ShuffledBatcher((xs, ys), 8, seed=3)
    assert len(batcher) == 6 and batcher.count(next(iter(batcher))) == 8
    epoch0, epoch1 = list(batcher.batches(0)), list(batcher.batches(1))
    order0 = np.concatenate([x[:, 0] for x, _ in epoch0])
    np.testing.assert_array_equal(order0, np.random.default_rng([3, 0]).permutation(50)[:48])
    assert not np.array_equal(order0, np.concatenate([x[:, 0] for x, _ in epoch1]))
    for x, y in epoch0:
        np.testing.assert_array_equal(x[:, 0], y)  # the parts of an example stay together
    for (a, _), (b, _) in zip(epoch0[2:], batcher.batches(0, start=2)):
        np.testing.assert_array_equal(a, b)
    whole = ShuffledBatcher((xs, ys), 8, seed=3, drop_last=False)
    assert len(whole) == 7 and [len(x) for x, _ in whole.batches(0)][-1] == 2
    assert sorted(np.concatenate([x[:, 0] for x, _ in whole.batches(0)])) == list(range(50))


def test_decoding_an_id_outside_the_vocabulary_names_it():
    with pytest.raises(ValueError, match=r"Vocabulary.decode: ids \[5\] lie outside the vocabulary \[0, 2\)"):
        Vocabulary(["a", "b"]).decode([0, 5])
    from tinygrad_rnn.data import toy_seq
    with pytest.raises(ValueError, match=r"CharVocabulary.decode: ids \[-1, 99\]"):
        toy_seq.addition_vocabulary().decode([99, -1])


def test_an_unknown_split_is_named_before_any_file_is_looked_for(isolated):
    with pytest.raises(ValueError, match="split must be one of"):
        ptb.load("dev")


def test_caption_sets_of_negative_size_are_refused():
    from tinygrad_rnn.data import captions
    with pytest.raises(ValueError, match="load_captions: train_size must be a positive integer, got -1"):
        captions.load_captions(-1, 10)
    with pytest.raises(ValueError, match="test_size must be an integer >= 0"):
        captions.load_captions(10, -2)

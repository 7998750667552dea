"""Toy seq2seq data: formats, distinct examples, splits, reversal, vocabularies, file loaders."""
import datetime
import os
from pathlib import Path

import numpy as np
import pytest

from tinygrad_rnn.data import CharVocabulary, toy_seq

ROOT = Path(__file__).resolve().parents[1]
# date.txt's formats and the generator's two extra ones; strptime matches names in any case
DATE_FORMATS = ["%m/%d/%y", "%b %d, %Y", "%B %d, %Y", "%A, %B %d, %Y", "%d %b %Y", "%Y-%m-%d"]


def shared_file(name):
    """A file of the shared toy data folder (beside the checkout, or under $TINYGRAD_RNN_DATA), or None."""
    folders = [ROOT.parent / "shared" / "data" / "seq2seq"]
    if os.environ.get("TINYGRAD_RNN_DATA"):
        folders.insert(0, Path(os.environ["TINYGRAD_RNN_DATA"]) / "seq2seq")
    return next((f / name for f in folders if (f / name).is_file()), None)


def parse_date(question):
    """The date a question names, checked against its weekday when it has one."""
    text = question.rstrip()
    for fmt in DATE_FORMATS:
        try:
            date = datetime.datetime.strptime(text, fmt).date()
        except ValueError:
            continue
        if "%A" in fmt:
            assert date.strftime("%A").lower() == text.split(",")[0].lower(), text
        return date
    raise AssertionError(f"no known format reads {question!r}")


def check_addition(pairs):
    vocab = toy_seq.addition_vocabulary()
    for q, a in pairs:
        assert (len(q), len(a)) == toy_seq.ADDITION_WIDTHS
        assert set(q + a) <= set(vocab.id_to_char)
        x, y = q.rstrip().split("+")
        assert 0 <= int(x) <= 999 and 0 <= int(y) <= 999
        assert a == f"_{int(x) + int(y)}".ljust(5) and q == q.rstrip().ljust(7)


def check_dates(pairs):
    vocab = toy_seq.date_vocabulary()
    for q, a in pairs:
        assert (len(q), len(a)) == toy_seq.DATE_WIDTHS
        assert set(q + a) <= set(vocab.id_to_char)
        assert a == "_" + parse_date(q).isoformat()


def test_addition_vocabulary_has_13_characters():
    vocab = toy_seq.addition_vocabulary()
    assert len(vocab) == 13 and "".join(sorted(vocab.id_to_char)) == " +0123456789_"


def test_generated_addition_is_well_formed_and_distinct():
    pairs = toy_seq.generate_addition(50000, seed=3)
    assert len(pairs) == 50000
    check_addition(pairs[:5000])
    keys = {tuple(sorted(int(n) for n in q.rstrip().split("+"))) for q, _ in pairs}
    assert len(keys) == 50000  # distinct even up to a+b == b+a
    lengths = {len(q.rstrip().split("+")[0]) for q, _ in pairs[:1000]}
    assert lengths == {1, 2, 3}  # short and long numbers both occur


def test_generators_are_reproducible_by_seed():
    assert toy_seq.generate_addition(100, seed=1) == toy_seq.generate_addition(100, seed=1)
    assert toy_seq.generate_addition(100, seed=1) != toy_seq.generate_addition(100, seed=2)
    assert toy_seq.generate_dates(100, seed=1) == toy_seq.generate_dates(100, seed=1)


def test_generate_addition_refuses_more_than_exist():
    with pytest.raises(ValueError, match="500,500"):
        toy_seq.generate_addition(500501)


def test_generated_dates_parse_back_to_the_same_date():
    pairs = toy_seq.generate_dates(3000, seed=0)
    assert len({q for q, _ in pairs}) == 3000
    check_dates(pairs)
    shapes = {next(f for f in DATE_FORMATS if _reads(q, f)) for q, _ in pairs}
    assert shapes == set(DATE_FORMATS)  # every format occurs
    cases = {q.split()[0].strip(",") for q, _ in pairs if q[0].isalpha()}
    assert any(w.islower() for w in cases) and any(w.isupper() for w in cases) and any(w.istitle() for w in cases)


def _reads(question, fmt):
    try:
        datetime.datetime.strptime(question.rstrip(), fmt)
        return True
    except ValueError:
        return False


def test_format_date_writes_the_named_formats():
    day = datetime.date(1995, 10, 3)
    assert toy_seq.format_date(day, "{weekday}, {month} {d}, {yyyy}", str.upper) == "TUESDAY, OCTOBER 3, 1995"
    assert toy_seq.format_date(day, "{m}/{d}/{yy}") == "10/3/95"
    assert toy_seq.format_date(day, "{d} {mon} {yyyy}", str.upper) == "3 OCT 1995"
    assert toy_seq.format_date(datetime.date(2003, 8, 19), "{yyyy}-{mm}-{dd}") == "2003-08-19"


def test_load_task_splits_45000_5000_and_reverses_questions():
    plain = toy_seq.load_task("addition", seed=0)
    assert plain.x_train.shape == (45000, 7) and plain.t_train.shape == (45000, 5)
    assert plain.x_test.shape == (5000, 7) and plain.t_test.shape == (5000, 5)
    assert plain.x_train.dtype == np.int32 and plain.t_train.dtype == np.int32
    assert (plain.t_train[:, 0] == plain.vocab.start_id).all()
    train_q = set(plain.vocab.decode(plain.x_train))
    assert not train_q & set(plain.vocab.decode(plain.x_test))
    rev = toy_seq.load_task("addition", seed=0, reverse=True)
    np.testing.assert_array_equal(rev.x_train, plain.x_train[:, ::-1])
    np.testing.assert_array_equal(rev.t_train, plain.t_train)
    assert rev.question(rev.x_test[0]) == plain.question(plain.x_test[0]) == plain.vocab.decode(plain.x_test[0])


def test_split_pairs_sizes_and_seed():
    pairs = list(range(100))
    train, test = toy_seq.split_pairs(pairs, 10, seed=4)
    assert len(train) == 90 and len(test) == 10 and sorted(train + test) == pairs
    assert toy_seq.split_pairs(pairs, 10, seed=4) == (train, test)
    with pytest.raises(ValueError):
        toy_seq.split_pairs(pairs, 101)


def test_char_vocabulary_round_trip_and_padding():
    vocab = toy_seq.date_vocabulary()
    texts = ["TUESDAY, OCTOBER 3, 1995", "8/19/03"]
    ids = vocab.encode(texts)
    assert ids.shape == (2, 24) and ids.dtype == np.int32
    assert vocab.decode(ids) == [texts[0], texts[1].ljust(24)]
    assert vocab.decode(vocab.encode("8/19/03", width=10)) == "8/19/03   "
    with pytest.raises(ValueError, match="not in the vocabulary"):
        vocab.encode(["1.2"])
    with pytest.raises(ValueError, match="width"):
        vocab.encode("12345", width=3)
    with pytest.raises(ValueError):
        CharVocabulary(["ab"])


def test_load_pairs_splits_at_the_first_underscore(tmp_path):
    path = tmp_path / "toy.txt"
    path.write_text("16+75  _91  \n8/19/03   _2003-08-19\n")
    assert toy_seq.load_pairs(path) == [("16+75  ", "_91  "), ("8/19/03   ", "_2003-08-19")]
    path.write_text("16+75 91\n")
    with pytest.raises(ValueError, match="line 1"):
        toy_seq.load_pairs(path)


@pytest.mark.skipif(shared_file("addition.txt") is None, reason="addition.txt not available")
def test_addition_file_and_generator_agree_on_the_format():
    pairs = toy_seq.load_pairs(shared_file("addition.txt"))
    assert len(pairs) == 50000
    check_addition(pairs)
    check_addition(toy_seq.generate_addition(1000))
    data = toy_seq.load_task("addition", path=shared_file("addition.txt"))
    assert data.x_train.shape == (45000, 7) and data.t_test.shape == (5000, 5)


@pytest.mark.skipif(shared_file("date.txt") is None, reason="date.txt not available")
def test_date_file_and_generator_agree_on_the_format():
    pairs = toy_seq.load_pairs(shared_file("date.txt"))
    check_dates(pairs[::10])  # every file format is one the generator writes (the parser knows no other)
    data = toy_seq.load_task("date", path=shared_file("date.txt"))
    assert data.x_train.shape == (45000, 29) and data.t_test.shape == (5000, 11)

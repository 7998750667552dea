"""Penn Treebank, the preprocessed version of Mikolov et al.: lookup, download, sha256 check, vocabulary.

``load(split)`` looks for ``ptb.<split>.txt`` in, in this order:

1. the ``path`` argument: a folder holding the files, or its parent holding ``ptb/``;
2. ``$TINYGRAD_RNN_DATA/ptb/``;
3. the user cache, ``$XDG_CACHE_HOME/tinygrad_rnn/ptb`` (``~/.cache/tinygrad_rnn/ptb`` by default).

A file found nowhere is downloaded into the cache. Every file's sha256 is checked against the
published data, once per process and file.
"""
import functools
import hashlib
import os
import urllib.request
from pathlib import Path

import numpy as np

from tinygrad_rnn.serialization import atomic_write

URL = "https://raw.githubusercontent.com/tomsercu/lstm/master/data/ptb.{split}.txt"
SHA256 = {
    "train": "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
    "valid": "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
    "test": "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
}
EOS = "<eos>"
UNK = "<unk>"

_CHUNK = 1 << 20
_verified = set()  # (resolved path, size, mtime) of files whose hash matched in this process


def _tokens(text):
    """Split text into words, with ``<eos>`` ending every line (as the classic code does)."""
    return text.replace("\n", f" {EOS} ").split()


class Vocabulary:
    """A word <-> id mapping; ids are given in order of first appearance.

    Args:
        words (iterable of str): a token stream; repeated words keep their first id.
    Attributes:
        word_to_id (dict[str, int]): the id of each word.
        id_to_word (list[str]): the word of each id.
    """

    def __init__(self, words):
        self.id_to_word = list(dict.fromkeys(words))
        self.word_to_id = {w: i for i, w in enumerate(self.id_to_word)}

    def __len__(self):
        return len(self.id_to_word)

    def encode(self, text):
        """Map text to ids; every newline becomes ``<eos>``.

        Args:
            text (str): space-separated words.
        Returns:
            ndarray: (L,) int32 ids.
        Raises:
            ValueError: a word is not in the vocabulary (the message lists the first few).
        """
        words = _tokens(text)
        try:
            return np.array([self.word_to_id[w] for w in words], dtype=np.int32)
        except KeyError:
            unknown = sorted({w for w in words if w not in self.word_to_id})
            raise ValueError(f"Vocabulary.encode: {len(unknown)} word(s) not in the vocabulary, "
                             f"e.g. {unknown[:5]}") from None

    def decode(self, ids):
        """Map ids back to words.

        Args:
            ids (iterable of int): word ids.
        Returns:
            str: the words joined by single spaces.
        """
        return " ".join(lookup(self.id_to_word, ids, "Vocabulary.decode"))


def lookup(table, ids, where):
    """The entries of ``table`` at ``ids``, or a ValueError naming the ids outside it.

    Args:
        table (list): id -> entry.
        ids (iterable of int): the ids.
        where (str): who asks, for the message.
    Returns:
        list: the entries.
    Raises:
        ValueError: an id outside [0, len(table)).
    """
    ids = [int(i) for i in ids]
    bad = sorted({i for i in ids if not 0 <= i < len(table)})
    if bad:
        raise ValueError(f"{where}: ids {bad[:5]} lie outside the vocabulary [0, {len(table)})")
    return [table[i] for i in ids]


def cache_dir():
    """The folder downloads go to: ``$XDG_CACHE_HOME/tinygrad_rnn/ptb`` (``~/.cache/...`` by default)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tinygrad_rnn" / "ptb"


def _folders(path):
    folders = []
    if path is not None:
        folders += [Path(path), Path(path) / "ptb"]
    if os.environ.get("TINYGRAD_RNN_DATA"):
        folders.append(Path(os.environ["TINYGRAD_RNN_DATA"]) / "ptb")
    folders.append(cache_dir())
    return folders


def _sha256(file):
    h = hashlib.sha256()
    with open(file, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _verify(file, split):
    st = file.stat()
    key = (str(file.resolve()), st.st_size, st.st_mtime_ns)
    if key in _verified:
        return
    digest = _sha256(file)
    if digest != SHA256[split]:
        raise ValueError(f"ptb: {file} has sha256 {digest}, expected {SHA256[split]}; "
                         "the file is damaged or not the standard PTB: delete it or replace it")
    _verified.add(key)


def _download(split, path):
    name = f"ptb.{split}.txt"
    url = URL.format(split=split)
    target = cache_dir() / name
    target.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    try:
        with atomic_write(target) as out, urllib.request.urlopen(url, timeout=60) as response:
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                h.update(chunk)
                out.write(chunk)
            if h.hexdigest() != SHA256[split]:  # raised inside: the temp file is removed, nothing saved
                raise ValueError(f"ptb: download of {url} has sha256 {h.hexdigest()}, expected {SHA256[split]}; "
                                 "nothing was saved")
    except OSError as e:  # urllib's URLError included: offline, DNS, HTTP errors
        where = "\n".join(f"  {folder}" for folder in _folders(path))
        raise FileNotFoundError(
            f"ptb: {name} was not found and could not be downloaded from {url} ({e}).\n"
            f"Put ptb.train.txt, ptb.valid.txt and ptb.test.txt into one of these folders:\n{where}\n"
            "(or set TINYGRAD_RNN_DATA to a folder holding ptb/, or pass path=/ --data-dir)") from e
    _verified.add((str(target.resolve()), target.stat().st_size, target.stat().st_mtime_ns))
    return target


def locate(split, path=None, download=True):
    """Find (or download) ``ptb.<split>.txt`` and check its sha256.

    Args:
        split (str): ``"train"``, ``"valid"`` or ``"test"``.
        path (str | Path, optional): a folder holding the files, or its parent holding ``ptb/``.
        download (bool): when False, return None instead of downloading a missing file.
    Returns:
        Path | None: the verified file (None only when missing and ``download`` is False).
    Raises:
        ValueError: unknown split, or a file whose sha256 differs from the standard data.
        FileNotFoundError: the file is missing and could not be downloaded; the message says
            where to put it.
    """
    if split not in SHA256:
        raise ValueError(f"ptb: split must be one of {sorted(SHA256)}, got {split!r}")
    for folder in _folders(path):
        file = folder / f"ptb.{split}.txt"
        if file.is_file():
            _verify(file, split)
            return file
    return _download(split, path) if download else None


@functools.lru_cache(maxsize=4)
def _vocabulary(train_file):
    return Vocabulary(_tokens(Path(train_file).read_text(encoding="utf-8")))


def load(split, path=None):
    """Load one split of PTB as word ids.

    Args:
        split (str): ``"train"``, ``"valid"`` or ``"test"``.
        path (str | Path, optional): where to look first (see the module docstring).
    Returns:
        tuple: ``(corpus, vocab)``: corpus (L,) int32 ids with ``<eos>`` after every line;
        vocab (Vocabulary) built from train in order of first appearance (10,000 words;
        train has 929,589 tokens), the same object for every split.
    Raises:
        ValueError: unknown split or damaged file.
        FileNotFoundError: missing and not downloadable.
    """
    if split not in SHA256:  # before train is looked for: the error to see is this one
        raise ValueError(f"ptb: split must be one of {sorted(SHA256)}, got {split!r}")
    vocab = _vocabulary(str(locate("train", path)))
    corpus = vocab.encode(locate(split, path).read_text(encoding="utf-8"))
    return corpus, vocab

"""A training step reads no device value back to the host, proven on the CPU with arrays that refuse to be read.

Each such read would stall a GPU's queue in every step, and a CUDA graph cannot contain one.
``Guarded`` is an ndarray subclass that raises while armed whenever its data would become a
Python value (``float``, ``int``, ``bool``, ``item``, ``tolist``, ``if x:``...) or indexed by a
boolean mask (CuPy reads the mask's count back). Reductions keep returning ``Guarded`` 0-d arrays
instead of NumPy scalars, so a read of a norm, a count or a minimum is caught too. The parameters,
the optimizer's state, the batches and the arrays NumPy's constructors make while armed are guarded;
every array computed from them is guarded in turn.
"""
import contextlib

import numpy as np
import pytest

from tinygrad_rnn.data import BPTTBatcher, ShuffledBatcher
from tinygrad_rnn.models import LSTMLM, AttentionSeq2seq, BetterLSTMLM, CaptionModel, PeekySeq2seq
from tinygrad_rnn.optimizers import SGD, Adam, clip_grads
from tinygrad_rnn.training import Trainer

V = 13


class HostRead(AssertionError):
    pass


class Guarded(np.ndarray):
    armed = False
    __array_priority__ = 1000  # results of mixed operations are guarded

    def __array_wrap__(self, array, context=None, return_scalar=False):
        # a 0-d result stays an array (NumPy would return a scalar that reads without a trace)
        return np.asarray(array).view(Guarded)

    def _read(self, what):
        if Guarded.armed:
            raise HostRead(f"host read of array data ({what}, shape {self.shape}) inside the guarded step")

    def __float__(self):
        self._read("float")
        return float(self.view(np.ndarray))

    def __int__(self):
        self._read("int")
        return int(self.view(np.ndarray))

    def __index__(self):
        self._read("index")
        return self.view(np.ndarray).__index__()

    def __bool__(self):
        self._read("bool")
        return bool(self.view(np.ndarray))

    def item(self, *args):
        self._read("item")
        return self.view(np.ndarray).item(*args)

    def tolist(self):
        self._read("tolist")
        return self.view(np.ndarray).tolist()

    # CuPy reads a boolean mask's count back to size the selection (even for an assignment)
    def __getitem__(self, key):
        _check_mask(key, "indexing")
        return super().__getitem__(key)

    def __setitem__(self, key, value):
        _check_mask(key, "assignment")
        super().__setitem__(key, value)


def _check_mask(key, what):
    keys = key if isinstance(key, tuple) else (key,)
    if Guarded.armed and any(isinstance(k, np.ndarray) and k.dtype == bool for k in keys):
        raise HostRead(f"host read of a boolean mask's count (boolean-mask {what}) inside the guarded step")


# NumPy's constructors, guarded while armed: an op's own fresh array (an argmax filled under a
# boolean mask) is then guarded too, since a mask assignment hooks the target, not the mask
_CONSTRUCTORS = ("empty", "zeros", "ones", "full", "arange")


@contextlib.contextmanager
def armed():
    originals = {name: getattr(np, name) for name in _CONSTRUCTORS}
    for name, make in originals.items():
        setattr(np, name, lambda *args, make=make, **kwargs: make(*args, **kwargs).view(Guarded))
    Guarded.armed = True
    try:
        yield
    finally:
        Guarded.armed = False
        for name, make in originals.items():
            setattr(np, name, make)


def guard(model):
    for p in model.params():
        p.data = p.data.view(Guarded)
    return model


def test_the_guard_catches_each_kind_of_read():
    x = np.arange(6.0).reshape(2, 3).view(Guarded)
    reads = [lambda: float(x.sum()), lambda: int(x.max()), lambda: bool(x.any()), lambda: x.item(0),
             lambda: x.tolist(), lambda: x.min() < 0 and 1, lambda: range(x.max().astype(int)),
             lambda: x[x > 2], lambda: x.__setitem__(x > 2, 0.0), lambda: x.__setitem__((x > 2, ), 0.0),
             lambda: np.zeros((2, 3)).view(Guarded).__setitem__(x.view(np.ndarray) > 2, 1.0)]
    with armed():
        for read in reads:
            with pytest.raises(HostRead):
                read()
        y = (x * 2 + 1).sum(axis=1)  # computing stays allowed
        y = y + x[:, 1] + x[np.array([0, 1])].sum(axis=1)  # so do slices and integer indices
    assert isinstance(y, Guarded) and float(y.sum()) == 36.0 + 5.0 + 15.0


def test_the_guard_would_catch_a_clip_that_branches_in_python():
    from tinygrad_rnn import Parameter, Variable
    p = Parameter(np.ones(3).view(Guarded))
    p.grad = Variable(np.full(3, 2.0).view(Guarded))

    def clip_with_a_branch(params, max_norm):  # the shape of a clip that reads the norm back
        norm = np.sqrt(sum((q.grad.data * q.grad.data).sum() for q in params))
        if norm > max_norm:
            for q in params:
                q.grad = Variable(q.grad.data * (max_norm / norm))

    with armed(), pytest.raises(HostRead):
        clip_with_a_branch([p], 1.0)
    with armed():
        norm = clip_grads([p], 1.0)
    assert float(norm) == pytest.approx(np.sqrt(12.0)) and isinstance(norm, Guarded)


def _lm_batch(seed=0):
    ids = np.random.default_rng(seed).integers(0, V, (3, 6)).astype(np.int32)
    return ids[:, :-1].view(Guarded), ids[:, 1:].view(Guarded)


def _seq_batch(seed=0):
    rng = np.random.default_rng(seed)
    xs, ts = rng.integers(0, V, (4, 5)).astype(np.int32), rng.integers(0, V, (4, 4)).astype(np.int32)
    return xs.view(Guarded), ts.view(Guarded)


def _caption_batch(seed=0):
    rng = np.random.default_rng(seed)
    images = rng.random((2, 1, 8, 12)).astype(np.float32)
    return images.view(Guarded), rng.integers(0, V, (2, 5)).astype(np.int32).view(Guarded)


MODELS = {
    "LSTMLM": (lambda: LSTMLM(V, 4, 5, seed=0), _lm_batch),
    "BetterLSTMLM": (lambda: BetterLSTMLM(V, 6, 6, dropout=0.5, seed=0), _lm_batch),
    "PeekySeq2seq": (lambda: PeekySeq2seq(V, 4, 5, seed=0), _seq_batch),
    "AttentionSeq2seq": (lambda: AttentionSeq2seq(V, 4, 5, bidirectional=True, seed=0), _seq_batch),
    "CaptionModel": (lambda: CaptionModel(V, 4, 5, image_shape=(1, 8, 12), channels=(2, 3), seed=0), _caption_batch),
}


@pytest.mark.parametrize("optimizer", [lambda: SGD(0.5), lambda: Adam(0.01)], ids=["SGD", "Adam"])
@pytest.mark.parametrize("name", MODELS)
def test_a_training_step_reads_nothing_back(name, optimizer):
    make, batch = MODELS[name]
    model = guard(make())
    trainer = Trainer(model, optimizer().setup(model), None, clip=0.25)
    before = {k: np.array(v) for k, v in model.state_dict().items()}
    with armed():
        for seed in range(3):  # later steps carry state (language models) and optimizer moments
            loss = trainer.step(batch(seed))
    assert isinstance(loss, Guarded) and np.isfinite(float(loss))
    assert any(not np.array_equal(v, before[k]) for k, v in model.state_dict().items())  # it trained


def test_fit_reads_only_when_it_logs_and_at_the_end_of_an_epoch(monkeypatch):
    corpus = np.random.default_rng(0).integers(0, V, 400).astype(np.int32)
    model = guard(BetterLSTMLM(V, 6, 6, dropout=0.3, seed=0))
    batches = BPTTBatcher(corpus, 4, 5)
    batches.corpus = batches.corpus.view(Guarded)
    trainer = Trainer(model, SGD(0.5).setup(model), batches, clip=0.25, log_every=7)
    reads = []
    for method in ("_log", "_record"):  # the two places allowed to read
        inner = getattr(trainer, method)

        def disarmed(*args, inner=inner, method=method):
            reads.append(method)
            Guarded.armed = False
            try:
                return inner(*args)
            finally:
                Guarded.armed = True

        monkeypatch.setattr(trainer, method, disarmed)
    with armed():
        trainer.fit(epochs=2)
    assert len(batches) == 19 and reads == ["_log", "_log", "_record"] * 2 and trainer.total_iterations == 38


def test_shuffled_minibatches_train_without_a_read():
    rng = np.random.default_rng(0)
    xs, ts = rng.integers(0, V, (40, 5)).astype(np.int32), rng.integers(0, V, (40, 4)).astype(np.int32)
    model = guard(PeekySeq2seq(V, 4, 5, seed=0))
    batches = ShuffledBatcher((xs, ts), 8, vocab_size=V)
    batches.arrays = [a.view(Guarded) for a in batches.arrays]
    trainer = Trainer(model, Adam(0.01).setup(model), batches, clip=1.0)
    with armed():
        for batch in batches.batches(0):
            trainer.step(batch)

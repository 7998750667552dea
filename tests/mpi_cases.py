"""Cases run under ``mpirun -n P python -m mpi4py tests/mpi_cases.py CASE OUT`` by tests/test_distributed.py.

Every case builds the same run on every rank; rank 0 writes what the test compares to ``OUT``
(an .npz of every rank's parameters, the one-process reference on the combined batch, and the
histories as JSON metadata). The fault cases print markers and end the way the test expects.
"""
import sys
import time

import numpy as np

from tinygrad_rnn import distributed as dist
from tinygrad_rnn.backend import as_numpy
from tinygrad_rnn import functions as F
from tinygrad_rnn.data import BPTTBatcher, ShuffledBatcher, toy_seq
from tinygrad_rnn.models import LSTMLM, BetterLSTMLM, PeekySeq2seq
from tinygrad_rnn.optimizers import SGD, Adam, GradientClipping
from tinygrad_rnn.serialization import save_npz
from tinygrad_rnn.training import Checkpoint, Extension, Perplexity, ReduceOnPlateau, Trainer

V, N, T, STEPS = 50, 4, 10, 5
CORPUS = np.random.default_rng(0).integers(0, V, 1000).astype(np.int32)
VALID = np.random.default_rng(1).integers(0, V, 150).astype(np.int32)
ADDITION = toy_seq.load_task("addition", count=120, test_size=20, seed=0, reverse=True)


def lm(kind, hidden=16):
    if kind == "better":
        return BetterLSTMLM(V, hidden, hidden, dropout=0.5, seed=0, dtype=np.float64)
    return LSTMLM(V, hidden, hidden, seed=0, dtype=np.float64)


def lm_trainer(comm, kind="lstm", optimizer="sgd", hidden=16, extensions=(), device="cpu"):
    model = lm(kind, hidden)
    if device == "gpu":
        model.to_gpu()
    opt = (SGD(0.5) if optimizer == "sgd" else Adam(1e-2)).setup(model)
    clip = 0.25 if optimizer == "adam" or kind == "better" else None
    return Trainer(model, opt, BPTTBatcher(CORPUS, N, T, vocab_size=V, device=device), clip=clip,
                   evaluators=[Perplexity(VALID, 4, T)], extensions=list(extensions), log_every=2, comm=comm)


def seq_trainer(comm):
    model = PeekySeq2seq(13, 8, 16, seed=0, dtype=np.float64)
    # 100 examples in batches of 7: 14 full batches split 3 + 4 rows, and a last batch of 2, 1 + 1
    batches = ShuffledBatcher((ADDITION.x_train, ADDITION.t_train), 7, seed=0, drop_last=False, vocab_size=13)
    return Trainer(model, Adam(1e-2).setup(model), batches, clip=1.0, log_every=3, comm=comm)


class PaddedSeq2seq(PeekySeq2seq):
    """A seq2seq model whose loss leaves padded targets (-1) out, and counts the targets it keeps."""

    def loss(self, xs, ts):
        inputs = ts[:, :-1] * (ts[:, :-1] >= 0)  # padding read as token 0; its targets do not count
        return F.softmax_cross_entropy(self(xs, inputs), ts[:, 1:], ignore_label=-1)

    def loss_weight(self, xs, ts):
        return int((ts[:, 1:] >= 0).sum())


def padded_trainer(comm):
    """The same answers with random padding: every rank's part holds another number of targets."""
    ts = ADDITION.t_train.copy()
    ts[:, 3:][np.random.default_rng(4).random(ts[:, 3:].shape) < 0.4] = -1
    model = PaddedSeq2seq(13, 8, 16, seed=0, dtype=np.float64)
    batches = ShuffledBatcher((ADDITION.x_train, ts), 8, seed=0, vocab_size=13, ignore_label=-1)
    return Trainer(model, Adam(1e-2).setup(model), batches, clip=1.0, log_every=3, comm=comm)


def params(model):
    return np.concatenate([as_numpy(p.data).ravel() for p in model.params()])


def report(comm, out, model, reference=None, history=None, reference_history=None, **extra):
    """Rank 0 writes every rank's flat parameters, the reference's and the histories."""
    every = comm.allgather_obj(params(model))
    if comm.is_root:
        arrays = {f"rank{r}": p for r, p in enumerate(every)}
        if reference is not None:
            arrays["reference"] = params(reference)
        save_npz(out, arrays, {"history": history, "reference_history": reference_history, **extra})


def trained(make, comm, steps=STEPS, epochs=1):
    trainer = make(comm)
    trainer.fit(epochs, max_iters=steps)
    return trainer


def compare(make, comm, out, steps=STEPS, epochs=1):
    trainer = trained(make, comm, steps, epochs)
    reference = trained(make, dist.SerialComm(), steps, epochs) if comm.is_root else None
    report(comm, out, trainer.model, reference and reference.model, trainer.history,
           reference and reference.history)


def hand_loop(comm, out):
    """DistributedOptimizer in a hand-written loop, the loss over non-ignored targets, weighted by their count."""
    rng = np.random.default_rng(3)
    ts = ADDITION.t_train[:24].copy()
    ts[:, 3:][rng.random(ts[:, 3:].shape) < 0.4] = -1  # ignored targets, a different number in every row

    def run(comm, rows):
        model = PeekySeq2seq(13, 8, 16, seed=0, dtype=np.float64)
        opt = dist.DistributedOptimizer(Adam(1e-2), comm).setup(model).add_hook(GradientClipping(1.0))
        for k in range(0, 24, 8):
            xs, t = ADDITION.x_train[k:k + 8][rows], ts[k:k + 8][rows]
            scores = model(xs, np.where(t[:, :-1] < 0, 0, t[:, :-1]))
            loss = F.softmax_cross_entropy(scores, t[:, 1:], ignore_label=-1)
            loss.backward()
            opt.update(weight=int((t[:, 1:] != -1).sum()))  # reduce, clip, update
            model.cleargrads()
        return model

    start, stop = dist.shard_rows(8, comm)
    model = run(comm, slice(start, stop))
    reference = run(dist.SerialComm(), slice(0, 8)) if comm.is_root else None
    report(comm, out, model, reference)


def checkpoint_resume(comm, out, stage):
    """"save": 3 steps, then a checkpoint at OUT.ckpt.npz; "resume": resume it for 2 steps more, beside
    an uninterrupted one-process run of 5 steps."""
    trainer = lm_trainer(comm, "better", "adam")
    if stage == "save":
        trainer.fit(1, max_iters=3)
        trainer.save_checkpoint(out + ".ckpt.npz")
        return
    trainer.resume(out + ".ckpt.npz")
    trainer.fit(1, max_iters=STEPS)
    reference = trained(lambda c: lm_trainer(c, "better", "adam"), dist.SerialComm()) if comm.is_root else None
    report(comm, out, trainer.model, reference and reference.model, trainer.history,
           reference and reference.history)


FAULTS = ("raise", "exit", "kill", "stall")


class Fault(Extension):
    """Rank 1 misbehaves after step ``at``."""

    def __init__(self, comm, how, at=2):
        self.comm, self.how, self.at = comm, how, at

    def on_iteration(self, trainer):
        if self.comm.rank != 1 or trainer.total_iterations != self.at:
            return
        print(f"rank 1 fails: {self.how}", flush=True)
        if self.how == "raise":
            raise RuntimeError("injected failure on rank 1")
        if self.how == "exit":
            sys.exit(3)
        if self.how == "kill":
            import os
            os._exit(3)
        time.sleep(120)  # stall: rank 0 waits in the next collective until its watchdog fires


def recovery(comm, out, stage):
    """"crash": checkpoints after every epoch, and rank 1 raises in the second epoch; "restart": resume
    the last checkpoint and finish both epochs, beside an uninterrupted one-process run."""
    def make(c, extensions=()):
        return lm_trainer(c, "better", "adam", extensions=[Checkpoint(out + ".runs"), *extensions])

    if stage == "crash":
        make(comm, [Fault(comm, "raise", at=len(BPTTBatcher(CORPUS, N, T)) + 6)]).fit(2)
        return
    trainer = make(comm)
    trainer.resume(out + ".runs/last.npz")
    trainer.fit(2)
    reference = make(dist.SerialComm()) if comm.is_root else None
    if reference is not None:
        reference.fit(2)
    report(comm, out, trainer.model, reference and reference.model, trainer.history,
           reference and reference.history)


def main():
    case, out = sys.argv[1], sys.argv[2]
    comm = dist.init(device="gpu" if case == "gpu" else "cpu", timeout=3.0 if case in FAULTS else None)
    if case in ("sgd", "adam", "better"):
        kind = "better" if case == "better" else "lstm"
        optimizer = "adam" if case == "adam" else "sgd"
        # a schedule deciding from the reduced validation perplexity (it rises in epoch 2 here, so
        # the learning rate drops for epoch 3, which must happen on every rank alike)
        def make(c):
            schedules = [ReduceOnPlateau("valid_perplexity")] if case == "better" else []
            return lm_trainer(c, kind, optimizer, extensions=schedules)

        compare(make, comm, out, steps=55, epochs=3)
    elif case == "gpu":  # one rank per GPU, NCCL between them
        compare(lambda c: lm_trainer(c, "better", "adam", device="gpu"), comm, out, steps=30, epochs=2)
    elif case == "seq2seq":
        compare(seq_trainer, comm, out, steps=20, epochs=2)
    elif case == "padded":
        compare(padded_trainer, comm, out, steps=20, epochs=2)
    elif case == "hand_loop":
        hand_loop(comm, out)
    elif case in ("save", "resume"):
        checkpoint_resume(comm, out, case)
    elif case in ("crash", "restart"):
        recovery(comm, out, case)
    elif case == "layout":
        try:
            lm_trainer(comm, hidden=16 + comm.rank)
        except ValueError as e:
            print(f"rank {comm.rank} refused: {e}", flush=True)
    elif case in FAULTS:
        trainer = lm_trainer(comm, extensions=[Fault(comm, case)])
        trainer.fit(1, max_iters=20)
        print(f"rank {comm.rank} finished", flush=True)
    else:
        raise SystemExit(f"unknown case {case}")


if __name__ == "__main__":
    main()

"""Training throughput of Seq2seq and PeekySeq2seq in the addition setting, against PyTorch.

The classic setting: V 13, D 16, H 128, batch 128, questions of 7 and answers of 5 characters
(the decoder runs 4 steps), Adam lr 0.001, gradient clipping at 5.0. One iteration is forward,
backward, clipping and update on a batch of generated addition questions: ``Trainer.step`` on a
model from ``build_model`` for tinygrad_rnn. Each measurement runs in a fresh process with a few
untimed warm-up iterations, and the two sides alternate round by round, so that a slow phase of
the machine hits both. PyTorch is measured only where it is importable (it is never a
dependency), with the same models built from ``nn.Embedding``, the fused ``nn.LSTM`` and
``nn.Linear``, trained the same way.

Prints one JSON object a line: the header (``benchmark.header``), then ``impl``, ``model``,
``samples_per_second`` (and round, iterations, seconds).

    python tools/bench_seq2seq.py [--models seq2seq,peeky] [--iters 300] [--warmup 5] [--rounds 3]
        [--device cpu|gpu] [--threads N] [--seed 0]
"""
import argparse
import json
import os
import tempfile

import numpy as np

from tinygrad_rnn.tools.benchmark import (alternating, hand_trainer, parser, print_header, run_worker, stepper,
                                          time_training, torch_update)

VOCAB, WORDVEC, HIDDEN, BATCH, LR, CLIP = 13, 16, 128, 128, 0.001, 5.0
KINDS = ("seq2seq", "peeky")  # build_model's kinds


def _write_batches(count, seed, path):
    """Generate ``count`` batches of reversed addition questions into an .npz file, so that both
    workers train on the same batches."""
    from tinygrad_rnn.data import toy_seq

    data = toy_seq.load_task("addition", count=count * BATCH, test_size=0, seed=seed, reverse=True)
    np.savez(path, xs=data.x_train, ts=data.t_train)


def _read_batches(path):
    with np.load(path) as f:
        xs, ts = f["xs"], f["ts"]
    return [(xs[i:i + BATCH], ts[i:i + BATCH]) for i in range(0, len(xs), BATCH)]


def _ours(args):
    """tinygrad_rnn's ``Trainer.step`` on the model, and a function that waits for the result."""
    from tinygrad_rnn.optimizers import Adam

    spec = {"kind": args.models[0], "vocab_size": VOCAB, "wordvec_size": WORDVEC, "hidden_size": HIDDEN}
    return stepper(hand_trainer(spec, Adam(LR), args, CLIP), args), float


def _torch(args):
    """The same as ``_ours`` with PyTorch."""
    import torch
    from torch import nn

    torch.manual_seed(args.seed)
    peeky = args.models[0] == "peeky"
    dev = torch.device("cuda" if args.device == "gpu" else "cpu")

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            extra = HIDDEN if peeky else 0
            self.enc_embed = nn.Embedding(VOCAB, WORDVEC)
            self.enc_lstm = nn.LSTM(WORDVEC, HIDDEN, batch_first=True)
            self.dec_embed = nn.Embedding(VOCAB, WORDVEC)
            self.dec_lstm = nn.LSTM(WORDVEC + extra, HIDDEN, batch_first=True)
            self.fc = nn.Linear(HIDDEN + extra, VOCAB)

        def forward(self, xs, ts):
            _, (h, _) = self.enc_lstm(self.enc_embed(xs))
            inputs = self.dec_embed(ts)
            code = h[0][:, None, :].expand(-1, ts.shape[1], -1)
            if peeky:
                inputs = torch.cat([inputs, code], dim=2)
            out, _ = self.dec_lstm(inputs, (h, torch.zeros_like(h)))
            if peeky:
                out = torch.cat([out, code], dim=2)
            return self.fc(out)

    model = Model().to(dev).train()
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    loss_fn = nn.CrossEntropyLoss()

    def step(batch):
        xs, ts = (torch.from_numpy(a).long().to(dev) for a in batch)
        scores = model(xs, ts[:, :-1])
        loss = loss_fn(scores.reshape(-1, VOCAB), ts[:, 1:].reshape(-1))
        return torch_update(loss, model, opt, CLIP)

    return step, lambda loss: float(loss.item())


def worker(args):
    """Run in a child process: time one implementation on one model and print one JSON line."""
    from tinygrad_rnn.models import MODELS

    step, sync = (_ours if args.worker == "tinygrad_rnn" else _torch)(args)
    batches = _read_batches(args.data)
    seconds = time_training(step, sync, batches, args.warmup)
    iters = len(batches) - args.warmup
    print(json.dumps({"impl": args.worker, "model": MODELS[args.models[0]].__name__, "device": args.device,
                      "samples_per_second": round(iters * BATCH / seconds), "iterations": iters,
                      "seconds": round(seconds, 3)}), flush=True)


def main(argv=None):
    p = parser(__doc__, rounds=3, models=KINDS, iters=300, warmup=5)
    p.add_argument("--data", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return
    print_header(args)
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "batches.npz")
        _write_batches(args.warmup + args.iters, args.seed, data)
        for model in args.models:
            for r, impl in alternating(args.rounds):
                run_worker(__file__, args, impl, model, "--data", data, round=r)


if __name__ == "__main__":
    main()

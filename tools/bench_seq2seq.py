"""Training throughput of Seq2seq and PeekySeq2seq in the addition setting, against PyTorch.

The classic setting: V 13, D 16, H 128, batch 128, questions of 7 and answers of 5 characters
(the decoder runs 4 steps), Adam lr 0.001, gradient clipping at 5.0. One iteration is forward,
backward, clipping and update on a batch of generated addition questions. Each measurement
runs in a fresh process with a few untimed warm-up iterations, and the two sides alternate
round by round, so that a slow phase of the machine hits both. PyTorch is measured only
where it is importable (it is never a dependency), with the same models built from
``nn.Embedding``, the fused ``nn.LSTM`` and ``nn.Linear``, trained the same way.

Prints one JSON object a line: ``impl``, ``model``, ``samples_per_second`` (and round,
iterations, seconds).

    python tools/bench_seq2seq.py [--models seq2seq,peeky] [--iters 300] [--warmup 5] [--rounds 3]
"""
import argparse
import json
import os
import tempfile
import shlex
import sys
from pathlib import Path

import numpy as np

from tinygrad_rnn.tools.common import alternating, run_worker, time_training, torch_update

VOCAB, WORDVEC, HIDDEN, BATCH, LR, CLIP = 13, 16, 128, 128, 0.001, 5.0
NAMES = {"seq2seq": "Seq2seq", "peeky": "PeekySeq2seq"}


def _write_batches(count, path):
    """Generate ``count`` batches of reversed addition questions into an .npz file, so that both
    workers train on the same batches."""
    from tinygrad_rnn.data import toy_seq

    data = toy_seq.load_task("addition", count=count * BATCH, test_size=0, reverse=True)
    np.savez(path, xs=data.x_train, ts=data.t_train)


def _read_batches(path):
    with np.load(path) as f:
        xs, ts = f["xs"], f["ts"]
    return [(xs[i:i + BATCH], ts[i:i + BATCH]) for i in range(0, len(xs), BATCH)]


def _ours(model_name):
    """tinygrad_rnn's ``Trainer.step`` on the model, and a function that waits for the result."""
    from tinygrad_rnn.models import PeekySeq2seq, Seq2seq
    from tinygrad_rnn.optimizers import Adam
    from tinygrad_rnn.training import Trainer

    model = {"seq2seq": Seq2seq, "peeky": PeekySeq2seq}[model_name](VOCAB, WORDVEC, HIDDEN, seed=0)
    trainer = Trainer(model, Adam(LR).setup(model), None, clip=CLIP)  # the benchmark feeds step its own batches
    return trainer.step, float


def _torch(model_name):
    """The same as ``_ours`` with PyTorch."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    peeky = model_name == "peeky"

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

    model = Model().train()
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    loss_fn = nn.CrossEntropyLoss()

    def step(batch):
        xs, ts = (torch.from_numpy(a).long() for a in batch)
        scores = model(xs, ts[:, :-1])
        loss = loss_fn(scores.reshape(-1, VOCAB), ts[:, 1:].reshape(-1))
        return torch_update(loss, model, opt, CLIP)

    return step, lambda loss: float(loss.item())


def worker(impl, model_name, data, warmup):
    """Run in a child process: time one implementation on one model and print one JSON line."""
    step, sync = (_ours if impl == "tinygrad_rnn" else _torch)(model_name)
    batches = _read_batches(data)
    seconds = time_training(step, sync, batches, warmup)
    iters = len(batches) - warmup
    print(json.dumps({"impl": impl, "model": NAMES[model_name], "samples_per_second": round(iters * BATCH / seconds),
                      "iterations": iters, "seconds": round(seconds, 3)}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="seq2seq,peeky", help="comma-separated: seq2seq, peeky")
    parser.add_argument("--iters", type=int, default=300, help="timed iterations per measurement")
    parser.add_argument("--warmup", type=int, default=5, help="untimed iterations before them")
    parser.add_argument("--rounds", type=int, default=3, help="measurements per side and model, alternating")
    parser.add_argument("--worker", choices=("tinygrad_rnn", "torch"), help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    models = args.models.split(",")
    if not args.worker:  # the header line: how to reproduce what follows
        command = shlex.join(["python", f"tools/{Path(__file__).name}", *sys.argv[1:]])
        print(json.dumps({"command": command}), flush=True)
    if args.worker:
        worker(args.worker, models[0], args.data, args.warmup)
        return
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "batches.npz")
        _write_batches(args.warmup + args.iters, data)
        for model_name in models:
            for r, impl in alternating(args.rounds):
                run_worker(__file__, [impl, "--models", model_name, "--data", data, "--warmup", str(args.warmup)],
                           round=r)


if __name__ == "__main__":
    main()

"""Training throughput of the language models: tinygrad_rnn against PyTorch on the same models.

One training iteration is forward + backward + gradient clipping + SGD update on a (N, T) batch
of random word ids (throughput does not depend on the words). Each measurement runs in a fresh
process (so ``peak_rss_mb`` is its own), with a few warm-up iterations before the timed ones,
and the two sides alternate round by round, so a slow phase of the machine hits both. PyTorch
is measured only where it is importable (it is never a dependency); its models are
``nn.Embedding`` + ``nn.LSTM`` + ``nn.Linear`` of the same sizes, trained the same way.

Prints one JSON object a line: ``impl``, ``model``, ``words_per_second``, ``peak_rss_mb`` (and
round, iterations, seconds), then one memory check of tinygrad_rnn's LSTMLM: resident memory
after ``--memory-iters // 6`` and after ``--memory-iters`` iterations (it must not grow: each
iteration's graph is freed by ``unchain_backward``).

    python tools/bench_lm.py [--models lstm,better] [--iters 20] [--warmup 3] [--rounds 2]
        [--memory-iters 300] [--device cpu|gpu]
"""
import argparse
import json
import os
import resource
import shlex
import sys
from pathlib import Path

import numpy as np

from tinygrad_rnn.tools.common import alternating, run_worker, time_training, torch_update

# LSTMLM and BetterLSTMLM in their classic settings (PTB's vocabulary, N 20 x T 35, SGD lr 20, clip 0.25)
SETTINGS = {
    "lstm": {"name": "LSTMLM", "size": 100, "layers": 1, "dropout": 0.0, "tied": False},
    "better": {"name": "BetterLSTMLM", "size": 650, "layers": 2, "dropout": 0.5, "tied": True},
}
VOCAB, BATCH, TIME, LR, CLIP = 10000, 20, 35, 20.0, 0.25


def _rss_mb():
    """Resident memory now (Linux), in MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _batches(count, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, VOCAB, (count, BATCH, TIME + 1)).astype(np.int32)
    return [(b[:, :-1], b[:, 1:]) for b in ids]


def _ours(model_name, device):
    """tinygrad_rnn's ``Trainer.step`` on the model, and a function that waits for the device."""
    from tinygrad_rnn.backend import as_cupy
    from tinygrad_rnn.models import LSTMLM, BetterLSTMLM
    from tinygrad_rnn.optimizers import SGD
    from tinygrad_rnn.training import Trainer

    s = SETTINGS[model_name]
    if model_name == "lstm":
        model = LSTMLM(VOCAB, s["size"], s["size"], seed=0)
    else:
        model = BetterLSTMLM(VOCAB, s["size"], s["size"], dropout=s["dropout"], seed=0)
    if device == "gpu":
        model.to_gpu()
    trainer = Trainer(model, SGD(LR).setup(model), None, clip=CLIP)  # the benchmark feeds step its own batches
    move = as_cupy if device == "gpu" else np.asarray

    def step(batch):
        return trainer.step(tuple(move(a) for a in batch))

    return step, lambda loss: float(loss)


def _torch(model_name, device):
    """The same as ``_ours`` with PyTorch: nn.Embedding + nn.LSTM + nn.Linear, SGD, clipping."""
    import torch
    from torch import nn

    s = SETTINGS[model_name]
    dev = torch.device("cuda" if device == "gpu" else "cpu")
    torch.manual_seed(0)

    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(VOCAB, s["size"])
            self.drop = nn.Dropout(s["dropout"])
            self.lstm = nn.LSTM(s["size"], s["size"], num_layers=s["layers"],
                                dropout=s["dropout"] if s["layers"] > 1 else 0.0, batch_first=True)
            self.fc = nn.Linear(s["size"], VOCAB)
            if s["tied"]:
                self.fc.weight = self.embed.weight

        def forward(self, xs, state):
            hs, state = self.lstm(self.drop(self.embed(xs)), state)
            return self.fc(self.drop(hs)), state

    model = LM().to(dev).train()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    loss_fn = nn.CrossEntropyLoss()
    carried = {"state": None}

    def step(batch):
        xs, ts = (torch.from_numpy(a).long().to(dev) for a in batch)
        state = carried["state"]
        if state is not None:  # truncated BPTT: keep the values, cut the graph
            state = tuple(s.detach() for s in state)
        scores, carried["state"] = model(xs, state)
        loss = loss_fn(scores.reshape(-1, VOCAB), ts.reshape(-1))
        return torch_update(loss, model, opt, CLIP)

    return step, lambda loss: float(loss.item())


def worker(impl, model_name, iters, warmup, device, memory_iters):
    """Run in a child process: time one implementation on one model and print one JSON line."""
    step, sync = (_ours if impl == "tinygrad_rnn" else _torch)(model_name, device)
    if memory_iters:
        checkpoint = memory_iters // 6
        rss = {}
        for k, batch in enumerate(_batches(memory_iters), start=1):
            sync(step(batch))
            if k in (checkpoint, memory_iters):
                rss[k] = _rss_mb()
        print(json.dumps({"check": "memory", "impl": impl, "model": SETTINGS[model_name]["name"], "device": device,
                          f"rss_mb_at_{checkpoint}": round(rss[checkpoint], 1),
                          f"rss_mb_at_{memory_iters}": round(rss[memory_iters], 1),
                          "growth_mb": round(rss[memory_iters] - rss[checkpoint], 1)}))
        return
    seconds = time_training(step, sync, _batches(warmup + iters), warmup)
    print(json.dumps({"impl": impl, "model": SETTINGS[model_name]["name"], "device": device,
                      "words_per_second": round(iters * BATCH * TIME / seconds, 1),
                      "peak_rss_mb": round(_peak_rss_mb(), 1), "iterations": iters, "seconds": round(seconds, 3)}))


def _measure(args, impl, model_name, memory_iters=0, **extra):
    run_worker(__file__, [impl, "--models", model_name, "--iters", str(args.iters), "--warmup", str(args.warmup),
                          "--device", args.device, "--memory-iters", str(memory_iters)], **extra)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="lstm,better", help="comma-separated: lstm, better")
    parser.add_argument("--iters", type=int, default=20, help="timed iterations per measurement")
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations before them")
    parser.add_argument("--rounds", type=int, default=2, help="measurements per side and model, alternating")
    parser.add_argument("--memory-iters", type=int, default=300, help="iterations of the memory check (0: none)")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--worker", choices=("tinygrad_rnn", "torch"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    models = args.models.split(",")
    if not args.worker:  # the header line: how to reproduce what follows
        command = shlex.join(["python", f"tools/{Path(__file__).name}", *sys.argv[1:]])
        print(json.dumps({"command": command}), flush=True)
    if args.worker:
        worker(args.worker, models[0], args.iters, args.warmup, args.device, args.memory_iters)
        return
    for model_name in models:
        for r, impl in alternating(args.rounds):
            _measure(args, impl, model_name, round=r)
    if args.memory_iters:
        _measure(args, "tinygrad_rnn", "lstm", memory_iters=args.memory_iters)


if __name__ == "__main__":
    main()

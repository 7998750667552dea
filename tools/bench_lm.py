"""Training throughput of the language models: tinygrad_rnn against PyTorch on the same models.

One training iteration is forward + backward + gradient clipping + SGD update on a (N, T) batch
of random word ids (throughput does not depend on the words): ``Trainer.step`` on a model from
``build_model`` for tinygrad_rnn. Each measurement runs in a fresh process (so ``peak_rss_mb``
is its own), with a few warm-up iterations before the timed ones, and the two sides alternate
round by round, so a slow phase of the machine hits both. PyTorch is measured only where it is
importable (it is never a dependency); its models are ``nn.Embedding`` + ``nn.LSTM`` +
``nn.Linear`` of the same sizes, trained the same way.

Prints one JSON object a line: the header (``benchmark.header``), then ``impl``, ``model``,
``words_per_second``, ``peak_rss_mb`` (and round, iterations, seconds), then one memory check
of tinygrad_rnn's LSTMLM: resident memory after ``--memory-iters // 6`` and after
``--memory-iters`` iterations (it must not grow: each iteration's graph is freed by
``unchain_backward``).

    python tools/bench_lm.py [--models lstm,better] [--iters 20] [--warmup 3] [--rounds 2]
        [--memory-iters 300] [--device cpu|gpu] [--threads N] [--seed 0]
"""
import json
import os
import resource

from tinygrad_rnn.tools.benchmark import (BATCH, CLIP, LM_SPECS, LR, TIME, VOCAB, alternating, hand_trainer,
                                          lm_batches, parser, print_header, run_worker, stepper, time_training,
                                          torch_update)
from tinygrad_rnn.tools.common import nonnegative_int


def _rss_mb():
    """Resident memory now (Linux), in MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _ours(args):
    """tinygrad_rnn's ``Trainer.step`` on the model, and a function that waits for the device."""
    from tinygrad_rnn.optimizers import SGD

    trainer = hand_trainer(LM_SPECS[args.models[0]], SGD(LR), args, CLIP)
    return stepper(trainer, args), float


def _torch(args):
    """The same as ``_ours`` with PyTorch: nn.Embedding + nn.LSTM + nn.Linear, SGD, clipping."""
    import torch
    from torch import nn

    spec = LM_SPECS[args.models[0]]
    size, dropout, better = spec["hidden_size"], spec.get("dropout", 0.0), spec["kind"] == "better"
    layers = 2 if better else 1  # BetterLSTMLM: two LSTM layers, the output weight tied to the embedding
    dev = torch.device("cuda" if args.device == "gpu" else "cpu")
    torch.manual_seed(args.seed)

    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(VOCAB, size)
            self.drop = nn.Dropout(dropout)
            self.lstm = nn.LSTM(size, size, num_layers=layers, dropout=dropout if layers > 1 else 0.0,
                                batch_first=True)
            self.fc = nn.Linear(size, VOCAB)
            if better:
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


def worker(args):
    """Run in a child process: time one implementation on one model and print one JSON line."""
    from tinygrad_rnn.models import MODELS

    step, sync = (_ours if args.worker == "tinygrad_rnn" else _torch)(args)
    name = MODELS[LM_SPECS[args.models[0]]["kind"]].__name__
    if args.memory_iters:
        checkpoint = args.memory_iters // 6
        rss = {}
        for k, batch in enumerate(lm_batches(args.memory_iters, args.seed), start=1):
            sync(step(batch))
            if k in (checkpoint, args.memory_iters):
                rss[k] = _rss_mb()
        print(json.dumps({"check": "memory", "impl": args.worker, "model": name, "device": args.device,
                          f"rss_mb_at_{checkpoint}": round(rss[checkpoint], 1),
                          f"rss_mb_at_{args.memory_iters}": round(rss[args.memory_iters], 1),
                          "growth_mb": round(rss[args.memory_iters] - rss[checkpoint], 1)}), flush=True)
        return
    seconds = time_training(step, sync, lm_batches(args.warmup + args.iters, args.seed), args.warmup)
    print(json.dumps({"impl": args.worker, "model": name, "device": args.device,
                      "words_per_second": round(args.iters * BATCH * TIME / seconds, 1),
                      "peak_rss_mb": round(_peak_rss_mb(), 1), "iterations": args.iters,
                      "seconds": round(seconds, 3)}), flush=True)


def main(argv=None):
    p = parser(__doc__, rounds=2, models=tuple(LM_SPECS), iters=20, warmup=3)
    p.add_argument("--memory-iters", type=nonnegative_int, default=300,
                   help="iterations of the memory check (0: none)")
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return
    print_header(args)
    for model in args.models:
        for r, impl in alternating(args.rounds):
            run_worker(__file__, args, impl, model, "--memory-iters", "0", round=r)
    if args.memory_iters:
        run_worker(__file__, args, "tinygrad_rnn", "lstm", "--memory-iters", str(args.memory_iters))


if __name__ == "__main__":
    main()

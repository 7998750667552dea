"""Train CaptionModel on generated digit images and score whole captions on held-out images.

    tinygrad-rnn-train-caption [--epochs E] [--batch-size N] [--train-size S] [--test-size S]
        [--wordvec D] [--hidden H] [--channels C1,C2,...] [--lr LR] [--lr-decay F] [--clip NORM]
        [--examples K] [--beam-width K] [--max-iters K] [--device cpu|gpu] [--seed S] [--out DIR]
        [--no-progress] [--resume CHECKPOINT] [--distributed]

(or ``python tools/train_caption.py ...``). Defaults: 60,000 training and 1,000 held-out
images, D 16, H 256, conv channels (8, 32, 64), batch 50, Adam lr 0.002 halved after every
epoch, clip 5.0, 3 epochs.

The images (1 x 32 x 96) show one to four digits of a bitmap font at a random size and
position, with noise (``tinygrad_rnn.data.captions``); a caption names the digits in words
(``seven zero two``). After each epoch the held-out images are captioned greedily and scored
by exact match of the whole caption (end and padding tokens included), and a few are printed,
marked right or wrong.

Writes ``history.json``, ``history.png``, ``last.npz``, ``summary.json`` and ``captions.png`` (a
grid of held-out images with their generated captions, wrong ones in red) into ``--out``.
Prints the summary as its last line, one JSON object: test_exact_match (last epoch),
test_exact_match_per_epoch, train_seconds, samples_per_second, ...
"""
import argparse

import numpy as np

from tinygrad_rnn.data import ShuffledBatcher, captions
from tinygrad_rnn.models import build_model
from tinygrad_rnn.optimizers import Adam
from tinygrad_rnn.optional import require
from tinygrad_rnn.serialization import atomic_write
from tinygrad_rnn.tools.common import (EachEpoch, batch_source, communicator, device_mover, extensions, factor,
                                       fill_defaults, marks, nonnegative_int, out_folder, parser, positive_int, ranks,
                                       run_training, write_summary)
from tinygrad_rnn.training import ExactMatch, ExponentialDecay, Trainer


def _channels(text):
    try:
        channels = tuple(int(c) for c in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers, got {text!r}") from None
    if not channels or min(channels) < 1:
        raise argparse.ArgumentTypeError(f"must be positive integers, got {text!r}")
    return channels


def build_parser():
    """The flags of ``train_caption`` (the common ones and its own)."""
    p = parser(__doc__.splitlines()[0], __doc__)
    p.add_argument("--train-size", type=positive_int, default=60000, help="generated training images")
    p.add_argument("--test-size", type=positive_int, default=1000, help="generated held-out images")
    p.add_argument("--wordvec", type=positive_int, default=16, help="D, word vector size")
    p.add_argument("--hidden", type=positive_int, default=256, help="H, image code and decoder LSTM size")
    p.add_argument("--channels", type=_channels, default=(8, 32, 64), help="output channels of the conv blocks")
    p.add_argument("--lr-decay", type=factor, default=0.5, help="multiply the learning rate by this after each epoch")
    p.add_argument("--examples", type=nonnegative_int, default=6, help="held-out images printed each epoch")
    p.add_argument("--beam-width", type=positive_int, default=1, help="also score the final model with beam search")
    return p


def parse_args(argv=None):
    p = build_parser()
    args = fill_defaults(p.parse_args(argv), {"epochs": 3, "batch_size": 50, "lr": 0.002, "clip": 5.0})
    if 2 ** len(args.channels) > min(captions.IMAGE_SHAPE):
        p.error(f"--channels: {len(args.channels)} 2x2 poolings do not fit images of {captions.IMAGE_SHAPE}")
    out_folder(args, "runs/caption")
    return args


def show_examples(model, data, count, move):
    """Print ``count`` held-out captions as generated, marked right or wrong."""
    if count <= 0:
        return
    ts = data.t_test[:count]
    ids = model.generate(move(data.x_test[:count]), data.start_id, ts.shape[1] - 1)
    right, wrong = marks()
    for t, y in zip(ts, ids):
        ok = np.array_equal(y, t[1:])
        note = "" if ok else f"   (want {data.caption(t)})"
        print(f"  {right if ok else wrong} {data.caption(y)}{note}")


def plot_captions(images, generated, wanted, path, columns=3):
    """Draw images with their generated captions as a PNG grid; wrong captions are red.

    Args:
        images (ndarray): (K, 1, H, W) grayscale images in [0, 1].
        generated (list[str]): the K generated captions.
        wanted (list[str]): the K true captions.
        path (str | Path): the PNG file (written atomically).
        columns (int): images per row.
    """
    Figure = require("matplotlib.figure", "plot_captions").Figure  # the object API: no pyplot, no backend switch

    rows = -(-len(images) // columns)
    fig = Figure(figsize=(2.4 * columns, 1.2 * rows), dpi=72)
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, image, text, truth in zip(axes, images, generated, wanted):
        ax.imshow(image[0], cmap="gray", vmin=0.0, vmax=1.0)
        ax.set_title(text if text == truth else f"{text} (≠ {truth})", fontsize=9,
                     color="black" if text == truth else "tab:red")
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, format="png")


def main(argv=None):
    args = parse_args(argv)
    data = captions.load_captions(args.train_size, args.test_size, seed=args.seed)
    spec = {"kind": "caption", "vocab_size": len(data.vocab), "wordvec_size": args.wordvec,
            "hidden_size": args.hidden, "image_shape": list(data.x_train.shape[1:]), "channels": list(args.channels)}
    comm = communicator(args)
    model = build_model(spec, seed=args.seed)
    move = device_mover(args)
    if args.device == "gpu":
        model.to_gpu()
    batches = batch_source(lambda: ShuffledBatcher((data.x_train, data.t_train), args.batch_size, seed=args.seed,
                                                   vocab_size=len(data.vocab), device=args.device),
                           comm, model, f"--batch-size {args.batch_size}")
    trainer = Trainer(model, Adam(args.lr).setup(model), batches, clip=args.clip or None,
                      evaluators=[ExactMatch(data.x_test, data.t_test)],
                      extensions=extensions(args, args.out, "test_exact_match", "max", ExponentialDecay(args.lr_decay),
                                            [EachEpoch(lambda: show_examples(model, data, args.examples, move))]),
                      log_every=args.log_every,
                      meta={"model": spec, "vocab": data.vocab.id_to_word,
                            "args": {**vars(args), "out": str(args.out)}},
                      comm=comm)
    history = run_training(trainer, args, lambda: (
        f"CaptionModel: V {len(data.vocab)}, D {args.wordvec}, H {args.hidden}, conv channels {args.channels}; "
        f"{len(data.x_train):,} training and {len(data.x_test):,} held-out images, batch {args.batch_size}"
        f"{ranks(comm)}, Adam lr {trainer.optimizer.lr:g} (x{args.lr_decay:g} per epoch), clip {args.clip}, "
        f"device {args.device}"))

    if comm.is_root:
        shown = slice(0, 12)
        generated = [data.caption(y) for y in model.generate(move(data.x_test[shown]), data.start_id,
                                                             data.t_test.shape[1] - 1)]
        plot_captions(data.x_test[shown], generated, [data.caption(t) for t in data.t_test[shown]],
                      args.out / "captions.png")
    epochs = [r for r in history["epochs"] if r["complete"]]
    result = {**spec, "train_size": len(data.x_train), "test_size": len(data.x_test), "device": args.device,
              "seed": args.seed, "ranks": comm.size, "resumed": args.resumed, **trainer.summary(),
              "test_exact_match": history["epochs"][-1]["test_exact_match"],
              "test_exact_match_per_epoch": [r["test_exact_match"] for r in epochs],
              "train_loss_per_epoch": [r["train_loss"] for r in epochs],
              "history": str(args.out / "history.json"), "plot": str(args.out / "history.png"),
              "grid": str(args.out / "captions.png"), "checkpoint": str(args.out / "last.npz")}
    if args.beam_width > 1:
        beam = ExactMatch(data.x_test, data.t_test, beam_width=args.beam_width)(model, comm)
        result.update(test_exact_match_beam=beam["exact_match"], beam_width=args.beam_width)
    if comm.is_root:
        write_summary(args.out, result, comm.size)


if __name__ == "__main__":
    main()

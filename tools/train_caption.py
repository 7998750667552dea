"""Train CaptionModel on generated digit images and score whole captions on held-out images.

    python tools/train_caption.py [--epochs E] [--batch-size N] [--train-size S] [--test-size S]
        [--wordvec D] [--hidden H] [--channels C1,C2,...] [--lr LR] [--lr-decay F] [--clip NORM]
        [--examples K] [--beam-width K] [--device cpu|gpu] [--seed S] [--out DIR] [--no-progress]

Defaults: 60,000 training and 1,000 held-out images, D 16, H 256, conv channels (8, 32, 64),
batch 50, Adam lr 0.002 halved after every epoch, clip 5.0, 3 epochs: about 97% held-out
exact match in about 5 minutes on 2 CPU cores (docs/captioning.md).

The images (1 x 32 x 96) show one to four digits of a bitmap font at a random size and
position, with noise (``tinygrad_rnn.data.captions``); a caption names the digits in words
(``seven zero two``). After each epoch the held-out images are captioned greedily and scored
by exact match of the whole caption (end and padding tokens included), and a few are printed,
marked right or wrong.

Writes ``history.json``, ``history.png``, ``last.npz`` and ``captions.png`` (a grid of
held-out images with their generated captions, wrong ones in red) into ``--out``. Prints as
its last line one JSON object: test_exact_match (last epoch), exact_match (per epoch),
train_seconds, eval_seconds, samples_per_second, ...
"""
import argparse
import json
from pathlib import Path

import numpy as np

from common import marks
from models import CaptionModel
from tinygrad_rnn import as_cupy
from tinygrad_rnn.data import captions
from tinygrad_rnn.optimizers import Adam
from tinygrad_rnn.serialization import atomic_write
from tinygrad_rnn.training import SeqTrainer


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--train-size", type=int, default=60000, help="generated training images")
    parser.add_argument("--test-size", type=int, default=1000, help="generated held-out images")
    parser.add_argument("--wordvec", type=int, default=16, help="D, word vector size")
    parser.add_argument("--hidden", type=int, default=256, help="H, image code and decoder LSTM size")
    parser.add_argument("--channels", default="8,32,64", help="output channels of the conv blocks")
    parser.add_argument("--lr", type=float, default=0.002, help="Adam learning rate")
    parser.add_argument("--lr-decay", type=float, default=0.5,
                        help="multiply the learning rate by this after each epoch")
    parser.add_argument("--clip", type=float, default=5.0, help="max global gradient norm (0: no clipping)")
    parser.add_argument("--examples", type=int, default=6, help="held-out images printed each epoch")
    parser.add_argument("--beam-width", type=int, default=1, help="also score the final model with beam search")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/caption", help="output folder")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        args.channels = tuple(int(c) for c in args.channels.split(","))
    except ValueError:
        parser.error(f"--channels must be comma-separated ints, got {args.channels!r}")
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
    from matplotlib.figure import Figure  # the object API: no pyplot, no global backend switch

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
    out = Path(args.out)
    data = captions.load_captions(args.train_size, args.test_size, seed=args.seed)
    model = CaptionModel(len(data.vocab), args.wordvec, args.hidden, image_shape=data.x_train.shape[1:],
                         channels=args.channels, seed=args.seed)
    move = np.asarray
    if args.device == "gpu":
        model.to_gpu()
        move = as_cupy
    spec = {"vocab_size": len(data.vocab), "wordvec_size": args.wordvec, "hidden_size": args.hidden,
            "image_shape": list(data.x_train.shape[1:]), "channels": list(args.channels)}

    def after_epoch(trainer, record):
        show_examples(model, data, args.examples, move)
        trainer.optimizer.lr *= args.lr_decay

    trainer = SeqTrainer(model, Adam(args.lr).setup(model), batch_size=args.batch_size,
                         max_grad_norm=args.clip or None, seed=args.seed, out_dir=out,
                         progress=False if args.no_progress else None, log=print, callback=after_epoch,
                         meta={"model": spec, "vocab": data.vocab.id_to_word, "args": vars(args)})
    print(f"CaptionModel: V {len(data.vocab)}, D {args.wordvec}, H {args.hidden}, conv channels {args.channels}; "
          f"{len(data.x_train):,} training and {len(data.x_test):,} held-out images, batch {args.batch_size}, "
          f"Adam lr {args.lr:g} (x{args.lr_decay:g} per epoch), clip {args.clip}, device {args.device}")
    history = trainer.fit(data.x_train, data.t_train, data.x_test, data.t_test, epochs=args.epochs)

    shown = slice(0, 12)
    generated = [data.caption(y) for y in model.generate(move(data.x_test[shown]), data.start_id,
                                                         data.t_test.shape[1] - 1)]
    plot_captions(data.x_test[shown], generated, [data.caption(t) for t in data.t_test[shown]], out / "captions.png")
    epochs = history["epochs"]
    train_seconds = sum(r["seconds"] for r in epochs)
    result = {**spec, "epochs": len(epochs), "train_size": len(data.x_train), "test_size": len(data.x_test),
              "test_exact_match": epochs[-1]["accuracy"], "exact_match": [r["accuracy"] for r in epochs],
              "loss": [r["loss"] for r in epochs], "train_seconds": train_seconds,
              "eval_seconds": sum(r["eval_seconds"] for r in epochs),
              "samples_per_second": sum(r["iterations"] for r in epochs) * args.batch_size / train_seconds,
              "device": args.device, "seed": args.seed, "history": str(out / "history.json"),
              "plot": str(out / "history.png"), "grid": str(out / "captions.png"),
              "checkpoint": str(out / "last.npz")}
    if args.beam_width > 1:
        result["test_exact_match_beam"] = trainer.evaluate(data.x_test, data.t_test, beam_width=args.beam_width)
        result["beam_width"] = args.beam_width
    print(json.dumps(result))


if __name__ == "__main__":
    main()

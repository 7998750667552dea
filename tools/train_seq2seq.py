"""Train a seq2seq model on generated addition or date questions and score whole answers.

    python tools/train_seq2seq.py --task {addition,date} --model {seq2seq,peeky,attention}
        [--reverse] [--bidirectional] [--epochs E] [--wordvec D] [--hidden H] [--batch-size N]
        [--lr LR] [--lr-schedule {cosine,constant}] [--eps EPS] [--clip NORM] [--count C] [--test-size S]
        [--data-file PATH] [--examples K]
        [--beam-width K] [--attention-question TEXT] [--device cpu|gpu] [--seed S] [--out DIR]
        [--no-progress]

Defaults are the classic settings: addition with D 16, H 128, 25 epochs; dates with D 16,
H 256, 10 epochs; both with batch 128, Adam lr 0.001 (eps 1e-7, as the textbook's Adam),
clip 5.0, 50,000 generated examples of which 5,000 are held out (``--data-file`` reads the
textbook's addition.txt or date.txt instead). One default differs from the textbook: the
learning rate follows a cosine from 0.001 towards 0, one step an epoch. At a constant rate
(``--lr-schedule constant``, the textbook's) the held-out accuracy of peeky + reverse swings by
1 to 5 points between the last epochs, so its final figure depends on the seed. After each
epoch the held-out set is decoded greedily and scored by exact match of the whole answer, and a
few held-out questions are printed with their decoded answers, marked ☑ (right) or ☒ (wrong).

Writes ``history.json``, ``history.png`` and ``last.npz`` into ``--out`` and, for the attention
model, ``attention.png``: the attention weights of one decoded held-out question (or
``--attention-question``). Prints as its last line one JSON object: test_accuracy (last
epoch), accuracy (per epoch), train_seconds, eval_seconds, samples_per_second, ...
"""
import argparse
import json
import math
from pathlib import Path

import numpy as np

from common import marks
from models import AttentionSeq2seq, PeekySeq2seq, Seq2seq
from tinygrad_rnn import as_cupy
from tinygrad_rnn.data import toy_seq
from tinygrad_rnn.optimizers import Adam
from tinygrad_rnn.serialization import atomic_write
from tinygrad_rnn.training import SeqTrainer

CLASSIC = {
    "addition": {"wordvec": 16, "hidden": 128, "epochs": 25},
    "date": {"wordvec": 16, "hidden": 256, "epochs": 10},
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--task", choices=sorted(CLASSIC), required=True)
    parser.add_argument("--model", choices=("seq2seq", "peeky", "attention"), required=True)
    parser.add_argument("--reverse", action="store_true", help="reverse the questions")
    parser.add_argument("--bidirectional", action="store_true", help="bidirectional encoder (attention only)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--wordvec", type=int, help="D, character vector size")
    parser.add_argument("--hidden", type=int, help="H, hidden size")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.001, help="Adam learning rate")
    parser.add_argument("--eps", type=float, default=1e-7, help="Adam epsilon (the textbook's Adam uses 1e-7)")
    parser.add_argument("--clip", type=float, default=5.0, help="max global gradient norm (0: no clipping)")
    parser.add_argument("--lr-schedule", choices=("cosine", "constant"), default="cosine",
                        help="cosine: anneal the learning rate towards 0 over the epochs, one step an epoch; "
                             "constant: the textbook's")
    parser.add_argument("--count", type=int, default=50000, help="examples to generate")
    parser.add_argument("--test-size", type=int, default=5000, help="held-out examples")
    parser.add_argument("--data-file", help="read question_answer lines from this file instead of generating")
    parser.add_argument("--examples", type=int, default=8, help="held-out questions printed each epoch")
    parser.add_argument("--beam-width", type=int, default=1, help="also score the final model with beam search")
    parser.add_argument("--attention-question", help="question drawn in attention.png (default: the longest of "
                                                     "the first 100 held-out ones)")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="output folder (default runs/<task>-<model>)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    for name, value in CLASSIC[args.task].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.bidirectional and args.model != "attention":
        parser.error("--bidirectional needs --model attention")
    args.out = args.out or f"runs/{args.task}-{args.model}{'-reverse' if args.reverse else ''}"
    return args


def build_model(kind, vocab_size, wordvec_size, hidden_size, bidirectional=False, seed=None):
    """The model named by ``--model``.

    Args:
        kind (str): "seq2seq", "peeky" or "attention".
        vocab_size, wordvec_size, hidden_size (int): V, D, H.
        bidirectional (bool): for "attention" only.
        seed (int, optional): randomness of the weights.
    Returns:
        Layer: the model, on the CPU.
    """
    if kind == "attention":
        return AttentionSeq2seq(vocab_size, wordvec_size, hidden_size, bidirectional=bidirectional, seed=seed)
    return {"seq2seq": Seq2seq, "peeky": PeekySeq2seq}[kind](vocab_size, wordvec_size, hidden_size, seed=seed)



def show_examples(model, data, count, move):
    """Print ``count`` held-out questions with the decoded answer, marked right or wrong."""
    if count <= 0:
        return
    xs, ts = data.x_test[:count], data.t_test[:count]
    ids = model.generate(move(xs), data.vocab.start_id, ts.shape[1] - 1)
    right, wrong = marks()
    for x, t, y in zip(xs, ts, ids):
        answer = data.vocab.decode(y)
        ok = answer == data.vocab.decode(t[1:])
        note = "" if ok else f"   (want {data.vocab.decode(t[1:]).rstrip()})"
        print(f"  {right if ok else wrong} {data.question(x).rstrip():<29} -> {answer.rstrip()}{note}")


def plot_attention(weights, question, answer, path):
    """Draw attention weights as a heatmap PNG: input characters across, output characters down.

    Args:
        weights (ndarray): (len(answer), len(question)) weights, columns in the order of ``question``.
        question (str): the input characters, in reading order.
        answer (str): the output characters.
        path (str | Path): the PNG file (written atomically).
    """
    from matplotlib.figure import Figure  # the object API: no pyplot, no global backend switch

    fig = Figure(figsize=(max(4.0, 0.32 * len(question) + 1.5), max(2.5, 0.4 * len(answer) + 1.2)), dpi=100)
    ax = fig.add_subplot()
    image = ax.imshow(weights, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    shown = ["␣" if c == " " else c for c in question]
    ax.set_xticks(range(len(question)), shown)
    ax.set_yticks(range(len(answer)), ["␣" if c == " " else c for c in answer])
    ax.set_xlabel("input")
    ax.set_ylabel("output")
    ax.set_title(f"{question.rstrip()} -> {answer.strip()}", fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.04)
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, format="png")


def draw_attention(model, data, question, move, path):
    """Decode one question with the attention model and draw its weights; returns the answer."""
    if question is None:  # the longest of the first held-out questions: the most to look at
        lengths = [len(data.question(x).rstrip()) for x in data.x_test[:100]]
        x = data.x_test[int(np.argmax(lengths))][None]
    else:
        width = data.x_train.shape[1]
        x = data.vocab.encode([question], width)
        x = x[:, ::-1].copy() if data.reverse else x
    answer = model.generate(move(x), data.vocab.start_id, data.t_train.shape[1] - 1)[0]
    weights = model.attention_weights[0]
    if data.reverse:  # columns back in reading order
        weights = weights[:, ::-1]
    text = data.question(x[0])
    keep = len(text.rstrip()) or len(text)  # trailing padding draws nothing of interest
    plot_attention(weights[:, :keep], text[:keep], data.vocab.decode(answer), path)
    return data.vocab.decode(answer)


def main(argv=None):
    args = parse_args(argv)
    out = Path(args.out)
    data = toy_seq.load_task(args.task, count=args.count, test_size=args.test_size, seed=args.seed,
                             reverse=args.reverse, path=args.data_file)
    model = build_model(args.model, len(data.vocab), args.wordvec, args.hidden, args.bidirectional, seed=args.seed)
    move = np.asarray
    if args.device == "gpu":
        model.to_gpu()
        move = as_cupy
    spec = {"task": args.task, "model": args.model, "reverse": args.reverse, "bidirectional": args.bidirectional,
            "vocab_size": len(data.vocab), "wordvec_size": args.wordvec, "hidden_size": args.hidden}

    def end_of_epoch(trainer, record):
        show_examples(model, data, args.examples, move)
        if args.lr_schedule == "cosine":
            trainer.optimizer.lr = args.lr * 0.5 * (1 + math.cos(math.pi * trainer.epoch / args.epochs))

    trainer = SeqTrainer(model, Adam(args.lr, eps=args.eps).setup(model), batch_size=args.batch_size,
                         max_grad_norm=args.clip or None, seed=args.seed, out_dir=out,
                         progress=False if args.no_progress else None, log=print, callback=end_of_epoch,
                         meta={"model": spec, "vocab": data.vocab.id_to_char, "args": vars(args)})
    print(f"{type(model).__name__} on {args.task}{' (reversed questions)' if args.reverse else ''}: "
          f"V {len(data.vocab)}, D {args.wordvec}, H {args.hidden}; {len(data.x_train):,} training and "
          f"{len(data.x_test):,} held-out examples, batch {args.batch_size}, Adam lr {args.lr:g} eps {args.eps:g} "
          f"({args.lr_schedule}), clip {args.clip}, "
          f"device {args.device}")
    history = trainer.fit(data.x_train, data.t_train, data.x_test, data.t_test, epochs=args.epochs)

    epochs = history["epochs"]
    train_seconds = sum(r["seconds"] for r in epochs)
    result = {**spec, "epochs": len(epochs), "test_accuracy": epochs[-1]["accuracy"],
              "accuracy": [r["accuracy"] for r in epochs], "loss": [r["loss"] for r in epochs],
              "train_seconds": train_seconds, "eval_seconds": sum(r["eval_seconds"] for r in epochs),
              "samples_per_second": sum(r["iterations"] for r in epochs) * args.batch_size / train_seconds,
              "device": args.device, "seed": args.seed, "history": str(out / "history.json"),
              "plot": str(out / "history.png"), "checkpoint": str(out / "last.npz")}
    if args.beam_width > 1:
        result["test_accuracy_beam"] = trainer.evaluate(data.x_test, data.t_test, beam_width=args.beam_width)
        result["beam_width"] = args.beam_width
    if args.model == "attention":
        answer = draw_attention(model, data, args.attention_question, move, out / "attention.png")
        result.update(attention_plot=str(out / "attention.png"), attention_answer=answer)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

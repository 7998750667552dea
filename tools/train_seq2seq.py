"""Train a seq2seq model on generated addition or date questions and score whole answers.

    tinygrad-rnn-train-seq2seq --task {addition,date} --model {seq2seq,peeky,attention}
        [--reverse] [--bidirectional] [--epochs E] [--wordvec D] [--hidden H] [--batch-size N]
        [--lr LR] [--lr-schedule {cosine,constant}] [--eps EPS] [--clip NORM] [--count C] [--test-size S]
        [--data-file PATH] [--examples K] [--beam-width K] [--attention-question TEXT] [--max-iters K]
        [--device cpu|gpu] [--seed S] [--out DIR] [--no-progress] [--resume CHECKPOINT] [--distributed]

(or ``python tools/train_seq2seq.py ...``). Defaults are the classic settings: addition with
D 16, H 128, 25 epochs; dates with D 16, H 256, 10 epochs; both with batch 128, Adam lr 0.001
(eps 1e-7, as the textbook's Adam), clip 5.0, 50,000 generated examples of which 5,000 are held
out (``--data-file`` reads the textbook's addition.txt or date.txt instead, of the ``--task``;
``--count`` does not apply to it). One default
differs from the textbook: the learning rate follows a cosine from 0.001 towards 0, one step an
epoch; ``--lr-schedule constant`` keeps the textbook's constant rate, with which the held-out
accuracy of peeky + reverse swings between the last epochs. After each epoch the held-out set
is decoded greedily and scored by exact match of the whole answer, and a few held-out questions
are printed with their decoded answers, marked right or wrong.

Writes ``history.json``, ``history.png``, ``last.npz`` and ``summary.json`` into ``--out`` and,
for the attention model, ``attention.png``: the attention weights of one decoded held-out
question (or ``--attention-question``). Prints the summary as its last line, one JSON object:
test_exact_match (last epoch), test_exact_match_per_epoch, train_seconds, samples_per_second, ...
"""
from pathlib import Path

import numpy as np

from tinygrad_rnn.data import ShuffledBatcher, toy_seq
from tinygrad_rnn.models import build_model
from tinygrad_rnn.optimizers import Adam
from tinygrad_rnn.optional import require
from tinygrad_rnn.serialization import atomic_write
from tinygrad_rnn.tools.common import (EachEpoch, batch_source, communicator, device_mover, extensions,
                                       fill_defaults, marks, nonnegative_int, out_folder, parser, positive_float,
                                       positive_int, ranks, run_training, usage_error, write_summary)
from tinygrad_rnn.training import Constant, Cosine, ExactMatch, Trainer

CLASSIC = {
    "addition": {"wordvec": 16, "hidden": 128, "epochs": 25},
    "date": {"wordvec": 16, "hidden": 256, "epochs": 10},
}
DEFAULTS = {"batch_size": 128, "lr": 0.001, "clip": 5.0}


def build_parser():
    """The flags of ``train_seq2seq`` (the common ones and its own)."""
    p = parser(__doc__.splitlines()[0], __doc__)
    p.add_argument("--task", choices=sorted(CLASSIC), required=True, help="the questions: additions or dates")
    p.add_argument("--model", choices=("seq2seq", "peeky", "attention"), required=True, help="the model to train")
    p.add_argument("--reverse", action="store_true", help="reverse the questions")
    p.add_argument("--bidirectional", action="store_true", help="bidirectional encoder (attention only)")
    p.add_argument("--wordvec", type=positive_int, help="D, character vector size (default: per --task, see below)")
    p.add_argument("--hidden", type=positive_int, help="H, hidden size (default: per --task, see below)")
    p.add_argument("--eps", type=positive_float, default=1e-7, help="Adam epsilon (the textbook's Adam uses 1e-7)")
    p.add_argument("--lr-schedule", choices=("cosine", "constant"), default="cosine",
                   help="cosine: anneal the learning rate towards 0 over the epochs, one step an epoch; "
                        "constant: the textbook's")
    p.add_argument("--count", type=positive_int, help="examples to generate; not with --data-file (default: 50000)")
    p.add_argument("--test-size", type=positive_int, default=5000, help="held-out examples")
    p.add_argument("--data-file", help="read question_answer lines of the --task from this file instead of "
                                       "generating (default: generate)")
    p.add_argument("--examples", type=nonnegative_int, default=8, help="held-out questions printed each epoch")
    p.add_argument("--beam-width", type=positive_int, default=1, help="also score the final model with beam search")
    p.add_argument("--attention-question", help="question drawn in attention.png (default: the longest of "
                                                "the first 100 held-out ones)")
    return p


def parse_args(argv=None):
    p = build_parser()
    args = p.parse_args(argv)
    if args.count is not None and args.data_file is not None:
        p.error("--count: the examples come from --data-file, nothing is generated")
    fill_defaults(args, {**CLASSIC[args.task], **DEFAULTS, "count": 50000})
    if args.bidirectional and args.model != "attention":
        p.error("--bidirectional needs --model attention")
    if args.attention_question is not None and args.model != "attention":
        p.error("--attention-question needs --model attention")
    if args.data_file is None and args.test_size >= args.count:
        p.error(f"--test-size {args.test_size} leaves no training examples of --count {args.count}")
    out_folder(args, f"runs/{args.task}-{args.model}{'-reverse' if args.reverse else ''}")
    return args


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
    Figure = require("matplotlib.figure", "plot_attention").Figure  # the object API: no pyplot, no backend switch

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
    answers, weights = model.generate(move(x), data.vocab.start_id, data.t_train.shape[1] - 1,
                                      return_attention=True)
    answer, weights = answers[0], weights[0]
    if data.reverse:  # columns back in reading order
        weights = weights[:, ::-1]
    text = data.question(x[0])
    keep = len(text.rstrip()) or len(text)  # trailing padding draws nothing of interest
    plot_attention(weights[:, :keep], text[:keep], data.vocab.decode(answer), path)
    return data.vocab.decode(answer)


def main(argv=None):
    args = parse_args(argv)
    try:
        data = toy_seq.load_task(args.task, count=args.count, test_size=args.test_size, seed=args.seed,
                                 reverse=args.reverse, path=args.data_file)
    except (OSError, ValueError) as e:  # generated data never fails: the file is at fault
        usage_error(f"--data-file {args.data_file} (--task {args.task}, --test-size {args.test_size}): {e}")
    if args.attention_question is not None:  # checked before training, not after it
        try:
            data.vocab.encode([args.attention_question], data.x_train.shape[1])
        except ValueError as e:
            usage_error(f"--attention-question: {e}")
    spec = {"kind": args.model, "vocab_size": len(data.vocab), "wordvec_size": args.wordvec,
            "hidden_size": args.hidden}
    if args.model == "attention":
        spec["bidirectional"] = args.bidirectional
    comm = communicator(args)
    model = build_model(spec, seed=args.seed)
    move = device_mover(args)
    if args.device == "gpu":
        model.to_gpu()
    batches = batch_source(lambda: ShuffledBatcher((data.x_train, data.t_train), args.batch_size, seed=args.seed,
                                                   vocab_size=len(data.vocab), device=args.device),
                           comm, model, f"--batch-size {args.batch_size}")
    schedule = Cosine(args.epochs) if args.lr_schedule == "cosine" else Constant()
    trainer = Trainer(model, Adam(args.lr, eps=args.eps).setup(model), batches, clip=args.clip or None,
                      evaluators=[ExactMatch(data.x_test, data.t_test)],
                      extensions=extensions(args, args.out, "test_exact_match", "max", schedule,
                                            [EachEpoch(lambda: show_examples(model, data, args.examples, move))]),
                      log_every=args.log_every,
                      meta={"model": spec, "task": args.task, "reverse": args.reverse, "vocab": data.vocab.id_to_char,
                            "args": {**vars(args), "out": str(args.out)}},
                      comm=comm)
    history = run_training(trainer, args, lambda: (
        f"{type(model).__name__} on {args.task}{' (reversed questions)' if args.reverse else ''}: "
        f"V {len(data.vocab)}, D {args.wordvec}, H {args.hidden}; {len(data.x_train):,} training and "
        f"{len(data.x_test):,} held-out examples, batch {args.batch_size}{ranks(comm)}, "
        f"Adam lr {trainer.optimizer.lr:g} eps {args.eps:g} ({args.lr_schedule}), clip {args.clip}, "
        f"device {args.device}; data "
        + (f"{args.data_file} ({Path(args.data_file).stat().st_size:,} bytes)" if args.data_file else "generated")))

    epochs = [r for r in history["epochs"] if r["complete"]]
    result = {**spec, "task": args.task, "reverse": args.reverse, "device": args.device, "seed": args.seed,
              "ranks": comm.size, "data_file": args.data_file, "resumed": args.resumed, **trainer.summary(),
              "test_exact_match": history["epochs"][-1]["test_exact_match"],
              "test_exact_match_per_epoch": [r["test_exact_match"] for r in epochs],
              "train_loss_per_epoch": [r["train_loss"] for r in epochs],
              "history": str(args.out / "history.json"), "plot": str(args.out / "history.png"),
              "checkpoint": str(args.out / "last.npz")}
    if args.beam_width > 1:
        beam = ExactMatch(data.x_test, data.t_test, beam_width=args.beam_width)(model, comm)
        result.update(test_exact_match_beam=beam["exact_match"], beam_width=args.beam_width)
    if args.model == "attention" and comm.is_root:
        answer = draw_attention(model, data, args.attention_question, move, args.out / "attention.png")
        result.update(attention_plot=str(args.out / "attention.png"), attention_answer=answer)
    if comm.is_root:
        write_summary(args.out, result, comm.size)


if __name__ == "__main__":
    main()

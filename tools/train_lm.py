"""Train a word-level language model on Penn Treebank with the classic recipe of each model.

    tinygrad-rnn-train-lm --model {rnn,lstm,better} [--wordvec D] [--hidden H] [--batch-size N]
        [--time-size T] [--lr LR] [--clip NORM] [--epochs E] [--dropout P] [--lr-decay F]
        [--convention {textbook,pytorch}] [--keep-last-window] [--max-iters K] [--corpus-size WORDS]
        [--eval-words WORDS] [--device cpu|gpu] [--seed S] [--out DIR] [--data-dir DIR] [--no-progress]
        [--resume CHECKPOINT] [--distributed]

(or ``python tools/train_lm.py ...``). Defaults per model (the classic settings):

    rnn     SimpleRNNLM   D 100, H 100, N 10, T 5,  SGD lr 0.1, no clipping, 100 epochs
    lstm    LSTMLM        D 100, H 100, N 20, T 35, SGD lr 20, clip 0.25, 4 epochs
    better  BetterLSTMLM  D 650, H 650, N 20, T 35, SGD lr 20, clip 0.25, dropout 0.5, 40 epochs,
                          lr / 4 whenever validation perplexity stops improving

The BPTT streams follow the textbook's convention by default (state carried across epochs, the
text cut at other places each epoch); ``--convention pytorch`` resets the state each epoch over
fixed windows as PyTorch's word_language_model does, and ``--keep-last-window`` keeps the last
shorter window of an epoch. ``--corpus-size W`` trains on the first W words of train with the
vocabulary of those words only (as the classic SimpleRNNLM experiment does, 418 words for
W = 1000); validation and test are then skipped, since they hold words outside that vocabulary.
``--eval-words W`` scores validation and test on their first W words only: quick smoke runs
(``--max-iters 5``), whose perplexities are not the classic figures; the summary records it.
``--dropout`` is refused for the models without dropout, and ``--lr-decay`` where nothing is
validated. With ``--data-dir`` every file comes from that folder (or its ``ptb/``); without it,
from ``$TINYGRAD_RNN_DATA/ptb``, the download cache, or a download. The run's first line names
the files and their sizes.

``--distributed`` under ``mpirun -n P python -m mpi4py -m tinygrad_rnn.tools.train_lm`` trains data
parallel: each rank takes N / P of the streams (P must divide N), and the run trains as one
process on the whole batch would; only rank 0 writes.

Writes ``history.json``, ``history.png``, ``last.npz``, ``best.npz`` and ``summary.json`` into
``--out`` and prints the summary as its last line, one JSON object: valid_perplexity (best),
test_perplexity (of the best checkpoint), train_perplexity (last epoch), train_seconds,
words_per_second, ...
"""
from pathlib import Path

from tinygrad_rnn.data import BPTTBatcher, Vocabulary, ptb
from tinygrad_rnn.data.batching import CONVENTIONS
from tinygrad_rnn.models import build_model
from tinygrad_rnn.optimizers import SGD
from tinygrad_rnn.tools.common import (batch_source, communicator, extensions, factor, fill_defaults, folder,
                                       out_folder, parser, positive_int, probability, ranks, run_training, usage_error,
                                       write_summary)
from tinygrad_rnn.training import Perplexity, ReduceOnPlateau, Trainer, checkpoint, perplexity

CLASSIC = {
    "rnn": {"wordvec": 100, "hidden": 100, "batch_size": 10, "time_size": 5, "lr": 0.1, "clip": 0.0,
            "epochs": 100, "dropout": None, "lr_decay": None},
    "lstm": {"wordvec": 100, "hidden": 100, "batch_size": 20, "time_size": 35, "lr": 20.0, "clip": 0.25,
             "epochs": 4, "dropout": None, "lr_decay": None},
    "better": {"wordvec": 650, "hidden": 650, "batch_size": 20, "time_size": 35, "lr": 20.0, "clip": 0.25,
               "epochs": 40, "dropout": 0.5, "lr_decay": 0.25},
}


def build_parser():
    """The flags of ``train_lm`` (the common ones and its own)."""
    p = parser(__doc__.splitlines()[0], __doc__)
    p.add_argument("--model", choices=sorted(CLASSIC), required=True, help="the classic recipe to train")
    p.add_argument("--wordvec", type=positive_int, help="D, word vector size (default: per --model, see below)")
    p.add_argument("--hidden", type=positive_int, help="H, hidden size (default: per --model, see below)")
    p.add_argument("--time-size", type=positive_int, help="T, truncated-BPTT window (default: per --model, see below)")
    p.add_argument("--dropout", type=probability, help="dropout of BetterLSTMLM (default: 0.5; --model better only)")
    p.add_argument("--lr-decay", type=factor, help="multiply lr by this when validation stops improving, 1: never "
                                                   "(default: 0.25 for better, else 1)")
    p.add_argument("--convention", choices=CONVENTIONS, default="textbook", help="how BPTT streams cross epochs")
    p.add_argument("--keep-last-window", action="store_true", help="keep the last, shorter window of an epoch")
    p.add_argument("--corpus-size", type=positive_int, help="train on the first WORDS words only, no validation "
                                                            "(default: all)")
    p.add_argument("--eval-words", type=positive_int, help="score validation and test on their first WORDS words "
                                                           "only, for smoke runs (default: all)")
    p.add_argument("--data-dir", type=folder, help="folder holding ptb.*.txt, or its parent holding ptb/ "
                                                   "(default: $TINYGRAD_RNN_DATA/ptb, the cache, or a download)")
    return p


def parse_args(argv=None):
    p = build_parser()
    args = p.parse_args(argv)
    if args.dropout is not None and args.model != "better":
        p.error(f"--dropout: --model {args.model} has no dropout (only --model better has)")
    if args.corpus_size is not None and args.lr_decay is not None:
        p.error("--lr-decay follows validation, which --corpus-size skips")
    if args.corpus_size is not None and args.eval_words is not None:
        p.error("--eval-words bounds validation and test, which --corpus-size skips")
    if args.eval_words is not None and args.eval_words < 2:
        p.error(f"--eval-words: must be >= 2 (a word and the one it predicts), got {args.eval_words}")
    fill_defaults(args, CLASSIC[args.model])
    if args.model == "better" and args.wordvec != args.hidden:
        p.error("--model better ties the output to the embedding: --wordvec must equal --hidden")
    out_folder(args, f"runs/{args.model}")
    return args


def data_files(args):
    """The PTB files of the run, {split: Path}, checked before any work.

    Args:
        args (argparse.Namespace): the flags (``data_dir``, ``corpus_size``).
    Returns:
        dict: split -> Path of the verified file; train only with ``--corpus-size``.
    """
    splits = ("train",) if args.corpus_size else ("train", "valid", "test")
    try:
        # with --data-dir, nothing from elsewhere: no environment folder, no cache, no download
        files = {s: ptb.locate(s, args.data_dir, download=args.data_dir is None) for s in splits}
    except (OSError, ValueError) as e:
        usage_error(f"--data-dir: {e}")
    if args.data_dir is not None:
        mine = {Path(args.data_dir).resolve(), (Path(args.data_dir) / "ptb").resolve()}
        missing = [f"ptb.{s}.txt" for s, f in files.items() if f is None or f.parent.resolve() not in mine]
        if missing:
            usage_error(f"--data-dir {args.data_dir} holds no {', '.join(missing)} (nor its ptb/ folder): "
                        "put the PTB files there or give another --data-dir")
    return files


def main(argv=None):
    args = parse_args(argv)
    files = data_files(args)
    train, vocab = ptb.load("train", args.data_dir)
    valid = test = None
    if args.corpus_size:
        train = train[:args.corpus_size]
        vocab = Vocabulary(vocab.id_to_word[:int(train.max()) + 1])  # ids follow first appearance
    else:
        valid, _ = ptb.load("valid", args.data_dir)
        test, _ = ptb.load("test", args.data_dir)
        if args.eval_words:
            valid, test = valid[:args.eval_words], test[:args.eval_words]

    spec = {"kind": args.model, "vocab_size": len(vocab), "wordvec_size": args.wordvec, "hidden_size": args.hidden}
    if args.model == "better":
        spec["dropout"] = args.dropout
    comm = communicator(args)
    model = build_model(spec, seed=args.seed)
    if args.device == "gpu":
        model.to_gpu()
    opt = SGD(lr=args.lr).setup(model)
    batches = batch_source(lambda: BPTTBatcher(train, args.batch_size, args.time_size, convention=args.convention,
                                               drop_last=not args.keep_last_window, vocab_size=len(vocab),
                                               device=args.device),
                           comm, model, f"--batch-size {args.batch_size} --time-size {args.time_size}")
    decay = args.lr_decay if args.lr_decay and args.lr_decay < 1 and valid is not None else None
    schedule = ReduceOnPlateau("valid_perplexity", factor=decay) if decay else None
    trainer = Trainer(model, opt, batches, clip=args.clip or None,
                      evaluators=[Perplexity(valid)] if valid is not None else [],
                      extensions=extensions(args, args.out, "valid_perplexity" if valid is not None else None,
                                            schedule=schedule),
                      log_every=args.log_every,
                      meta={"model": spec, "vocab": vocab.id_to_word, "args": {**vars(args), "out": str(args.out)}},
                      comm=comm)
    history = run_training(trainer, args, lambda: (
        f"{type(model).__name__}: V {len(vocab)}, D {args.wordvec}, H {args.hidden}; {len(train):,} training words, "
        f"N {args.batch_size} x T {args.time_size} ({args.convention}){ranks(comm)}, lr {opt.lr:g}, clip {args.clip}, "
        f"device {args.device}; data " + ", ".join(f"{f} ({f.stat().st_size:,} bytes)" for f in files.values())
        + (f", validation and test cut to {args.eval_words:,} words" if args.eval_words else "")))

    result = {"model": args.model, "device": args.device, "seed": args.seed, "ranks": comm.size,
              "data_files": {s: str(f) for s, f in files.items()}, "eval_words": args.eval_words,
              "resumed": args.resumed, **trainer.summary(),
              "train_perplexity": history["epochs"][-1]["train_perplexity"], "valid_perplexity": None,
              "test_perplexity": None}
    if test is not None:
        scored = [r["valid_perplexity"] for r in history["epochs"]]
        result["valid_perplexity"] = min(scored, key=float)
        best = args.out / "best.npz"
        # test the parameters that did best on validation, as the classic recipe does; only rank 0 sees the file
        params = comm.from_root(lambda: checkpoint.read(best)[0] if best.exists() else None)
        if params is not None:
            model.load_state_dict(params)
        result["test_perplexity"] = perplexity(model, test, comm=comm)["perplexity"]
    result.update(lr=opt.lr, history=str(args.out / "history.json"), plot=str(args.out / "history.png"),
                  checkpoint=str(args.out / "last.npz"))
    if comm.is_root:
        write_summary(args.out, result, comm.size)


if __name__ == "__main__":
    main()

"""Train a word-level language model on Penn Treebank with the classic recipe of each model.

    tinygrad-rnn-train-lm --model {rnn,lstm,better} [--wordvec D] [--hidden H] [--batch-size N]
        [--time-size T] [--lr LR] [--clip NORM] [--epochs E] [--dropout P] [--lr-decay F]
        [--convention {textbook,pytorch}] [--keep-last-window] [--max-iters K] [--corpus-size WORDS]
        [--device cpu|gpu] [--seed S] [--out DIR] [--data-dir DIR] [--no-progress] [--resume CHECKPOINT]
        [--distributed]

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
from tinygrad_rnn.tools.common import (communicator, extensions, factor, fill_defaults, parser, positive_int,
                                       probability, ranks, run_training, write_summary)
from tinygrad_rnn.training import Perplexity, ReduceOnPlateau, Trainer, checkpoint, perplexity

CLASSIC = {
    "rnn": {"wordvec": 100, "hidden": 100, "batch_size": 10, "time_size": 5, "lr": 0.1, "clip": 0.0,
            "epochs": 100, "dropout": None, "lr_decay": None},
    "lstm": {"wordvec": 100, "hidden": 100, "batch_size": 20, "time_size": 35, "lr": 20.0, "clip": 0.25,
             "epochs": 4, "dropout": None, "lr_decay": None},
    "better": {"wordvec": 650, "hidden": 650, "batch_size": 20, "time_size": 35, "lr": 20.0, "clip": 0.25,
               "epochs": 40, "dropout": 0.5, "lr_decay": 0.25},
}


def parse_args(argv=None):
    p = parser(__doc__.splitlines()[0], __doc__)
    p.add_argument("--model", choices=sorted(CLASSIC), required=True)
    p.add_argument("--wordvec", type=positive_int, help="D, word vector size")
    p.add_argument("--hidden", type=positive_int, help="H, hidden size")
    p.add_argument("--time-size", type=positive_int, help="T, truncated-BPTT window")
    p.add_argument("--dropout", type=probability, help="dropout of BetterLSTMLM")
    p.add_argument("--lr-decay", type=factor, help="multiply lr by this when validation stops improving "
                                                   "(1: never)")
    p.add_argument("--convention", choices=CONVENTIONS, default="textbook", help="how BPTT streams cross epochs")
    p.add_argument("--keep-last-window", action="store_true", help="keep the last, shorter window of an epoch")
    p.add_argument("--corpus-size", type=positive_int, help="train on the first WORDS words only (see above)")
    p.add_argument("--data-dir", help="folder holding ptb.*.txt, or its parent holding ptb/")
    args = p.parse_args(argv)
    fill_defaults(args, CLASSIC[args.model])
    if args.model == "better" and args.wordvec != args.hidden:
        p.error("--model better ties the output to the embedding: --wordvec must equal --hidden")
    args.out = Path(args.out or f"runs/{args.model}")
    return args


def main(argv=None):
    args = parse_args(argv)
    train, vocab = ptb.load("train", args.data_dir)
    valid = test = None
    if args.corpus_size:
        train = train[:args.corpus_size]
        vocab = Vocabulary(vocab.id_to_word[:int(train.max()) + 1])  # ids follow first appearance
    else:
        valid, _ = ptb.load("valid", args.data_dir)
        test, _ = ptb.load("test", args.data_dir)

    spec = {"kind": args.model, "vocab_size": len(vocab), "wordvec_size": args.wordvec, "hidden_size": args.hidden}
    if args.model == "better":
        spec["dropout"] = args.dropout
    comm = communicator(args)
    model = build_model(spec, seed=args.seed)
    if args.device == "gpu":
        model.to_gpu()
    opt = SGD(lr=args.lr).setup(model)
    batches = BPTTBatcher(train, args.batch_size, args.time_size, convention=args.convention,
                          drop_last=not args.keep_last_window, vocab_size=len(vocab), device=args.device)
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
        f"device {args.device}"))

    result = {"model": args.model, "device": args.device, "seed": args.seed, "ranks": comm.size, **trainer.summary(),
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

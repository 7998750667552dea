"""Train a word-level language model on Penn Treebank with the classic recipe of each model.

    python tools/train_lm.py --model {rnn,lstm,better} [--wordvec D] [--hidden H] [--batch-size N]
        [--time-size T] [--lr LR] [--clip NORM] [--epochs E] [--dropout P] [--lr-decay F]
        [--max-iters K] [--corpus-size WORDS] [--device cpu|gpu] [--seed S] [--out DIR]
        [--data-dir DIR] [--no-progress] [--resume CHECKPOINT]

Defaults per model (the classic settings):

    rnn     SimpleRNNLM   D 100, H 100, N 10, T 5,  SGD lr 0.1, no clipping, 100 epochs
    lstm    LSTMLM        D 100, H 100, N 20, T 35, SGD lr 20, clip 0.25, 4 epochs
    better  BetterLSTMLM  D 650, H 650, N 20, T 35, SGD lr 20, clip 0.25, dropout 0.5, 40 epochs,
                          lr / 4 whenever validation perplexity stops improving

``--corpus-size W`` trains on the first W words of train with the vocabulary of those words
only (as the classic SimpleRNNLM experiment does, 418 words for W = 1000); validation and test
are then skipped, since they hold words outside that vocabulary.

Writes ``history.json``, ``history.png``, ``last.npz`` and ``best.npz`` into ``--out`` and
prints, as its last line, one JSON object: valid_perplexity (best), test_perplexity (of the
best checkpoint), train_perplexity (last epoch), train_seconds, words_per_second, ...
"""
import argparse
import json
from pathlib import Path

from models import LSTMLM, BetterLSTMLM, SimpleRNNLM
from tinygrad_rnn.data import Vocabulary, ptb
from tinygrad_rnn.optimizers import SGD, ReduceOnPlateau
from tinygrad_rnn.serialization import load_npz
from tinygrad_rnn.training import LMTrainer, checkpoint_arrays, eval_perplexity

CLASSIC = {
    "rnn": {"wordvec": 100, "hidden": 100, "batch_size": 10, "time_size": 5, "lr": 0.1, "clip": None,
            "epochs": 100, "dropout": None, "lr_decay": None},
    "lstm": {"wordvec": 100, "hidden": 100, "batch_size": 20, "time_size": 35, "lr": 20.0, "clip": 0.25,
             "epochs": 4, "dropout": None, "lr_decay": None},
    "better": {"wordvec": 650, "hidden": 650, "batch_size": 20, "time_size": 35, "lr": 20.0, "clip": 0.25,
               "epochs": 40, "dropout": 0.5, "lr_decay": 0.25},
}


def build_model(spec, seed=None):
    """Construct a language model from its description (as stored in a checkpoint's metadata).

    Args:
        spec (dict): ``kind`` ("rnn", "lstm", "better"), ``vocab_size``, ``wordvec_size``,
            ``hidden_size`` and, for "better", ``dropout``.
        seed (int, optional): randomness of the initial weights (and dropout masks).
    Returns:
        Layer: the model, on the CPU.
    """
    sizes = (spec["vocab_size"], spec["wordvec_size"], spec["hidden_size"])
    if spec["kind"] == "better":
        return BetterLSTMLM(*sizes, dropout=spec["dropout"], seed=seed)
    return {"rnn": SimpleRNNLM, "lstm": LSTMLM}[spec["kind"]](*sizes, seed=seed)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--model", choices=sorted(CLASSIC), required=True)
    parser.add_argument("--wordvec", type=int, help="D, word vector size")
    parser.add_argument("--hidden", type=int, help="H, hidden size")
    parser.add_argument("--batch-size", type=int, help="N, parallel streams")
    parser.add_argument("--time-size", type=int, help="T, truncated-BPTT window")
    parser.add_argument("--lr", type=float, help="SGD learning rate")
    parser.add_argument("--clip", type=float, help="max global gradient norm (0: no clipping)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--dropout", type=float, help="dropout of BetterLSTMLM")
    parser.add_argument("--lr-decay", type=float, help="multiply lr by this when validation stops improving "
                                                       "(0: never)")
    parser.add_argument("--max-iters", type=int, help="stop after this many iterations in total")
    parser.add_argument("--corpus-size", type=int, help="train on the first WORDS words only (see above)")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="output folder (default runs/<model>)")
    parser.add_argument("--data-dir", help="folder holding ptb.*.txt, or its parent holding ptb/")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--log-every", type=int, default=20, help="record train perplexity every K iterations")
    parser.add_argument("--resume", help="checkpoint (last.npz) to continue from; give the same settings")
    args = parser.parse_args(argv)
    for name, value in CLASSIC[args.model].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.clip = args.clip or None
    args.lr_decay = args.lr_decay or None
    args.out = args.out or f"runs/{args.model}"
    return args


def main(argv=None):
    args = parse_args(argv)
    out = Path(args.out)
    train, vocab = ptb.load("train", args.data_dir)
    valid = test = None
    if args.corpus_size:
        train = train[:args.corpus_size]
        vocab = Vocabulary(vocab.id_to_word[:int(train.max()) + 1])  # ids follow first appearance
    else:
        valid, _ = ptb.load("valid", args.data_dir)
        test, _ = ptb.load("test", args.data_dir)

    spec = {"kind": args.model, "vocab_size": len(vocab), "wordvec_size": args.wordvec,
            "hidden_size": args.hidden, "dropout": args.dropout}
    model = build_model(spec, seed=args.seed)
    if args.device == "gpu":
        model.to_gpu()
    opt = SGD(lr=args.lr).setup(model)
    schedule = None if args.lr_decay is None else ReduceOnPlateau(opt, factor=args.lr_decay)
    trainer = LMTrainer(model, opt, batch_size=args.batch_size, time_size=args.time_size, max_grad_norm=args.clip,
                        schedule=schedule, out_dir=out, progress=False if args.no_progress else None,
                        log=print, log_every=args.log_every,
                        meta={"model": spec, "vocab": vocab.id_to_word, "args": vars(args)})
    if args.resume:
        trainer.resume(args.resume)
    print(f"{type(model).__name__}: V {len(vocab)}, D {args.wordvec}, H {args.hidden}; {len(train):,} training "
          f"words, N {args.batch_size} x T {args.time_size}, lr {opt.lr:g}, clip {args.clip}, device {args.device}")
    history = trainer.fit(train, valid, epochs=args.epochs, max_iters=args.max_iters)

    result = {"model": args.model, "device": args.device, "epochs": trainer.epoch,
              "iterations": trainer.total_iterations, "train_perplexity": history["epochs"][-1]["train_perplexity"],
              "valid_perplexity": trainer.best_valid, "test_perplexity": None}
    if test is not None:
        best = out / "best.npz"
        if best.exists():  # test the parameters that did best on validation, as the classic recipe does
            model.load_state_dict(checkpoint_arrays(load_npz(best)[0], "model"))
        result["test_perplexity"] = eval_perplexity(model, test)
    seconds = sum(r["seconds"] for r in history["epochs"])
    words = sum(r["iterations"] for r in history["epochs"]) * args.batch_size * args.time_size
    result.update(train_seconds=seconds, words_per_second=words / seconds, lr=opt.lr,
                  history=str(out / "history.json"), plot=str(out / "history.png"),
                  checkpoint=str(out / "last.npz"))
    print(json.dumps(result))


if __name__ == "__main__":
    main()

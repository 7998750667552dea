"""The main job (`make demo`): train an LSTM language model end to end, sample text, draw its graph.

On Penn Treebank when it can be found or downloaded (see ``tinygrad_rnn.data.ptb``), else on a
corpus generated here from a small English grammar, so the demo runs offline too. It trains
``LSTMLM`` with the classic recipe (SGD lr 20, clip 0.25, truncated BPTT over 35 steps) on
the first ``--words`` words, prints the perplexity falling, evaluates on held-out text, samples
a few sentences, and renders the computation graph of a 3-step window of the model to SVG.

    tinygrad-rnn-demo [--words 150000] [--epochs 2] [--out runs/demo] [--seed 0]   (or python tools/demo.py)
"""
import time

import numpy as np

from tinygrad_rnn.data import BPTTBatcher, ptb
from tinygrad_rnn.graph import render
from tinygrad_rnn.models import LSTMLM, generate
from tinygrad_rnn.optimizers import SGD
from tinygrad_rnn.tools.common import ToolParser, nonnegative_int, out_folder, positive_int, write_summary
from tinygrad_rnn.training import Checkpoint, History, LogReport, Perplexity, Trainer, perplexity

_GRAMMAR = {
    "S": [["NP", "VP"], ["NP", "VP", "and", "NP", "VP"]],
    "NP": [["the", "N"], ["a", "ADJ", "N"], ["the", "ADJ", "N"], ["NAME"]],
    "VP": [["V", "NP"], ["V", "NP", "P", "NP"], ["IV"]],
    "N": [["cat"], ["dog"], ["market"], ["company"], ["bank"], ["price"], ["child"], ["report"]],
    "ADJ": [["small"], ["big"], ["new"], ["old"], ["quiet"]],
    "NAME": [["alice"], ["bob"], ["the", "board"]],
    "V": [["saw"], ["bought"], ["sold"], ["liked"], ["watched"]],
    "IV": [["slept"], ["fell"], ["rose"], ["waited"]],
    "P": [["with"], ["near"], ["after"]],
}


def generated_corpus(n_words, seed):
    """Sentences from a small probabilistic grammar, ``<eos>`` after each: a stand-in for PTB.

    Args:
        n_words (int): at least this many tokens.
        seed (int): randomness of the sentences.
    Returns:
        list[str]: the tokens.
    """
    rng = np.random.default_rng(seed)
    words = []
    while len(words) < n_words:
        stack = ["S"]
        while stack:
            symbol = stack.pop()
            if symbol in _GRAMMAR:
                options = _GRAMMAR[symbol]
                stack.extend(reversed(options[rng.integers(len(options))]))
            else:
                words.append(symbol)
        words.append("<eos>")
    return words


def load_data(n_words, seed):
    """(train ids, held-out ids, vocabulary, source name): PTB if available, else generated."""
    try:
        train, vocab = ptb.load("train")
        valid, _ = ptb.load("valid")
        return train[:n_words], valid[: n_words // 4], vocab, "Penn Treebank"
    except (FileNotFoundError, OSError) as e:
        print(f"PTB unavailable ({e}); training on a generated corpus instead")
    tokens = generated_corpus(n_words + n_words // 4, seed)
    vocab = ptb.Vocabulary(tokens)
    ids = vocab.encode(" ".join(tokens))
    return ids[:n_words], ids[n_words:], vocab, "generated grammar"


def build_parser():
    """The flags of the demo."""
    parser = ToolParser(__doc__.splitlines()[0])
    parser.add_argument("--words", type=positive_int, default=150_000, help="training words taken from the corpus")
    parser.add_argument("--epochs", type=positive_int, default=2, help="epochs to train")
    parser.add_argument("--out", default="runs/demo", help="folder for history, plot, checkpoint and graph")
    parser.add_argument("--seed", type=nonnegative_int, default=0, help="initial weights and the samples")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    out = out_folder(args, "runs/demo")
    train, valid, vocab, source = load_data(args.words, args.seed)
    print(f"data: {source}, {len(train):,} training words, vocabulary {len(vocab):,}")

    model = LSTMLM(len(vocab), 100, 100, seed=args.seed)
    print(f"perplexity before training: {perplexity(model, valid)['perplexity']:.1f} (about the vocabulary size)")
    trainer = Trainer(model, SGD(lr=20.0).setup(model), BPTTBatcher(train, 20, 35, vocab_size=len(vocab)), clip=0.25,
                      evaluators=[Perplexity(valid)],
                      extensions=[Checkpoint(out, "valid_perplexity"), History(out), LogReport()])
    began = time.perf_counter()
    trainer.fit(epochs=args.epochs)
    seconds = time.perf_counter() - began

    skip = [vocab.word_to_id[w] for w in ("<unk>", "N") if w in vocab.word_to_id]
    start = "the" if "the" in vocab.word_to_id else vocab.id_to_word[0]
    for k in range(3):
        ids = generate(model, [vocab.word_to_id[start]], 25, skip_ids=skip, seed=args.seed + k)
        print("sample:", vocab.decode(ids).replace(" <eos>", "."))

    # the graph of one short window (3 steps) of the trained weights (training ran the fused LSTM
    # op): a composed copy of the model, every gate of the first step, the other steps boxed
    composed = LSTMLM(len(vocab), 100, 100, fused=False)
    composed.load_state_dict(model.state_dict())
    loss = composed.loss(valid[None, :3], valid[None, 1:4])
    graph = out / "lstm_lm_graph.svg"
    render(loss, path=str(graph))
    print(f"computation graph of a 3-step window: {graph}")
    final = trainer.history["epochs"][-1]
    write_summary(out, {"data": source, "train_perplexity": final["train_perplexity"],
                        "valid_perplexity": final["valid_perplexity"], "train_seconds": seconds,
                        "history_png": str(out / "history.png"), "graph": str(graph)})


if __name__ == "__main__":
    main()

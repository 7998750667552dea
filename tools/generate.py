"""Sample text from a language-model checkpoint written by ``tools/train_lm.py``.

    python tools/generate.py CHECKPOINT [--start "the meaning of"] [--length 50] [--temperature 1.0]
        [--top-k K] [--seed S] [--greedy] [--allow-unk] [--device cpu|gpu]

The checkpoint carries the model's kind and sizes and its vocabulary, so nothing else is
needed. ``<unk>`` is never generated unless ``--allow-unk`` is given; each ``<eos>`` ends a line.
"""
import argparse

from train_lm import build_model  # the tools folder is on sys.path when a tool runs as a script

from models import generate, greedy
from tinygrad_rnn.data import Vocabulary
from tinygrad_rnn.data.ptb import EOS, UNK
from tinygrad_rnn.serialization import load_npz
from tinygrad_rnn.training import checkpoint_arrays


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a .npz checkpoint of tools/train_lm.py (best.npz or last.npz)")
    parser.add_argument("--start", default="the", help="the prompt: words of the vocabulary")
    parser.add_argument("--length", type=int, default=50, help="words to generate after the prompt")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, help="sample among the K most likely words only")
    parser.add_argument("--seed", type=int, help="randomness of the sampling (same seed, same text)")
    parser.add_argument("--greedy", action="store_true", help="always take the most likely word")
    parser.add_argument("--allow-unk", action="store_true", help=f"allow {UNK} in the output")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    args = parser.parse_args(argv)

    arrays, meta = load_npz(args.checkpoint)
    run = meta["run"]
    vocab = Vocabulary(run["vocab"])
    model = build_model(run["model"])
    model.load_state_dict(checkpoint_arrays(arrays, "model"))
    if args.device == "gpu":
        model.to_gpu()
    skip = [] if args.allow_unk or UNK not in vocab.word_to_id else [vocab.word_to_id[UNK]]
    start = list(vocab.encode(args.start))
    if args.greedy:
        ids = greedy(model, start, args.length, skip_ids=skip)
    else:
        ids = generate(model, start, args.length, temperature=args.temperature, top_k=args.top_k, skip_ids=skip,
                       seed=args.seed)
    print("\n".join(line.strip() for line in vocab.decode(ids).split(EOS)))


if __name__ == "__main__":
    main()

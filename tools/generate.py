"""Sample text from a language-model checkpoint written by ``tinygrad-rnn-train-lm``.

    tinygrad-rnn-generate CHECKPOINT [--start "the meaning of"] [--length 50] [--temperature 1.0]
        [--top-k K] [--seed S] [--greedy] [--allow-unk] [--device cpu|gpu]

The checkpoint carries the model's spec and its vocabulary, so nothing else is needed.
``<unk>`` is never generated unless ``--allow-unk`` is given; each ``<eos>`` ends a line.
"""
from tinygrad_rnn.data import Vocabulary
from tinygrad_rnn.data.ptb import EOS, UNK
from tinygrad_rnn.models import build_model, generate, greedy
from tinygrad_rnn.tools.common import ToolParser, add_device, nonnegative_int, positive_float, positive_int
from tinygrad_rnn.training import checkpoint


def build_parser():
    """The flags of ``generate``."""
    parser = ToolParser(__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a .npz checkpoint of tinygrad-rnn-train-lm (best.npz or last.npz)")
    parser.add_argument("--start", default="the", help="the prompt: words of the vocabulary")
    parser.add_argument("--length", type=nonnegative_int, default=50, help="words to generate after the prompt")
    parser.add_argument("--temperature", type=positive_float, default=1.0, help="divides the scores before sampling")
    parser.add_argument("--top-k", type=positive_int, help="sample among the K most likely words only (default: all)")
    parser.add_argument("--seed", type=nonnegative_int, help="randomness of the sampling, same seed same text "
                                                             "(default: fresh randomness)")
    parser.add_argument("--greedy", action="store_true", help="always take the most likely word")
    parser.add_argument("--allow-unk", action="store_true", help=f"allow {UNK} in the output")
    add_device(parser)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        params, meta = checkpoint.read(args.checkpoint)
    except (OSError, ValueError) as e:
        parser.error(f"checkpoint: {e}")
    run = meta.get("run") or {}
    if "vocab" not in run or run.get("model", {}).get("kind") not in ("rnn", "lstm", "better"):
        parser.error(f"{args.checkpoint} is not a language-model checkpoint of tinygrad-rnn-train-lm")
    vocab = Vocabulary(run["vocab"])
    model = build_model(run["model"])
    model.load_state_dict(params)
    if args.device == "gpu":
        model.to_gpu()
    skip = [] if args.allow_unk or UNK not in vocab.word_to_id else [vocab.word_to_id[UNK]]
    try:
        start = list(vocab.encode(args.start))
    except ValueError as e:
        parser.error(f"--start: {e}")
    if not start:
        parser.error("--start: the prompt is empty; give at least one word")
    if args.greedy:
        ids = greedy(model, start, args.length, skip_ids=skip)
    else:
        ids = generate(model, start, args.length, temperature=args.temperature, top_k=args.top_k, skip_ids=skip,
                       seed=args.seed)
    print("\n".join(line.strip() for line in vocab.decode(ids).split(EOS)))


if __name__ == "__main__":
    main()

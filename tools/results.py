"""Write docs/results.md, the one page of measured figures, from the JSON the tools printed.

    python tools/results.py [--results docs/results] [--out docs/results.md]

Each run's folder under ``--results`` holds the ``summary.json`` and ``history.json`` its tool
wrote (copied from the run's ``--out``); ``bench_*.jsonl`` hold the lines the benchmarks printed.
Reproduce a figure with the command its table shows; copy the new files over the old ones and
run this script again. The figures the page quotes rather than measures (the textbook's) come
from ``assumed.json`` in the same folder.
"""
import argparse
import json
import math
from pathlib import Path

from tinygrad_rnn.serialization import atomic_write

# What a rerun must share to give the same numbers; tests/test_results.py reruns the SimpleRNNLM command.
REPRODUCING = [
    "A command run again with the same seed (`--seed`, 0 by default) gives the same numbers, bit for bit, when",
    "the code (the commit), NumPy and its BLAS, and the BLAS kernels match: OpenBLAS picks its kernels by the",
    "CPU's instruction set when it starts (`OPENBLAS_CORETYPE` forces one), and a data-parallel run needs the",
    "same number of processes. The SimpleRNNLM row was made with NumPy 2.4.6 and OpenBLAS 0.3.31 on an AVX-512",
    "Xeon (the SkylakeX kernels; `OPENBLAS_CORETYPE=Haswell`, the AVX2 kernels, gives other numbers); so",
    "were the LSTMLM rows, with the code of commit 4e1b635, one BLAS thread and the default install (the",
    "NumPy path: the `cpu` extra's compiled steps round float32 tanh differently, and a run with it drifts",
    "apart as another seed would); the other runs did not record theirs. The BLAS thread count changed no",
    "number (SimpleRNNLM ran the same on 1",
    "and 2 threads) but it changes timings: on a loaded 2-core machine two BLAS threads waiting for each other",
    "made SimpleRNNLM 20 times slower, so its row was measured with `OPENBLAS_NUM_THREADS=1`. Float32 runs",
    "that differ in one rounding drift apart: SimpleRNNLM's 100 epochs grow one rounding in epoch 7 into a few",
    "percent of train perplexity. `tests/test_results.py` reruns the SimpleRNNLM command and compares it with",
    "this page (its first ten epochs in `make test`, the whole run in `make test-slow`).",
]
BATCH_LM, TIME_LM = 20, 35  # the classic language-model batch of the benchmarks
LM_RUNS = [("lm-rnn", "SimpleRNNLM, first 1,000 words"), ("lm-lstm", "LSTMLM, the classic recipe"),
           ("lm-better-200", "BetterLSTMLM, the first 200 iterations")]
ADDITION_RUNS = [("addition-seq2seq", "plain"), ("addition-seq2seq-reverse", "reversed questions"),
                 ("addition-peeky-reverse", "peeky + reversed questions")]


def _load(folder):
    """(summary, history) of one run, or None when the run is missing."""
    if not (folder / "summary.json").exists():
        return None
    history = folder / "history.json"
    return (json.loads((folder / "summary.json").read_text()),
            json.loads(history.read_text()) if history.exists() else None)


def _num(value, digits=1):
    if value is None:
        return "—"
    value = float(value)
    return f"{value:,.{digits}f}"


def _pct(value):
    return "—" if value is None else f"{100 * float(value):.2f} %"


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def _machine(header):
    """Where a benchmark ran, from its header line: the load tells a busy machine's figures apart."""
    m = header.get("machine")  # files written before the shared header have none
    return "" if m is None else f", {m['cores']} cores at load average {m['loadavg'][0]:.1f}"


def _epochs(history):
    return [r for r in history["epochs"] if r["complete"]]


def language_models(runs, textbook):
    out = ["## Language models on Penn Treebank", ""]
    rows = []
    for name, title in LM_RUNS:
        run = runs.get(name)
        if run is None:
            continue
        s, _ = run
        rows.append([title, f"`{s['command']}`", _num(s["test_perplexity"]), _num(s["valid_perplexity"]),
                     _num(s["train_perplexity"], 2), s["iterations"], _num(s["train_seconds"], 0),
                     _num(s["words_per_second"], 0)])
    out += _table(["run", "command", "test ppl", "best valid ppl", "train ppl (last epoch)", "iterations",
                   "training s", "words/s"], rows)
    out += ["", f"The textbook's LSTMLM: {textbook['lm-lstm']}; its SimpleRNNLM: {textbook['lm-rnn']}.", ""]
    if "lm-lstm" in runs:
        _, h = runs["lm-lstm"]
        out += ["LSTMLM per epoch:", ""]
        out += _table(["epoch", "train ppl", "valid ppl", "lr", "s", "words/s"],
                      [[r["epoch"], _num(r["train_perplexity"], 2), _num(r["valid_perplexity"], 2), r["lr"],
                        _num(r["seconds"], 0), _num(r["words_per_second"], 0)] for r in _epochs(h)])
        out += ["", "![LSTMLM on PTB](results/lm-lstm/history.png)", ""]
    if "lm-rnn" in runs:
        _, h = runs["lm-rnn"]
        shown = {1, 10, 50, 100}
        out += ["SimpleRNNLM, train perplexity at the epochs the textbook reports:", ""]
        out += _table(["epoch", "train ppl"], [[r["epoch"], _num(r["train_perplexity"], 2)] for r in _epochs(h)
                                               if r["epoch"] in shown])
        out += [""]
    if "lm-better-200" in runs:
        _, h = runs["lm-better-200"]
        its = h["iterations"]
        out += [f"BetterLSTMLM: running train perplexity {_num(math.exp(its[0]['loss']), 0)} over the first "
                f"{its[0]['iteration']} iterations, {_num(math.exp(its[-1]['loss']), 0)} over iterations "
                f"{its[-2]['iteration'] + 1}-{its[-1]['iteration']} (the 40-epoch recipe needs a GPU).", ""]
    return out


def _spread(values):
    """'mean ± sample standard deviation (min-max)' of a few runs."""
    values = [float(v) for v in values]
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return f"{mean:.1f} ± {sd:.1f} ({min(values):.1f}-{max(values):.1f})"


def seeds(folder, textbook):
    """LSTMLM over several seeds beside the textbook's own code, from ``lm-lstm-seeds/``: ``ours-<seed>/``
    holds a run's ``summary.json`` and ``cuts.json`` (its final parameters scored both ways), ``book-<seed>.json``
    what the textbook's script gave with that NumPy seed."""
    where = folder / "lm-lstm-seeds"
    ours = {int(p.name.removeprefix("ours-")): (json.loads((p / "summary.json").read_text()),
                                                json.loads((p / "cuts.json").read_text()))
            for p in sorted(where.glob("ours-*"))}
    book = {int(p.stem.removeprefix("book-")): json.loads(p.read_text()) for p in sorted(where.glob("book-*.json"))}
    if not ours and not book:
        return []
    out = ["## LSTMLM over three seeds, beside the textbook's own code", "",
           "The classic recipe (V 10,000, D = H 100, N 20, T 35, SGD lr 20, clip 0.25, 4 epochs) run with seeds "
           "0, 1, 2, on one BLAS thread, by `python tools/train_lm.py --model lstm --seed S --no-progress`, and by "
           "the textbook's `ch06/train_rnnlm.py` (deep-learning-from-scratch-2, MIT license, unchanged; PTB's three "
           "files linked into its `dataset/`) run after `np.random.seed(S)` with the same NumPy. Each model's final "
           "parameters are scored on the test set two ways: the textbook's `eval_perplexity` cut (10 streams, "
           "windows of 35, the last partial window of each stream dropped, streams wrapping around the end) and "
           "ours (`perplexity`: every one of the 82,429 targets once). The textbook reports "
           f"{textbook['lm-lstm']}.", ""]
    rows = [[f"tinygrad_rnn, seed {k}", _num(c["last"]["book_cut"], 2), _num(c["last"]["all_cut"], 2),
             _num(s["test_perplexity"], 2), _num(s["train_perplexity"], 2)] for k, (s, c) in ours.items()]
    rows += [[f"the textbook's code, seed {k}", _num(b["book_cut"], 2), _num(b["all_cut"], 2), "—", "—"]
             for k, b in book.items()]
    out += _table(["run", "test ppl, textbook's cut", "test ppl, every target", "test ppl as train_lm reports it",
                   "train ppl (last epoch)"], rows)
    out += [""]
    for name, runs in (("tinygrad_rnn", [c["last"] for _, c in ours.values()]),
                       ("the textbook's code", list(book.values()))):
        if runs:
            out += [f"- {name} ({len(runs)} seeds): textbook's cut {_spread([r['book_cut'] for r in runs])}, "
                    f"every target {_spread([r['all_cut'] for r in runs])} (mean ± standard deviation, range)."]
    if ours and book:
        cuts = [c["last"]["book_cut"] - c["last"]["all_cut"] for _, c in ours.values()]
        cuts += [b["book_cut"] - b["all_cut"] for b in book.values()]
        means = [sum(r["book_cut"] for r in runs) / len(runs)
                 for runs in ([c["last"] for _, c in ours.values()], list(book.values()))]
        out += ["", "The two codes run the same recipe: the same initialization (embedding N(0, 0.01²), "
                "W ~ N(0, 1/fan_in), biases 0), the same batches (20 streams a jump apart, the window position "
                "carried across epochs), the same global-norm clipping (eps 1e-6), the state carried from window "
                "to window and reset before the test. What differs is the random numbers (NumPy's legacy "
                "generator against `default_rng`) and the order of float32 sums. The gap between single runs is "
                "seed spread: the textbook's own code moves by "
                f"{max(b['book_cut'] for b in book.values()) - min(b['book_cut'] for b in book.values()):.1f} between "
                f"seeds on this machine, the two codes' means by {abs(means[0] - means[1]):.1f}, and its seed-0 run "
                "lands on the printed 134.1. The textbook's cut reads "
                f"{sum(cuts) / len(cuts):.2f} higher than every target on average."]
    return out + [""]


def seq2seq(runs, textbook):
    out = ["## Seq2seq on generated addition questions", ""]
    present = [(name, title) for name, title in ADDITION_RUNS if name in runs]
    rows = []
    for name, title in present:
        s, _ = runs[name]
        reference = textbook["addition"][name.removeprefix("addition-")]
        beam = _pct(s.get("test_exact_match_beam")) if "test_exact_match_beam" in s else "—"
        rows.append([title, f"`{s['command']}`", _pct(s["test_exact_match"]), beam, f"{reference} %",
                     _num(s["train_seconds"], 0), _num(s["samples_per_second"], 0)])
    out += _table(["run", "command", "held-out exact match", "beam 3", "textbook", "training s", "samples/s"],
                  rows)
    if present:
        out += ["", "Held-out exact match after each epoch:", ""]
        curves = [_epochs(runs[name][1]) for name, _ in present]
        out += _table(["epoch"] + [title for _, title in present],
                      [[k + 1] + [_pct(c[k]["test_exact_match"]) for c in curves] for k in range(len(curves[0]))])
        out += ["", f"![held-out exact match per epoch](results/{present[-1][0]}/history.png)"]
    out += [""]
    if "date-attention-reverse" in runs:
        s, h = runs["date-attention-reverse"]
        out += ["## Dates with attention", "", f"`{s['command']}`: held-out exact match per epoch "
                + ", ".join(_pct(r["test_exact_match"]) for r in _epochs(h))
                + f"; {_num(s['train_seconds'], 0)} s of training, {_num(s['samples_per_second'], 0)} samples/s.",
                "", "![attention weights of a decoded date](results/date-attention-reverse/attention.png)", ""]
    return out


def captioning(runs):
    if "caption" not in runs:
        return []
    s, h = runs["caption"]
    out = ["## Image captioning of generated digit images", "", f"`{s['command']}`:", ""]
    out += _table(["epoch", "held-out exact match", "train loss", "s"],
                  [[r["epoch"], _pct(r["test_exact_match"]), _num(r["train_loss"], 4), _num(r["seconds"], 0)]
                   for r in _epochs(h)])
    if "test_exact_match_beam" in s:
        out += ["", f"With beam width {s['beam_width']}: {_pct(s['test_exact_match_beam'])}."]
    out += ["", "![held-out images and their generated captions](results/caption/captions.png)", ""]
    return out


def throughput(folder):
    out = ["## Training throughput next to PyTorch (same run, sides alternating)", ""]
    for file, unit in (("bench_lm.jsonl", "words_per_second"), ("bench_seq2seq.jsonl", "samples_per_second")):
        path = folder / file
        if not path.exists():
            continue
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        command = next((line["command"] for line in lines if "command" in line), f"python tools/{file[:-6]}.py")
        timed = [line for line in lines if unit in line]
        out += [f"`{command}` ({unit.replace('_', ' ')}, float32, CPU{_machine(lines[0])}):", ""]
        rows = []
        for model in dict.fromkeys(line["model"] for line in timed):
            for r in sorted({line["round"] for line in timed if line["model"] == model}):
                sides = {line["impl"]: line[unit] for line in timed if line["model"] == model and line["round"] == r}
                ours, torch = sides.get("tinygrad_rnn"), sides.get("torch")
                ratio = "—" if not (ours and torch) else f"{ours / torch:.2f}"
                rows.append([model, r, _num(ours, 0), _num(torch, 0), ratio])
        out += _table(["model", "round", "tinygrad_rnn", "PyTorch", "ratio"], rows) + [""]
        memory = [line for line in lines if line.get("check") == "memory"]  # bench_lm's last line
        for m in memory:
            out += [f"Resident memory of {m['model']}: " + ", ".join(f"{v} MB {k.removeprefix('rss_mb_')}"
                                                                   for k, v in m.items() if k.startswith("rss_mb"))
                    + f" (growth {m['growth_mb']} MB).", ""]
    return out


def data_parallel(runs):
    """The LSTMLM recipe on two MPI ranks beside the same recipe in one process."""
    if "lm-lstm-2ranks" not in runs or "lm-lstm" not in runs:
        return []
    (two, h2), (one, h1) = runs["lm-lstm-2ranks"], runs["lm-lstm"]
    out = ["## Data parallel: LSTMLM on two processes", "", f"`{two['command']}` beside `{one['command']}` "
           "(one process, the same combined batch of 20 streams): the two train alike, but float32 rounds the "
           "sums of the two in another order, and the classic recipe's large learning rate lets those "
           "differences grow, as a change of seed would (in float64 the test suite finds the two equal to "
           "1e-10).", ""]
    out += _table(["epoch", "train ppl, 2 ranks", "train ppl, 1 process", "valid ppl, 2 ranks",
                   "valid ppl, 1 process"],
                  [[a["epoch"], _num(a["train_perplexity"], 2), _num(b["train_perplexity"], 2),
                    _num(a["valid_perplexity"], 2), _num(b["valid_perplexity"], 2)]
                   for a, b in zip(_epochs(h2), _epochs(h1))])
    out += ["", f"Test perplexity of the best epoch: {_num(two['test_perplexity'])} on 2 ranks, "
            f"{_num(one['test_perplexity'])} in one process.", ""]
    return out


def scaling(folder):
    """bench_dist.jsonl: allreduce bandwidth, the LSTMLM step by phase, scaling, and the cost model's table."""
    path = folder / "bench_dist.jsonl"
    if not path.exists():
        return []
    from tinygrad_rnn.tools.bench_dist import markdown  # the one rendering of the prediction table

    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    kinds = {}
    for line in lines:
        kinds.setdefault(line.get("kind"), []).append(line)
    command = lines[0]["command"]
    out = ["## Data parallel: allreduce, the step by phase, and the cost model", "",
           f"`{command}`{_machine(lines[0])}: two MPI ranks (Open MPI, shared memory), one BLAS thread a "
           "rank; the median of the slower rank. Allreduce of float32 buffers, in milliseconds and bus "
           "bandwidth (GB/s), each side twice, alternating (PyTorch's gloo, where installed):", ""]
    rows = {}
    for r in kinds.get("allreduce", []):
        rows.setdefault(r["size_bytes"], {}).setdefault(r["impl"], []).append(r)
    impls = list(dict.fromkeys(r["impl"] for r in kinds.get("allreduce", [])))
    out += _table(["size"] + [f"{impl} {what}" for impl in impls for what in ("ms", "GB/s")],
                  [[f"{size / 2**10:,.0f} KiB" if size < 2**20 else f"{size / 2**20:,.0f} MiB"]
                   + [" / ".join(_num(1e3 * r[key] if key == "seconds" else r[key], 3 if key == "seconds" else 2)
                                 for r in by[impl]) for impl in impls for key in ("seconds", "busbw_gbps")]
                   for size, by in rows.items()]) + [""]
    out += ["The LSTMLM step (V 10,000, D = H 100, T 35, SGD, clip 0.25) by the phases `Trainer.step` marks, in "
            "ms: `wait` is a barrier where the reduction begins (the faster rank waiting for the slower), "
            "`reduce` packs, reduces and unpacks the gradients, of which `allreduce` is the bare reduction of a "
            "buffer of their size (one process has no wait and no reduce); `step` is `Trainer.step` with no "
            "recorder, timed on the steps in between:", ""]
    out += _table(["ranks", "streams a rank", "forward", "backward", "wait", "reduce", "allreduce", "clip + update",
                   "step", "words/s"],
                  [[r["ranks"], r["batch_per_rank"], _num(r["forward_ms"], 2), _num(r["backward_ms"], 2),
                    _num(r.get("wait_ms"), 2), _num(r.get("reduce_ms"), 2), _num(r["allreduce_ms"], 2),
                    _num(r["clip_ms"] + r["update_ms"], 2), _num(r["step_ms"], 2), _num(r["words_per_second"], 0)]
                   for r in kinds.get("step", []) if r["model"] == "LSTMLM"]) + [""]
    for r in kinds.get("scaling", []):
        out += [f"Strong scaling (20 streams split): speedup {r['strong_speedup']:.2f}, efficiency "
                f"{_pct(r['strong_efficiency'])}; weak scaling (20 streams a rank): efficiency "
                f"{_pct(r['weak_efficiency'])}.", ""]
    for r in kinds.get("cost_model", []):
        out += [f"Ring model fitted to {r['impl']}'s allreduce times: α = {r['alpha_us']:.1f} µs, "
                f"B = {_num(r['bandwidth_gbps'], 2)} GB/s (rms relative error {r['rms_relative_error']:.2f}).", ""]
    predictions = kinds.get("prediction", [])
    if predictions:
        out += ["Predicted weak-scaling efficiency of the classic models (`python tools/bench_dist.py --from "
                "docs/results/bench_dist.jsonl --markdown`):", "", markdown(predictions), ""]
    return out


def phases(folder):
    """bench_phases.jsonl: one eager step of each language model, phase by phase, and the cost of a launch."""
    path = folder / "bench_phases.jsonl"
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    steps = [line for line in lines if line.get("kind") == "phases"]
    out = ["## One training step, phase by phase", "",
           f"`{lines[0]['command']}` (device {steps[0]['device'] if steps else '—'}{_machine(lines[0])}, "
           f"N {BATCH_LM} x T {TIME_LM}, "
           "float32): the median milliseconds of each phase `Trainer.step` marks, recorded around real steps, "
           "and of `Trainer.step` with no recorder on the steps in between:", ""]
    for step in steps:
        names = [k[:-3] for k in step if k.endswith("_ms") and k not in ("phases_ms", "step_ms")]
        out += [f"{step['model']}: " + ", ".join(f"{name.replace('_', ' ')} {_num(step[name + '_ms'], 2)}"
                                                 for name in names)
                + f"; all phases {_num(step['phases_ms'], 1)}, `Trainer.step` {_num(step['step_ms'], 1)}.", ""]
    calls = [line for line in lines if line.get("kind") == "launch"]
    if calls:
        out += ["Microseconds per call at the recurrent shape (N, H, 4H):", ""]
        out += _table(["call", "shape", "host µs", "device µs"],
                      [[c["call"], " x ".join(map(str, c["shape"])), _num(c["host_us"], 1), _num(c["device_us"], 1)]
                       for c in calls]) + [""]
    return out


def recurrent_layer(folder):
    """bench_rnn.jsonl: one LSTM or GRU layer forward + backward, each path of ours against PyTorch's."""
    path = folder / "bench_rnn.jsonl"
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    head, layers = lines[0], [line for line in lines if line.get("kind") == "layer"]
    impls = list(dict.fromkeys(line["impl"] for line in layers))
    out = ["## One recurrent layer", "",
           f"`{head['command']}`: milliseconds for forward + backward of one layer in float32, one thread, the "
           "minimum over the repetitions, the sides interleaved. NumPy's BLAS: "
           f"{head['blas']}; Numba {head['versions'].get('numba') or 'not installed'}; oneDNN "
           f"{head['versions'].get('onednn') or 'not installed'} (the `compiled` side: "
           f"{head['kernels']['tinygrad_rnn']}); PyTorch "
           f"{head['versions']['torch'] or 'not installed'} ({head['kernels'].get('torch', '—')}). "
           "`gemms` is the layer's recurrent products alone.", ""]
    rows = []
    for cell, shape in dict.fromkeys((line["cell"], tuple(line["shape"])) for line in layers):
        ms = {line["impl"]: line["ms"] for line in layers if line["cell"] == cell and tuple(line["shape"]) == shape}
        rows.append([cell.upper(), " x ".join(map(str, shape))] + [_num(ms.get(impl), 2) for impl in impls])
    out += _table(["layer", "T x N x H"] + impls, rows) + [""]
    products = [line for line in lines if line.get("kind") == "products"]
    if products:
        out += ["The largest shape's products alone, milliseconds (`torch.mm` runs PyTorch's BLAS):", ""]
        out += _table(["product", "shapes", "NumPy", "torch.mm"],
                      [[p["product"], " @ ".join("x".join(map(str, s)) for s in p["shape"]), _num(p["numpy_ms"], 3),
                        _num(p.get("torch_mm_ms"), 3)] for p in products]) + [""]
    return out


def engine(folder):
    path = folder / "bench_engine.jsonl"
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    ops = [line for line in lines if "us_per_op" in line]
    out = ["## Engine overhead", "", "`python tools/bench_engine.py`: microseconds per forward + backward of one op on "
           "a (1,) array in a chain, best of the rounds; the backward also releases the graph it walked:", ""]
    rows = []
    for op in dict.fromkeys(line["op"] for line in ops):
        sides = {line["impl"]: line["us_per_op"] for line in ops if line["op"] == op}
        ours, torch = sides.get("tinygrad_rnn"), sides.get("pytorch")
        rows.append([op, _num(ours, 2), _num(torch, 2), "—" if not (ours and torch) else f"{ours / torch:.2f}"])
    out += _table(["op", "tinygrad_rnn µs", "PyTorch eager µs", "ratio"], rows) + [""]
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="docs/results", help="folder of the runs' JSON files")
    parser.add_argument("--out", default="docs/results.md", help="the page to write")
    args = parser.parse_args(argv)
    folder = Path(args.results)
    runs = {p.name: run for p in sorted(folder.iterdir()) if p.is_dir() and (run := _load(p)) is not None}
    textbook = json.loads((folder / "assumed.json").read_text())["textbook"]
    lines = ["# Results", "",
             "Generated by `python tools/results.py` from the JSON files under `docs/results/`, which the",
             "commands below wrote (`summary.json`, `history.json`) or printed (the benchmarks). Measured on a",
             "2-core CPU machine in float32; such a machine has slow phases, so throughput compares only",
             "within one benchmark run, where the sides alternate.", "", *REPRODUCING, ""]
    lines += (language_models(runs, textbook) + seeds(folder, textbook) + data_parallel(runs)
              + seq2seq(runs, textbook) + captioning(runs) + throughput(folder) + phases(folder)
              + recurrent_layer(folder) + scaling(folder) + engine(folder))
    with atomic_write(args.out, "w") as f:
        f.write("\n".join(lines).rstrip() + "\n")
    print(f"wrote {args.out} from {len(runs)} runs")


if __name__ == "__main__":
    main()

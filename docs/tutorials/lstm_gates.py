# %% [markdown]
# # The LSTM's gates on real text
#
# The [previous tutorial](vanishing_gradients.md) looked at the gradient that flows back through
# an LSTM's cell state; this one looks at the forward pass: what the input, forget and output
# gates of a trained LSTM do, word by word, on a sentence of Penn Treebank. Chapter 6 of
# *Deep Learning from Scratch 2* describes the gates; `tinygrad_rnn.inspect.gates` returns their
# values at every step (from one forward pass, no hooks) and `plot_gates` draws them as heatmaps,
# hidden units down, words across.
#
# In its fast setting (`TINYGRAD_RNN_TUTORIAL_FAST=1`, the test suite's) the model trains on a few
# hundred words for one epoch, and what it shows is barely past initialization; the documentation
# site shows the full run.

# %%
import os

import numpy as np

from tinygrad_rnn import test_mode
from tinygrad_rnn.data import BPTTBatcher, ptb
from tinygrad_rnn.inspect import gates, plot_gates
from tinygrad_rnn.models import LSTMLM
from tinygrad_rnn.optimizers import SGD
from tinygrad_rnn.training import Trainer, perplexity

FAST = os.environ.get("TINYGRAD_RNN_TUTORIAL_FAST") == "1"
WORDS = 500 if FAST else 100000
EPOCHS = 1 if FAST else 3

# %% [markdown]
# ## A small language model
#
# `LSTMLM` (embedding, one LSTM, a linear layer to the vocabulary) with word vectors and hidden
# state of 100, trained with truncated BPTT (N = 10 streams, T = 35 words), SGD at learning rate
# 20 and the book's gradient clipping at 0.25 (the full recipe's), on the first 100,000 words for
# three epochs. The vocabulary is the ids that the first `WORDS` words use (ids are given in
# order of first appearance); later words outside it become `<unk>`.

# %%
train, vocab = ptb.load("train")
corpus = train[:WORDS]
V = int(corpus.max()) + 1
model = LSTMLM(V, 100, 100, seed=0)
batches = BPTTBatcher(corpus, batch_size=10, time_size=35, vocab_size=V)
history = Trainer(model, SGD(lr=20.0).setup(model), batches, clip=0.25).fit(epochs=EPOCHS)
for record in history["epochs"]:
    print(f"epoch {record['epoch']}  train perplexity {record['train_perplexity']:8.1f}")
held_out = train[WORDS:WORDS + 2000].copy()
held_out[held_out >= V] = vocab.word_to_id["<unk>"]
print(f"vocabulary {V}, perplexity on the next 2,000 words {perplexity(model, held_out)['perplexity']:.1f}")

# %% [markdown]
# ## The gates on one sentence
#
# The sentence is the first one after the training words (a line of the text ends with
# `<eos>`). `gates(model, ids, run=model)` runs the model's forward pass on it from a fresh
# state and returns, for the LSTM at path `"lstm"`, one dict per stacked layer of arrays
# (T, N, H): the gates `i`, `f`, `o` after their sigmoid, the candidate `g`, the cell state `c`
# and the hidden state `h`. `test_mode()` switches off dropout (this model has none, but a
# regularized one would).

# %%
eos = vocab.word_to_id["<eos>"]
start = WORDS + int(np.argmax(train[WORDS:] == eos)) + 1
end = start + int(np.argmax(train[start:] == eos)) + 1
sentence = train[start:end].copy()
sentence[sentence >= V] = vocab.word_to_id["<unk>"]
words = vocab.decode(sentence).split()
print(" ".join(words))

model.reset_state()
with test_mode():
    activations = gates(model, sentence[None], run=model)["lstm"][0]
print({name: a.shape for name, a in activations.items()})
plot_gates({name: activations[name] for name in "ifoc"}, "lstm_gates.png",
           title="LSTMLM on: " + " ".join(words[:12]) + (" ..." if len(words) > 12 else ""))

# %% [markdown]
# ## What to look at
#
# Each panel has one row per hidden unit and one column per word; the sigmoid gates are drawn on
# [0, 1], the cell state on a symmetric scale. Numbers say more than colours, so here are the
# mean of each gate per unit over the sentence, the units whose forget gate stays most open
# and most closed, and where the input gate fires:

# %%
f = activations["f"][:, 0]  # (T, H): the forget gate of every unit at every word
i = activations["i"][:, 0]
print(f"mean over units and words: i {i.mean():.2f}, f {f.mean():.2f}, o {activations['o'][:, 0].mean():.2f}")
order = np.argsort(f.mean(axis=0))
print("forget gate, mean over the sentence, most open units: ",
      ", ".join(f"{u}: {f[:, u].mean():.2f}" for u in order[::-1][:5]))
print("forget gate, mean over the sentence, most closed units:",
      ", ".join(f"{u}: {f[:, u].mean():.2f}" for u in order[:5]))
print(f"units whose forget gate stays above 0.9 at every word: {int(np.sum(f.min(axis=0) > 0.9))} of {f.shape[1]}")
o = activations["o"][:, 0]
print(f"output gate values below 0.1 or above 0.9: {np.mean((o < 0.1) | (o > 0.9)):.0%}")
print(f"spread of the gates (std) across units {f.std(axis=1).mean():.2f}, across words {f.std(axis=0).mean():.2f}")
print("mean input gate at each word:")
for word, value in zip(words, i.mean(axis=1)):
    print(f"  {word:>12s} {value:.2f}")

# %% [markdown]
# What the full run (on the documentation site) shows; the fast run is too short to show it:
#
# - **The forget gate is not near 1 for most units.** Its mean over units and words is below
#   0.5: most units rewrite most of their cell state at every word, so their memory lasts a word
#   or two. A handful of units keep their forget gate high (bright rows across the whole `f`
#   panel, and the top of the list printed above): they carry information across the sentence.
#   With f near 1 a unit's cell state can only add what its input gate lets in, so its row of
#   the `c` panel changes slowly.
# - **Rows, more than columns.** The forget gate varies somewhat more from unit to unit than from
#   word to word (the two spreads printed above): a unit's role is partly fixed, and the words
#   modulate it. A word-level model has no "word
#   boundary" to mark (every step is a word); look instead at which words lower or raise the
#   input gate across all units: in the printed list the lowest means fall on the placeholders
#   `N` (a number) and `<unk>`, which carry little that is worth writing into the memory.
# - **The output gate** is decided: about a third of its values are below 0.1 or above 0.9. It
#   chooses which units of the memory the prediction of the next word reads.
#
# Three epochs on 100,000 words leave this model far from the full recipe (see the
# [language model tutorial](language_model.md) and the [results](../results.md)). To compare,
# rerun `gates` on the untrained model (`LSTMLM(V, 100, 100, seed=0)`): every gate then sits
# near 0.5, as the [vanishing gradients tutorial](vanishing_gradients.md) explains.

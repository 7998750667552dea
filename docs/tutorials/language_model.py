# %% [markdown]
# # An RNN language model, perplexity and truncated BPTT
#
# Chapter 5 of *Deep Learning from Scratch 2* trains its first language model: an RNN reads the
# words of Penn Treebank one at a time and, after each, scores every word of the vocabulary as
# the next one. Chapter 6 replaces the RNN by an LSTM and compares the two. This tutorial runs
# both experiments with `tinygrad_rnn` and shows what to look at.
#
# Every tutorial reads `TINYGRAD_RNN_TUTORIAL_FAST`: the test suite sets it to `1` and runs the
# same code on a few hundred words for a few epochs, so that the tutorial can never stop working
# unnoticed; the documentation site shows the full run.

# %%
import os

import numpy as np
from matplotlib import pyplot as plt

from tinygrad_rnn.data import BPTTBatcher, ptb
from tinygrad_rnn.models import LSTMLM, SimpleRNNLM
from tinygrad_rnn.optimizers import SGD
from tinygrad_rnn.training import Trainer, perplexity

FAST = os.environ.get("TINYGRAD_RNN_TUTORIAL_FAST") == "1"
WORDS = 300 if FAST else 1000      # the book's chapter 5 trains on the first 1,000 words
EPOCHS = 5 if FAST else 100

# %% [markdown]
# ## The data
#
# `ptb.load("train")` returns the training text as one long array of word ids and its
# vocabulary (it reads `$TINYGRAD_RNN_DATA/ptb/`, or downloads the files once and checks their
# sha256). Ids are given in order of first appearance, so the first 1,000 words use only the
# first few hundred ids: the book's small experiment keeps exactly that vocabulary.

# %%
train, vocab = ptb.load("train")
corpus = train[:WORDS]
V = int(corpus.max()) + 1
print(f"{len(train):,} words in the training text, vocabulary {len(vocab):,}")
print(f"the first {WORDS:,} words use {V} distinct ids")
print(vocab.decode(corpus[:20]))

# %% [markdown]
# ## Truncated BPTT
#
# Backpropagating through the whole text at once would keep every step of it in memory. Truncated
# backpropagation through time cuts the text into windows of `T` words and backpropagates through
# one window at a time, while the hidden state still flows forward from one window into the next.
# `BPTTBatcher(corpus, batch_size=N, time_size=T)` reads N streams that start at evenly spaced
# offsets of the text (the book's minibatches), and yields (N, T) inputs `xs` and their targets
# `ts`, the same windows shifted by one word:

# %%
batches = BPTTBatcher(corpus, batch_size=10, time_size=5, vocab_size=V)
xs, ts = next(iter(batches.batches(0)))
print("xs[0]:", vocab.decode(xs[0]))
print("ts[0]:", vocab.decode(ts[0]))
print(f"{len(batches)} windows of (N, T) = {xs.shape} per epoch")

# %% [markdown]
# The model is *stateful*: it keeps its last hidden state and starts the next window from it. One
# training step is
#
# ```python
# loss = model.loss(xs, ts)      # mean cross-entropy over the N x T predictions
# loss.backward()                # gradients through this window only
# loss.unchain_backward()        # the carried state becomes a leaf: the next backward stops here
# optimizer.update()
# ```
#
# `loss.unchain_backward()` is the truncation. The `Trainer` runs exactly this step (plus
# gradient clipping when asked), epoch after epoch.
#
# ## Perplexity
#
# The loss is the mean of `-log p(correct next word)`. Its exponential, the *perplexity*, is the
# number of words the model is, on average, hesitating between: a model that guesses uniformly
# has perplexity V, a perfect one 1. The book's SimpleRnnlm reaches about 5 on these 1,000 words
# after 100 epochs: it has learned them almost by heart.
#
# The book's setting for the RNN: word vectors and hidden state of 100, N = 10, T = 5, SGD with
# learning rate 0.1, no clipping.

# %%
def train_lm(model, lr, clip=None):
    """Train on the corpus and return the training perplexity of every epoch."""
    batches = BPTTBatcher(corpus, batch_size=10, time_size=5, vocab_size=V)
    trainer = Trainer(model, SGD(lr=lr).setup(model), batches, clip=clip)
    trainer.fit(epochs=EPOCHS)
    return [record["train_perplexity"] for record in trainer.history["epochs"]]


rnn = SimpleRNNLM(V, 100, 100, seed=0)
rnn_ppl = train_lm(rnn, lr=0.1)
for epoch in sorted({1, EPOCHS // 10, EPOCHS // 2, EPOCHS} - {0}):
    print(f"SimpleRNNLM  epoch {epoch:3d}  train perplexity {rnn_ppl[epoch - 1]:8.2f}")

# %% [markdown]
# Perplexity starts near the vocabulary size (the untrained model's scores are almost uniform)
# and falls as the model learns which words follow which.
#
# ## SimpleRNN against LSTM
#
# Chapter 6 argues that the plain RNN forgets quickly because its gradient shrinks (or explodes)
# as it flows back through time, and that the LSTM's additive memory cell fixes it. Here is the
# LSTM on the same data and schedule, with the book's gradient clipping at 0.25 and a larger
# learning rate, both curves on one plot with perplexity on the y axis:

# %%
lstm = LSTMLM(V, 100, 100, seed=0)
lstm_ppl = train_lm(lstm, lr=1.0, clip=0.25)

epochs = np.arange(1, EPOCHS + 1)
fig, ax = plt.subplots(figsize=(6, 4))
ax.plot(epochs, rnn_ppl, label="SimpleRNNLM (lr 0.1)")
ax.plot(epochs, lstm_ppl, label="LSTMLM (lr 1.0, clip 0.25)")
ax.set_xlabel("epoch")
ax.set_ylabel("training perplexity")
ax.set_yscale("log")
ax.grid(True, which="both", alpha=0.3)
ax.legend()
print(f"last epoch: SimpleRNNLM {rnn_ppl[-1]:.2f}, LSTMLM {lstm_ppl[-1]:.2f}")

# %% [markdown]
# Both models memorize a text this short; what matters on real data is how well they predict
# text they have not seen. `perplexity(model, corpus)` evaluates that without building a graph
# (and sets the carried state aside, then puts it back). On the next words of the training
# text, those words outside the small vocabulary replaced by `<unk>`:

# %%
unseen = train[WORDS:WORDS + 2000].copy()
unseen[unseen >= V] = vocab.word_to_id["<unk>"]
for name, model in (("SimpleRNNLM", rnn), ("LSTMLM", lstm)):
    print(f"{name:12s} perplexity on the next 2,000 words: {perplexity(model, unseen)['perplexity']:8.1f}")

# %% [markdown]
# Far worse than on the training words, and worst for the model that learned the training
# words best: a thousand words teach these sentences, not English. The LSTM has memorized them
# more thoroughly and generalizes worse, a first sight of *overfitting*, which the
# [dropout and weight tying](regularization.md) tutorial takes on. The full-size recipe
# (`tinygrad-rnn-train-lm --model lstm`: all 929,589 words, N = 20, T = 35, lr 20, four epochs) reaches a validation perplexity near 140; its numbers are on the
# [results](../results.md) page.

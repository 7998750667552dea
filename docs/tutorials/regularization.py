# %% [markdown]
# # Dropout and weight tying
#
# At the end of chapter 6 the book improves its LSTM language model three ways: two LSTM layers,
# *dropout* between the layers, and *weight tying*, the output layer reusing the embedding
# matrix. Its `BetterRnnlm` is `tinygrad_rnn.models.BetterLSTMLM`. The point of the last two is
# overfitting: a model that memorizes its training text gets a low training perplexity and a
# much higher one on text it has not seen. This tutorial trains on a small slice of Penn Treebank,
# so that overfitting shows within minutes, and watches the gap between the two perplexities.

# %%
import os

import numpy as np
from matplotlib import pyplot as plt

from tinygrad_rnn.data import BPTTBatcher, ptb
from tinygrad_rnn.models import BetterLSTMLM, LSTMLM
from tinygrad_rnn.optimizers import SGD
from tinygrad_rnn.training import Perplexity, Trainer

FAST = os.environ.get("TINYGRAD_RNN_TUTORIAL_FAST") == "1"
WORDS, VALID_WORDS = (2000, 500) if FAST else (40000, 8000)
EPOCHS = 2 if FAST else 12

# %% [markdown]
# ## A small slice of the data
#
# Word ids follow first appearance, so the first `WORDS` words of the training text use the first
# `V` ids; validation words outside them become `<unk>`, as rare words already are in PTB.

# %%
train, vocab = ptb.load("train")
valid, _ = ptb.load("valid")
train = train[:WORDS]
V = int(train.max()) + 1
valid = valid[:VALID_WORDS].copy()
valid[valid >= V] = vocab.word_to_id["<unk>"]
print(f"{WORDS:,} training words, {VALID_WORDS:,} validation words, vocabulary {V:,}")

# %% [markdown]
# ## The two models
#
# - `LSTMLM(V, 100, 100)`: embedding, one LSTM, a Linear output layer; no regularization.
# - `BetterLSTMLM(V, 100, 100, dropout=0.5)`: embedding → dropout → LSTM → dropout → LSTM →
#   dropout → output. Dropout zeroes each activation with probability 0.5 during training (and
#   scales the others by 2, so that nothing changes at test time, when it is off): no unit can
#   count on another one being there, which keeps the network from memorizing. The output
#   layer is `L.TiedLinear(embedding)`: its weight is the embedding matrix transposed, the *same*
#   Parameter, so the model has V x H fewer numbers to fit, and a word's input vector and its
#   output vector are learned together.
#
# Both train with the book's recipe: SGD at learning rate 20, gradients clipped at 0.25, N = 20
# streams of T = 35 words. The `Perplexity` evaluator reports the validation perplexity after
# every epoch, with dropout off.

# %%
def run(model):
    """Train and return the training and validation perplexities of every epoch."""
    trainer = Trainer(model, SGD(lr=20.0).setup(model), BPTTBatcher(train, 20, 35, vocab_size=V), clip=0.25,
                      evaluators=[Perplexity(valid)])
    trainer.fit(epochs=EPOCHS)
    records = trainer.history["epochs"]
    return [r["train_perplexity"] for r in records], [r["valid_perplexity"] for r in records]


plain = run(LSTMLM(V, 100, 100, seed=0))
better = run(BetterLSTMLM(V, 100, 100, dropout=0.5, seed=0))
print("epoch  LSTMLM train / valid     BetterLSTMLM train / valid")
for epoch in range(EPOCHS):
    print(f"{epoch + 1:5d}  {plain[0][epoch]:8.1f} / {plain[1][epoch]:8.1f}"
          f"     {better[0][epoch]:8.1f} / {better[1][epoch]:8.1f}")

# %%
epochs = np.arange(1, EPOCHS + 1)
fig, ax = plt.subplots(figsize=(6, 4))
for (train_ppl, valid_ppl), name, color in ((plain, "LSTMLM", "tab:blue"), (better, "BetterLSTMLM", "tab:orange")):
    ax.plot(epochs, train_ppl, "--", color=color, label=f"{name} train")
    ax.plot(epochs, valid_ppl, "-", color=color, label=f"{name} validation")
ax.set_xlabel("epoch")
ax.set_ylabel("perplexity")
ax.set_yscale("log")
ax.grid(True, which="both", alpha=0.3)
ax.legend()

# %% [markdown]
# What to look at: the distance between each model's dashed (training) and solid (validation)
# curve. Without regularization the training perplexity keeps falling while the validation
# perplexity stops improving and turns back up: the model is learning this text, not the
# language. With dropout and tying, the training perplexity (measured with dropout on) falls more
# slowly, and the two curves stay close; the validation perplexity is what to compare between the
# models. On the whole of PTB the book's BetterRnnlm reaches a test perplexity near 75 after 40
# epochs with 650 units (`tinygrad-rnn-train-lm --model better`, a GPU run).

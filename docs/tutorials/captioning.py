# %% [markdown]
# # Image captioning
#
# The book closes chapter 8 with applications of seq2seq beyond text; one is *image captioning*:
# replace the encoder LSTM by a convolutional network, and the same decoder writes a sentence
# about a picture. Here the pictures are generated images of 1 to 4 digits and the captions
# their names, `7 0 2` → `seven zero two`, so the whole experiment runs on a laptop.

# %%
import os

from matplotlib import pyplot as plt

from tinygrad_rnn.data import ShuffledBatcher, captions
from tinygrad_rnn.models import CaptionModel
from tinygrad_rnn.optimizers import Adam
from tinygrad_rnn.tools.train_caption import plot_captions
from tinygrad_rnn.training import ExactMatch, ExponentialDecay, Trainer

FAST = os.environ.get("TINYGRAD_RNN_TUTORIAL_FAST") == "1"
TRAIN, TEST = (300, 50) if FAST else (20000, 1000)
EPOCHS = 1 if FAST else 3

data = captions.load_captions(train_size=TRAIN, test_size=TEST, seed=0)
print(f"images {data.x_train.shape} float32 in [0, 1], captions {data.t_train.shape} int32")
print("vocabulary:", data.vocab.decode(range(len(data.vocab))))
fig, axes = plt.subplots(1, 4, figsize=(10, 1.4))
for ax, image, caption in zip(axes, data.x_train, data.t_train):
    ax.imshow(image[0], cmap="gray", vmin=0, vmax=1)
    ax.set_title(data.caption(caption), fontsize=9)
    ax.axis("off")

# %% [markdown]
# Every caption starts with `<bos>`, ends with `<eos>` and is padded to 6 tokens; as for seq2seq,
# the decoder reads `t[:, :-1]` and is scored on `t[:, 1:]` (teacher forcing).
#
# ## The model
#
# `CaptionModel` is a seq2seq whose encoder sees pixels:
#
# - the **encoder** (`CNNEncoder`): three blocks of 3x3 convolution, ReLU and 2x2 max pooling,
#   then the maximum over the rows left (where the digits sit vertically should not matter),
#   a Linear layer and tanh: one vector `h` per image, the *code*;
# - the **decoder** is the peeky decoder of chapter 7: its LSTM starts from `h`, and `h` is
#   concatenated to its input and to its output layer at every step.
#
# Trained with Adam, the learning rate halved after every epoch, gradients clipped at 5;
# `ExactMatch` counts the held-out images whose whole caption is right.

# %%
model = CaptionModel(len(data.vocab), 16, 256, channels=(8, 32, 64), seed=0)
batches = ShuffledBatcher((data.x_train, data.t_train), batch_size=50, seed=0, vocab_size=len(data.vocab))
trainer = Trainer(model, Adam(0.002).setup(model), batches, clip=5.0,
                  evaluators=[ExactMatch(data.x_test, data.t_test)], extensions=[ExponentialDecay(0.5)])
trainer.fit(epochs=EPOCHS)
for record in trainer.history["epochs"]:
    print(f"epoch {record['epoch']}: train loss {record['train_loss']:.3f}, "
          f"held-out exact match {100 * record['test_exact_match']:.1f} %")

# %% [markdown]
# ## What it writes
#
# `model.generate(images, start_id, length)` decodes greedily, as for seq2seq; `plot_captions`
# (the figure `tinygrad-rnn-train-caption` writes as `captions.png`) shows held-out images with
# the captions generated for them, the wrong ones in red.

# %%
ids = model.generate(data.x_test[:12], data.start_id, 5)
generated = [data.caption(row) for row in ids]
wanted = [data.caption(row) for row in data.t_test[:12]]
plot_captions(data.x_test[:12], generated, wanted, "captions.png")
for text, want in zip(generated[:5], wanted):
    print(f"{text:30s} {'right' if text == want else 'wrong, want ' + want}")

# %% [markdown]
# The mistakes worth looking at: digits that touch, thin strokes on a bright background, and
# four-digit images where the decoder has to carry the most. The project's full run (60,000
# images, `tinygrad-rnn-train-caption`) is on the [results](../results.md) page.

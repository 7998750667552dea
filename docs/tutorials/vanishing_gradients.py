# %% [markdown]
# # Vanishing and exploding gradients, clipping, and the LSTM's forget gate
#
# Chapter 6 of *Deep Learning from Scratch 2* explains why a plain RNN struggles with long-range
# dependencies: the gradient flowing back through time is multiplied by the recurrent weights at
# every step, so it shrinks or grows geometrically (its figures 6-8 and 6-9). This tutorial
# measures that with `tinygrad_rnn.inspect.gradient_flow`, which returns the norm of dL/dh_t at
# every step t of every recurrent layer, and `plot_gradient_flow`, which overlays the curves.
# The [Seeing inside](../inspect.md) guide states the numbers once; here you run the experiments
# and change them.
#
# Everything below is small (H = 16, T = 40, and a training run on 1,000 words) and runs in
# seconds, so this tutorial has no fast setting: the test suite runs it exactly as shown here.

# %%
import numpy as np
from matplotlib import pyplot as plt

from tinygrad_rnn import functions as F, initializers, layers as L
from tinygrad_rnn.inspect import gates, gradient_flow, plot_gradient_flow
from tinygrad_rnn.optimizers import clip_grads

N, T, H = 4, 40, 16
rng = np.random.default_rng(0)
w = rng.standard_normal((N, H))  # the loss reads the last step only: L = sum(h_T * w)


def flow(layer, xs):
    """The norm of dL/dh_t, t = 0 .. T-1, for a loss that reads the last hidden state only."""
    return gradient_flow(layer, xs, loss=lambda xs: F.sum(layer(xs)[:, -1] * w))["."][0]


# %% [markdown]
# ## A plain RNN: the gain of Wh decides
#
# Going back one step, the gradient is multiplied by `Wh.T` and by tanh's slope `1 - h_t**2`.
# With zero inputs the hidden state stays at 0, the slope stays 1, and only Wh acts. An
# orthogonal matrix times a gain g (`initializers.Orthogonal(g)`) has every singular value equal
# to g, so it scales every vector by exactly g: after 39 steps the gradient has been multiplied
# by g^39. Below 1 it vanishes, above 1 it explodes, both geometrically, so the curves are
# straight lines on a log scale.

# %%
zeros = np.zeros((N, T, H))
rnn_flows = {}
for gain in (0.5, 0.9, 1.1, 1.5):
    rnn = L.RNN(H, H, seed=1, dtype=np.float64, Wh_init=initializers.Orthogonal(gain))
    rnn_flows[f"Wh orthogonal x {gain}"] = flow(rnn, zeros)
plot_gradient_flow(rnn_flows, "rnn_gains.png", title="plain RNN, zero inputs, loss at t = 39")
for name, f in rnn_flows.items():
    print(f"{name}: |dL/dh_0| / |dL/dh_39| = {f[0] / f[-1]:.3g}")

# %% [markdown]
# ## The largest singular value is not the whole story
#
# The book draws Wh from a Gaussian, varies its scale, and relates the outcome to the largest
# singular value of Wh. That value bounds how much *one* step can stretch a vector,
# so below 1 the gradient must vanish. Above 1 it may still vanish: over many steps what matters
# is the eigenvalues of Wh (a product of many copies of Wh grows like its largest eigenvalue in
# modulus to the power of the number of steps), and a non-symmetric Gaussian matrix has a
# largest singular value about twice its spectral radius. The default `RNN` initialization
# draws Wh from N(0, 1/H):

# %%
default = L.RNN(H, H, seed=1, dtype=np.float64)
Wh = default.cells[0].Wh.data
print(f"default Wh: largest singular value {np.linalg.svd(Wh, compute_uv=False)[0]:.2f}, "
      f"largest |eigenvalue| {np.abs(np.linalg.eigvals(Wh)).max():.2f}")
xs = rng.standard_normal((N, T, H))
default_flows = {"default Wh, zero inputs": flow(default, zeros), "default Wh, inputs N(0, 1)": flow(default, xs)}
for name, f in default_flows.items():
    print(f"{name}: |dL/dh_0| / |dL/dh_39| = {f[0] / f[-1]:.3g}")

# %% [markdown]
# A largest singular value well above 1, and still the gradient vanishes, faster still with real
# inputs, because inputs push tanh away from 0 and its slope below 1. That is why the
# experiments above use orthogonal weights times a gain: there the singular values, the
# eigenvalues' moduli and the per-step factor are all the same number g.
#
# ## Clipping
#
# `clip_grads(params, max_norm)` scales all parameter gradients together so that their global
# norm is at most `max_norm`, and returns the norm it found. On the exploding RNN (gain 1.5):

# %%
exploding = L.RNN(H, H, seed=1, dtype=np.float64, Wh_init=initializers.Orthogonal(1.5))
F.sum(exploding(zeros)[:, -1] * w).backward()
before = clip_grads(exploding.params(), max_norm=5.0)
after = np.sqrt(sum(float(np.sum(p.grad.data ** 2)) for p in exploding.params()))
print(f"global gradient norm before clipping {float(before):.3g}, after {after:.3g}")
clipped = flow(exploding, zeros)
print("the curve of gradient_flow is unchanged by clipping:", np.allclose(clipped, rnn_flows["Wh orthogonal x 1.5"]))

# %% [markdown]
# Clipping bounds the size of the update, so one exploding batch cannot throw the weights away.
# It does not change what reached each step (the curve is the same) nor the gradient's
# direction, and it does nothing for a vanishing gradient.
#
# What that is worth in training: the chapter-5 language model (`SimpleRNNLM`, word vectors and
# hidden state of 100) on the first 1,000 words of Penn Treebank, with its Wh replaced by an
# orthogonal matrix times 1.5, SGD with learning rate 1.0 and windows of T = 20 words, once
# without clipping and once with `Trainer(clip=1.0)`. With clipping, every epoch record of the
# trainer's history holds `grad_norm` (the mean global norm before clipping) and `clip_fraction`
# (the fraction of steps that were scaled down).

# %%
from tinygrad_rnn.data import BPTTBatcher, ptb
from tinygrad_rnn.models import SimpleRNNLM
from tinygrad_rnn.optimizers import SGD
from tinygrad_rnn.training import Trainer

train, vocab = ptb.load("train")
corpus = train[:1000]
V = int(corpus.max()) + 1
EPOCHS = 10


def train_exploding(clip):
    """Train the gain-1.5 SimpleRNNLM and return its trainer's epoch records."""
    model = SimpleRNNLM(V, 100, 100, seed=0)
    cell = model.rnn.cells[0]
    cell.Wh.data[...] = initializers.Orthogonal(1.5)(cell.Wh.shape, fan_in=100, fan_out=100,
                                                     rng=np.random.default_rng(0))
    batches = BPTTBatcher(corpus, batch_size=10, time_size=20, vocab_size=V)
    trainer = Trainer(model, SGD(lr=1.0).setup(model), batches, clip=clip)
    return trainer.fit(epochs=EPOCHS)["epochs"]


runs = {"no clipping": train_exploding(None), "clip=1.0": train_exploding(1.0)}
for record in runs["clip=1.0"]:
    print(f"clip=1.0  epoch {record['epoch']:2d}  perplexity {record['train_perplexity']:8.1f}  "
          f"grad norm {record['grad_norm']:5.2f}  clipped {100 * record['clip_fraction']:3.0f} %")
print("no clipping, perplexity per epoch:", [round(r["train_perplexity"], 1) for r in runs["no clipping"]])

fig, ax = plt.subplots(figsize=(6, 4))
for name, records in runs.items():
    ax.semilogy([r["epoch"] for r in records], [r["train_perplexity"] for r in records], "o-", label=name)
ax.axhline(V, color="gray", linestyle=":", label=f"uniform guess (V = {V})")
ax.set_xlabel("epoch")
ax.set_ylabel("training perplexity")
ax.set_title("SimpleRNNLM, Wh orthogonal x 1.5, lr 1.0")
ax.grid(True, which="both", alpha=0.3)
ax.legend()

# %% [markdown]
# Read the printed numbers with the plot: without clipping, the model hovers around a uniform
# guess (the dotted line) for several epochs, then a few steps whose gradient is far larger
# than the others throw the weights to where it is far worse than guessing, and ten epochs are
# not enough to climb back; with clipping, every step is bounded and the perplexity falls below
# the uniform guess and keeps falling, with a small bump or two. The clipped fraction shows
# when clipping acted: on most steps at first, less as the model settles.
#
# ## The LSTM and its forget-gate bias
#
# The LSTM's cell state is updated as c_t = f_t * c_{t-1} + i_t * g_t: along the cell state the
# gradient is multiplied by the forget gate f_t at every step, with no product with Wh and no
# tanh slope. That is the book's argument for the LSTM, and it holds only when f_t is close to 1.
#
# Say it plainly: with the default initialization every bias is 0 and the weights are drawn
# around 0, so the forget gate's pre-activation is centred on 0 and f_t is about
# sigmoid(0) = 0.5. The cell-state path then scales the gradient by about 0.5 per step
# (0.5^39 = 1.8e-12), and the untrained LSTM forgets about as fast as the plain RNN.
# `LSTM(..., forget_bias=b)` sets the forget block of the bias to b; with b between 1 and 3, f_t
# starts near sigmoid(1) = 0.73 to sigmoid(3) = 0.95, and the gradient reaches far back.

# %%
lstm_flows = {"RNN, default init": default_flows["default Wh, inputs N(0, 1)"]}
forget_means = {}
for bias in (0.0, 1.0, 3.0):  # 0.0 is what the default initialization gives
    lstm = L.LSTM(H, H, seed=1, dtype=np.float64, forget_bias=bias)
    lstm_flows[f"LSTM, forget_bias={bias}"] = flow(lstm, xs)
    forget_means[bias] = gates(lstm, xs)["."][0]["f"].mean()
plot_gradient_flow(lstm_flows, "lstm_forget_bias.png", title="inputs N(0, 1), loss at t = 39")
for name, f in lstm_flows.items():
    print(f"{name}: |dL/dh_0| / |dL/dh_39| = {f[0] / f[-1]:.3g}")
for bias, mean in forget_means.items():
    print(f"forget_bias={bias}: mean forget gate {mean:.3f}")

# %% [markdown]
# The mean forget gate sits where the sigmoid of the bias puts it, and the gradient that reaches
# the first step follows: with the default bias 0 the LSTM's gradient vanishes as the RNN's does;
# with bias 3 a sizeable fraction reaches t = 0. Training moves the biases, but it can only learn
# to keep what the gradient lets it see, hence the usual remedy of starting the forget bias at 1
# or more (Gers et al., 2000; Jozefowicz et al., 2015). The [LSTM gates tutorial](lstm_gates.md)
# looks at what a trained LSTM's gates do on real text.

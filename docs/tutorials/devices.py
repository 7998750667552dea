# %% [markdown]
# # Your own model on the GPU and on two processes
#
# The book's models run on NumPy and, with one switch, on CuPy. Here there is no switch: arrays
# decide where an op runs, `model.to_gpu()` moves a model, and the same `Trainer` trains on one
# process, on a GPU, or on several processes that share each batch. This tutorial takes a model
# you write yourself through all three.

# %%
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import tinygrad_rnn
from tinygrad_rnn.data import BPTTBatcher, ptb
from tinygrad_rnn.optimizers import SGD
from tinygrad_rnn.tools.common import run_mpi
from tinygrad_rnn.training import Trainer

FAST = os.environ.get("TINYGRAD_RNN_TUTORIAL_FAST") == "1"
WORDS = 2000 if FAST else 20000

# %% [markdown]
# ## A model of your own
#
# A model is a `Layer`: assign layers and Parameters as attributes and they are registered (its
# `params()`, `to_gpu()`, `save()` find them). What the `Trainer` needs is one method,
# `loss(*batch)`, returning a scalar Variable. Here is a GRU language model. It goes into a file
# of its own, `gru_lm.py`, because the processes launched at the end of this tutorial import it
# from there; `exec` defines it here too.

# %%
MODEL = '''
import numpy as np
from tinygrad_rnn import functions as F, layers as L


class GRULM(L.Layer):
    """Embedding -> GRU -> Linear: ids (N, T) -> scores (N, T, V)."""

    def __init__(self, vocab_size, wordvec_size, hidden_size, seed=None, dtype=np.float32):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.embed = L.Embedding(vocab_size, wordvec_size, seed=rng, dtype=dtype)
        self.gru = L.GRU(wordvec_size, hidden_size, stateful=True, seed=rng, dtype=dtype)
        self.fc = L.Linear(hidden_size, vocab_size, seed=rng, dtype=dtype)

    def forward(self, xs):
        return self.fc(self.gru(self.embed(xs)))

    def loss(self, xs, ts):
        return F.softmax_cross_entropy(self(xs), ts)
'''
Path("gru_lm.py").write_text(MODEL)
exec(MODEL)

train, vocab = ptb.load("train")
train = train[:WORDS]
V = int(train.max()) + 1
model = GRULM(V, 64, 64, seed=0)
trainer = Trainer(model, SGD(lr=1.0).setup(model), BPTTBatcher(train, 8, 20, vocab_size=V), clip=0.25)
trainer.fit(epochs=1)
print(f"one epoch on the CPU: train perplexity {trainer.history['epochs'][-1]['train_perplexity']:.1f}")

# %% [markdown]
# ## On the GPU
#
# `pip install -e '.[cuda12]'` installs CuPy with what it needs. `tinygrad_rnn.cuda.available`
# says whether the GPU path works here, and `tinygrad_rnn.cuda.check()` says what is missing.
# Then two things change: `model.to_gpu()` moves the parameters (and any carried state), and
# the batch source yields its batches on the GPU (`device="gpu"`). An op given arrays on two
# devices raises an error naming both, never copies silently. Everything else stays as it is.
# (The documentation site is built on a machine without a GPU, so the cell below shows the
# message you get there.)

# %%
if tinygrad_rnn.cuda.available:
    model.to_gpu()
    trainer = Trainer(model, SGD(lr=1.0).setup(model), BPTTBatcher(train, 8, 20, vocab_size=V, device="gpu"),
                      clip=0.25)
    trainer.fit(epochs=1)
    print(f"one epoch on the GPU: train perplexity {trainer.history['epochs'][-1]['train_perplexity']:.1f}")
    model.to_cpu()
else:
    try:
        tinygrad_rnn.cuda.check()
    except RuntimeError as problem:
        print("no GPU here:", problem)

# %% [markdown]
# ## On two processes
#
# Data parallelism: every process (a *rank*) holds the whole model and takes its share of the
# rows of each batch; after the backward pass the gradients are averaged over the ranks, so every
# rank applies the same update. `tinygrad_rnn.distributed.init()` returns the communicator of the
# launch (MPI under `mpirun -n 2`, a serial one otherwise) and `Trainer(comm=comm)` does the
# rest: it broadcasts rank 0's parameters, gives each rank its rows and averages the gradients,
# with clipping after the average. The result is the training of one process on the combined
# batch, which we check below.
#
# The script every rank runs:

# %%
script = f"""
import numpy as np
from tinygrad_rnn import distributed
from tinygrad_rnn.data import BPTTBatcher, ptb
from tinygrad_rnn.optimizers import SGD
from tinygrad_rnn.tools.common import run_mpi
from tinygrad_rnn.training import Trainer
from gru_lm import GRULM

comm = distributed.init()
train = ptb.load("train")[0][:{WORDS}]
V = int(train.max()) + 1
model = GRULM(V, 64, 64, seed=0, dtype=np.float64)
trainer = Trainer(model, SGD(lr=1.0).setup(model), BPTTBatcher(train, 8, 20, vocab_size=V), clip=0.25, comm=comm)
trainer.fit(epochs=1)
if comm.is_root:
    print("processes:", comm.size, " train loss:", repr(trainer.history["epochs"][-1]["train_loss"]))
"""
Path("train_gru.py").write_text(script)

# %% [markdown]
# Launch it with
#
# ```sh
# pip install -e '.[distributed]'     # mpi4py; plus an MPI such as Debian's openmpi-bin
# mpirun -n 2 python -m mpi4py train_gru.py
# ```
#
# `python -m mpi4py` makes an error on one rank end the whole job instead of leaving the other
# rank waiting for it. The same script without `mpirun` runs on one process: both runs below
# (`run_mpi` is the launcher the project's tools and tests use; where MPI is missing, the cell
# says so). The model is in float64 here so that the comparison is not blurred by float32
# rounding: two ranks add the gradients of their rows in another order than one process does.

# %%
one = subprocess.run([sys.executable, "train_gru.py"], capture_output=True, text=True, check=True)
print(one.stdout.strip())
if shutil.which("mpirun") and importlib.util.find_spec("mpi4py"):
    two = run_mpi(2, ["-m", "mpi4py", "train_gru.py"], timeout=300)
    print(two.stdout.strip() if two.returncode == 0 else two.stdout + two.stderr)
else:
    print("mpirun or mpi4py is missing: pip install -e '.[distributed]' and an MPI (apt-get install openmpi-bin)")

# %% [markdown]
# The two losses agree to about ten digits: two processes trained exactly the model one process
# trains on the combined batch. More ranks, clusters, GPUs with NCCL (`distributed.init("gpu")`)
# and what happens when a rank fails are in the [data parallel](../distributed.md) guide.

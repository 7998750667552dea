"""Data-parallel training over MPI (mpi4py) between processes and NCCL (CuPy) between GPUs.

Every rank holds the whole model, trains on its rows of each batch, and applies the update of
the averaged gradient, so P ranks step exactly as one process on the combined batch::

    comm = distributed.init()                        # SerialComm unless launched by mpirun/srun
    trainer = Trainer(model, opt, batches, clip=0.25, evaluators=[Perplexity(valid)], comm=comm)
    trainer.fit(epochs=4)                            # mpirun -n 2 python -m mpi4py train.py

One concern a module: ``comm`` (the communicators and fail-fast), ``collectives`` (layout check,
broadcasts, the packed gradient reduction), ``optimizer`` (``DistributedOptimizer``: reduce, then
the wrapped optimizer's hooks and update) and ``data`` (sharding batch sources: each part's rows,
weight and dropout rows).
"""
from tinygrad_rnn.distributed.collectives import (allreduce_grads, broadcast_optimizer_state, broadcast_parameters,
                                                  check_layout, gather_rows, layout)
from tinygrad_rnn.distributed.comm import MpiComm, NcclComm, SerialComm, init, launched_rank, launched_size
from tinygrad_rnn.distributed.data import Part, Shard, shard_rows
from tinygrad_rnn.distributed.optimizer import DistributedOptimizer

__all__ = [
    "DistributedOptimizer", "MpiComm", "NcclComm", "Part", "SerialComm", "Shard", "allreduce_grads",
    "broadcast_optimizer_state", "broadcast_parameters", "check_layout", "gather_rows", "init", "launched_rank",
    "launched_size", "layout", "shard_rows",
]

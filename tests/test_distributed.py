"""Data parallelism: real ``mpirun -n 2`` jobs (tests/mpi_cases.py), and the single-process parts here.

Each job runs in its own process group, killed on a bounded timeout, so no test can hang. Without
Open MPI or MPICH and mpi4py the MPI tests skip, but not in CI (``CI`` set), where they fail:
``make test`` installs both.
"""
import importlib.util
import json
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
from conftest import in_ci, untimed

from tinygrad_rnn import distributed as dist
from tinygrad_rnn import functions as F
from tinygrad_rnn import random as tg_random
from tinygrad_rnn.data import BPTTBatcher, ShuffledBatcher
from tinygrad_rnn.distributed.comm import _load_nccl, _rank_device
from tinygrad_rnn.models import LSTMLM
from tinygrad_rnn.optimizers import SGD
from tinygrad_rnn.serialization import load_npz
from tinygrad_rnn.tools.common import run_mpi
from tinygrad_rnn.training import Trainer

CASES = Path(__file__).with_name("mpi_cases.py")
ROOT = CASES.parent.parent


def mpirun(case, out, ranks=2, timeout=120, runner=("-m", "mpi4py")):
    """Run one case of mpi_cases.py under mpirun (``launch``)."""
    return launch([*runner, str(CASES), case, str(out)], ranks, timeout)


def launch(arguments, ranks=2, timeout=120):
    """``mpirun -n ranks python *arguments`` (``tools.common.run_mpi``); a test failure on timeout.

    Returns:
        tuple: (return code, output: stdout then stderr, seconds).
    """
    began = time.monotonic()
    try:
        done = run_mpi(ranks, arguments, timeout, env={"PYTHONPATH": str(ROOT)})
    except TimeoutError as e:
        pytest.fail(str(e))
    return done.returncode, done.stdout + done.stderr, time.monotonic() - began


def run_case(case, tmp_path, ranks=2, name="out.npz"):
    out = tmp_path / name
    code, output, _ = mpirun(case, out, ranks)
    assert code == 0, output
    return load_npz(out)


def assert_ranks_equal_reference(arrays, ranks=2):
    for r in range(1, ranks):
        np.testing.assert_array_equal(arrays[f"rank{r}"], arrays["rank0"], err_msg=f"rank {r} differs from rank 0")
    np.testing.assert_allclose(arrays["rank0"], arrays["reference"], rtol=1e-10, atol=1e-13)


def assert_same_records(mine, reference):
    for a, b in zip(mine["epochs"], reference["epochs"], strict=True):
        for key in ("epoch", "iteration", "iterations", "complete", "lr"):
            assert a[key] == b[key], key
        for key in ("train_loss", "valid_perplexity", "grad_norm", "clip_fraction"):  # the last two with clip
            assert (key in a) == (key in b), key
            if key in a:
                assert a[key] == pytest.approx(b[key], rel=1e-10), key


@pytest.mark.parametrize("case", ["sgd", "adam", "better"])
def test_language_model_on_two_ranks_equals_one_process(case, tmp_path, mpi):
    """LSTMLM with SGD, with Adam and clipping, BetterLSTMLM with exact dropout and a plateau schedule:
    55 steps over three epochs (carried state, evaluation, an lr drop), in float64."""
    arrays, meta = run_case(case, tmp_path)
    assert_ranks_equal_reference(arrays)
    assert_same_records(meta["history"], meta["reference_history"])
    if case == "better":
        assert [r["lr"] for r in meta["history"]["epochs"]] == [0.5, 0.5, 0.125]


def test_four_ranks_on_two_cores_equal_one_process(tmp_path, mpi):
    """Oversubscribed: one stream a rank, Adam and clipping; the ranks still agree bit for bit."""
    arrays, meta = run_case("adam", tmp_path, ranks=4)
    assert_ranks_equal_reference(arrays, ranks=4)
    assert_same_records(meta["history"], meta["reference_history"])


def test_seq2seq_with_unequal_shards_equals_one_process(tmp_path, mpi):
    """Batches of 7 split 3 + 4, a last batch of 2: the gradients are weighted by each rank's examples."""
    arrays, meta = run_case("seq2seq", tmp_path)
    assert_ranks_equal_reference(arrays)
    assert_same_records(meta["history"], meta["reference_history"])


def test_trainer_weights_ignored_targets_by_the_models_count(tmp_path, mpi):
    """A loss with ignore_label through the Trainer: each rank weighted by model.loss_weight."""
    arrays, meta = run_case("padded", tmp_path)
    assert_ranks_equal_reference(arrays)
    assert_same_records(meta["history"], meta["reference_history"])


def test_hand_written_loop_weights_ignored_targets(tmp_path, mpi):
    """DistributedOptimizer in a loop whose loss ignores padding: weighted by the counted targets."""
    assert_ranks_equal_reference(run_case("hand_loop", tmp_path)[0])


def test_one_rank_is_bit_identical_to_plain_training(tmp_path, mpi):
    arrays, meta = run_case("sgd", tmp_path, ranks=1)
    np.testing.assert_array_equal(arrays["rank0"], arrays["reference"])
    assert untimed(meta["history"]["epochs"]) == untimed(meta["reference_history"]["epochs"])


@pytest.mark.parametrize("saved, resumed", [(2, 1), (1, 2)])
def test_checkpoint_resumes_at_another_process_count(saved, resumed, tmp_path, mpi):
    """3 steps on ``saved`` ranks, a checkpoint, 2 more on ``resumed``: the uninterrupted 5 steps of one process."""
    out = tmp_path / "out.npz"
    for case, ranks in (("save", saved), ("resume", resumed)):
        code, output, _ = mpirun(case, out, ranks)
        assert code == 0, output
    arrays, meta = load_npz(out)
    for r in range(1, resumed):
        np.testing.assert_array_equal(arrays[f"rank{r}"], arrays["rank0"])
    np.testing.assert_allclose(arrays["rank0"], arrays["reference"], rtol=1e-10, atol=1e-13)
    mine, reference = meta["history"]["iterations"], meta["reference_history"]["iterations"]
    assert [e["iteration"] for e in mine] == [e["iteration"] for e in reference] == [2, 4]
    # the loss logged at step 4 spans the checkpoint: step 3's part came back from the file
    assert [e["loss"] for e in mine] == pytest.approx([e["loss"] for e in reference], rel=1e-10)


@pytest.mark.parametrize("restart_ranks", [2, 1])
def test_a_crashed_job_restarts_from_its_last_checkpoint(restart_ranks, tmp_path, mpi):
    """Rank 1 raises in epoch 2 after the epoch-1 checkpoint; the restart finishes as if nothing happened."""
    out = tmp_path / "out.npz"
    code, output, seconds = mpirun("crash", out)
    assert code != 0 and seconds < 10 and "injected failure on rank 1" in output, output
    assert (tmp_path / "out.npz.runs" / "last.npz").exists() and not out.exists()
    code, output, _ = mpirun("restart", out, restart_ranks)
    assert code == 0, output
    arrays, meta = load_npz(out)
    for r in range(1, restart_ranks):
        np.testing.assert_array_equal(arrays[f"rank{r}"], arrays["rank0"])
    np.testing.assert_allclose(arrays["rank0"], arrays["reference"], rtol=1e-10, atol=1e-13)
    assert_same_records(meta["history"], meta["reference_history"])


def test_layout_mismatch_raises_on_every_rank(tmp_path, mpi):
    code, output, seconds = mpirun("layout", tmp_path / "out.npz")
    assert code == 0, output
    for r in (0, 1):
        assert f"rank {r} refused: distributed: the ranks hold different models" in output, output
    assert "lstm/" in output and "(16, 64) float64 on the cpu on rank 0" in output
    assert seconds < 10


@pytest.mark.parametrize("how, runner", [("raise", ()), ("raise", ("-m", "mpi4py")), ("exit", ("-m", "mpi4py")),
                                         ("exit", ()), ("kill", ()), ("stall", ())])
def test_a_failing_rank_ends_the_job_fast(how, runner, tmp_path, mpi):
    """Rank 1 raises, exits or stalls after step 2 while rank 0 waits in a collective: the job ends within 10 s.

    An exception or a ``sys.exit`` inside ``fit`` aborts the job at once (``comm.leave``; a plain
    ``sys.exit`` used to leave the rank waiting in MPI's finalization until the other rank's watchdog
    fired), as does a killed rank; a stall leaves the rank computing, and the other rank's watchdog
    (3 s here) ends the job."""
    code, output, seconds = mpirun(how, tmp_path / "out.npz", timeout=60, runner=runner)
    assert code != 0, output
    assert seconds < 10, output
    assert f"rank 1 fails: {how}" in output
    assert "finished" not in output
    if how == "raise":
        assert "RuntimeError: injected failure on rank 1" in output  # the failing rank's traceback
    if how == "stall":
        assert "Timeout" in output and "in _collective" in output  # the waiting rank's stack, from the watchdog
    if how == "exit":
        assert "SystemExit: 3" in output and "Timeout" not in output  # ended by rank 1, not by rank 0's watchdog


def test_training_tool_with_distributed_matches_one_process(tmp_path, mpi):
    """train_seq2seq --distributed on two ranks: one summary, from rank 0, with one process's numbers."""
    flags = ["--task", "addition", "--model", "peeky", "--count", "700", "--test-size", "100", "--epochs", "2",
             "--hidden", "16", "--batch-size", "50", "--no-progress", "--examples", "0"]
    summaries = {}
    for ranks, extra in ((2, ["--distributed"]), (1, [])):
        out = tmp_path / f"ranks{ranks}"
        code, output, _ = launch(["-m", "mpi4py", "-m", "tinygrad_rnn.tools.train_seq2seq", *flags, "--out",
                                  str(out), *extra], ranks)
        assert code == 0, output
        lines = [line for line in output.splitlines() if line.startswith("{")]
        assert len(lines) == 1, output  # only rank 0 prints the summary
        summaries[ranks] = json.loads((out / "summary.json").read_text())
        assert sorted(p.name for p in out.iterdir()) == ["best.npz", "history.json", "history.png", "last.npz",
                                                          "summary.json"]
    two, one = summaries[2], summaries[1]
    assert two["command"].startswith("mpirun -n 2 ") and two["ranks"] == 2
    # float32: the two differ by the order of additions only
    assert two["train_loss_per_epoch"] == pytest.approx(one["train_loss_per_epoch"], rel=1e-4)
    assert two["iterations"] == one["iterations"] and two["samples_per_second"] > 0


# The single-process parts: these run everywhere.

def test_init_without_a_launcher_is_serial_and_imports_nothing():
    code = ("import sys; from tinygrad_rnn import distributed as d; c = d.init(); "
            "print(type(c).__name__, c.rank, c.size, c.is_root, 'mpi4py' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k not in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MPI_LOCALNRANKS",
                                                             "SLURM_STEP_NUM_TASKS")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert done.stdout.split() == ["SerialComm", "0", "1", "True", "False"]


def test_launcher_size_from_the_environment(monkeypatch):
    for name in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MPI_LOCALNRANKS", "SLURM_STEP_NUM_TASKS"):
        monkeypatch.delenv(name, raising=False)
    assert dist.launched_size() == 1
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "4")
    assert dist.launched_size() == 4
    for name in ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "MPI_LOCALRANKID", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    assert dist.launched_rank() == 0
    monkeypatch.setenv("PMI_RANK", "3")
    assert dist.launched_rank() == 3
    with pytest.raises(ValueError, match="device must be 'cpu' or 'gpu'"):
        dist.init(device="tpu")


def test_serial_trainer_with_comm_is_plain_training():
    def run(comm):
        model = LSTMLM(20, 5, 5, seed=0, dtype=np.float64)
        data = np.random.default_rng(0).integers(0, 20, 300)
        trainer = Trainer(model, SGD(0.5).setup(model), BPTTBatcher(data, 4, 5), clip=0.25, comm=comm)
        trainer.fit(1, max_iters=6)
        return np.concatenate([p.data.ravel() for p in model.params()])

    np.testing.assert_array_equal(run(None), run(dist.SerialComm()))


class FakeComm(dist.SerialComm):
    """Rank ``rank`` of ``size`` for the pure functions of sharding (no collective is called)."""

    def __init__(self, rank, size):
        self.rank, self.size, self.is_root = rank, size, rank == 0


def test_shard_rows_cover_the_batch_once():
    for n, size in ((20, 2), (7, 2), (10, 3), (5, 5)):
        rows = [dist.shard_rows(n, FakeComm(r, size)) for r in range(size)]
        assert rows[0][0] == 0 and rows[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(rows, rows[1:]))
        assert max(b - a for a, b in rows) - min(b - a for a, b in rows) <= 1


def test_shard_gives_each_rank_its_streams_and_refuses_what_does_not_split():
    data = np.arange(400) % 30
    source = BPTTBatcher(data, 4, 5)
    parts = [list(dist.Shard(source, FakeComm(r, 2)).batches()) for r in range(2)]
    for whole, first, second in zip(source.batches(), *parts):
        for a, p, q in zip(whole, first, second):
            np.testing.assert_array_equal(np.concatenate([p, q]), a)
        assert (first.rows, first.total, second.rows, second.total) == ((0, 2), 4, (2, 4), 4)
        assert first.weight == second.weight == 2 * 5  # source.count: the part's target tokens
    shard = dist.Shard(source, FakeComm(1, 2))
    assert len(shard) == len(source) and shard.spec() == source.spec() and shard.batch_size == 4
    with pytest.raises(ValueError, match="batch of 4 streams does not split over 3 ranks"):
        dist.Shard(source, FakeComm(0, 3))
    examples = (np.arange(21).reshape(7, 3) % 5, np.arange(14).reshape(7, 2) % 5)
    with pytest.raises(ValueError, match="a batch of 1 rows cannot give each of 2 ranks a row"):
        dist.Shard(ShuffledBatcher(examples, 3, drop_last=False), FakeComm(0, 2))
    one = list(dist.Shard(source, dist.SerialComm()).batches())  # one process: the whole batch
    assert all(p.rows == (0, 4) and np.array_equal(p[0], b[0]) for p, b in zip(one, source.batches()))


def test_generators_with_a_part_draw_the_rows_of_the_combined_mask():
    full, parts = tg_random.Generator(5), [tg_random.Generator(5) for _ in range(2)]
    like = np.zeros(1, np.float32)
    whole = F.dropout_mask((6, 1, 4), 0.5, full, like)
    pieces = []
    for gen, rows in zip(parts, ((0, 3), (3, 6))):
        gen.set_part(rows, 6)
        pieces.append(F.dropout_mask((3, 1, 4), 0.5, gen, like))
    np.testing.assert_array_equal(np.concatenate(pieces), whole)
    assert parts[0].counter == parts[1].counter == full.counter
    with pytest.raises(ValueError, match=r"rows \(0, 3\) of a combined batch of 6 .* first axis must be their 3"):
        F.dropout_mask((4, 3), 0.5, parts[0], like)
    parts[0].set_part()
    assert F.dropout_mask((4, 3), 0.5, parts[0], like).shape == (4, 3)  # whole draws again
    with pytest.raises(ValueError, match=r"Generator.set_part: rows must be \(start, stop\)"):
        parts[0].set_part((2, 7), 6)


def test_shard_sets_each_parts_rows_on_the_models_generators_and_weighs_by_the_models_count():
    model = LSTMLM(20, 5, 5, seed=0)
    gen = tg_random.Generator(1)
    model.generators = lambda: {"drop/generator": gen}
    model.loss_weight = lambda xs, ts: int((ts % 2 == 0).sum())
    source = BPTTBatcher(np.arange(400) % 20, 4, 5)
    seen = []
    for part in dist.Shard(source, FakeComm(1, 2), model).batches():
        seen.append(gen.part)
        assert part.weight == int((part[1] % 2 == 0).sum())
    assert seen == [((2, 4), 4)] * len(source) and gen.part is None  # whole draws again after the epoch
    stopped = dist.Shard(source, FakeComm(1, 2), model).batches()
    next(stopped)
    stopped.close()  # a consumer that stops early (max_iters)
    assert gen.part is None


class Gathered(FakeComm):
    """Rank 0 of a job whose other ranks' answers are given: ``layouts`` for allgather, ``sums`` for reductions."""

    def __init__(self, layouts=None, sums=None):
        super().__init__(0, 2)
        self.layouts, self.sums = layouts, sums

    def allgather_obj(self, obj):
        return [obj, *self.layouts]

    def allreduce_numbers(self, values):
        return self.sums(values)


def test_shard_refuses_ranks_whose_batch_sources_differ():
    source = BPTTBatcher(np.arange(400) % 30, 4, 5)
    dist.Shard(source, Gathered([(len(source), source.spec())]))
    shorter = BPTTBatcher(np.arange(300) % 30, 4, 5)
    with pytest.raises(ValueError, match=r"different batch sources \(rank 0: 19 batches .*rank 1: 14 batches"):
        dist.Shard(source, Gathered([(len(shorter), shorter.spec())]))


def test_check_layout_names_every_difference():
    model = LSTMLM(20, 5, 5, seed=0)
    mine = dist.layout(model)
    dist.check_layout(model, Gathered([mine]))
    other = [(name, (shape[0] + 1,) + shape[1:] if name == "fc/W" else shape, dtype, device)
             for name, shape, dtype, device in mine]
    other[0] = (other[0][0], other[0][1], "float64", "gpu")
    with pytest.raises(ValueError, match=r"embed/W is \(20, 5\) float64 on the gpu on rank 1, \(20, 5\) float32 on "
                                         r"the cpu on rank 0; fc/W is \(6, 20\) float32 on the cpu on rank 1"):
        dist.check_layout(model, Gathered([other]))
    with pytest.raises(ValueError, match=r"only on rank 1: \['extra'\]; only on rank 0: \['fc/b'\]"):
        dist.check_layout(model, Gathered([[*mine[:-1], ("extra", (1,), "float32", "cpu")]]))


def test_allreduce_grads_refuses_weights_on_some_ranks_and_casts():
    model = LSTMLM(20, 5, 5, seed=0)
    model.loss(np.zeros((2, 3), np.int32), np.ones((2, 3), np.int32)).backward()
    with pytest.raises(ValueError, match="1 of 2 ranks gave a weight"):
        dist.allreduce_grads(model, Gathered(sums=lambda v: [v[0], 1.0, *[2 * x for x in v[2:]]]), weight=3)
    with pytest.raises(ValueError, match="weights of all ranks sum to 0"):
        dist.allreduce_grads(model, Gathered(sums=lambda v: [0.0, 2.0, *v[2:]]), weight=0)
    with pytest.raises(ValueError, match="weight must be >= 0"):
        dist.allreduce_grads(model, Gathered(), weight=-1)
    p = next(model.params())
    p.grad.data = p.grad.data.astype(np.float64)
    with pytest.raises(TypeError, match="gradient of embed/W is float64, the parameter float32"):
        dist.allreduce_grads(model, Gathered())


@pytest.fixture
def nccl(cupy):
    """For the NCCL tests: skips without mpi4py or NCCL, except in CI, where that fails."""
    missing = None
    if importlib.util.find_spec("mpi4py") is None:
        missing = "no mpi4py (pip install 'tinygrad_rnn[distributed]')"
    else:
        try:
            _load_nccl(cupy)
        except RuntimeError as e:
            missing = str(e)
    if missing:
        if in_ci():
            pytest.fail(f"CI must run the NCCL tests, but {missing}")
        pytest.skip(missing)


def test_a_rank_uses_its_local_rank_or_the_only_gpu_it_sees():
    assert [_rank_device(r, 4) for r in range(4)] == [0, 1, 2, 3]
    assert [_rank_device(r, 1) for r in range(3)] == [0, 0, 0]  # a per-rank CUDA_VISIBLE_DEVICES
    with pytest.raises(RuntimeError, match="local rank 2 has no GPU of its own .this host has 2.; start at most 2"):
        _rank_device(2, 2)


def test_without_nccl_the_error_names_the_package_to_install(monkeypatch):
    # CuPy imports cupy.cuda.nccl without libnccl, with available = False
    runtime = types.SimpleNamespace(runtimeGetVersion=lambda: 12090)
    fake = types.ModuleType("cupy")
    fake.cuda = types.ModuleType("cupy.cuda")
    fake.cuda.runtime = runtime
    fake.cuda.nccl = types.ModuleType("cupy.cuda.nccl")
    fake.cuda.nccl.available = False
    for name, module in [("cupy", fake), ("cupy.cuda", fake.cuda), ("cupy.cuda.nccl", fake.cuda.nccl)]:
        monkeypatch.setitem(sys.modules, name, module)
    with pytest.raises(RuntimeError, match=r"NCCL is not installed; install it with `pip install nvidia-nccl-cu12`"):
        _load_nccl(fake)
    fake.cuda.nccl.available = True
    assert _load_nccl(fake) is fake.cuda.nccl


@pytest.mark.gpu
def test_nccl_communicator_with_one_rank(cupy, nccl):
    """The NCCL path end to end on one GPU: in-place allreduce and broadcast on the device, in every dtype."""
    comm = dist.NcclComm(timeout=30)
    assert (comm.size, comm.rank, comm.local_rank) == (1, 0, 0)
    for dtype in (cupy.float16, cupy.float32, cupy.float64):
        a = cupy.arange(5, dtype=dtype)
        comm.allreduce(a)
        comm.bcast(a)
        cupy.testing.assert_array_equal(a, cupy.arange(5, dtype=dtype))
    host = np.arange(3.0)
    comm.allreduce(host)  # NumPy arrays go over MPI
    np.testing.assert_array_equal(host, np.arange(3.0))
    with pytest.raises(TypeError, match="NCCL does not reduce dtype bool"):
        comm.allreduce(cupy.zeros(2, dtype=bool))


@pytest.mark.gpu
def test_two_gpus_train_as_one(tmp_path, mpi, cupy, nccl):
    if cupy.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("needs two GPUs: one rank per GPU")
    arrays, meta = run_case("gpu", tmp_path)
    assert_ranks_equal_reference(arrays)


class Rank1(FakeComm):
    """Rank 1 of 2, to which rank 0 sends ``sent``."""

    def __init__(self, sent):
        super().__init__(1, 2)
        self.sent = sent

    def bcast_obj(self, obj):
        assert obj is None  # rank 1 sends nothing
        return self.sent


def test_from_root_gives_every_rank_the_result_or_the_error_of_rank_0(tmp_path):
    assert Rank1(7).from_root(lambda: pytest.fail("read on rank 1")) == 7
    with pytest.raises(ValueError, match="not a tinygrad_rnn trainer checkpoint"):
        Rank1(ValueError("x.npz is not a tinygrad_rnn trainer checkpoint")).from_root(lambda: 0)
    assert dist.SerialComm().from_root(lambda: 3) == 3
    with pytest.raises(FileNotFoundError):
        dist.SerialComm().from_root(lambda: open(tmp_path / "missing.npz"))

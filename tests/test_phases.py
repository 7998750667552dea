"""Phase marks: Trainer.step marks its own phases, a recorder times them, and nothing is read while none is on."""
import threading

import numpy as np
import pytest

from tinygrad_rnn import backend
from tinygrad_rnn.models import LSTMLM
from tinygrad_rnn.optimizers import SGD
from tinygrad_rnn import phases
from tinygrad_rnn.training import Trainer
from tinygrad_rnn.phases import END, PhaseRecorder, mark


def _trainer(clip):
    model = LSTMLM(7, 3, 4, seed=0)
    return Trainer(model, SGD(0.1).setup(model), None, clip=clip)


def _batch(seed=0):
    ids = np.random.default_rng(seed).integers(0, 7, (2, 4)).astype(np.int32)
    return ids[:, :-1], ids[:, 1:]


@pytest.mark.parametrize("clip, expected", [(1.0, ["forward", "backward", "clip", "update"]),
                                            (None, ["forward", "backward", "update"])])
def test_step_records_its_phases_in_order(clip, expected):
    trainer = _trainer(clip)
    with PhaseRecorder("cpu") as recorder:
        trainer.step(_batch())
    recorded = recorder.phases()
    assert list(recorded) == expected
    assert all(ms >= 0 for ms in recorded.values())
    assert recorder.phases() == {}  # read and cleared


def test_phases_of_several_steps_add_up_and_the_gap_between_steps_counts_for_none(monkeypatch):
    ticks = iter(range(100))
    monkeypatch.setattr(phases.time, "perf_counter", lambda: next(ticks))
    with PhaseRecorder("cpu") as recorder:
        mark("a")  # at 0
        mark("b")  # at 1: a took 1
        mark(END)  # at 2: b took 1
        next(ticks)  # 3: between steps, in no phase
        mark("a")  # at 4
        mark(END)  # at 5: a took 1 more
    assert recorder.phases() == {"a": 2e3, "b": 1e3}


def test_without_a_recorder_a_step_reads_no_clock(monkeypatch):
    def clock():
        raise AssertionError("a mark read the clock")

    monkeypatch.setattr(phases.time, "perf_counter", clock)
    trainer = _trainer(1.0)
    trainer.step(_batch())  # no recorder: the marks do nothing
    with pytest.raises(AssertionError, match="a mark read the clock"), PhaseRecorder("cpu"):
        trainer.step(_batch(1))


def test_a_recorder_sees_only_the_steps_of_its_own_context():
    trainer = _trainer(1.0)
    with PhaseRecorder("cpu") as recorder:
        other = threading.Thread(target=trainer.step, args=(_batch(),))
        other.start()
        other.join()
    assert recorder.marks == []


def test_recorder_refuses_an_open_phase_a_nested_start_and_an_unknown_device():
    with PhaseRecorder("cpu") as recorder:
        mark("forward")
        with pytest.raises(RuntimeError, match="already recording"):
            recorder.__enter__()
    with pytest.raises(RuntimeError, match="phase 'forward' is still open"):
        recorder.phases()
    with pytest.raises(ValueError, match="device must be 'cpu' or 'gpu', got 'tpu'"):
        PhaseRecorder("tpu")


@pytest.mark.skipif(backend.gpu_available(), reason="needs a process without a GPU")
def test_a_gpu_recorder_without_a_gpu_is_refused():
    with pytest.raises(RuntimeError, match="device 'gpu' needs CuPy and a GPU"):
        PhaseRecorder("gpu")


@pytest.mark.gpu
def test_a_gpu_step_records_the_device_time_of_its_phases(cupy):
    trainer = _trainer(1.0)
    trainer.model.to_gpu()
    batch = tuple(cupy.asarray(a) for a in _batch())
    with PhaseRecorder("gpu") as recorder:
        trainer.step(batch)
    recorded = recorder.phases()  # waits for the last event
    assert list(recorded) == ["forward", "backward", "clip", "update"] and all(ms >= 0 for ms in recorded.values())

"""Phase marks inside ``Trainer.step`` and the recorder that times them.

``Trainer.step`` calls ``mark(name)`` where each of its phases begins (``forward``, ``backward``),
the optimizer's update where its own begin (``reduce`` in ``distributed.DistributedOptimizer``,
``clip`` in the ``optimizers.GradientClipping`` hook, ``update`` for the parameters' update), and
the step calls ``mark(END)`` when it is done. Nothing records them unless a ``PhaseRecorder`` is
active in the current context; otherwise a mark costs one context-variable read, no clock and no
device synchronization. The benchmarks
(``tools/bench_phases.py``, ``tools/bench_dist.py``) turn a recorder on around real steps, so
they time the step as it is, not a copy of it::

    with PhaseRecorder("cpu") as recorder:
        trainer.step(batch)
    recorder.phases()  # {"forward": ms, "backward": ms, "clip": ms, "update": ms}
"""
import contextvars
import time

from tinygrad_rnn import backend

END = "end"  # the last mark of a step: it closes the phase before it and begins none
# per context, as no_grad is: a recorder turned on in one thread leaves the others' steps unmarked
_RECORDER = contextvars.ContextVar("tinygrad_rnn_phase_recorder", default=None)


def mark(name):
    """Begin phase ``name`` of the step being recorded (ending the one before); nothing when no recorder is on.

    Args:
        name (str): the phase, or ``END`` after the step's last phase.
    """
    recorder = _RECORDER.get()
    if recorder is not None:
        recorder.mark(name)


class PhaseRecorder:
    """Times the phases between marks: CUDA events on the current stream on the GPU, a clock on the CPU.

    On the GPU every mark records an event and nothing waits inside the step, so a phase is
    device time; on the CPU, where every op is synchronous, a mark reads ``time.perf_counter``.
    Use it as a context manager: marks made inside the ``with`` block (in this context) are
    recorded, and ``phases()`` reads and clears them.

    Args:
        device (str): ``"cpu"`` or ``"gpu"`` (the device the marked work runs on).
    Raises:
        ValueError: another ``device``.
        RuntimeError: ``"gpu"`` without CuPy or a GPU.
    """

    def __init__(self, device="cpu"):
        if device not in ("cpu", "gpu"):
            raise ValueError(f"PhaseRecorder: device must be 'cpu' or 'gpu', got {device!r}")
        if device == "gpu" and not backend.gpu_available():
            raise RuntimeError("PhaseRecorder: device 'gpu' needs CuPy and a GPU, and this process has neither")
        self.cupy = backend.cupy() if device == "gpu" else None
        self.marks = []
        self._token = None

    def __enter__(self):
        if self._token is not None:
            raise RuntimeError("PhaseRecorder: already recording")
        self._token = _RECORDER.set(self)
        return self

    def __exit__(self, *exc):
        _RECORDER.reset(self._token)
        self._token = None

    def mark(self, name):
        """Record the moment phase ``name`` begins.

        Args:
            name (str): the phase, or ``END``.
        """
        if self.cupy is None:
            self.marks.append((name, time.perf_counter()))
        else:
            event = self.cupy.cuda.Event()
            event.record()
            self.marks.append((name, event))

    def phases(self):
        """The milliseconds of each phase since the last call, in the order of their first mark; clears the marks.

        A phase marked more than once (several steps) gets the sum of its spans; the time from
        ``END`` to the next mark (between steps) belongs to no phase. On the GPU this waits for
        the last event.

        Returns:
            dict: phase name (str) -> milliseconds (float).
        Raises:
            RuntimeError: the last mark is not ``END`` (a phase is still open).
        """
        if self.marks and self.marks[-1][0] != END:
            raise RuntimeError(f"PhaseRecorder.phases: phase {self.marks[-1][0]!r} is still open (no {END!r} mark)")
        if self.cupy is not None and self.marks:
            self.marks[-1][1].synchronize()
            elapsed = [self.cupy.cuda.get_elapsed_time(a, b) for (_, a), (_, b) in zip(self.marks, self.marks[1:])]
        else:
            elapsed = [1e3 * (b - a) for (_, a), (_, b) in zip(self.marks, self.marks[1:])]
        out = {}
        for (name, _), ms in zip(self.marks, elapsed):
            if name != END:
                out[name] = out.get(name, 0.0) + ms
        self.marks = []
        return out

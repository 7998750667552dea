"""Counter-based random numbers: the same bits on NumPy and CuPy, and any rows of a draw alone.

A :class:`Generator`'s whole state is ``(seed, counter)``: ``seed`` is a 128-bit Philox4x64-10
key and ``counter`` the number of Philox blocks (four 64-bit words each) consumed so far. Each
element of a draw is a function of that state and of the element's index only, so NumPy and a
CuPy kernel give the same bits, a data-parallel rank can produce its rows of a full-batch draw
without the other rows, and a checkpointed ``state_dict()`` resumes the stream exactly.

Bit layout (a data-parallel split relies on it):

- The stream of key ``seed`` is a sequence of 64-bit words: word ``4 * b + i`` (``i`` in 0..3) is
  word ``i`` of the Philox4x64-10 block (Random123's ``philox4x64_10``) of counter ``b mod 2**256``
  and key ``seed``. The counter is four 64-bit words and the key two, least significant first:
  ``(b & (2**64 - 1), (b >> 64) & (2**64 - 1), ...)`` and ``(seed & (2**64 - 1), seed >> 64)``.
  These are the words of ``numpy.random.Philox(counter=(b - 1) % 2**256, key=seed).random_raw()``:
  NumPy increments its counter before it computes a block.
- A draw of shape ``S`` (``M = prod(S)`` elements in C order) by a Generator whose counter is
  ``c`` starts at word ``4 * c``:

  - float64: element ``j`` is ``(w >> 11) * 2**-53`` (the top 53 bits) of word ``w = 4 * c + j``;
    the draw consumes ``ceil(M / 4)`` blocks.
  - float32: element ``j`` is ``(h >> 8) * 2**-24`` (the top 24 bits) of the 32-bit half ``h`` of
    word ``4 * c + j // 2``: the low half for even ``j``, the high half for odd ``j``; the draw
    consumes ``ceil(M / 8)`` blocks.

  Both are exact and lie in [0, 1); they are NumPy's own conversions, so a draw equals
  ``numpy.random.Generator(numpy.random.Philox(counter=(c - 1) % 2**256, key=seed)).random(S, dtype)``.
  The unused words of a draw's last block are skipped: the next draw starts at the next block.
- ``rows=(start, stop)`` returns ``full_draw[start:stop]``, elements ``start * R`` to
  ``stop * R - 1`` (``R = prod(S[1:])``), computed from their own words only. The counter still
  advances by the whole draw's blocks, so ranks that draw different rows stay in step.
- ``set_part(rows, total)`` makes every later draw without ``rows`` a part of a combined draw: a
  draw of shape ``(stop - start, *R)`` is rows ``rows = (start, stop)`` of the draw of shape
  ``(total, *R)``. The data-parallel batch source sets it on the model's generators for each
  part of a batch, so that P ranks draw together the dropout masks one process would.
- ``keep_mask`` keeps an element where its uniform value ``u`` satisfies ``u >= p`` with ``p``
  rounded to the mask's dtype (as NumPy compares a float32 array with a Python float). It
  compares the element's integer (24 or 53 bits) with ``ceil(dtype(p) * 2**bits)``, which is the
  same test.

Why a float32 takes half a word: on the CPU the Philox words are the cost and a float32 keeps only
24 bits, so two elements a word halve that cost and keep a dropout mask about as cheap as one of
NumPy's default ``Generator.random(dtype=np.float32)``. A float32 and a float64 draw of one state
are therefore different numbers.

Reading and advancing the counter is atomic; generation runs outside the lock from the reserved
blocks, so threads sharing a Generator never get overlapping blocks (which thread gets which
draw depends on timing). On the GPU a draw is one elementwise kernel; its device code
(``_CUDA_PREAMBLE``) is plain C on 64-bit integers, so the tests compile it with a host C++
compiler and compare it with the NumPy path bit for bit (and build it with NVRTC, as every kernel).
"""
import collections
import math
import numbers
import secrets
import threading
from collections.abc import Mapping

import numpy as np

from tinygrad_rnn import backend

_WORDS = 4  # 64-bit words in a Philox4x64 block
_MASK64 = (1 << 64) - 1
# dtype -> (elements a 64-bit word gives, bits an element keeps)
_LAYOUTS = {np.dtype(np.float32): (2, 24), np.dtype(np.float64): (1, 53)}

# A reserved draw: the key, the block it starts at, its flat elements [start, stop) to generate,
# and the shape and dtype they are returned in.
_Draw = collections.namedtuple("_Draw", "seed block start stop shape dtype")

_CUDA_PREAMBLE = r"""
// A draw's stream: the Philox key and the 256-bit block counter it starts at, least significant word first.
struct tgr_stream {
    unsigned long long key[2];
    unsigned long long counter[4];
};

// Word w of a draw: word w % 4 of the Philox4x64-10 block of counter s.counter + w / 4 (mod 2**256).
__device__ inline unsigned long long tgr_philox_word(tgr_stream s, unsigned long long w) {
    unsigned long long x0 = s.counter[0] + (w >> 2), x1 = s.counter[1], x2 = s.counter[2], x3 = s.counter[3];
    if (x0 < (w >> 2)) {  // the low word wrapped: carry into the higher words
        x1 += 1;
        if (x1 == 0) {
            x2 += 1;
            if (x2 == 0) x3 += 1;
        }
    }
    unsigned long long k0 = s.key[0], k1 = s.key[1];
    for (int r = 0; r < 10; ++r) {
        const unsigned long long hi0 = __umul64hi(0xD2E7470EE14C6C93ull, x0), lo0 = 0xD2E7470EE14C6C93ull * x0;
        const unsigned long long hi1 = __umul64hi(0xCA5A826395121157ull, x2), lo1 = 0xCA5A826395121157ull * x2;
        x0 = hi1 ^ x1 ^ k0;
        x1 = lo1;
        x2 = hi0 ^ x3 ^ k1;
        x3 = lo0;
        k0 += 0x9E3779B97F4A7C15ull;  // Weyl key schedule: the key of the next round
        k1 += 0xBB67AE8584CAA73Bull;
    }
    switch (w & 3) {
        case 0: return x0;
        case 1: return x1;
        case 2: return x2;
        default: return x3;
    }
}

// Element g of a float32 draw as an integer: the top 24 bits of half g % 2 (low first) of word g / 2.
__device__ inline unsigned int tgr_bits24(tgr_stream s, unsigned long long g) {
    const unsigned long long word = tgr_philox_word(s, g >> 1);
    return (unsigned int)((g & 1) ? word >> 32 : word & 0xFFFFFFFFull) >> 8;
}

// Element g of a float64 draw as an integer: the top 53 bits of word g.
__device__ inline unsigned long long tgr_bits53(tgr_stream s, unsigned long long g) {
    return tgr_philox_word(s, g) >> 11;
}

// The uniform values: exact, since the integers fit the float's significand.
__device__ inline float tgr_uniform24(tgr_stream s, unsigned long long g) {
    return (float)tgr_bits24(s, g) * (1.0f / 16777216.0f);
}

__device__ inline double tgr_uniform53(tgr_stream s, unsigned long long g) {
    return (double)tgr_bits53(s, g) * (1.0 / 9007199254740992.0);
}
"""

# The kernels' scalar arguments: key words, start-block words (the counter: it enters the kernel
# here only), and the flat index in the full draw of the first element to produce.
_STREAM_PARAMS = "uint64 k0, uint64 k1, uint64 c0, uint64 c1, uint64 c2, uint64 c3, uint64 e0"
_STREAM = "const tgr_stream s = {{k0, k1}, {c0, c1, c2, c3}};\n"
# the elementwise kernels; each writes one ``T y`` (float or double)
_UNIFORM_KERNEL = backend.kernel_source(
    "tgr_philox_uniform", _STREAM_PARAMS, "T y",
    _STREAM + "if (sizeof(T) == 4) y = tgr_uniform24(s, e0 + i); else y = tgr_uniform53(s, e0 + i);", _CUDA_PREAMBLE)
_KEEP_KERNEL = backend.kernel_source(
    "tgr_philox_keep_mask", _STREAM_PARAMS + ", uint64 threshold", "T y",
    _STREAM + "y = (T)((sizeof(T) == 4 ? tgr_bits24(s, e0 + i) : tgr_bits53(s, e0 + i)) >= threshold);",
    _CUDA_PREAMBLE)


class Generator:
    """A counter-based random generator (Philox4x64-10) whose whole state is ``(seed, counter)``.

    Args:
        seed (int | numpy.random.Generator | None): the 128-bit key as an int in [0, 2**128); or
            a NumPy Generator whose seed sequence spawns the key (layers built from one seeded
            Generator get distinct, reproducible keys, and the Generator's own stream, which
            draws their weights, is left untouched); or None for a key from the OS's entropy.
    Attributes:
        seed (int): the key.
        counter (int): the Philox blocks consumed so far (the module docstring gives the layout).
    Raises:
        TypeError: ``seed`` of another type.
        ValueError: an int ``seed`` outside [0, 2**128).
    """

    def __init__(self, seed=None):
        if seed is None:
            seed = secrets.randbits(128)
        elif isinstance(seed, np.random.Generator):
            low, high = seed.bit_generator.seed_seq.spawn(1)[0].generate_state(2, np.uint64)
            seed = int(low) | int(high) << 64
        self.seed = _check_int(seed, "Generator: seed", "an int, a numpy.random.Generator or None", bits=128)
        self.counter = 0
        self.part = None  # ((start, stop), total) while this process holds rows of a combined batch
        self._lock = threading.Lock()

    def set_part(self, rows=None, total=None):
        """Make every draw without ``rows`` the rows ``rows`` of a combined draw of ``total`` rows.

        Args:
            rows (tuple, optional): ``(start, stop)``, this process's rows of the combined batch;
                None (with ``total`` None) ends it: draws are whole again.
            total (int, optional): the rows of the combined batch.
        Raises:
            ValueError: not ``0 <= start <= stop <= total``, or only one of the two given.
        """
        if rows is None and total is None:
            self.part = None
            return
        if not (isinstance(rows, (tuple, list)) and len(rows) == 2 and _is_int(total)
                and all(map(_is_int, rows)) and 0 <= rows[0] <= rows[1] <= total):
            raise ValueError(f"Generator.set_part: rows must be (start, stop) with 0 <= start <= stop <= total, "
                             f"got rows {rows!r} and total {total!r}")
        self.part = ((int(rows[0]), int(rows[1])), int(total))

    def uniform(self, shape, dtype=np.float32, xp=np, rows=None):
        """Uniform samples in [0, 1) (see the module docstring for their bits).

        Args:
            shape (int | tuple): shape ``S`` of the full draw.
            dtype (numpy.dtype): float32 (24 random bits) or float64 (53 random bits).
            xp (module): ``numpy`` or ``cupy``, the device of the result.
            rows (tuple, optional): ``(start, stop)``: return only rows ``start:stop`` of the
                first axis of the full draw. The counter advances by the full draw either way.
        Returns:
            ndarray: ``S``, or ``(stop - start,) + S[1:]`` with ``rows``; ``dtype``, on ``xp``.
        Raises:
            TypeError: ``dtype`` neither float32 nor float64.
            ValueError: a negative or non-int side, ``rows`` outside ``[0, S[0]]`` (or a 0-d
                ``S``), or ``xp`` neither numpy nor cupy with a GPU; the counter is unchanged.
        """
        draw = self._reserve("Generator.uniform", shape, dtype, xp, rows)
        if xp is np:
            u = _bits(draw).astype(draw.dtype)
            u *= 2.0 ** -_LAYOUTS[draw.dtype][1]
            return u.reshape(draw.shape)
        return _launch(xp, _UNIFORM_KERNEL, draw)

    def keep_mask(self, shape, p, dtype=np.float32, xp=np, rows=None):
        """A dropout keep-mask: ``(uniform(shape, dtype, xp, rows) >= p)`` as 0 and 1 in ``dtype``.

        The same state gives the mask of exactly the uniform draw it would give, in one pass
        (one kernel on the GPU).

        Args:
            shape (int | tuple): shape ``S`` of the full mask.
            p (float): drop probability in [0, 1); an element is kept with probability about 1 - p.
            dtype (numpy.dtype): float32 or float64, the mask's dtype (and the uniform draw it compares).
            xp (module): ``numpy`` or ``cupy``, the device of the result.
            rows (tuple, optional): ``(start, stop)``, as in :meth:`uniform`.
        Returns:
            ndarray: ``S``, or ``(stop - start,) + S[1:]`` with ``rows``; ``dtype``, on ``xp``.
        Raises:
            TypeError: ``dtype`` neither float32 nor float64.
            ValueError: ``p`` outside [0, 1), or the errors of :meth:`uniform`; the counter is
                unchanged.
        """
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Generator.keep_mask: p must be in [0, 1), got {p}")
        draw = self._reserve("Generator.keep_mask", shape, dtype, xp, rows)
        threshold = _threshold(p, draw.dtype)
        if xp is np:
            return (_bits(draw) >= threshold).astype(draw.dtype).reshape(draw.shape)
        return _launch(xp, _KEEP_KERNEL, draw, np.uint64(threshold))

    def state_dict(self):
        """The generator's state, ready for ``json.dump``.

        Returns:
            dict: ``{"seed": int, "counter": int}``, Python ints (Python's json keeps them exact).
        """
        with self._lock:
            return {"seed": self.seed, "counter": self.counter}

    def load_state_dict(self, state):
        """Continue from a state given by :meth:`state_dict` (e.g. after a JSON round trip).

        Args:
            state (dict): ``{"seed": int in [0, 2**128), "counter": int >= 0}``.
        Raises:
            TypeError: ``state`` not a mapping, or a value not an int.
            ValueError: missing or unknown keys, or a value out of range. Nothing changes on error.
        """
        where = "Generator.load_state_dict"
        if not isinstance(state, Mapping):
            raise TypeError(f"{where}: state must be a dict, got {type(state).__name__}")
        if set(state) != {"seed", "counter"}:
            raise ValueError(f"{where}: state must have exactly the keys 'seed' and 'counter', got {list(state)}")
        seed = _check_int(state["seed"], f"{where}: seed", bits=128)
        counter = _check_int(state["counter"], f"{where}: counter")
        with self._lock:
            self.seed, self.counter = seed, counter

    def _reserve(self, where, shape, dtype, xp, rows):
        """Check a draw's arguments, then advance the counter past the whole draw atomically.

        Returns:
            _Draw: what to generate and how to return it.
        """
        shape = tuple(shape) if isinstance(shape, (tuple, list)) else (shape,)
        if not all(_is_int(side) and side >= 0 for side in shape):
            raise ValueError(f"{where}: shape must be non-negative ints, got {shape}")
        shape = tuple(int(side) for side in shape)
        if rows is None and self.part is not None:
            rows, total = self.part
            if not shape or shape[0] != rows[1] - rows[0]:
                raise ValueError(f"{where}: this generator draws rows {rows} of a combined batch of {total} "
                                 f"(set_part), so the first axis must be their {rows[1] - rows[0]}; got shape {shape}")
            shape = (total, *shape[1:])
        dtype = np.dtype(dtype)
        if dtype not in _LAYOUTS:
            raise TypeError(f"{where}: dtype must be float32 or float64, got {dtype}")
        if xp is not np and xp is not backend.cupy():
            raise ValueError(f"{where}: xp must be numpy, or cupy where a GPU is present; got {xp!r}")
        size = math.prod(shape)
        start, stop, out_shape = 0, size, shape
        if rows is not None:
            if not (shape and isinstance(rows, (tuple, list)) and len(rows) == 2 and all(map(_is_int, rows))
                    and 0 <= rows[0] <= rows[1] <= shape[0]):
                raise ValueError(f"{where}: rows must be (start, stop) with 0 <= start <= stop <= shape[0], "
                                 f"got {rows!r} for shape {shape}")
            row = math.prod(shape[1:])
            start, stop, out_shape = int(rows[0]) * row, int(rows[1]) * row, (int(rows[1] - rows[0]),) + shape[1:]
        blocks = -(-size // (_WORDS * _LAYOUTS[dtype][0]))
        with self._lock:
            seed, block = self.seed, self.counter
            self.counter = block + blocks
        return _Draw(seed, block, start, stop, out_shape, dtype)


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_int(value, what, kinds="an int", bits=None):
    """``value`` as a Python int: TypeError unless an int, ValueError if negative or ``>= 2**bits``."""
    if not _is_int(value):
        raise TypeError(f"{what} must be {kinds}, got {type(value).__name__}")
    if value < 0 or (bits is not None and value >> bits):
        bound = "non-negative" if bits is None else f"in [0, 2**{bits})"
        raise ValueError(f"{what} must be {bound}, got {value}")
    return int(value)


def _bits(draw):
    """The integers behind flat elements [start, stop) of a draw, on the CPU.

    Returns:
        ndarray: (stop - start,) uint32 of 24-bit values (float32) or uint64 of 53-bit values (float64).
    """
    per_word, bits = _LAYOUTS[draw.dtype]
    first = draw.start // per_word  # the first word needed, counted from the draw's first word
    # NumPy increments its counter before it computes a block
    philox = np.random.Philox(counter=(draw.block + first // _WORDS - 1) % 2**256, key=draw.seed)
    philox.random_raw(first % _WORDS)  # a row range may start inside a block
    words = philox.random_raw(-(-draw.stop // per_word) - first)
    if per_word == 2:
        words = words.astype("<u8", copy=False).view("<u4")  # the low half first, on any host
    skip = draw.start - first * per_word
    return words[skip:skip + draw.stop - draw.start] >> (64 // per_word - bits)


def _threshold(p, dtype):
    """The least integer ``n`` with ``n * 2**-bits >= dtype(p)``: an element is kept when its bits reach it."""
    return math.ceil(float(dtype.type(p)) * 2 ** _LAYOUTS[dtype][1])


def _stream_args(seed, block, start):
    """A kernel's scalar arguments (``_STREAM_PARAMS``) for a draw from ``block`` on, from element ``start``."""
    block %= 2**256
    counter = ((block >> shift) & _MASK64 for shift in (0, 64, 128, 192))
    return tuple(np.uint64(v) for v in (seed & _MASK64, seed >> 64, *counter, start))


def _launch(cupy, kernel, draw, *args):
    """Fill a new GPU array of the draw's shape and dtype with ``kernel`` (a ``backend.KernelSource``)."""
    y = cupy.empty(draw.shape, draw.dtype)
    backend.elementwise_kernel(kernel)(*_stream_args(draw.seed, draw.block, draw.start), *args, y)
    return y

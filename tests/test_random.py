"""Tests of the counter-based generator: known answers, the bit layout, rows, state, threads, CUDA code."""
import json
import math
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes

from tinygrad_rnn.random import _CUDA_PREAMBLE, _KEEP_KERNEL, _UNIFORM_KERNEL, Generator, _stream_args, _threshold

M64 = 2**64 - 1
DTYPES = [np.float32, np.float64]


def philox4x64_10(counter, key):
    """Random123's philox4x64_10 on Python ints: the four words of the block of ``counter``."""
    x = [(counter >> (64 * k)) & M64 for k in range(4)]
    k0, k1 = key & M64, key >> 64
    for _ in range(10):
        p0, p1 = 0xD2E7470EE14C6C93 * x[0], 0xCA5A826395121157 * x[2]
        x = [(p1 >> 64) ^ x[1] ^ k0, p1 & M64, (p0 >> 64) ^ x[3] ^ k1, p0 & M64]
        k0, k1 = (k0 + 0x9E3779B97F4A7C15) & M64, (k1 + 0xBB67AE8584CAA73B) & M64
    return x


def reference_draw(seed, counter, size, dtype):
    """The module docstring's layout on Python ints: ``size`` elements drawn at ``counter``."""
    per_word = 2 if dtype == np.float32 else 1
    words = []
    for block in range(counter, counter + -(-size // (4 * per_word))):
        words += philox4x64_10(block % 2**256, seed)
    if per_word == 2:
        return np.array([(words[j // 2] >> (32 * (j % 2)) & 0xFFFFFFFF) >> 8 for j in range(size)]) * 2.0**-24
    return np.array([words[j] >> 11 for j in range(size)]) * 2.0**-53


def at(seed, counter):
    """A Generator in state ``(seed, counter)``."""
    g = Generator(seed)
    g.counter = counter
    return g


# counters where a draw crosses a carry of the 256-bit Philox counter, or wraps it
CARRIES = [2**64 - 1, 2**128 - 2, 2**192 - 1, 2**256 - 1]
seeds = st.integers(0, 2**128 - 1)
counters = st.integers(0, 2**20) | st.sampled_from(CARRIES)
shapes = array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=9)


# Random123's known-answer vectors (kat_vectors): counter, key, the block's four words.
RANDOM123_VECTORS = [
    (0, 0, [0x16554D9ECA36314C, 0xDB20FE9D672D0FDC, 0xD7E772CEE186176B, 0x7E68B68AEC7BA23B]),
    (2**256 - 1, 2**128 - 1, [0x87B092C3013FE90B, 0x438C3C67BE8D0224, 0x9CC7D7C69CD777B6, 0xA09CAEBF594F0BA0]),
    (0x082EFA98EC4E6C89A4093822299F31D013198A2E03707344243F6A8885A308D3, 0xBE5466CF34E90C6C452821E638D01377,
     [0xA528F45403E61D95, 0x38C72DBD566E9788, 0xA5A1610E72FD18B5, 0x57BD43B5E52B7FE6]),
]


@pytest.mark.parametrize("counter, key, words", RANDOM123_VECTORS)
def test_reference_philox_matches_random123_vectors(counter, key, words):
    assert philox4x64_10(counter, key) == words


@pytest.mark.parametrize("counter, key, words", RANDOM123_VECTORS)
def test_first_block_of_a_float64_draw_is_the_philox_block_of_the_counter(counter, key, words):
    expected = np.array([w >> 11 for w in words]) * 2.0**-53
    np.testing.assert_array_equal(at(key, counter).uniform(4, np.float64), expected)


@given(seed=seeds, counter=counters, sizes=st.lists(st.integers(0, 40), min_size=1, max_size=3),
       dtype=st.sampled_from(DTYPES))
def test_consecutive_draws_follow_the_documented_layout(seed, counter, sizes, dtype):
    g = at(seed, counter)
    for size in sizes:
        expected = reference_draw(seed, g.counter, size, dtype)
        np.testing.assert_array_equal(g.uniform(size, dtype), expected.astype(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("counter", [0, 7, *CARRIES])
def test_draw_equals_numpys_philox_generator(counter, dtype):
    seed = 0x0123456789ABCDEF_FEDCBA9876543210
    numpy_generator = np.random.Generator(np.random.Philox(counter=(counter - 1) % 2**256, key=seed))
    expected = numpy_generator.random((5, 7, 13), dtype=dtype)
    np.testing.assert_array_equal(at(seed, counter).uniform((5, 7, 13), dtype), expected)


def test_same_state_gives_the_same_draw_and_another_seed_another():
    a, b, c = Generator(42), Generator(42), Generator(43)
    x = a.uniform((3, 50))
    np.testing.assert_array_equal(x, b.uniform((3, 50)))
    assert not np.any(x == c.uniform((3, 50)))


@pytest.mark.parametrize("dtype, per_block", [(np.float32, 8), (np.float64, 4)])
@pytest.mark.parametrize("shape", [0, 1, 3, 4, 5, 8, 9, (3, 0, 2), (2, 3, 7)])
def test_consecutive_draws_differ_and_advance_the_counter_by_whole_blocks(shape, dtype, per_block):
    g = Generator(5)
    size = math.prod(np.atleast_1d(shape))
    first, second = g.uniform(shape, dtype), g.uniform(shape, dtype)
    assert g.counter == 2 * math.ceil(size / per_block)
    assert first.shape == second.shape == np.empty(shape).shape and first.dtype == dtype
    assert not np.any(first == second)


@given(seed=seeds, counter=counters, shape=shapes, dtype=st.sampled_from(DTYPES), data=st.data())
def test_rows_of_a_draw_equal_the_rows_of_the_full_draw(seed, counter, shape, dtype, data):
    start = data.draw(st.integers(0, shape[0]), label="start")
    stop = data.draw(st.integers(start, shape[0]), label="stop")
    full, part = at(seed, counter), at(seed, counter)
    expected = full.uniform(shape, dtype)[start:stop]
    np.testing.assert_array_equal(part.uniform(shape, dtype, rows=(start, stop)), expected)
    assert part.counter == full.counter  # the rows consumed the whole draw: the next draws agree
    np.testing.assert_array_equal(part.uniform(shape[-1], dtype), full.uniform(shape[-1], dtype))


def test_ranks_drawing_their_rows_reassemble_the_full_batch_draw():
    shape, cuts = (20, 35, 65), [0, 7, 14, 20]
    full, ranks = Generator(3), [Generator(3) for _ in cuts[1:]]
    for _ in range(3):  # the ranks stay in step over iterations
        parts = [g.keep_mask(shape, 0.4, rows=(a, b)) for g, a, b in zip(ranks, cuts, cuts[1:])]
        np.testing.assert_array_equal(np.concatenate(parts), full.keep_mask(shape, 0.4))
        assert all(g.counter == full.counter for g in ranks)


@pytest.mark.parametrize("dtype", DTYPES)
def test_uniform_lies_in_unit_interval_and_is_roughly_uniform(dtype):
    u = Generator(2024).uniform((200, 1000), dtype)
    assert u.dtype == dtype and u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.005  # 7 standard errors
    counts = np.bincount((u * 16).astype(np.int64).ravel(), minlength=16)
    expected = u.size / 16
    assert ((counts - expected) ** 2 / expected).sum() < 60  # chi-square, 15 degrees of freedom: mean 15


@given(seed=seeds, counter=counters, shape=shapes, dtype=st.sampled_from(DTYPES),
       p=st.floats(0.0, 1.0, exclude_max=True) | st.sampled_from([0.0, 0.5, 1 - 2**-30]), data=st.data())
def test_keep_mask_equals_uniform_compared_with_p(seed, counter, shape, dtype, p, data):
    rows = data.draw(st.none() | st.integers(0, shape[0]).map(lambda start: (start, shape[0])), label="rows")
    u, mask = at(seed, counter), at(seed, counter)
    expected = (u.uniform(shape, dtype, rows=rows) >= p).astype(dtype)
    got = mask.keep_mask(shape, p, dtype, rows=rows)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, expected)
    assert mask.counter == u.counter


@pytest.mark.parametrize("dtype", DTYPES)
def test_keep_mask_keeps_an_element_equal_to_p_and_drops_it_for_the_next_p_up(dtype):
    u = Generator(8).uniform(1000, dtype)
    p = float(np.sort(u)[100])  # below 0.5, where the next float up is not a multiple of 2**-24
    assert (Generator(8).keep_mask(1000, p, dtype) == (u >= p)).all() and (u == p).any()
    above = float(np.nextafter(dtype(p), dtype(1)))
    assert Generator(8).keep_mask(1000, above, dtype)[u == p].sum() == 0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_rate_is_near_one_minus_p(p, dtype):
    mask = Generator(11).keep_mask((100, 1000), p, dtype)
    assert set(np.unique(mask)) <= {0.0, 1.0}
    assert abs(mask.mean() - (1 - p)) < 0.006  # 6 standard errors at p = 0.5


def test_state_dict_survives_json_and_continues_the_stream():
    g = Generator(2**100 + 12345)
    g.counter = 2**70
    g.uniform((4, 5))
    state = json.loads(json.dumps(g.state_dict()))
    assert state == {"seed": 2**100 + 12345, "counter": 2**70 + 3}
    resumed = Generator(0)
    resumed.load_state_dict(state)
    np.testing.assert_array_equal(resumed.keep_mask((6, 7), 0.3), g.keep_mask((6, 7), 0.3))
    assert resumed.state_dict() == g.state_dict()


@pytest.mark.parametrize("state, error", [
    ([1, 2], TypeError),
    ({"seed": 1}, ValueError),
    ({"seed": 1, "counter": 2, "extra": 3}, ValueError),
    ({"seed": "1", "counter": 2}, TypeError),
    ({"seed": None, "counter": 2}, TypeError),
    ({"seed": 1, "counter": 2.0}, TypeError),
    ({"seed": 1, "counter": True}, TypeError),
    ({"seed": -1, "counter": 2}, ValueError),
    ({"seed": 2**128, "counter": 2}, ValueError),
    ({"seed": 1, "counter": -1}, ValueError),
])
def test_load_state_dict_rejects_bad_states_and_changes_nothing(state, error):
    g = Generator(7)
    g.counter = 9
    with pytest.raises(error, match="Generator.load_state_dict"):
        g.load_state_dict(state)
    assert g.state_dict() == {"seed": 7, "counter": 9}


@pytest.mark.parametrize("seed, error", [(-1, ValueError), (2**128, ValueError), ("1", TypeError),
                                         (1.0, TypeError), (True, TypeError)])
def test_generator_rejects_bad_seeds(seed, error):
    with pytest.raises(error, match="Generator: seed"):
        Generator(seed)


def test_seeds_from_a_numpy_generator_are_distinct_and_reproducible():
    rng = np.random.default_rng(7)
    a, b = Generator(rng), Generator(rng)
    assert a.seed != b.seed and Generator(np.random.default_rng(7)).seed == a.seed
    assert a.seed >> 64 and Generator(np.uint64(3)).seed == 3


def test_no_seed_draws_a_fresh_key():
    assert Generator().seed != Generator().seed


@pytest.mark.parametrize("call, error, match", [
    (lambda g: g.uniform(4, np.int32), TypeError, "dtype must be float32 or float64"),
    (lambda g: g.uniform(4, np.float16), TypeError, "dtype must be float32 or float64"),
    (lambda g: g.uniform((2, -1)), ValueError, "shape"),
    (lambda g: g.uniform((2, 1.5)), ValueError, "shape"),
    (lambda g: g.uniform((4, 3), rows=(2, 5)), ValueError, "rows"),
    (lambda g: g.uniform((4, 3), rows=(3, 2)), ValueError, "rows"),
    (lambda g: g.uniform((), rows=(0, 0)), ValueError, "rows"),
    (lambda g: g.uniform(4, xp=math), ValueError, "xp must be numpy"),
    (lambda g: g.keep_mask(4, 1.0), ValueError, r"p must be in \[0, 1\)"),
    (lambda g: g.keep_mask(4, -0.1), ValueError, r"p must be in \[0, 1\)"),
    (lambda g: g.keep_mask(4, float("nan")), ValueError, r"p must be in \[0, 1\)"),
    (lambda g: g.keep_mask(4, 0.5, np.int8), TypeError, "Generator.keep_mask: dtype"),
])
def test_invalid_draws_raise_and_leave_the_counter(call, error, match):
    g = Generator(1)
    with pytest.raises(error, match=match):
        call(g)
    assert g.counter == 0


def test_threads_sharing_a_generator_never_get_overlapping_blocks():
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, so an unlocked counter would race
    try:
        shared, draws = Generator(99), [[] for _ in range(4)]

        def work(out):
            for _ in range(300):
                out.append(tuple(shared.uniform(8, np.float64)))  # two blocks each

        threads = [threading.Thread(target=work, args=(out,)) for out in draws]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert shared.counter == 4 * 300 * 2
    replay = Generator(99)
    assert sorted(sum(draws, [])) == sorted(tuple(replay.uniform(8, np.float64)) for _ in range(1200))


# The CUDA code compiled for the host: the preamble and both kernel bodies, with CuPy's names
# (scalar parameters, ``i`` the output's flat index, ``y`` the output element of type ``T``).
HOST_HARNESS = r"""
#include <cstdio>
#include <cstdlib>
#include <cstring>
#define __device__
static inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
    return (unsigned long long)(((unsigned __int128)a * b) >> 64);
}
%(preamble)s
template <typename T> T uniform_kernel(%(uniform_params)s, long long i) { T y; %(uniform_body)s return y; }
template <typename T> T keep_kernel(%(keep_params)s, long long i) { T y; %(keep_body)s return y; }

// argv: k0 k1 c0 c1 c2 c3 e0, the element count, the float32 and float64 keep thresholds
int main(int argc, char **argv) {
    if (argc != 11) return 2;
    unsigned long long a[10];
    for (int k = 0; k < 10; ++k) a[k] = strtoull(argv[k + 1], 0, 10);
    for (long long i = 0; i < (long long)a[7]; ++i) {
        const float f = uniform_kernel<float>(a[0], a[1], a[2], a[3], a[4], a[5], a[6], i);
        const double d = uniform_kernel<double>(a[0], a[1], a[2], a[3], a[4], a[5], a[6], i);
        unsigned int fbits;
        unsigned long long dbits;
        memcpy(&fbits, &f, sizeof f);
        memcpy(&dbits, &d, sizeof d);
        printf("%%u %%llu %%d %%d\n", fbits, dbits,
               (int)keep_kernel<float>(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[8], i),
               (int)keep_kernel<double>(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[9], i));
    }
    return 0;
}
"""


@pytest.fixture(scope="module")
def host_kernels(tmp_path_factory):
    """The CUDA preamble and kernel bodies compiled with g++ for the CPU: a program to run."""
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("no C++ compiler (g++) to compile the CUDA preamble for the host")

    def params(kernel):
        return kernel.in_params.replace("uint64", "unsigned long long")

    source = HOST_HARNESS % {"preamble": _CUDA_PREAMBLE, "uniform_params": params(_UNIFORM_KERNEL),
                             "uniform_body": _UNIFORM_KERNEL.body, "keep_params": params(_KEEP_KERNEL),
                             "keep_body": _KEEP_KERNEL.body}
    directory = tmp_path_factory.mktemp("philox_host")
    (directory / "philox.cpp").write_text(source)
    program = directory / "philox"
    subprocess.run([compiler, "-O1", "-std=c++11", "-Wall", "-Wextra", "-Werror", "-o", str(program),
                    str(directory / "philox.cpp")], check=True, capture_output=True, text=True)
    return program


# (seed, counter, shape, rows): row ranges starting mid-block and mid-word, and draws across carries
CASES = [
    (0, 0, (33,), None),
    (2**128 - 1, 5, (7, 5), (1, 6)),
    (0x243F6A8885A308D3_13198A2E03707344, 123456789, (4, 3, 3), (3, 4)),
    (17, 2**64 - 1, (6, 5), (0, 6)),
    (17, 2**64 - 1, (6, 5), (1, 3)),
    (2**127 + 3, 2**128 - 2, (9, 7), (2, 9)),
    (5, 2**192 - 1, (3, 11), None),
    (5, 2**256 - 1, (5, 5), (1, 5)),
]


def drop_probabilities(p, seed, counter, shape, rows):
    """``p`` for each dtype; ``"drawn"``: an element of that dtype's draw, so one element sits on the threshold."""
    if p != "drawn":
        return {dtype: p for dtype in DTYPES}
    return {dtype: float(at(seed, counter).uniform(shape, dtype, rows=rows).flat[-1]) for dtype in DTYPES}


@pytest.mark.parametrize("p", [0.0, 0.3, 1 - 2**-30, "drawn"])
@pytest.mark.parametrize("seed, counter, shape, rows", CASES)
def test_cuda_code_on_the_host_matches_numpy_bit_for_bit(host_kernels, seed, counter, shape, rows, p):
    start, stop = (0, shape[0]) if rows is None else rows
    row = math.prod(shape[1:])
    ps = drop_probabilities(p, seed, counter, shape, rows)
    thresholds = [_threshold(ps[dtype], np.dtype(dtype)) for dtype in DTYPES]
    args = [*_stream_args(seed, counter, start * row), (stop - start) * row, *thresholds]
    output = subprocess.run([str(host_kernels), *map(str, args)], check=True, capture_output=True, text=True)
    columns = np.array([line.split() for line in output.stdout.splitlines()], dtype=np.uint64).reshape(-1, 4).T
    out_shape = (stop - start,) + shape[1:]
    for dtype, bits, keep in [(np.float32, columns[0].astype(np.uint32), columns[2]),
                              (np.float64, columns[1], columns[3])]:
        u = at(seed, counter).uniform(shape, dtype, rows=rows)
        np.testing.assert_array_equal(bits.view(dtype).reshape(out_shape), u)
        mask = at(seed, counter).keep_mask(shape, ps[dtype], dtype, rows=rows)
        np.testing.assert_array_equal(keep.reshape(out_shape), mask)


BIG_CASES = [(3, 0, (20, 35, 650), None), (3, 9, (20, 35, 650), (7, 13))]  # a BetterLSTMLM mask, and a rank's rows


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed, counter, shape, rows", CASES + BIG_CASES)
def test_gpu_uniform_equals_numpy_bit_for_bit(cupy, seed, counter, shape, rows, dtype):
    gpu, cpu = at(seed, counter), at(seed, counter)
    u = gpu.uniform(shape, dtype, xp=cupy, rows=rows)
    assert isinstance(u, cupy.ndarray) and u.dtype == dtype
    np.testing.assert_array_equal(cupy.asnumpy(u), cpu.uniform(shape, dtype, rows=rows))
    assert gpu.counter == cpu.counter


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.0, 0.3, 0.65, 1 - 2**-30, "drawn"])
@pytest.mark.parametrize("seed, counter, shape, rows", [CASES[1], CASES[4], CASES[7], BIG_CASES[1]])
def test_gpu_keep_mask_equals_numpy_bit_for_bit(cupy, seed, counter, shape, rows, p, dtype):
    gpu, cpu = at(seed, counter), at(seed, counter)
    p = drop_probabilities(p, seed, counter, shape, rows)[dtype]
    mask = gpu.keep_mask(shape, p, dtype, xp=cupy, rows=rows)
    assert isinstance(mask, cupy.ndarray) and mask.dtype == dtype
    np.testing.assert_array_equal(cupy.asnumpy(mask), cpu.keep_mask(shape, p, dtype, rows=rows))
    assert gpu.counter == cpu.counter


def test_a_numpy_generator_spawns_distinct_keys_without_drawing_from_its_stream():
    rng = np.random.default_rng(5)
    first, second = Generator(rng), Generator(rng)
    assert first.seed != second.seed
    assert rng.random() == np.random.default_rng(5).random()  # the weights drawn from rng are unchanged
    again = np.random.default_rng(5)
    assert (Generator(again).seed, Generator(again).seed) == (first.seed, second.seed)


def test_a_generator_with_a_part_draws_those_rows_of_the_combined_draw():
    whole = Generator(9).uniform((5, 3), np.float64)
    part = Generator(9)
    part.set_part((1, 4), 5)
    np.testing.assert_array_equal(part.uniform((3, 3), np.float64), whole[1:4])
    assert part.counter == Generator(9).counter + 4  # advanced by the combined draw: ceil(15 / 4) blocks
    with pytest.raises(ValueError, match=r"draws rows \(1, 4\) of a combined batch of 5 .* got shape \(5, 3\)"):
        part.uniform((5, 3))
    part.set_part()
    assert part.uniform((5, 3)).shape == (5, 3)
    with pytest.raises(ValueError, match="Generator.set_part: rows must be"):
        part.set_part((0, 2), None)

"""oneDNN's matmul (the ``onednn`` extra) against float64 products, and the sequence ops' steps on it
against the NumPy path."""
import contextlib
import os
import platform
import subprocess
import sys
import threading

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import in_ci
from tinygrad_rnn import compiled
from tinygrad_rnn import functions as F
from tinygrad_rnn import onednn
from tinygrad_rnn.core import Variable, using_config
from tinygrad_rnn.functions import linalg, rnn
from tinygrad_rnn.testing import float_arrays, seeds


@pytest.fixture(scope="module")
def library():
    """oneDNN's library; skips without the extra, except in CI on x86-64 Linux, where the dev extra installs it."""
    if not onednn.available():
        if in_ci() and sys.platform == "linux" and platform.machine() == "x86_64":
            pytest.fail("CI must test oneDNN's products, but the onednn extra is missing (pip install -e '.[dev]')")
        pytest.skip("oneDNN is not installed (pip install 'tinygrad_rnn[onednn]')")
    return onednn.library()


@pytest.fixture(autouse=True)
def one_blas_thread(monkeypatch):
    """oneDNN runs beside a BLAS on one thread only (``compiled.onednn``); these tests run it whatever
    the thread settings of the suite."""
    monkeypatch.setattr(compiled, "blas_threads", lambda: 1)


def _bound(x, w, bias=None):
    """The rounding error bound of a float32 product summed in any order: gamma_{K+1} * (|x| @ |w|), u = 2**-24
    (gamma_{K+2} * (|x| @ |w| + |bias|) with a bias, one more term of the sum).

    Each output is a sum of K products; every rounding (products, partial sums, the store) is at most
    one unit u, and whatever the order or blocking oneDNN and BLAS choose, the error stays within
    gamma_n = n u / (1 - n u) of the sum of magnitudes (Higham, Accuracy and Stability, 3.1).
    """
    n, u = x.shape[1] + (1 if bias is None else 2), 2.0 ** -24
    magnitudes = np.abs(x.astype(np.float64)) @ np.abs(w.astype(np.float64))
    return n * u / (1 - n * u) * (magnitudes if bias is None else magnitudes + np.abs(bias))


@given(m=st.integers(1, 9), k=st.integers(1, 40), n=st.integers(1, 40), packed=st.booleans(),
       transposed=st.booleans(), with_bias=st.booleans(), seed=seeds())
def test_matmul_is_within_float32_rounding_of_the_float64_product(library, m, k, n, packed, transposed, with_bias,
                                                                   seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((n, k)).astype(np.float32).T if transposed else rng.standard_normal((k, n)).astype(
        np.float32)  # a transposed view, as the backward passes Wh.T
    bias = rng.standard_normal(n).astype(np.float32) if with_bias else None
    out = np.empty((m, n), np.float32)
    product = onednn.MatMul(x, w, out, packed=packed, bias=bias)
    product(x)
    exact = x.astype(np.float64) @ w.astype(np.float64) + (0 if bias is None else bias)
    assert np.all(np.abs(out - exact) <= _bound(x, w, bias))
    x2 = rng.standard_normal((m, k)).astype(np.float32)  # another x, the same layout: the handles follow it
    product(x2)
    exact = x2.astype(np.float64) @ w.astype(np.float64) + (0 if bias is None else bias)
    assert np.all(np.abs(out - exact) <= _bound(x2, w, bias))


def test_matmul_packs_a_copy_of_the_weights_and_reads_unpacked_ones_in_place(library):
    x, w, out = np.ones((2, 3), np.float32), np.ones((3, 4), np.float32), np.empty((2, 4), np.float32)
    packed, in_place = onednn.MatMul(x, w, out), onednn.MatMul(x, w, out, packed=False)
    w[:] = 2
    packed(x)
    np.testing.assert_array_equal(out, 3)
    in_place(x)
    np.testing.assert_array_equal(out, 6)
    assert packed.impl and in_place.impl  # the implementation oneDNN chose, for the benchmarks


def test_matmul_rejects_other_dtypes_and_shapes_that_do_not_fit(library):
    x, w, out = np.ones((2, 3), np.float32), np.ones((3, 4), np.float32), np.empty((2, 4), np.float32)
    with pytest.raises(TypeError, match=r"onednn.MatMul: w must be a 2-D float32 array, got \(3, 4\) float64"):
        onednn.MatMul(x, w.astype(np.float64), out)
    with pytest.raises(ValueError, match=r"shapes \(2, 3\) @ \(3, 4\) \+ bias None -> \(2, 5\) do not fit"):
        onednn.MatMul(x, w, np.empty((2, 5), np.float32))
    with pytest.raises(ValueError, match=r"shapes \(2, 3\) @ \(3, 4\) \+ bias \(3,\) -> \(2, 4\) do not fit"):
        onednn.MatMul(x, w, out, bias=np.ones(3, np.float32))
    with pytest.raises(TypeError, match=r"onednn.MatMul: bias must be a 1-D float32 array, got \(1, 4\) float32"):
        onednn.MatMul(x, w, out, bias=np.ones((1, 4), np.float32))


def test_acquire_reuses_an_idle_matmul_of_the_layout_with_the_new_weights(library):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 7)).astype(np.float32)
    w1, w2 = (rng.standard_normal((4, 7)).astype(np.float32).T for _ in range(2))  # transposed views, as Wh.T
    out1, out2 = np.empty((5, 4), np.float32), np.empty((5, 4), np.float32)
    with onednn.acquire(x, w1, out1) as first:
        first(x)
        with onednn.acquire(x, w1, out2) as nested:  # the first one is busy: another is built
            assert nested is not first
    with onednn.acquire(x, w2, out2) as again:
        assert again in (first, nested) and again.out is out2
        again(x)
    fresh = np.empty((5, 4), np.float32)
    onednn.MatMul(x, w2, fresh)(x)
    np.testing.assert_array_equal(out2, fresh)  # repacked: the second weights, bit for bit as a new MatMul
    assert first.out is None and first._w is None  # idle, it keeps no array of the caller alive
    seen = []
    thread = threading.Thread(target=lambda: seen.append(onednn.acquire(x, w1, out1).__enter__()))
    thread.start()
    thread.join()
    assert seen[0] not in (first, nested)  # each thread has its own pool


def test_load_refuses_another_layout(library):
    x, w, out = np.ones((2, 3), np.float32), np.ones((3, 4), np.float32), np.empty((2, 4), np.float32)
    product = onednn.MatMul(x, w, out)
    with pytest.raises(ValueError, match=r"onednn.MatMul.load: w \(4, 3\) float32, out \(2, 4\) float32 and bias "
                                         r"None .* are not the layouts it was built for"):
        product.load(np.ones((4, 3), np.float32), out)


def test_a_missing_library_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(onednn, "library_path", lambda: None)
    onednn.library.cache_clear()
    try:
        assert not onednn.available()
        with pytest.raises(ImportError, match=r"oneDNN's matmul: needs the optional package onednn-cpu-gomp, which "
                                              r"is not installed: pip install 'tinygrad_rnn\[onednn\]'"):
            onednn.MatMul(np.ones((1, 1), np.float32), np.ones((1, 1), np.float32), np.ones((1, 1), np.float32))
    finally:
        onednn.library.cache_clear()  # the next call loads the real library again


@contextlib.contextmanager
def _every_product_on_onednn():
    """Lower the size thresholds of the sequence ops' products (per step, and Wh's gradient) to 0 and
    record the ``MatMul`` they acquire."""
    used = []
    acquire = onednn.acquire

    @contextlib.contextmanager
    def recorded(*args, **kwargs):
        with acquire(*args, **kwargs) as matmul:
            used.append(matmul)
            yield matmul

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rnn, "ONEDNN_MIN_MULTIPLY_ADDS", 0)
        patch.setattr(linalg, "ONEDNN_MIN_MULTIPLY_ADDS", 0)
        patch.setattr(onednn, "acquire", recorded)
        yield used


def _values_and_gradients(op, arrays, seed, compiled):
    """The outputs of ``op`` and the gradients of all its inputs for a random upstream gradient."""
    rng = np.random.default_rng(seed)
    with using_config("compiled_kernels", compiled):
        inputs = [Variable(a) for a in arrays]
        outputs = op(*inputs)
        loss = sum((F.sum(y * rng.standard_normal(y.shape).astype(y.dtype)) for y in outputs[1:]),
                   F.sum(outputs[0] * rng.standard_normal(outputs[0].shape).astype(arrays[0].dtype)))
        loss.backward()
    return [y.data for y in outputs] + [x.grad.data for x in inputs]


@st.composite
def _layer(draw, dtype):
    """A random LSTM (blocks 4) or GRU (blocks 3) layer's inputs of ``dtype``, and its op."""
    cell = draw(st.sampled_from(["lstm", "gru"]))
    blocks = 4 if cell == "lstm" else 3
    n, t, h = draw(st.integers(1, 4)), draw(st.integers(1, 5)), draw(st.integers(1, 6))
    arrays = [draw(float_arrays((t, n, blocks * h), -2.0, 2.0, dtype)), draw(float_arrays((n, h), -1.0, 1.0, dtype))]
    arrays += [draw(float_arrays((n, h), -2.0, 2.0, dtype))] if cell == "lstm" else []
    arrays += [draw(float_arrays((h, blocks * h), -1.0, 1.0, dtype))]
    arrays += [draw(float_arrays((h,), -1.0, 1.0, dtype))] if cell == "gru" else []
    return (F.lstm_sequence if cell == "lstm" else F.gru_sequence), arrays


@given(layer=_layer(np.float32), numba=st.booleans(), seed=seeds())
def test_sequence_ops_on_onednn_match_the_numpy_path_in_float32(library, layer, numba, seed):
    # Only the summation order of the step products differs, by a few float32 units of each
    # pre-activation; the element-wise steps (tanh, sigmoid, products with states and gates of
    # magnitude <= about 2) carry them on without growth over these few steps: the suite's float32
    # tolerance holds
    op, arrays = layer
    with _every_product_on_onednn() as used, pytest.MonkeyPatch.context() as patch:
        if not numba:  # oneDNN's products with NumPy's element-wise steps, as where Numba is not installed
            patch.setattr(rnn, "_compiled_kernels", lambda x: None)
        got = _values_and_gradients(op, arrays, seed, True)
    assert len(used) == 3  # one MatMul for the forward's steps, one for the backward's, one for Wh's gradient
    want = _values_and_gradients(op, arrays, seed, False)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype == np.float32
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


@given(layer=_layer(np.float64), seed=seeds())
def test_float64_sequence_ops_stay_on_numpy(library, layer, seed):
    op, arrays = layer
    with _every_product_on_onednn() as used:
        got = _values_and_gradients(op, arrays, seed, True)
    assert used == []
    want = _values_and_gradients(op, arrays, seed, False)  # Numba's steps, if any: libm's tanh, NumPy's to 1 ulp
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-15)


def test_the_switch_and_a_missing_extra_leave_the_products_to_numpy(library, monkeypatch):
    op, arrays = F.lstm_sequence, [np.ones(s, np.float32) for s in [(2, 3, 8), (3, 2), (3, 2), (2, 8)]]
    with _every_product_on_onednn() as used:
        _values_and_gradients(op, arrays, 0, False)
        assert used == []
        monkeypatch.setattr(compiled, "_onednn_module", lambda: None)
        _values_and_gradients(op, arrays, 0, True)
        assert used == []


def test_threads_running_sequence_ops_on_onednn_get_their_own_results(library):
    rng = np.random.default_rng(0)
    layers = [[rng.uniform(-1, 1, s).astype(np.float32) for s in [(6, 3, 32), (3, 8), (3, 8), (8, 32)]]
              for _ in range(4)]
    with _every_product_on_onednn():
        want = [_values_and_gradients(F.lstm_sequence, arrays, 0, True) for arrays in layers]
        got = [None] * len(layers)

        def run(i):
            for _ in range(20):
                got[i] = _values_and_gradients(F.lstm_sequence, layers[i], 0, True)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(layers))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    for g, w in zip(got, want, strict=True):
        for a, b in zip(g, w, strict=True):
            np.testing.assert_array_equal(a, b)


_FORKED = """
import os, sys
import numpy as np
from tinygrad_rnn import functions as F, onednn
from tinygrad_rnn.functions import linalg, rnn
rnn.ONEDNN_MIN_MULTIPLY_ADDS = 0
arrays = [np.full(s, 0.1, np.float32) for s in [(3, 64, 1024), (64, 256), (64, 256), (256, 1024)]]
want = F.lstm_sequence(*arrays)[0].data  # on oneDNN, with two OpenMP threads
pid = os.fork()
if pid == 0:
    try:  # on BLAS: it must finish, with the same values up to rounding
        ok = not onednn.usable() and np.allclose(F.lstm_sequence(*arrays)[0].data, want, rtol=1e-5, atol=1e-6)
        onednn.MatMul(arrays[1], arrays[3], np.empty((64, 1024), np.float32))
    except RuntimeError as e:
        os._exit(0 if ok and "forked after oneDNN loaded" in str(e) else 1)
    os._exit(1)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def test_a_child_forked_after_onednn_ran_on_threads_uses_blas_instead_of_hanging(library):
    # oneDNN on two OpenMP threads, beside a BLAS on one (where compiled.onednn lets it run)
    env = {**os.environ, "OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", _FORKED], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("given, wanted", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_loading_makes_openmps_threads_wait_passively_unless_the_user_said_otherwise(library, given, wanted):
    code = "import os; from tinygrad_rnn import onednn; onednn.library(); print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given:
        env["OMP_WAIT_POLICY"] = given
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.split() == [wanted], done.stderr


@contextlib.contextmanager
def _products_recorded():
    """Record the operands of every product ``functions.linalg.product`` sends to oneDNN."""
    calls, real = [], onednn.product
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(onednn, "product", lambda a, b, bias=None: calls.append((a, b, bias)) or real(a, b, bias))
        yield calls


@given(m=st.integers(1, 60), k=st.integers(1, 60), n=st.integers(1, 60), transposed=st.booleans(), seed=seeds())
def test_linear_products_on_onednn_are_within_float32_rounding(library, m, k, n, transposed, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((k, m)).astype(np.float32).T if transposed else rng.standard_normal((m, k)).astype(
        np.float32)  # x.T, as Linear's backward passes it
    b = rng.standard_normal((k, n)).astype(np.float32)
    with _products_recorded() as calls, pytest.MonkeyPatch.context() as patch:
        patch.setattr(linalg, "ONEDNN_MIN_MULTIPLY_ADDS", 0)
        got = linalg.product(a, b)
    assert len(calls) == 1 and got.shape == (m, n) and got.dtype == np.float32
    assert np.all(np.abs(got - a.astype(np.float64) @ b.astype(np.float64)) <= _bound(a, b))


def test_linear_products_stay_on_numpy_outside_the_shapes_and_dtypes_onednn_wins(library):
    rng = np.random.default_rng(0)
    big = rng.standard_normal((512, 16)).astype(np.float32), rng.standard_normal((16, 512)).astype(np.float32)
    with _products_recorded() as calls:
        linalg.product(*big)
        assert len(calls) == 1  # 2**22 multiply-adds, 512 columns, 2**18 results: oneDNN's
        for a, b in [(big[0][:8], big[1]),  # 2**16 multiply-adds: its call overhead would lose
                     (big[0], np.ones((16, 513), np.float32)),  # too many columns
                     (np.ones((1025, 16), np.float32), big[1]),  # too many results
                     (big[0][::-1], big[1]),  # a negative stride
                     (big[0].astype(np.float64), big[1].astype(np.float64))]:
            np.testing.assert_array_equal(linalg.product(a, b), a @ b)
        with using_config("compiled_kernels", False):
            np.testing.assert_array_equal(linalg.product(*big), big[0] @ big[1])
        assert len(calls) == 1


@given(seed=seeds(), tied=st.booleans())
def test_linear_on_onednn_gives_the_numpy_paths_values_and_gradients_within_float32_rounding(library, seed, tied):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((3, 40, 16)).astype(np.float32)
    w = rng.standard_normal((48, 16)).astype(np.float32).T if tied else rng.standard_normal((16, 48)).astype(
        np.float32)  # tied: the embedding's transpose, whose gradient comes in its layout
    b, gy = rng.standard_normal(48).astype(np.float32), rng.standard_normal((3, 40, 48)).astype(np.float32)
    results = []
    for compiled_kernels in (True, False):
        with using_config("compiled_kernels", compiled_kernels), _products_recorded() as calls, \
                pytest.MonkeyPatch.context() as patch:
            patch.setattr(linalg, "ONEDNN_MIN_MULTIPLY_ADDS", 0)
            inputs = [Variable(v) for v in (x, w, b)]
            y = F.linear(*inputs)
            F.sum(y * gy).backward()
        assert len(calls) == (3 if compiled_kernels else 0)
        results.append([y.data] + [v.grad.data for v in inputs])
    assert results[0][2].strides == results[1][2].strides == w.strides
    for got, want in zip(*results, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_onednn_runs_only_beside_a_blas_on_one_thread(library, monkeypatch):
    x = np.ones((2, 3), np.float32)
    assert compiled.onednn(x) is onednn
    monkeypatch.setattr(compiled, "blas_threads", lambda: 2)
    assert compiled.onednn(x) is None
    with _products_recorded() as calls, pytest.MonkeyPatch.context() as patch:
        patch.setattr(linalg, "ONEDNN_MIN_MULTIPLY_ADDS", 0)
        linalg.product(x, np.ones((3, 4), np.float32))
    assert calls == []


@pytest.mark.parametrize("variables, wanted", [({"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "4"}, "1"),
                                               ({"GOTO_NUM_THREADS": "3", "OMP_NUM_THREADS": "1"}, "3"),
                                               ({"OMP_NUM_THREADS": "2"}, "2"),
                                               ({}, str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                                        else os.cpu_count()))])
def test_blas_threads_reads_the_variables_openblas_reads_in_its_order(variables, wanted):
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS",
                                                               "OMP_NUM_THREADS")}
    code = "from tinygrad_rnn import compiled; print(compiled.blas_threads())"
    done = subprocess.run([sys.executable, "-c", code], env={**env, **variables}, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and done.stdout.split() == [wanted], done.stderr

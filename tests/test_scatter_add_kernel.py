"""The compiled scatter-add of rows (the ``cpu`` extra) behind the gradients of embed_id and getitem
with an integer array, against NumPy's ``add.at``: the same bits, the same errors."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinygrad_rnn import functions as F
from tinygrad_rnn.core import Variable, using_config
from tinygrad_rnn.testing import float_arrays, shapes

INT_DTYPES = [np.int8, np.int32, np.int64, np.uint8, np.uint64]


def _ids(shape, low, high):
    """Ids of ``shape`` in [low, high), of any integer dtype that holds them."""
    dtypes = [d for d in INT_DTYPES if np.iinfo(d).min <= low]
    return st.sampled_from(dtypes).flatmap(
        lambda dtype: hnp.arrays(np.dtype(dtype), shape, elements=st.integers(low, high - 1)))


@st.composite
def _embed_case(draw):
    # few rows and up to 64 ids: most rows are hit several times, where the order of the sums shows
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    v, d = draw(st.integers(1, 5)), draw(st.integers(0, 4))
    ids = draw(_ids(shapes(max_dims=3), 0, v))
    return ids, draw(float_arrays((v, d), dtype=dtype)), draw(float_arrays(ids.shape + (d,), dtype=dtype))


@st.composite
def _getitem_case(draw):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    x = draw(float_arrays(shapes(min_dims=1), dtype=dtype))
    index = draw(_ids(shapes(max_dims=3), -len(x), len(x)))  # negative indices count from the end
    return x, index, draw(float_arrays(index.shape + x.shape[1:], dtype=dtype))


def _grad(op, x, index, gy, compiled):
    """The gradient of ``op``'s float input for the upstream gradient ``gy``, on the compiled path or NumPy's."""
    with using_config("compiled_kernels", compiled):
        x = Variable(x)
        op(x, index).backward(grad=gy)
    return x.grad.data


def _embed(W, ids):
    return F.embed_id(ids, W)


@given(case=_embed_case())
def test_compiled_embed_id_gradient_has_the_numpy_paths_bits(kernels, case):
    ids, W, gy = case
    np.testing.assert_array_equal(_grad(_embed, W, ids, gy, True), _grad(_embed, W, ids, gy, False))


@given(case=_getitem_case())
def test_compiled_getitem_gradient_has_the_numpy_paths_bits(kernels, case):
    x, index, gy = case
    np.testing.assert_array_equal(_grad(F.getitem, x, index, gy, True), _grad(F.getitem, x, index, gy, False))


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "numpy"])
def test_ids_changed_out_of_range_before_backward_raise_on_both_paths(kernels, compiled):
    with using_config("compiled_kernels", compiled):
        for bad, message in [(7, "index 7 is out of bounds for axis 0 with size 3"),
                             (-4, "index -4 is out of bounds for axis 0 with size 3")]:
            index, x = np.array([0, 2, 1]), Variable(np.ones((3, 2)))
            y = F.getitem(x, index)
            index[1] = bad
            with pytest.raises(IndexError, match=message):
                y.backward(grad=np.ones((3, 2)))
        ids = np.array([0, 2, 1], np.uint8)
        y = F.embed_id(ids, Variable(np.ones((3, 2), np.float32)))
        ids[1] = 7
        with pytest.raises(IndexError, match=r"embed_id: ids must lie in \[0, 3\), got range \[0, 7\]"):
            y.backward(grad=np.ones((3, 2), np.float32))


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "numpy"])
def test_embed_id_keeps_its_checked_signed_ids_for_backward(kernels, compiled):
    with using_config("compiled_kernels", compiled):
        ids, W = np.array([0, 2, 2]), Variable(np.zeros((3, 2)))
        y = F.embed_id(ids, W)
        ids[:] = 1
        y.backward(grad=np.ones((3, 2)))
    np.testing.assert_array_equal(W.grad.data, [[1, 1], [0, 0], [2, 2]])


def test_the_compiled_loop_runs_only_where_it_serves(kernels, monkeypatch):
    calls = []
    loop = kernels.scatter_add_rows
    monkeypatch.setattr(kernels, "scatter_add_rows", lambda *args: calls.append(args[1].dtype) or loop(*args))
    for dtype, compiled, runs in [(np.float32, True, True), (np.float64, True, True),
                                  (np.float16, True, False), (np.float64, False, False)]:
        calls.clear()
        with using_config("compiled_kernels", compiled):
            F.sum(F.embed_id(np.array([[0, 1]], np.int32), Variable(np.ones((2, 3), dtype)))).backward()
        assert calls == ([np.int32] if runs else []), (dtype, compiled)
    calls.clear()
    F.sum(F.getitem(Variable(np.ones((4, 2))), np.array([True, False, True, True]))).backward()  # a mask
    assert not calls

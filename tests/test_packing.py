import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from tinygrad_rnn import Parameter, packing
from tinygrad_rnn.testing import shapes


class Marked(np.ndarray):
    """An ndarray subclass, as the host-read tests guard parameters with one."""


def test_groups_keep_first_appearance_order_and_split_by_dtype():
    a, b, c = Parameter(np.zeros(2, np.float32)), Parameter(np.zeros(3)), Parameter(np.zeros(1, np.float32))
    groups = packing.groups([("a", a), ("b", b), ("c", c)])
    assert list(groups) == [(np.dtype(np.float32), "cpu"), (np.dtype(np.float64), "cpu")]
    assert [name for name, _ in groups[np.dtype(np.float32), "cpu"]] == ["a", "c"]


@given(shape_list=st.lists(shapes(), min_size=1, max_size=5),
       dtype=st.sampled_from([np.float16, np.float32, np.float64]))
def test_views_are_aligned_disjoint_views_of_a_zero_buffer(shape_list, dtype):
    like = np.zeros(0, dtype).view(Marked)
    flat = packing.buffer(like, shape_list)
    parts = packing.views(flat, shape_list)
    assert flat.ndim == 1 and flat.dtype == dtype and type(flat) is Marked and not flat.any()
    ends = []
    for part, shape in zip(parts, shape_list):
        offset = part.ctypes.data - flat.ctypes.data
        assert part.shape == shape and np.shares_memory(part, flat) and offset % 256 == 0
        ends.append((offset, offset + part.nbytes))
    assert all(end <= start for (_, end), (start, _) in zip(ends, ends[1:]))  # in order, no overlap
    arrays = [np.arange(np.prod(shape), dtype=dtype).reshape(shape) + 1 for shape in shape_list]
    packing.fill(parts, arrays)
    assert flat.sum(dtype=np.float64) == sum(a.sum(dtype=np.float64) for a in arrays)  # the gaps stay zero
    packing.fill(parts, [None] + [2 * a for a in arrays[1:]], dtype(0.5))  # None leaves its view
    for part, a in zip(parts, arrays):
        np.testing.assert_array_equal(part, a)


def test_fill_casts_to_the_views_dtype_and_broadcasts_read_only_arrays():
    flat = packing.buffer(np.zeros(0, np.float32), [(2, 3)])
    (part,) = packing.views(flat, [(2, 3)])
    packing.fill([part], [np.broadcast_to(np.float64(1 / 3), (2, 3))], np.float32(3.0))
    assert part.dtype == np.float32
    np.testing.assert_array_equal(part, np.float32(1 / 3) * np.float32(3.0))

"""The optimizers' compiled steps (the ``cpu`` extra, tinygrad_rnn/_cpu_updates.py) against the NumPy path."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import compiled_or_skip
from tinygrad_rnn import Parameter, Variable
from tinygrad_rnn import layers as L
from tinygrad_rnn.core import using_config
from tinygrad_rnn.optimizers import SGD, AdaGrad, Adam, GradientClipping, MomentumSGD, RMSprop
from tinygrad_rnn.testing import seeds, shapes


@pytest.fixture(scope="module")
def kernels():
    return compiled_or_skip("tinygrad_rnn._cpu_updates")


# every optimizer with a kernel, by the kernel's name; hyper-parameters whose float32 casts round
OPTIMIZERS = {
    "sgd": lambda wd: SGD(0.3, weight_decay=wd),
    "momentum_sgd": lambda wd: MomentumSGD(0.3, momentum=0.7, weight_decay=wd),
    "ada_grad": lambda wd: AdaGrad(0.3, eps=1e-3, weight_decay=wd),
    "rms_prop": lambda wd: RMSprop(0.3, decay=0.9, eps=1e-3, weight_decay=wd),
    "adam": lambda wd: Adam(0.3, beta1=0.8, beta2=0.9, eps=1e-3, weight_decay=wd),
}
# 1e-50 rounds to 0 in float32, yet adds the penalty (p * 0) on the NumPy path
WEIGHT_DECAYS = [0.0, 0.01, 1e-50]


class Params(L.Layer):
    def __init__(self, arrays):
        super().__init__()
        for i, a in enumerate(arrays):
            setattr(self, f"p{i}", Parameter(a.copy()))


def _train(name, weight_decay, clip, arrays, grads, compiled, start=0):
    """The parameters and the optimizer's state after one update per list of gradients (Adam
    from step ``start + 1``)."""
    model = Params(arrays)
    opt = OPTIMIZERS[name](weight_decay).setup(model)
    if isinstance(opt, Adam):
        opt.t = start
    if clip:
        opt.add_hook(GradientClipping(0.5))
    with using_config("compiled_kernels", compiled):
        for step in grads:
            for p, g in zip(model.params(), step):
                p.grad = Variable(np.broadcast_to(g, g.shape))  # read only, as the engine may hand them
            opt.update()
    return [p.data for p in model.params()], opt.state_dict()


@pytest.mark.parametrize("name", OPTIMIZERS)
@given(dtype=st.sampled_from([np.float32, np.float64]), weight_decay=st.sampled_from(WEIGHT_DECAYS),
       clip=st.booleans(), shape_list=st.lists(shapes(max_dims=2, max_side=12), min_size=1, max_size=3),
       steps=st.integers(1, 4), start=st.sampled_from([0, 400, 40_000]), seed=seeds())
def test_compiled_step_gives_the_numpy_paths_bits(kernels, name, dtype, weight_decay, clip, shape_list, steps,
                                                  start, seed):
    """Parameters and state equal bit for bit, over sizes that leave the vector loops remainders; a
    quarter of the gradients are 0 (a state that stays 0, a 0 / eps). Adam starts late too, where
    its bias corrections round to 1 (both from step 40,000, the first from 400)."""
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(shape).astype(dtype) for shape in shape_list]
    grads = [[(rng.standard_normal(a.shape) * (rng.random(a.shape) > 0.25)).astype(dtype) for a in arrays]
             for _ in range(steps)]
    got_params, got_state = _train(name, weight_decay, clip, arrays, grads, True, start)
    want_params, want_state = _train(name, weight_decay, clip, arrays, grads, False, start)
    for got, want in zip(got_params, want_params, strict=True):
        assert got.dtype == want.dtype and np.array_equal(got, want)
    assert got_state.keys() == want_state.keys()
    for key, want in want_state.items():
        assert np.array_equal(got_state[key], want), key


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_compiled_step_runs_for_float32_and_float64_buffers_only(kernels, monkeypatch, name):
    """One kernel call per packed group of float32 or float64; float16 and ``compiled_kernels``
    False take the NumPy path, which still steps."""
    calls = []
    real = getattr(kernels, name)
    monkeypatch.setattr(kernels, name, lambda param, *rest: calls.append(param.dtype) or real(param, *rest))
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(5).astype(dtype) for dtype in (np.float32, np.float64, np.float16, np.float32)]
    grads = [[np.ones_like(a) for a in arrays]]
    params, _ = _train(name, 0.01, True, arrays, grads, True)
    assert sorted(map(str, calls)) == ["float32", "float64"]  # one call a group
    assert all(not np.array_equal(p, a) for p, a in zip(params, arrays))  # float16 stepped too
    _train(name, 0.01, True, arrays, grads, False)
    assert len(calls) == 2

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinygrad_rnn import Parameter, Variable
from tinygrad_rnn import layers as L
from tinygrad_rnn.testing import seeds, shapes
from tinygrad_rnn.optimizers import SGD, AdaGrad, Adam, GradientClipping, MomentumSGD, RMSprop, clip_grads

P0 = np.array([1.0, -2.0, 0.5])
GRADS = [np.array([0.5, -1.0, 2.0]), np.array([-0.25, 0.5, 1.0])]


class Pair(L.Layer):
    def __init__(self):
        super().__init__()
        self.a = Parameter(P0.copy())
        self.b = Parameter(np.array([[3.0]]))


def run(opt, grads=GRADS):
    """Apply one update per gradient to the parameter ``a`` (float64) and return its values."""
    model = Pair()
    opt.setup(model)
    for g in grads:
        # a broadcast view is read only: an optimizer that wrote into a gradient would raise
        model.a.grad = Variable(np.broadcast_to(g, g.shape))
        opt.update()
    return model.a.data


def test_sgd_step_is_lr_times_gradient():
    np.testing.assert_allclose(run(SGD(lr=0.1), GRADS[:1]), [0.95, -1.9, 0.3], rtol=1e-12)


def test_sgd_weight_decay_adds_penalty_gradient():
    # p - lr * (g + wd * p) = [1 - 0.1 * (0.5 + 0.5), ...]
    np.testing.assert_allclose(run(SGD(lr=0.1, weight_decay=0.5), GRADS[:1]), [0.9, -1.8, 0.275], rtol=1e-12)


def test_momentum_sgd_accumulates_velocity():
    # v1 = -0.1 g1; v2 = 0.9 v1 - 0.1 g2; p = p0 + v1 + v2
    v1 = -0.1 * GRADS[0]
    v2 = 0.9 * v1 - 0.1 * GRADS[1]
    np.testing.assert_allclose(run(MomentumSGD(lr=0.1, momentum=0.9)), P0 + v1 + v2, rtol=1e-12)
    np.testing.assert_allclose(run(MomentumSGD(lr=0.1), GRADS[:1]), [0.95, -1.9, 0.3], rtol=1e-12)


def test_adagrad_divides_by_root_of_summed_squares():
    eps = 1e-8
    p, h = P0.copy(), np.zeros(3)
    for g in GRADS:
        h += g * g
        p -= 0.1 * g / (np.sqrt(h) + eps)
    np.testing.assert_allclose(run(AdaGrad(lr=0.1, eps=eps)), p, rtol=1e-12)
    # the first step has size lr in every coordinate
    np.testing.assert_allclose(run(AdaGrad(lr=0.1), GRADS[:1]), P0 - 0.1 * np.sign(GRADS[0]), rtol=1e-7)


def test_rmsprop_uses_running_mean_of_squares():
    p, h = P0.copy(), np.zeros(3)
    for g in GRADS:
        h = 0.9 * h + 0.1 * g * g
        p -= 0.01 * g / (np.sqrt(h) + 1e-8)
    np.testing.assert_allclose(run(RMSprop(lr=0.01, decay=0.9)), p, rtol=1e-12)


def test_adam_first_step_is_lr_times_sign_thanks_to_bias_correction():
    # m_hat = g, v_hat = g^2 at t = 1, so the step is lr * g / (|g| + eps)
    np.testing.assert_allclose(run(Adam(lr=0.01), GRADS[:1]), P0 - 0.01 * np.sign(GRADS[0]), rtol=1e-7)


def test_adam_two_steps_with_weight_decay_match_formula():
    lr, b1, b2, eps, wd = 0.01, 0.8, 0.9, 1e-8, 0.1
    p, m, v = P0.copy(), np.zeros(3), np.zeros(3)
    for t, g in enumerate(GRADS, start=1):
        g = g + wd * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    np.testing.assert_allclose(run(Adam(lr=lr, beta1=b1, beta2=b2, eps=eps, weight_decay=wd)), p, rtol=1e-12)


@pytest.mark.parametrize("make", [lambda: SGD(0.1), lambda: MomentumSGD(0.1), lambda: AdaGrad(0.1),
                                  lambda: RMSprop(0.1), lambda: Adam(0.1)])
def test_optimizers_skip_parameters_without_gradient_and_keep_dtype(make):
    model = Pair()
    model.a.data = model.a.data.astype(np.float32)
    model.a.grad = Variable(np.ones(3, np.float32))
    make().setup(model).update()
    assert model.a.dtype == np.float32 and not np.array_equal(model.a.data, P0.astype(np.float32))
    np.testing.assert_array_equal(model.b.data, [[3.0]])


@pytest.mark.parametrize("make", [lambda: MomentumSGD(0.1), lambda: AdaGrad(0.1), lambda: RMSprop(0.1),
                                  lambda: Adam(0.1, weight_decay=0.01)])
def test_state_dict_round_trip_continues_identically(make):
    reference, model = Pair(), Pair()
    opt_ref = make().setup(reference)
    opt = make().setup(model)
    for g in GRADS:
        for m, o in ((reference, opt_ref), (model, opt)):
            m.a.grad = Variable(g)
            o.update()
    state = opt.state_dict()
    assert all(isinstance(a, np.ndarray) for a in state.values()) and "lr" in state
    assert all(k == "lr" or k == "t" or k.endswith("/a") for k in state)
    restored_model = Pair()
    restored_model.load_state_dict(model.state_dict())
    restored = make().setup(restored_model)
    restored.load_state_dict(state)
    for m, o in ((reference, opt_ref), (restored_model, restored)):
        m.a.grad = Variable(GRADS[0])
        o.update()
    np.testing.assert_array_equal(restored_model.a.data, reference.a.data)


def test_state_dict_keeps_changed_lr_and_step_count():
    opt = Adam(lr=0.1)
    run(opt)
    opt.lr = 0.025
    state = opt.state_dict()
    other = Adam(lr=1.0).setup(Pair())
    other.load_state_dict(state)
    assert other.lr == 0.025 and other.t == 2


def test_load_state_dict_rejects_foreign_entries_and_changes_nothing():
    opt = Adam(0.1)
    run(opt)
    before = opt.state_dict()
    with pytest.raises(ValueError, match="unexpected entry 'm/missing'"):
        opt.load_state_dict({"lr": np.array(0.1), "t": np.array(1), "m/missing": np.zeros(3)})
    with pytest.raises(ValueError, match="has shape"):
        opt.load_state_dict({"lr": np.array(0.1), "t": np.array(1), "m/a": np.zeros(4)})
    with pytest.raises(ValueError, match=r"missing 't'.*slots of Adam: m, v"):  # SGD state into Adam
        opt.load_state_dict(SGD(0.5).setup(Pair()).state_dict())
    with pytest.raises(ValueError, match="unexpected entry 'm/a'.*slots of SGD: none"):
        SGD(0.5).setup(Pair()).load_state_dict(before)
    after = opt.state_dict()
    assert after.keys() == before.keys() and all(np.array_equal(after[k], before[k]) for k in after)


@pytest.mark.parametrize("make, message", [
    (lambda: SGD(lr=-1.0), "SGD: lr must be a finite number > 0"),
    (lambda: SGD(lr=0.0), "SGD: lr must be a finite number > 0"),
    (lambda: SGD(lr=float("nan")), "SGD: lr"),
    (lambda: Adam(lr=float("inf")), "Adam: lr"),
    (lambda: SGD(0.1, weight_decay=-0.1), "SGD: weight_decay must be a finite number >= 0"),
    (lambda: MomentumSGD(0.1, momentum=1.0), r"MomentumSGD: momentum must be a finite number in \[0, 1\)"),
    (lambda: MomentumSGD(0.1, momentum=-0.5), "MomentumSGD: momentum"),
    (lambda: AdaGrad(0.1, eps=0.0), "AdaGrad: eps must be a finite number > 0"),
    (lambda: RMSprop(0.1, decay=1.5), "RMSprop: decay"),
    (lambda: Adam(0.1, beta1=1.0), "Adam: beta1"),
    (lambda: Adam(0.1, beta2=-0.1), "Adam: beta2"),
    (lambda: Adam(0.1, eps=float("nan")), "Adam: eps"),
])
def test_optimizers_reject_negative_and_non_finite_hyper_parameters(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_lr_can_be_lowered_to_zero_but_not_made_negative_or_a_string():
    opt = SGD(0.1)
    opt.lr = 0.0
    with pytest.raises(ValueError, match="SGD: lr"):
        opt.lr = -0.01
    with pytest.raises(TypeError, match="SGD: lr must be a number"):
        opt.lr = "0.1"
    assert opt.lr == 0.0


def test_update_before_setup_raises():
    with pytest.raises(RuntimeError, match="setup"):
        SGD(0.1).update()


def test_clip_grads_scales_to_max_norm_and_returns_the_norm_before_as_an_array():
    a, b = Parameter(np.zeros(2)), Parameter(np.zeros((1, 1)))
    a.grad, b.grad = Variable(np.array([3.0, 0.0])), Variable(np.array([[4.0]]))
    norm = clip_grads([a, b], 1.0)
    assert isinstance(norm, np.ndarray) and norm.shape == () and float(norm) == pytest.approx(5.0)
    np.testing.assert_allclose(a.grad.data, [0.6, 0.0], rtol=1e-6)
    np.testing.assert_allclose(b.grad.data, [[0.8]], rtol=1e-6)


def test_clip_grads_leaves_small_gradients_at_their_values():
    a, b = Parameter(np.zeros(2)), Parameter(np.zeros(2))
    a.grad = Variable(np.array([0.3, 0.4]))
    assert float(clip_grads([a, b], 1.0)) == pytest.approx(0.5)
    np.testing.assert_array_equal(a.grad.data, [0.3, 0.4])  # scaled by exactly 1: no branch decides


def test_clip_grads_keeps_float32_gradients_float32():
    p = Parameter(np.zeros(3, np.float32))
    p.grad = Variable(np.full(3, 10.0, np.float32))
    norm = clip_grads([p], 0.25)
    assert norm.dtype == p.grad.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(p.grad.data), 0.25, rtol=1e-5)


def test_clip_grads_with_aliased_gradients_scales_each_once_and_copies():
    shared = np.array([3.0, 4.0])
    a, b = Parameter(np.zeros(2)), Parameter(np.zeros(2))
    a.grad, b.grad = Variable(shared), Variable(shared)  # the engine may hand out one array twice
    norm = clip_grads([a, b], 1.0)
    assert float(norm) == pytest.approx(math.sqrt(50.0))
    expected = shared * (1.0 / math.sqrt(50.0))
    np.testing.assert_allclose(a.grad.data, expected, rtol=1e-6)
    np.testing.assert_allclose(b.grad.data, expected, rtol=1e-6)
    np.testing.assert_array_equal(shared, [3.0, 4.0])  # the original array is untouched


def test_clip_grads_without_gradients_returns_zero():
    assert float(clip_grads([Parameter(np.zeros(2))], 1.0)) == 0.0


@pytest.mark.parametrize("max_norm", [-1.0, 0.0, float("inf"), float("nan"), "1"])
def test_clip_grads_refuses_a_norm_that_is_not_a_positive_finite_number(max_norm):
    p = Parameter(np.zeros(2))
    p.grad = Variable(np.ones(2))
    with pytest.raises((ValueError, TypeError), match="clip_grads: max_norm"):
        clip_grads([p], max_norm)
    np.testing.assert_array_equal(p.grad.data, [1.0, 1.0])


@pytest.mark.gpu
def test_optimizer_state_follows_parameters_to_gpu(cupy):
    from tinygrad_rnn.backend import as_cupy, as_numpy, get_array_module
    cpu_model, gpu_model = Pair(), Pair()
    cpu_opt, gpu_opt = Adam(0.1).setup(cpu_model), Adam(0.1).setup(gpu_model)
    for step, g in enumerate(GRADS):
        if step == 1:
            gpu_model.to_gpu()  # moved after the state was created: the state must follow
        cpu_model.a.grad = Variable(g)
        gpu_model.a.grad = Variable(as_cupy(g) if step == 1 else g)
        cpu_opt.update()
        gpu_opt.update()
    assert get_array_module(gpu_opt.state["a"]["m"]).__name__ == "cupy"
    np.testing.assert_allclose(as_numpy(gpu_model.a.data), cpu_model.a.data, rtol=1e-12)
    a = Variable(as_cupy(np.array([3.0, 4.0])))
    p = Parameter(as_cupy(np.zeros(2)))
    p.grad = a
    norm = clip_grads([p], 1.0)
    assert get_array_module(norm) is cupy and float(norm) == pytest.approx(5.0)


def test_clip_grads_sums_float16_norms_in_float32():
    """Summed in float16, the squared norm of 300 gradients of 20 overflowed to inf and the scale zeroed them."""
    p = Parameter(np.zeros(300, np.float16))
    p.grad = Variable(np.full(300, 20.0, np.float16))
    norm = clip_grads([p], 1.0)
    assert norm.dtype == np.float32 and float(norm) == pytest.approx(20.0 * math.sqrt(300), rel=1e-6)
    assert p.grad.dtype == np.float16
    np.testing.assert_allclose(p.grad.data.astype(np.float64), 1 / math.sqrt(300), rtol=1e-3)


def test_gradient_clipping_hook_clips_before_the_update_and_keeps_the_norm_on_the_device():
    p = Parameter(np.zeros(2))
    layer = type("One", (), {"namedparams": lambda self: iter([("p", p)]), "params": lambda self: iter([p])})()
    clipping = GradientClipping(1.0)
    opt = SGD(lr=1.0).setup(layer).add_hook(clipping)
    assert clipping.norm is None
    p.grad = Variable(np.array([3.0, 4.0]))
    assert opt.update() == 1.0  # one process: the whole loss
    np.testing.assert_allclose(p.data, [-0.6, -0.8], rtol=1e-6)  # the step of the clipped gradient
    assert isinstance(clipping.norm, np.ndarray) and float(clipping.norm) == pytest.approx(5.0)
    with pytest.raises(ValueError, match="SGD.add_hook: the optimizer already has a GradientClipping hook"):
        opt.add_hook(GradientClipping(2.0))
    with pytest.raises(TypeError, match="SGD.add_hook: a hook must be callable, got int"):
        opt.add_hook(3)
    with pytest.raises(ValueError, match="GradientClipping: max_norm"):
        GradientClipping(0.0)


# Packed updates. The learning rates are not powers of two, so that a product folded into another
# (lr * scale) rounds differently from the two products taken one after the other.
PACKED = {
    "SGD": lambda: SGD(0.3),
    "SGD+wd": lambda: SGD(0.3, weight_decay=0.01),
    "MomentumSGD": lambda: MomentumSGD(0.3, momentum=0.7, weight_decay=0.01),
    "AdaGrad": lambda: AdaGrad(0.3, weight_decay=0.01),
    "RMSprop": lambda: RMSprop(0.3, decay=0.9, weight_decay=0.01),
    "Adam": lambda: Adam(0.3, beta1=0.8, beta2=0.9, weight_decay=0.01),
}


class Params(L.Layer):
    def __init__(self, arrays):
        super().__init__()
        for i, a in enumerate(arrays):
            setattr(self, f"p{i}", Parameter(a.copy()))


def reference_step(opt, p, g, state, t):
    """One parameter's step as the optimizers wrote it before packing: an expression a formula,
    temporaries and all; ``p`` and the state arrays change in place."""
    if opt.weight_decay:
        g = g + opt.weight_decay * p
    if type(opt) is SGD:
        p -= opt.lr * g
    elif type(opt) is MomentumSGD:
        v = state.setdefault("v", np.zeros_like(p))
        v *= opt.momentum
        v -= opt.lr * g
        p += v
    elif type(opt) is AdaGrad:
        h = state.setdefault("h", np.zeros_like(p))
        h += g * g
        p -= opt.lr * g / (np.sqrt(h) + opt.eps)
    elif type(opt) is RMSprop:
        h = state.setdefault("h", np.zeros_like(p))
        h *= opt.decay
        h += (1 - opt.decay) * g * g
        p -= opt.lr * g / (np.sqrt(h) + opt.eps)
    else:
        m, v = state.setdefault("m", np.zeros_like(p)), state.setdefault("v", np.zeros_like(p))
        m *= opt.beta1
        m += (1 - opt.beta1) * g
        v *= opt.beta2
        v += (1 - opt.beta2) * g * g
        p -= opt.lr * (m / (1 - opt.beta1 ** t)) / (np.sqrt(v / (1 - opt.beta2 ** t)) + opt.eps)


def reference_scale(grads, max_norm):
    """The clipping scale as clip_grads computes it: squares summed parameter after parameter."""
    norm = np.zeros((), dtype=np.result_type(np.float32, *grads))
    for g in grads:
        norm += np.vdot(g, g)
    return np.minimum(max_norm / (np.sqrt(norm) + 1e-6), 1.0).astype(norm.dtype)


class Later:
    """A hook after the clipping: the clipping then replaces the gradients itself."""

    def __call__(self, optimizer):
        pass


@pytest.mark.parametrize("clipping", [None, "last", "followed"])
@pytest.mark.parametrize("name", PACKED)
@given(shape_list=st.lists(shapes(), min_size=1, max_size=4), steps=st.lists(st.integers(0, 15), min_size=1,
       max_size=4), seed=seeds())
def test_packed_updates_match_the_per_parameter_formulas_bitwise(name, clipping, shape_list, steps, seed):
    """Every step's bits equal those of the formulas written per parameter; each step's integer
    says which parameters have a gradient (bit i: parameter i), so that packed steps (all of
    them) and steps parameter by parameter (the group lacks a gradient) alternate."""
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(shape).astype(np.float32) for shape in shape_list]
    model = Params(arrays)
    opt = PACKED[name]().setup(model)
    if clipping:
        opt.add_hook(GradientClipping(0.5))
    if clipping == "followed":
        opt.add_hook(Later())
    ref_opt, ref_params, ref_state = PACKED[name](), [a.copy() for a in arrays], {}
    params = list(model.params())
    for t, which in enumerate(steps, start=1):
        grads = [rng.standard_normal(a.shape).astype(np.float32) if which >> i & 1 else None
                 for i, a in enumerate(arrays)]
        for p, g in zip(params, grads):
            p.grad = None if g is None else Variable(np.broadcast_to(g, g.shape))  # read only
        opt.update()
        given_grads = [g for g in grads if g is not None]
        scale = reference_scale(given_grads, 0.5) if clipping and given_grads else None
        for i, g in enumerate(grads):
            if g is None:
                continue
            p, state = ref_params[i], ref_state.setdefault(f"p{i}", {})
            if scale is not None and clipping == "last" and name == "SGD":
                p -= g * (scale * np.float32(ref_opt.lr))  # the clipping scale folded into the learning rate
                continue
            reference_step(ref_opt, p, g if scale is None else g * scale, state, t)
        for i, p in enumerate(params):
            np.testing.assert_array_equal(p.data, ref_params[i], err_msg=f"p{i} after step {t}")
    expected = {f"{slot}/{pname}": a for pname, state in ref_state.items() for slot, a in state.items()}
    got = {k: v for k, v in opt.state_dict().items() if "/" in k}
    assert got.keys() == expected.keys()  # no state for a parameter that never had a gradient
    for key, a in expected.items():
        np.testing.assert_array_equal(got[key], a, err_msg=key)


def test_the_folded_sgd_step_stays_within_rounding_of_the_unfolded_one():
    """SGD multiplies the gradient by lr * scale (one rounding) where clip-then-step multiplies by
    scale, then lr (two): the steps differ by rounding only, and not at all without clipping."""
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((5, 3)), rng.standard_normal(4)]  # float64
    folded, unfolded = Params(arrays), Params(arrays)
    fold = SGD(0.3).setup(folded).add_hook(GradientClipping(0.5))
    unfold = SGD(0.3).setup(unfolded).add_hook(GradientClipping(0.5)).add_hook(Later())
    for _ in range(5):
        for p, q in zip(folded.params(), unfolded.params()):
            p.grad = q.grad = Variable(rng.standard_normal(p.shape))
        fold.update()
        unfold.update()
    assert float(fold.hooks[0].norm) == float(unfold.hooks[0].norm) and float(fold.hooks[0].clipped) == 1.0
    for p, q in zip(folded.params(), unfolded.params()):
        assert not np.array_equal(p.data, q.data)
        np.testing.assert_allclose(p.data, q.data, rtol=1e-15, atol=1e-15)


def test_setup_packs_the_parameters_of_each_dtype_into_one_buffer():
    a, b, c = np.arange(6.0, dtype=np.float32).reshape(2, 3), np.ones(1, np.float32), np.full((2, 2), 3.0)
    model = Params([a, b, c])
    SGD(0.1).setup(model)
    assert model.p0.data.base is model.p1.data.base and model.p2.data.base is not model.p0.data.base
    for p, x in zip(model.params(), (a, b, c)):
        assert p.shape == x.shape and p.dtype == x.dtype and p.data.flags.c_contiguous
        np.testing.assert_array_equal(p.data, x)
        assert (p.data.ctypes.data - p.data.base.ctypes.data) % 256 == 0  # aligned as an array of its own


def test_replaced_parameter_data_is_packed_again_and_keeps_being_updated():
    rng = np.random.default_rng(0)
    model = Params([rng.standard_normal(3).astype(np.float32), rng.standard_normal((2, 2)).astype(np.float32)])
    opt = Adam(0.1).setup(model)
    reference = Params([p.data for p in model.params()])
    ref_opt = Adam(0.1).setup(reference)

    def step():
        for p, q in zip(model.params(), reference.params()):
            p.grad = q.grad = Variable(rng.standard_normal(p.shape).astype(np.float32))
        opt.update()
        ref_opt.update()

    step()
    model.p0.data = np.full(3, 2.0, np.float32)  # a user's assignment
    reference.p0.data = np.full(3, 2.0, np.float32)
    step()
    replaced = model.p0.data
    assert replaced.base is model.p1.data.base  # packed again with the others
    model.load_state_dict(reference.state_dict())  # replaces every parameter's data
    opt.load_state_dict(ref_opt.state_dict())  # replaces the state arrays
    step()
    for p, q in zip(model.params(), reference.params()):
        np.testing.assert_array_equal(p.data, q.data)
    for key, value in ref_opt.state_dict().items():
        np.testing.assert_array_equal(opt.state_dict()[key], value)
    assert opt.state["p0"]["m"].base is opt.state["p1"]["m"].base  # the loaded state is packed too


def test_parameters_sharing_memory_are_not_parted_by_packing():
    shared = np.zeros(3)
    model = Params([np.ones(2)])
    model.a, model.b = Parameter(shared), Parameter(shared)  # one array, two parameters
    opt = SGD(0.5).setup(model)
    assert model.a.data is shared and model.b.data is shared
    for p in model.params():
        p.grad = Variable(np.ones(p.shape))
    opt.update()
    np.testing.assert_array_equal(shared, [-1.0, -1.0, -1.0])  # both steps landed in the shared array
    np.testing.assert_array_equal(model.p0.data, [0.5, 0.5])


def test_clipping_handed_to_the_update_leaves_p_grad_as_the_backward_gave_it():
    p = Parameter(np.zeros(2))
    model = Params([])
    model.p = p
    clipping = GradientClipping(1.0)
    opt = Adam(0.1).setup(model).add_hook(clipping)
    g = np.array([3.0, 4.0])
    p.grad = Variable(g)
    opt.update()
    assert p.grad.data is g and float(clipping.norm) == 5.0
    eager = Params([])
    eager.p = Parameter(np.zeros(2))
    seen = []
    eager.p.grad = Variable(g)
    opt_eager = Adam(0.1).setup(eager).add_hook(GradientClipping(1.0))
    opt_eager.add_hook(lambda o: seen.append(eager.p.grad.data)).update()
    np.testing.assert_allclose(seen[-1], [0.6, 0.8], rtol=1e-6)  # a later hook sees the clipped gradient
    np.testing.assert_array_equal(eager.p.data, p.data)  # the same step either way

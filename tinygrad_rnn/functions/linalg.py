"""Matrix products: matmul and linear (x @ W + b)."""
from tinygrad_rnn import compiled
from tinygrad_rnn.core import Function, as_variable
from tinygrad_rnn.functions.array import unbroadcast

# The 2-D products oneDNN's matmul (weights read in place) runs faster than OpenBLAS on one thread
# (tools/bench_gemm.py --linear): at least this many multiply-adds (below, its call overhead of a few
# microseconds loses), at most this many result columns and results (beyond, BLAS's packing of the
# operands into its cache-sized blocks wins)
ONEDNN_MIN_MULTIPLY_ADDS, ONEDNN_MAX_COLUMNS, ONEDNN_MAX_RESULTS = 2**20, 512, 2**19


def _swap_last(a):
    n = a.ndim
    return a.transpose(*range(n - 2), n - 1, n - 2)


class MatMul(Function):
    op = "matmul"
    fresh_grads = True

    def forward(self, x, W):
        if W.ndim == 2:  # one 2-D product: NumPy's batched matmul is several times slower
            return product(x.reshape(-1, x.shape[-1]), W).reshape(x.shape[:-1] + (W.shape[1],))
        return x @ W

    def backward(self, gy):
        x, W = self.arg(0), self.arg(1)
        if W.ndim == 2:  # the common (..., K) @ (K, N) case: 2-D products only
            gy2 = gy.reshape(-1, gy.shape[-1])
            gx = product(gy2, W.T).reshape(x.shape)
            return gx, product(x.reshape(-1, x.shape[-1]).T, gy2)
        return unbroadcast(gy @ _swap_last(W), x.shape), unbroadcast(_swap_last(x) @ gy, W.shape)


def matmul(x, W):
    """Matrix product with NumPy's batch broadcasting.

    Args:
        x (Variable | ndarray): (..., M, K), at least 2-D.
        W (Variable | ndarray): (..., K, N), at least 2-D.
    Returns:
        Variable: (..., M, N).
    Raises:
        ValueError: an operand is not at least 2-D, or the inner sizes differ.
    """
    x, W = as_variable(x), as_variable(W)
    if x.ndim < 2 or W.ndim < 2 or x.shape[-1] != W.shape[-2]:
        raise ValueError(f"matmul: shapes {x.shape} and {W.shape} are not aligned "
                         "(need x (..., M, K) and W (..., K, N))")
    return MatMul()(x, W)


def onednn_for(a, b, bias=None):
    """The ``onednn`` module where it runs ``a @ b (+ bias)``, else None: NumPy's ``matmul`` does.

    oneDNN runs it where ``compiled.onednn`` serves the operands (the extra installed, float32 NumPy
    arrays, BLAS on one thread, ...), their strides are positive and the shape is one where oneDNN
    beats OpenBLAS (``ONEDNN_MIN_MULTIPLY_ADDS`` and its two neighbours).

    Args:
        a (ndarray | Variable): (M, K).
        b (ndarray | Variable): (K, N).
        bias (ndarray, optional): (N,).
    Returns:
        module | None: ``tinygrad_rnn.onednn``, or None.
    """
    (m, k), n = a.shape, b.shape[1]
    if m * k * n < ONEDNN_MIN_MULTIPLY_ADDS or n > ONEDNN_MAX_COLUMNS or m * n > ONEDNN_MAX_RESULTS:
        return None
    operands = (a, b) if bias is None else (a, b, bias)
    onednn = compiled.onednn(*operands)
    if onednn is None or min(s for array in operands for s in array.strides) <= 0:
        return None
    return onednn


def product(a, b, bias=None):
    """``a @ b (+ bias)`` of two 2-D arrays (or Variables, without a bias, under ``create_graph``):
    (M, K) @ (K, N) (+ (N,)) -> (M, N).

    oneDNN's matmul where ``onednn_for`` says it runs (``onednn.product``, the bias added as the
    product is written); elsewhere NumPy's ``matmul``, then the bias in a pass of its own. The two
    sum the product in other orders: their float32 results differ in rounding.
    """
    onednn = onednn_for(a, b, bias)
    if onednn is not None:
        return onednn.product(a, b, bias)
    y = a @ b
    if bias is not None:
        y += bias
    return y


class Linear(Function):
    fresh_grads = True

    def forward(self, x, W, b=None):
        y = product(x.reshape(-1, x.shape[-1]), W, b)  # one 2-D product whatever the leading axes
        return y.reshape(x.shape[:-1] + (W.shape[1],))

    def backward(self, gy):
        return linear_grads(self, gy.reshape(-1, gy.shape[-1]), len(self.inputs) == 3)


def linear_grads(func, gy2, bias):
    """The gradients of ``x @ W (+ b)`` from those of its (n, H) rows: Linear's backward, shared with fused ops.

    Args:
        func (Function): the op; its inputs begin with x (..., D), W (D, H) and, with ``bias``, b (H,).
        gy2 (ndarray | Variable): (n, H), n the product of x's leading axes.
        bias (bool): whether the op has b.
    Returns:
        tuple: gx (..., D), gW (D, H) and gb (H,) where the op has b: arrays, or Variables under
        ``create_graph``.
    """
    x, W = func.arg(0), func.arg(1)
    gx = product(gy2, W.T).reshape(x.shape)
    x2 = x.reshape(-1, x.shape[-1])
    W_data = func.inputs[1].data
    if W_data.flags.f_contiguous and not W_data.flags.c_contiguous:
        # W is a transposed view (TiedLinear's E.W.T): its gradient in the same layout, so that the
        # embedding's gradient adds to it and the optimizer updates E.W row by row, not across rows
        gW = product(gy2.T, x2).T
    else:
        gW = product(x2.T, gy2)
    if not bias:
        return gx, gW
    return gx, gW, gy2.sum(axis=0)


def check_linear(op, x, W, b):
    """Refuse shapes of ``x @ W + b`` that do not fit, naming ``op`` and the shapes."""
    if x.ndim < 1 or W.ndim != 2 or x.shape[-1] != W.shape[0] or (b is not None and b.shape != (W.shape[1],)):
        raise ValueError(f"{op}: shapes x {x.shape}, W {W.shape}, b {None if b is None else b.shape} "
                         "do not fit (need x (..., D), W (D, H), b (H,))")


def linear(x, W, b=None):
    """Affine map ``x @ W + b`` over the last axis.

    Args:
        x (Variable | ndarray): (..., D).
        W (Variable | ndarray): (D, H).
        b (Variable | ndarray, optional): (H,).
    Returns:
        Variable: (..., H).
    Raises:
        ValueError: the shapes do not fit together.
    """
    x, W = as_variable(x), as_variable(W)
    b = None if b is None else as_variable(b)
    check_linear("linear", x, W, b)
    return Linear()(x, W) if b is None else Linear()(x, W, b)

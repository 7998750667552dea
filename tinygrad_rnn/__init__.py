"""tinygrad_rnn: a small, exact define-by-run autograd for recurrent networks on NumPy or CuPy."""
from tinygrad_rnn.core import (Function, Parameter, Variable, as_variable, debug_mode, detect_anomaly, name_scope,
                               no_grad, test_mode, using_config)
from tinygrad_rnn.backend import as_cupy, as_numpy, get_array_module
from tinygrad_rnn.gradcheck import gradient_check, numerical_grad
from tinygrad_rnn import cuda, functions, graph, random

__version__ = "0.1.0"

__all__ = [
    "Function", "Parameter", "Variable", "as_cupy", "as_numpy", "as_variable", "cuda", "debug_mode", "detect_anomaly",
    "functions", "get_array_module", "graph", "gradient_check", "name_scope", "no_grad", "numerical_grad", "random",
    "test_mode", "using_config", "__version__",
]

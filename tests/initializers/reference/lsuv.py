"""Float64 NumPy reference of LSUV: Mishkin and Matas (2016), "All you need is a good init", arXiv:1511.06422,
Algorithm 1.

For each layer L in order,
    v = Var(B_L); while |v - target| >= tolerance and fewer than T_max rescalings:
        W_L = W_L / sqrt(v / target); v = Var(B_L),
where B_L is layer L's output on the batch (here after the layer's activation).
"""

from __future__ import annotations

import numpy as np

from tests.initializers.reference.delta_orthogonal import semi_orthogonality_error

ACTIVATIONS = {
    "linear": lambda z: z,
    "relu": lambda z: np.maximum(z, 0.0),
    "tanh": np.tanh,
    "elu": lambda z: np.where(z > 0, z, np.expm1(np.minimum(z, 0.0))),
}


def proportional_to_semi_orthogonal_error(matrix: np.ndarray) -> float:
    """How far M is from c * (semi-orthogonal) for some c > 0: the same check after dividing by c.

    c^2 is the mean diagonal entry of the Gram matrix.
    """
    matrix = np.asarray(matrix, np.float64)
    rows, columns = matrix.shape
    gram = matrix @ matrix.T if rows <= columns else matrix.T @ matrix
    return semi_orthogonality_error(matrix, gain=float(np.sqrt(np.mean(np.diag(gram)))))


def dense_forward(inputs: np.ndarray, layers: list[tuple[np.ndarray, np.ndarray, str]]) -> list[np.ndarray]:
    """The outputs of every layer of an MLP, in float64: y = activation(x W + b)."""
    outputs, x = [], np.asarray(inputs, np.float64)
    for kernel, bias, activation in layers:
        x = ACTIVATIONS[activation](x @ np.asarray(kernel, np.float64) + np.asarray(bias, np.float64))
        outputs.append(x)
    return outputs


def lsuv_dense(
    inputs: np.ndarray,
    layers: list[tuple[np.ndarray, np.ndarray, str]],
    *,
    target_variance: float = 1.0,
    tolerance: float = 0.1,
    max_iterations: int = 10,
) -> tuple[list[np.ndarray], list[float], list[int]]:
    """LSUV on an MLP from the given starting kernels, in float64.

    Args:
        inputs: the batch, (n, features).
        layers: (kernel, bias, activation name) per Dense layer, first to last.

    Returns:
        The final kernels, each layer's final output variance, and its number of rescalings.
    """
    inputs = np.asarray(inputs, np.float64)
    current = [(np.array(kernel, np.float64), np.asarray(bias, np.float64), name) for kernel, bias, name in layers]
    variances, iterations = [], []
    for index in range(len(current)):

        def output_variance():
            return float(np.var(dense_forward(inputs, current[: index + 1])[-1]))

        variance, count = output_variance(), 0
        while abs(variance - target_variance) >= tolerance and count < max_iterations:
            kernel, bias, name = current[index]
            current[index] = (kernel / np.sqrt(variance / target_variance), bias, name)
            count += 1
            variance = output_variance()
        variances.append(variance)
        iterations.append(count)
    return [kernel for kernel, _, _ in current], variances, iterations

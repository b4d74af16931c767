"""Float64 NumPy reference of the design documents' mean-variance penalty.

    J(w) = J0(w) + lambda * 1/2 * sum_i w_i^2 / sum_i x_i^2
"""

import numpy as np


def mv_penalty(kernel, inputs, lambda_, *, bias=None, per_example=False, epsilon=1e-7):
    """lambda/2 * (sum w^2 [+ sum b^2]) / (sum x^2 [/ batch size] + epsilon), in float64."""
    kernel = np.asarray(kernel, np.float64)
    inputs = np.asarray(inputs, np.float64)
    weight_energy = np.sum(kernel**2) + (np.sum(np.asarray(bias, np.float64) ** 2) if bias is not None else 0.0)
    input_energy = np.sum(inputs**2) / (len(inputs) if per_example else 1)
    return 0.5 * lambda_ * weight_energy / (input_energy + epsilon)


def finite_difference_gradient(function, point, step=1e-6):
    """Central differences of a scalar function of an array, in float64."""
    point = np.asarray(point, np.float64)
    gradient = np.zeros_like(point)
    for index in np.ndindex(point.shape):
        forward, backward = point.copy(), point.copy()
        forward[index] += step
        backward[index] -= step
        gradient[index] = (function(forward) - function(backward)) / (2 * step)
    return gradient

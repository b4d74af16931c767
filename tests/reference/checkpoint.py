"""Float64 NumPy reference for the checkpoint tests: the trajectory an uninterrupted run follows.

Plain mini-batch gradient descent on a linear model with the mean squared error,
L(W, b) = 1/B sum_i (x_i W + b - y_i)^2, so dL/dW = 2/B X^T r and dL/db = 2/B sum_i r_i
with r = X W + b - y; each step W <- W - lr dL/dW, b <- b - lr dL/db.
"""

import numpy as np


def train_linear_sgd(kernel, bias, batches, epochs, learning_rate):
    """Weights after `epochs` passes over `batches` (a list of (x, y)), from `kernel`, `bias`."""
    kernel, bias = np.asarray(kernel, np.float64), np.asarray(bias, np.float64)
    for _ in range(epochs):
        for x, y in batches:
            x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
            residual = x @ kernel + bias - y
            kernel = kernel - learning_rate * 2.0 / len(x) * x.T @ residual
            bias = bias - learning_rate * 2.0 / len(x) * residual.sum(axis=0)
    return [kernel, bias]

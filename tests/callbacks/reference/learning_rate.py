"""Float64 reference of what an optimizer does with the learning rates the callbacks set (through
lepton_keras/callbacks/learning_rate.py): plain mini-batch SGD on a linear model with the mean squared error.

L(W, b) = mean over the batch and the targets of (x W + b - y)^2, so with r = X W + b - y of n elements,
dL/dW = 2/n X^T r and dL/db = 2/n sum_rows r; each step W <- W - lr dL/dW, b <- b - lr dL/db.
"""

import numpy as np


def sgd_linear_regression(x, y, kernel, bias, learning_rates, batch_size):
    """Mini-batch SGD on mean((x w + b - y)^2) with learning rate learning_rates[k] at step k.

    Batch k holds rows [k B, (k + 1) B) modulo the data (epochs repeat). Returns the final
    kernel and bias and the loss of each batch before its update.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    kernel, bias = np.array(kernel, np.float64), np.array(bias, np.float64)
    batches = len(x) // batch_size
    losses = []
    for step, rate in enumerate(learning_rates):
        rows = slice((step % batches) * batch_size, (step % batches + 1) * batch_size)
        error = x[rows] @ kernel + bias - y[rows]
        losses.append(np.mean(error**2))
        scale = 2.0 / error.size
        kernel = kernel - rate * scale * x[rows].T @ error
        bias = bias - rate * scale * error.sum(axis=0)
    return kernel, bias, np.array(losses)

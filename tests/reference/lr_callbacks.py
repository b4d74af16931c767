"""Float64 NumPy references for the learning-rate callbacks, written from their sources.

- Warmup: Goyal et al. (2017), arXiv:1706.02677, Section 2.2 ("gradual warmup": from eta/k, raised by a
  constant amount each iteration, to eta after W iterations), in Horovod's form
  lr = lr_0 / size * (epoch * (size - 1) / warmup_epochs + 1) with a fractional epoch.
- ReduceLROnPlateau: the documented rule of keras.callbacks.ReduceLROnPlateau (Keras API docs).
- Plain mini-batch SGD on the mean squared error of a linear model, the optimizer the tests read the
  learning rates back from.
"""

import numpy as np


def warmup_multipliers(steps, warmup_steps, initial_factor):
    """The warmup multiplier of each step 0..steps-1 (Horovod's formula with size = 1 / initial_factor)."""
    size = 1.0 / initial_factor
    fractional_epoch = np.minimum(np.arange(steps, dtype=np.float64) / warmup_steps, 1.0)
    return (fractional_epoch * (size - 1.0) + 1.0) / size


def plateau_learning_rates(monitored, learning_rate, *, factor, patience, mode="min", min_delta=0.0, cooldown=0,
                           min_lr=0.0):  # fmt: skip
    """The learning rate after each epoch's end, for the monitored values `monitored` (one per epoch)."""
    sign = 1.0 if mode == "min" else -1.0
    best, wait, cool, rates = None, 0, 0, []
    for value in monitored:
        if cool > 0:
            cool, wait = cool - 1, 0
        if best is None or sign * (best - value) > min_delta:
            best, wait = value, 0
        elif cool == 0:
            wait += 1
            if wait >= patience and learning_rate > np.float32(min_lr):
                learning_rate = max(learning_rate * factor, min_lr)
                cool, wait = cooldown, 0
        rates.append(learning_rate)
    return np.array(rates)


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

"""Float64 reference of ReduceLROnPlateau: the documented rule of keras.callbacks.ReduceLROnPlateau (Keras API docs)."""

import numpy as np


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

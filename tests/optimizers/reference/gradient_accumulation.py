"""Float64 NumPy reference of GradientAccumulation: one inner update from the mean gradient of N micro-batches."""

from __future__ import annotations

import numpy as np

from tests.optimizers.reference.wrapper import Adam, Sgd, Wrapper, float64_copies, run


class Accumulation(Wrapper):
    """One inner update from the mean gradient of every `steps` consecutive micro-batches."""

    def __init__(self, inner, steps):
        super().__init__(inner)
        self.steps, self.buffer = steps, []

    def step(self, params, grads):
        self.buffer.append(float64_copies(grads))
        if len(self.buffer) < self.steps:
            return params
        mean = [np.mean([g[i] for g in self.buffer], axis=0) for i in range(len(grads))]
        self.buffer = []
        return self.inner.step(params, mean)


def accumulation_adam(params, grads, *, learning_rate, steps, beta_1, beta_2, weight_decay=0.0):
    return run(Accumulation(Adam(learning_rate, beta_1, beta_2, weight_decay=weight_decay), steps), params, grads)


def accumulation_sgd(params, grads, *, learning_rate, steps, momentum=0.0, weight_decay=0.0):
    return run(Accumulation(Sgd(learning_rate, momentum, weight_decay), steps), params, grads)

"""Float64 NumPy references of stochastic weight averaging and the exponential moving average of the weights.

Izmailov, Podoprikhin, Garipov, Vetrov and Wilson (2018), "Averaging Weights Leads to Wider
Optima and Better Generalization", arXiv:1803.05407, Algorithm 1 (SWA); the EMA's warm-up
is that of tf.train.ExponentialMovingAverage.
"""

from __future__ import annotations

import numpy as np

from tests.optimizers.reference.wrapper import Adam, Sgd, Wrapper, float64_copies, run


class Swa(Wrapper):
    """The plain mean of the weights after updates start, start + c, start + 2c, ..."""

    def __init__(self, inner, start_step, average_period):
        super().__init__(inner)
        self.start, self.period, self.snapshots = start_step, average_period, []

    def step(self, params, grads):
        before = self.updates
        params = self.inner.step(params, grads)
        t = self.updates
        if t > before and t >= self.start and (t - self.start) % self.period == 0:
            self.snapshots.append(float64_copies(params))
        return params

    @property
    def average(self):
        return [np.mean([s[i] for s in self.snapshots], axis=0) for i in range(len(self.snapshots[0]))]


class Ema(Wrapper):
    """w_ema <- d_t w_ema + (1 - d_t) w_t from update start_step on (w_ema = w_t at the first);
    d_t = min(decay, (1 + t) / (10 + t)) with the warm-up, `decay` without."""

    def __init__(self, inner, decay, start_step=0, use_warmup=False):
        super().__init__(inner)
        self.decay, self.start, self.warmup, self.average = decay, start_step, use_warmup, None

    def step(self, params, grads):
        before = self.updates
        params = self.inner.step(params, grads)
        t = self.updates
        if t > before and t >= self.start:
            d = min(self.decay, (1 + t) / (10 + t)) if self.warmup else self.decay
            if self.average is None:
                self.average = float64_copies(params)
            else:
                self.average = [d * a + (1 - d) * p for a, p in zip(self.average, params)]
        return params


def swa_sgd(params, grads, *, learning_rate, start_step, average_period, momentum=0.0, weight_decay=0.0):
    """The training weights (the average does not change them); see `Swa.average` for the average."""
    return run(Swa(Sgd(learning_rate, momentum, weight_decay), start_step, average_period), params, grads)


def ema_adam(params, grads, *, learning_rate, decay, beta_1, beta_2, start_step=0, use_warmup=False, weight_decay=0.0):
    """The training weights (the average does not change them); see `Ema.average` for the average."""
    inner = Adam(learning_rate, beta_1, beta_2, weight_decay=weight_decay)
    return run(Ema(inner, decay, start_step, use_warmup), params, grads)

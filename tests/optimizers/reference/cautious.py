"""Float64 NumPy reference of the Cautious wrapper, written from the paper.

Liang, Chen, Liu and Liu (2024), "Cautious Optimizers: Improving Training with One Line of Code",
arXiv:2411.16085, Algorithm 1 (the mask phi = 1[u * g > 0]), with the rescaling of the authors' current
C-AdamW: u * phi / max(mean(phi), 1e-3), the mean over each tensor. The inner optimizer's decoupled weight
decay is applied before the step and not masked, as in the authors' C-AdamW.
"""

from __future__ import annotations

import numpy as np

from tests.optimizers.reference.wrapper import Adam, Wrapper, run


class Lion:
    """Lion (Chen et al. 2023, arXiv:2302.06675, Program 1) without weight decay:
    w <- w - lr sign(b1 m + (1 - b1) g); m <- b2 m + (1 - b2) g."""

    def __init__(self, learning_rate, beta_1=0.9, beta_2=0.99):
        self.lr, self.b1, self.b2 = learning_rate, beta_1, beta_2
        self.m, self.updates = None, 0

    def step(self, params, grads):
        if self.m is None:
            self.m = [np.zeros_like(p) for p in params]
        self.updates += 1
        out = []
        for i, (w, g) in enumerate(zip(params, grads)):
            direction = np.sign(self.b1 * self.m[i] + (1 - self.b1) * g)
            out.append(w - self.lr * direction)
            self.m[i] = self.b2 * self.m[i] + (1 - self.b2) * g
        return out


class Cautious(Wrapper):
    """w <- w - lr wd w; then the inner step w - lr u kept where u g > 0, divided by max(mean(phi), 1e-3).

    `inner` must apply no weight decay itself: the decay (`learning_rate * weight_decay`) is applied here,
    unmasked, before the inner step.
    """

    def __init__(self, inner, learning_rate, weight_decay=0.0, min_mask_mean=1e-3):
        super().__init__(inner)
        self.decay_rate, self.min_mask_mean = learning_rate * (weight_decay or 0.0), min_mask_mean

    def step(self, params, grads):
        decayed = [w - self.decay_rate * w for w in params]
        stepped = self.inner.step(decayed, grads)
        out = []
        for w, new, g in zip(decayed, stepped, grads):
            minus_lr_u = new - w  # the inner step is w <- w - lr u
            phi = (-minus_lr_u * g > 0).astype(np.float64)
            out.append(w + minus_lr_u * phi / max(phi.mean(), self.min_mask_mean))
        return out


def cautious_adam(params, grads, *, learning_rate, beta_1, beta_2, weight_decay=0.0):
    inner = Adam(learning_rate, beta_1, beta_2)
    return run(Cautious(inner, learning_rate, weight_decay), params, grads)


def cautious_lion(params, grads, *, learning_rate, beta_1, beta_2, weight_decay=0.0):
    inner = Lion(learning_rate, beta_1, beta_2)
    return run(Cautious(inner, learning_rate, weight_decay), params, grads)

"""Float64 NumPy reference of adaptive gradient clipping (AGC), written from the paper.

Brock, De, Smith and Simonyan (2021), "High-Performance Large-Scale Image Recognition Without
Normalization", arXiv:2102.06171, Section 4.1.
"""

from __future__ import annotations

import numpy as np

from tests.optimizers.reference.wrapper import Sgd, Wrapper, run


def unit_norms(x):
    """||x_i|| of each output unit (last axis) for rank >= 2; the whole tensor's norm otherwise."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim <= 1:
        return np.sqrt(np.sum(x * x))
    return np.sqrt(np.sum(x * x, axis=tuple(range(x.ndim - 1)), keepdims=True))


class AdaptiveClipping(Wrapper):
    """Per unit i: if ||G_i|| / max(||W_i||, eps) > lambda then G_i <- lambda max(||W_i||, eps) G_i / ||G_i||."""

    def __init__(self, inner, clipping, epsilon, excluded=()):
        super().__init__(inner)
        self.clipping, self.eps, self.excluded = clipping, epsilon, set(excluded)

    def step(self, params, grads):
        clipped = []
        for i, (w, g) in enumerate(zip(params, grads)):
            if i in self.excluded:
                clipped.append(g)
                continue
            w_norm = np.maximum(unit_norms(w), self.eps)
            g_norm = unit_norms(g)
            ratio = np.divide(g_norm, w_norm)
            scale = np.where(ratio > self.clipping, self.clipping * w_norm / np.where(g_norm > 0, g_norm, 1.0), 1.0)
            clipped.append(g * scale)
        return self.inner.step(params, clipped)


def agc_sgd(params, grads, *, learning_rate, clipping, epsilon, momentum=0.0, weight_decay=0.0):
    return run(AdaptiveClipping(Sgd(learning_rate, momentum, weight_decay), clipping, epsilon), params, grads)

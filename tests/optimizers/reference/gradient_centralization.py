"""Float64 NumPy reference of gradient centralization, written from the paper.

Yong, Huang, Hua and Zhang (2020), "Gradient Centralization: A New Optimization Technique for
Deep Neural Networks", arXiv:2004.01461, Eq. (4).
"""

from __future__ import annotations

import numpy as np

from tests.optimizers.reference.wrapper import Sgd, Wrapper, run


class Centralization(Wrapper):
    """Each output unit's gradient minus its mean over the unit's inputs (rank >= 2, or every rank)."""

    def __init__(self, inner, exclude_rank_one=True):
        super().__init__(inner)
        self.smallest_rank = 2 if exclude_rank_one else 1

    def step(self, params, grads):
        out = []
        for g in grads:
            g = np.asarray(g, dtype=np.float64)
            if g.ndim >= self.smallest_rank:
                axes = tuple(range(g.ndim - 1)) if g.ndim >= 2 else None
                g = g - np.mean(g, axis=axes, keepdims=g.ndim >= 2)
            out.append(g)
        return self.inner.step(params, out)


def centralization_sgd(params, grads, *, learning_rate, momentum=0.0, weight_decay=0.0):
    return run(Centralization(Sgd(learning_rate, momentum, weight_decay)), params, grads)

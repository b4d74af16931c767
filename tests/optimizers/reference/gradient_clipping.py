"""Float64 NumPy reference of GradientClipping: by value, by each gradient's L2 norm, by the global L2 norm.

Pascanu, Mikolov and Bengio (2013), "On the difficulty of training recurrent neural networks",
arXiv:1211.5063: g <- g min(1, c / ||g||), with ||g|| the norm of one gradient or of all together.
"""

from __future__ import annotations

import numpy as np

from tests.optimizers.reference.wrapper import Sgd, Wrapper, run


def clip(grads, *, value=None, norm=None, global_norm=None):
    """Clip by value, then each by its L2 norm, then all by their global L2 norm (in that order)."""
    if value is not None:
        grads = [np.clip(g, -value, value) for g in grads]
    if norm is not None:
        grads = [g * min(1.0, norm / np.linalg.norm(g)) if np.linalg.norm(g) > 0 else g for g in grads]
    if global_norm is not None:
        total = np.sqrt(sum(np.sum(g * g) for g in grads))
        grads = [g * min(1.0, global_norm / total) for g in grads] if total > 0 else grads
    return grads


class Clipping(Wrapper):
    """The inner optimizer on the clipped gradients (see `clip`)."""

    def __init__(self, inner, *, value=None, norm=None, global_norm=None):
        super().__init__(inner)
        self.value, self.norm, self.global_norm = value, norm, global_norm

    def step(self, params, grads):
        return self.inner.step(params, clip(grads, value=self.value, norm=self.norm, global_norm=self.global_norm))


def clipped_sgd(params, grads, *, learning_rate, momentum=0.0, global_norm=None, value=None, norm=None):
    """SGD with momentum (Keras's form: v = mu v - lr g; p += v) on clipped gradients."""
    clipping = Clipping(Sgd(learning_rate, momentum), value=value, norm=norm, global_norm=global_norm)
    return run(clipping, params, grads)

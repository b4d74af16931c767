"""Float64 references for the table rows that wrap Keras's own optimizers."""

import numpy as np


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


def clipped_sgd(params, grads, *, learning_rate, momentum=0.0, global_norm=None, value=None, norm=None):
    """SGD with momentum (Keras's form: v = mu v - lr g; p += v) on clipped gradients."""
    velocity = [np.zeros_like(p) for p in params]
    for step_grads in grads:
        step_grads = clip(step_grads, value=value, norm=norm, global_norm=global_norm)
        for i, g in enumerate(step_grads):
            velocity[i] = momentum * velocity[i] - learning_rate * g
            params[i] = params[i] + velocity[i]
    return params

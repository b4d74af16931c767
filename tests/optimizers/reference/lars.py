"""Float64 NumPy reference of LARS: You, Gitman and Ginsburg (2017), arXiv:1708.03888, Algorithm 1.

"Large Batch Training of Convolutional Networks".
`params` is a list of arrays and `grads[t][i]` the gradient of variable i at step t + 1; returns the
final params. `weight_decay` is Keras's decoupled weight decay, applied before each step as Keras
does: w <- w - learning_rate * weight_decay * w; `momentum_weight_decay` is the paper's beta.
"""

import numpy as np


def lars(params, grads, *, learning_rate, momentum=0.9, trust_coefficient=0.001, momentum_weight_decay=0.0,
         epsilon=1e-8, adapted=None, weight_decay=0.0):  # fmt: skip
    """`adapted[i]` False gives variable i the plain momentum-SGD step (default: all adapted)."""
    params = [np.array(p, dtype=np.float64) for p in params]
    adapted = [True] * len(params) if adapted is None else adapted
    velocity = [np.zeros_like(w) for w in params]
    for step_grads in grads:
        for i, g in enumerate(step_grads):
            g = np.asarray(g, np.float64)
            w = params[i] - learning_rate * weight_decay * params[i]
            if adapted[i]:
                w_norm, g_norm = np.linalg.norm(w), np.linalg.norm(g)
                local_lr = 1.0
                if w_norm > 0 and g_norm > 0:
                    local_lr = trust_coefficient * w_norm / (g_norm + momentum_weight_decay * w_norm + epsilon)
                velocity[i] = momentum * velocity[i] + learning_rate * local_lr * (g + momentum_weight_decay * w)
            else:
                velocity[i] = momentum * velocity[i] + learning_rate * g
            params[i] = w - velocity[i]
    return params
